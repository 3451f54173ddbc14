"""What a cluster submission asks for, checked before anything is submitted.

A `Job` is the scheduler-neutral request: how many workers on how many nodes with how many GPUs,
and the `launch.train` flags each worker runs. `worker_args(job)` is the training command every
worker runs, whatever the scheduler; research.submit.slurm and research.submit.kubernetes turn the
job into an sbatch script or a JobSet (or TFJob) manifest.
"""

import dataclasses
import os
import re
import shlex
import subprocess
import time

from research.core import layout
from research.core import outputs
from research.core.errors import UserError
from research.infra import argv as argv_lib
from research.infra import processes

# Slurm: the sbatch script, job.json and the job's output live here in the workdir.
CLUSTERS = ('slurm', 'kubernetes')


@dataclasses.dataclass
class Job:
  """A training run as a multi-worker cluster job.

  `train_args` are the launch.train flags as the user gave them (after `--`); `config` is the
  config they resolve to, for the checks. Kubernetes fields (image, namespace, pvc, mount_path,
  kubernetes_kind) are ignored by Slurm and vice versa (time, partition).
  """
  cluster: str
  workdir: str
  train_args: list
  config: object
  nodes: int = 1
  tasks_per_node: int = 1
  gpus_per_node: int = 0
  name: str = ''
  time: str = ''
  partition: str = ''
  image: str = ''
  namespace: str = 'default'
  pvc: str = ''
  mount_path: str = '/runs'
  kubernetes_kind: str = 'jobset'  # research.submit.kubernetes.KINDS
  python: str = 'python'
  chdir: str = '.'  # where the workers start, as the submitter (relative paths in train_args)
  command: str = ''  # the launch.submit command line, recorded in the script

  @property
  def workers(self):
    return self.nodes * self.tasks_per_node

  @property
  def gpus_per_task(self):
    return self.gpus_per_node // self.tasks_per_node

  @property
  def replicas(self):
    """Replicas in sync: one per GPU, or one per worker on CPUs."""
    return self.workers * max(1, self.gpus_per_task)


def default_name(workdir):
  """A job name from the workdir's last component, valid for Slurm and Kubernetes alike
  (lowercase letters, digits and '-', at most 52 characters: room for TFJob's pod suffixes)."""
  base = os.path.basename(os.path.normpath(workdir)).lower()
  name = re.sub(r'[^a-z0-9-]+', '-', base).strip('-')[:52].strip('-')
  return name if name and name[0].isalpha() else f'train-{name}'.strip('-')


def check(job):
  """Raises UserError naming the first thing wrong with `job`; nothing has been submitted."""
  if job.cluster not in CLUSTERS:
    raise UserError(f'unknown --cluster={job.cluster!r}: use one of {", ".join(CLUSTERS)}')
  for field in ('nodes', 'tasks_per_node'):
    if getattr(job, field) < 1:
      raise UserError(f'--{field}={getattr(job, field)} must be at least 1')
  if job.gpus_per_node < 0:
    raise UserError(f'--gpus_per_node={job.gpus_per_node} must be 0 (CPUs) or more')
  if job.gpus_per_node % job.tasks_per_node:
    raise UserError(f'--gpus_per_node={job.gpus_per_node} does not split over '
                    f'--tasks_per_node={job.tasks_per_node}: each task gets the same number of '
                    'GPUs (e.g. one task per node, or one per GPU)')
  if argv_lib.strip_flag(job.train_args, 'local_workers') != job.train_args:
    raise UserError('--local_workers starts workers on this machine; a cluster job gets its '
                    'workers from --nodes and --tasks_per_node: drop it after "--"')
  if argv_lib.strip_flag(job.train_args, 'start_over') != job.train_args:
    raise UserError('--start_over in a cluster job would start over at every requeue: drop it '
                    'after "--" and pass a new --workdir (or move the old one aside)')
  strategy = job.config.strategy
  if job.workers > 1 and strategy not in ('default', 'multi_worker_mirrored'):
    raise UserError(f'{job.workers} workers train as one multi_worker_mirrored job, but the '
                    f'training flags ask for strategy {strategy!r}: drop --strategy')
  batch = job.config.batch_size
  if batch % job.replicas:
    raise UserError(f'global batch_size {batch} does not divide over {job.replicas} replicas '
                    f'({job.workers} workers x {max(1, job.gpus_per_task)} '
                    f'{"GPUs" if job.gpus_per_task else "CPU replica"} each): make '
                    f'--config.batch_size a multiple of {job.replicas}, or change the sizes')
  if not job.name:
    raise UserError('the job needs a name: pass --name')


