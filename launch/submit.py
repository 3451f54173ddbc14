"""Submits a training run to a cluster as a multi-worker job, or reports on one.

  python -m launch.submit --cluster=slurm --nodes=2 [--tasks_per_node=K] [--gpus_per_node=G]
      [--time=H:MM:SS] [--partition=P] [--dry_run] -- --config=configs/cnn_mnist.py --workdir=W
  python -m launch.submit --cluster=kubernetes --nodes=2 --image=IMAGE --pvc=CLAIM -- ...
  python -m launch.submit --status --workdir=W [--cluster=kubernetes]

The flags after `--` are launch.train's: they are checked here as launch.train checks them (a
bad override fails now, not after the queue), and every worker of the job runs them.
"""

import os
import shlex
import sys

from absl import flags

from launch import common
from launch import train
from research.core.errors import UserError
from research.infra import argv as argv_lib
from research.infra import workdir_lock
from research.submit import job as job_lib
from research.submit import kubernetes
from research.submit import slurm

_CLUSTER = flags.DEFINE_enum('cluster', None, job_lib.CLUSTERS, 'Scheduler to submit to.')
_NODES = flags.DEFINE_integer('nodes', 1, 'Machines (Slurm nodes; Kubernetes pods).',
                              lower_bound=1)
_TASKS_PER_NODE = flags.DEFINE_integer('tasks_per_node', 1, 'Workers per node (Slurm): e.g. '
                                       'one per GPU, or 1 to replicate over the node\'s GPUs.',
                                       lower_bound=1)
_GPUS_PER_NODE = flags.DEFINE_integer('gpus_per_node', 0, 'GPUs per node; 0 trains on CPUs.',
                                      lower_bound=0)
_TIME = flags.DEFINE_string('time', '', 'Slurm time limit (e.g. 4:00:00); the workers save '
                            'before it and the job requeues itself.')
_PARTITION = flags.DEFINE_string('partition', '', 'Slurm partition (default: the cluster\'s).')
_NAME = flags.DEFINE_string('name', '', 'Job name (default: from the workdir\'s name).')
_IMAGE = flags.DEFINE_string('image', '', 'Kubernetes: container image with this repository.')
_NAMESPACE = flags.DEFINE_string('namespace', 'default', 'Kubernetes namespace.')
_PVC = flags.DEFINE_string('pvc', '', 'Kubernetes: PersistentVolumeClaim holding the workdir.')
_MOUNT_PATH = flags.DEFINE_string('mount_path', '/runs', 'Kubernetes: where the claim is '
                                  'mounted in the pods; the workdir must lie under it.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print what would be submitted; submit nothing.')
_STATUS = flags.DEFINE_bool('status', False, 'Report who holds --workdir\'s lock, and the state '
                            'and last progress line of its job, instead of submitting.')

_OWN = (_CLUSTER, _NODES, _TASKS_PER_NODE, _GPUS_PER_NODE, _TIME, _PARTITION, _NAME, _IMAGE,
        _NAMESPACE, _PVC, _MOUNT_PATH, _DRY_RUN, _STATUS)
# Before `--` only submit's flags; --workdir too, for --status.
_ALLOWED_BEFORE = {h.name for h in _OWN} | {'workdir', 'help', 'helpshort', 'helpfull'}


def _split(argv):
  """(all flags to parse, launch.train's flags): those after `--` are the job's command."""
  args = argv[1:]
  mine, theirs = (args[:args.index('--')], args[args.index('--') + 1:]) if '--' in args else (
      args, [])
  for arg in mine:
    name = arg.lstrip('-').split('=', 1)[0]
    if arg.startswith('-') and name not in _ALLOWED_BEFORE and (
        not name.startswith('no') or name[2:] not in _ALLOWED_BEFORE):
      raise UserError(f'{arg} is not a launch.submit flag: launch.train\'s flags go after "--"')
  return argv[:1] + mine + theirs, theirs


def _job(train_args):
  config = train.config_from_flags()
  workdir = flags.FLAGS.workdir
  cluster = _CLUSTER.value
  if cluster is None:
    raise UserError(f'pass --cluster={" or --cluster=".join(job_lib.CLUSTERS)}')
  if cluster == 'slurm':  # the script names the workdir from the batch node: make it absolute
    workdir = os.path.abspath(workdir)
    train_args = argv_lib.strip_flag(train_args, 'workdir') + [f'--workdir={workdir}']
  return job_lib.Job(
      cluster=cluster, workdir=workdir, train_args=train_args, config=config,
      nodes=_NODES.value, tasks_per_node=_TASKS_PER_NODE.value,
      gpus_per_node=_GPUS_PER_NODE.value, name=_NAME.value or job_lib.default_name(workdir),
      time=_TIME.value, partition=_PARTITION.value, image=_IMAGE.value,
      namespace=_NAMESPACE.value, pvc=_PVC.value, mount_path=_MOUNT_PATH.value,
      python=sys.executable, chdir=os.getcwd(),
      command=' '.join(shlex.quote(a) for a in ['python', '-m', 'launch.submit', *sys.argv[1:]]))


def main(train_args):
  if _STATUS.value:
    workdir = flags.FLAGS.workdir
    print(workdir_lock.status(workdir))
    if _CLUSTER.value == 'kubernetes':
      print(kubernetes.status(workdir, _NAME.value, _NAMESPACE.value))
    else:
      print(slurm.status(job_lib.read_record(os.path.abspath(workdir))))
    return 0
  if not train_args:
    raise UserError('no training flags: add "-- --config=... --workdir=..." (launch.train\'s '
                    'flags for every worker)')
  job = _job(train_args)
  module = slurm if job.cluster == 'slurm' else kubernetes
  print(module.submit(job, dry_run=_DRY_RUN.value))
  return 0


if __name__ == '__main__':
  common.run(main, takes_paths=True, split_argv=_split)