def worker_args(job):
  """launch.train's argv (after `python -m launch.train`) for every worker of `job`: the user's
  flags, then what the job decides (strategy, GPUs per worker, the preemption exit status)."""
  args = list(job.train_args)
  for flag in ('strategy', 'num_gpus', 'preempted_exit_code'):
    args = argv_lib.strip_flag(args, flag)
  strategy = 'multi_worker_mirrored' if job.workers > 1 else job.config.strategy
  if job.workers == 1 and job.gpus_per_task > 1 and strategy == 'default':
    strategy = 'mirrored'  # one worker with several GPUs: replicate over them
  return args + [f'--strategy={strategy}', f'--num_gpus={job.gpus_per_task}',
                 f'--preempted_exit_code={processes.PREEMPTED_EXIT_CODE}']


def record_path(workdir):
  return layout.job_record_path(workdir)


def write_record(job, job_id, **extra):
  """<workdir>/submit/job.json: which scheduler runs this workdir's job, under what id."""
  record = dict(cluster=job.cluster, job_id=str(job_id), name=job.name, workdir=job.workdir,
                namespace=job.namespace, workers=job.workers,
                submitted=time.strftime('%Y-%m-%d %H:%M:%S'), **extra)
  os.makedirs(os.path.dirname(record_path(job.workdir)), exist_ok=True)
  outputs.write_json(record_path(job.workdir), record)
  return record


def read_record(workdir):
  path = record_path(workdir)
  if not os.path.exists(path):
    raise UserError(f'{workdir!r} has no {layout.job_record_path("")}: pass the --workdir of a job '
                    'submitted with launch.submit')
  try:
    return outputs.read_json(path)
  except (OSError, ValueError) as e:
    raise UserError(f'cannot read {path}: {e}') from None


def last_progress_line(lines):
  """The last training progress line ('step N/T epoch ...') among `lines`, without the logging
  prefix; None when training has not logged one yet."""
  pattern = re.compile(r'\bstep \d+/\d+ epoch .*')
  for line in reversed(list(lines)):
    match = pattern.search(line)
    if match:
      return match.group(0).strip()
  return None


def run_line(workdir):
  """Where the run in `workdir` stands by its results.json (None before one exists)."""
  try:
    results = layout.read_results(workdir)
  except (OSError, ValueError):
    return None  # being replaced right now: the next look sees it
  if results.get('preempted'):
    return f'stopped by {results["preempted"]} at step {results["step"]}, saved'
  if 'test_accuracy' in results:
    return (f'finished: step {results["step"]}, test accuracy {results["test_accuracy"]:.4f}, '
            f'{results["train_seconds"]:.0f}s of training')
  return None


def run_command(argv, timeout, unreachable):
  """`argv` as a CompletedProcess (text; its status unchecked), or a UserError if it cannot
  start or does not answer within `timeout` seconds (`unreachable` says what to check then): a
  scheduler that hangs must not hang the submission."""
  try:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
  except subprocess.TimeoutExpired:
    raise UserError(f'`{shlex.join(argv)}` did not answer in {timeout}s: {unreachable}') from None
  except OSError as e:
    raise UserError(f'cannot run {argv[0]}: {e}') from None
