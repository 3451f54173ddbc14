"""tf.distribute strategies by name; the training loop is the same under every one of them.

`build(config)` must run before any other TensorFlow op of the process: it hides GPUs, splits
the CPU into logical devices and, for multi_worker_mirrored, starts this worker's server; all of
these only work before TensorFlow initialises its devices.

A multi-worker cluster comes from TF_CONFIG when it is set, else from a Kubernetes JobSet pod's
environment (one worker per pod of an indexed Job), else from Slurm's (one worker per task of an
`srun` step); `python -m launch.train --local_workers=N` starts N local workers with their own
TF_CONFIG (research.infra.local_cluster).
"""

import contextlib
import json
import os
import re
import signal
import socket
import threading
import urllib.parse

from absl import logging
import tensorflow as tf
# No public API sets the coordination service's timeouts; MultiWorkerMirroredStrategy itself
# configures the service through these when nobody did before it.
from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
from tensorflow.python.distribute import multi_worker_util
from tensorflow.python.eager import context

from research.core.errors import UserError


# The coordination service's heartbeat timeout T, as a fraction of config.worker_lost_seconds.
# A lost worker stops heartbeating; once the service (on the leader) has missed its heartbeats
# for T, the others' collectives abort. Measured from a SIGSTOP to the survivor's exit: 17.6 s
# for T = 10 s, 6.1-6.6 s for T = 4 s; a kill -9 closes connections and fails them sooner (2.5
# s). A lost leader (the first worker, which hosts the service) fails the others' heartbeats
# within T (measured 10.1 s), or at once when its connections close (1.5 s). A third leaves the
# bound almost twice what was measured; the default bound, 30 s, keeps TensorFlow's T = 10 s.
HEARTBEAT_FRACTION = 1 / 3
# TensorFlow's errors from the collectives and heartbeats of a worker whose peer vanished.
LOST_WORKER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                      tf.errors.AbortedError, tf.errors.CancelledError)
# Under Slurm, worker k of a node listens on port base + k. Jobs sharing a node must not share a
# base: by default it comes from the job id, or set this variable (the same for every task).
PORT_BASE_ENV = 'RESEARCH_PORT_BASE'
# A JobSet pod's environment (research.submit.jobset writes the pod spec): the Job controller sets
# JOB_COMPLETION_INDEX in every pod of an Indexed Job; the pod spec maps JobSet's pod labels to
# the next three through the downward API, and sets the pod count itself (no label holds it).
JOBSET_ENV = ('JOBSET_NAME', 'REPLICATED_JOB_NAME', 'JOB_INDEX', 'JOB_COMPLETION_INDEX')
JOBSET_WORKERS_ENV = 'RESEARCH_WORKERS'
# Every pod has its own address, so all listen on one port (the training operator's default).
JOBSET_PORT = 2222
# How long to wait for a remote TPU's address to accept a connection: TensorFlow waits forever.
_TPU_CONNECT_SECONDS = 20


def split_cpu(num_devices):
  """Splits the host CPU into N logical devices: a mirrored run on a machine without GPUs.

  Must run before TensorFlow initialises its devices, i.e. before the first op.
  """
  cpus = tf.config.list_physical_devices('CPU')
  try:
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices)
  except RuntimeError:
    existing = len(tf.config.list_logical_devices('CPU'))
    if existing != num_devices:
      raise UserError(f'num_cpu_devices={num_devices} asked after TensorFlow started with '
                      f'{existing} CPU device(s): set it before any TensorFlow op runs') from None


def select_gpus(num_gpus):
  """Makes the first `num_gpus` GPUs the only visible ones (-1: all); returns how many.

  Hidden GPUs get neither memory nor ops; must run before TensorFlow initialises its devices.
  """
  gpus = tf.config.list_physical_devices('GPU')
  if num_gpus < 0:
    return len(gpus)
  if num_gpus > len(gpus):
    raise UserError(f'num_gpus={num_gpus} but this machine has {len(gpus)} GPU(s): pass '
                    f'--num_gpus={len(gpus)} or fewer (-1 for all)')
  try:
    tf.config.set_visible_devices(gpus[:num_gpus], 'GPU')
  except RuntimeError:
    raise UserError(f'num_gpus={num_gpus} asked after TensorFlow started with all '
                    f'{len(gpus)} GPUs: set it before any TensorFlow op runs') from None
  return num_gpus


def _tf_config_resolver(text):
  """(cluster spec, task type, task id) from TF_CONFIG's JSON, checked."""
  try:
    tf_config = json.loads(text)
    cluster, task = tf_config['cluster'], tf_config['task']
    task_type, task_id = task['type'], int(task['index'])
  except (ValueError, KeyError, TypeError):
    raise UserError('TF_CONFIG should be JSON like {"cluster": {"worker": ["host:port", ...]}, '
                    '"task": {"type": "worker", "index": 0}}: fix or unset it') from None
  if task_id < 0 or task_id >= len(cluster.get(task_type, ())):
    raise UserError(f'TF_CONFIG\'s task {task_type} {task_id} is not in its cluster '
                    f'{cluster}: fix its "task"')
  return tf.train.ClusterSpec(cluster), task_type, task_id


def default_port_base(job_id):
  """A base port of 12000-31999 from the job id: below Linux' ephemeral ports (32768+), and
  different for jobs that share a node (unless their ids are 20000 apart)."""
  digits = ''.join(c for c in job_id if c.isdigit()) or '0'
  return 12000 + int(digits) % 20000


def _slurm_resolver(environ):
  """(cluster spec, task type, task id) of this task of a Slurm job step.

  SlurmClusterResolver asks nvidia-smi for the GPU count (absent on CPU nodes) and divides by
  the GPUs per task (0 there), so it gets a pretend GPU per task and is used only for the
  cluster; auto_set_gpu=False keeps it off CUDA_VISIBLE_DEVICES, which Slurm has already set.
  """
  job = environ['SLURM_JOB_ID']
  if 'SLURM_STEP_NUM_TASKS' not in environ or 'SLURM_PROCID' not in environ:
    raise UserError(f'in Slurm job {job} but not in a job step (no SLURM_STEP_NUM_TASKS): start '
                    'the training with srun, one task per worker')
  tasks = int(environ['SLURM_STEP_NUM_TASKS'])
  try:
    port_base = int(environ.get(PORT_BASE_ENV) or default_port_base(job))
  except ValueError:
    raise UserError(f'{PORT_BASE_ENV}={environ[PORT_BASE_ENV]!r} is not a port number: set it '
                    'to an integer like 12345, or unset it') from None
  try:
    slurm = tf.distribute.cluster_resolver.SlurmClusterResolver(
        port_base=port_base, gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False)
    spec = slurm.cluster_spec()
  except (RuntimeError, ValueError) as e:
    raise UserError(f'Slurm job {job}: cannot make a cluster from its environment '
                    f'({" ".join(str(e).split())}): start the training with srun') from None
  return spec, slurm.task_type, slurm.task_id


def _jobset_hosts(jobset, replicated_job, job_index, pods):
  """The pods' addresses: an Indexed Job names its pod `index` <job>-<index>, and JobSet names the
  job <jobset>-<replicatedJob>-<jobIndex> and gives the pods its headless service, named after
  the JobSet, as their subdomain."""
  return [f'{jobset}-{replicated_job}-{job_index}-{i}.{jobset}:{JOBSET_PORT}' for i in range(pods)]


def _jobset_resolver(environ):
  """(cluster spec, task type, task id) of this pod of a JobSet: worker JOB_COMPLETION_INDEX."""
  missing = [k for k in JOBSET_ENV + (JOBSET_WORKERS_ENV,) if not environ.get(k)]
  if missing:
    raise UserError(f'JobSet {environ["JOBSET_NAME"]}: the pod lacks {", ".join(missing)}: '
                    'submit it with launch.submit --cluster=kubernetes, or set TF_CONFIG')
  try:
    job_index, index, pods = (int(environ[k]) for k in (
        'JOB_INDEX', 'JOB_COMPLETION_INDEX', JOBSET_WORKERS_ENV))
  except ValueError:
    raise UserError(f'JobSet {environ["JOBSET_NAME"]}: JOB_INDEX, JOB_COMPLETION_INDEX and '
                    f'{JOBSET_WORKERS_ENV} should be integers') from None
  if not 0 <= index < pods:
    raise UserError(f'JobSet {environ["JOBSET_NAME"]}: pod index {index} is not one of its '
                    f'{pods} pods ({JOBSET_WORKERS_ENV}): set it to the Job\'s completions')
  hosts = _jobset_hosts(environ['JOBSET_NAME'], environ['REPLICATED_JOB_NAME'], job_index, pods)
  return tf.train.ClusterSpec({'worker': hosts}), 'worker', index


def cluster_resolver(num_gpus=0, environ=None):
  """This worker's cluster: from TF_CONFIG if set, else from a JobSet pod's environment, else
  from Slurm's.

  Returns a SimpleClusterResolver reporting `num_gpus` GPUs per worker (0: one CPU replica per
  worker), whatever the machine has, so the strategy uses what the config chose.
  """
  environ = os.environ if environ is None else environ
  if environ.get('TF_CONFIG'):
    spec, task_type, task_id = _tf_config_resolver(environ['TF_CONFIG'])
    source = 'TF_CONFIG'
  elif environ.get('JOBSET_NAME'):
    spec, task_type, task_id = _jobset_resolver(environ)
    source = 'JobSet'
  elif environ.get('SLURM_JOB_ID'):
    spec, task_type, task_id = _slurm_resolver(environ)
    source = 'Slurm'
  else:
    raise UserError('strategy multi_worker_mirrored needs a cluster: set TF_CONFIG, run under '
                    'Slurm (srun), or start local workers with --local_workers=N')
  logging.info('Cluster from %s: %s; this is %s %d.', source, spec.as_dict(), task_type,
               task_id)
  return tf.distribute.cluster_resolver.SimpleClusterResolver(
      spec, task_type=task_type, task_id=task_id,
      num_accelerators={'GPU': num_gpus} if num_gpus else {}, rpc_layer='grpc')


def _configure_coordination(spec, timeout_seconds, lost_seconds):
  """Makes the workers' start a barrier that fails after `timeout_seconds` when a worker is
  missing (TensorFlow's default: an hour, on the leader without any message), and a worker that
  vanishes later fail the others' collectives within `lost_seconds`."""
  ctx = context.context()
  if ctx.coordination_service is not None:
    return  # already configured in this process (a second strategy): it cannot change
  jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
          for job in ('chief', 'worker') if job in spec.jobs]
  ctx.configure_coordination_service(
      service_type='standalone', service_leader=multi_worker_util.coordination_leader(spec),
      coordinated_jobs=jobs, cluster_register_timeout_in_ms=int(timeout_seconds * 1000),
      heartbeat_timeout_in_ms=int(lost_seconds * HEARTBEAT_FRACTION * 1000))
  # Without the barrier the timeout bounds only the non-leaders' connection attempts; the
  # leader would still wait an hour for a worker that never comes.
  ctx.coordination_service.cluster_register_with_barrier = True


def _multi_worker(config, num_gpus):
  resolver = cluster_resolver(num_gpus)
  spec = resolver.cluster_spec()
  # Without a bound TensorFlow waits an hour for every worker to connect: a worker that never
  # starts would look like a hang.
  timeout = config.cluster_timeout_seconds
  if config.worker_lost_seconds * HEARTBEAT_FRACTION < 1:
    raise UserError(f'worker_lost_seconds={config.worker_lost_seconds} is too short for the '
                    f'heartbeats: give {1 / HEARTBEAT_FRACTION:g} or more')
  _configure_coordination(spec, timeout, config.worker_lost_seconds)
  sigterm = signal.getsignal(signal.SIGTERM)
  try:
    strategy = tf.distribute.MultiWorkerMirroredStrategy(resolver)
  except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as e:
    # TensorFlow's message runs over many lines; its first sentence says what timed out.
    first = (str(e).strip().splitlines() or [type(e).__name__])[0].split('. ')[0][:80]
    workers = sum(spec.num_tasks(job) for job in spec.jobs)
    leader = spec.task_address('chief' if 'chief' in spec.jobs else 'worker', 0)
    raise UserError(f'{resolver.task_type} {resolver.task_id}: not all {workers} workers '
                    f'connected within {timeout}s ({first}): start every worker, and check '
                    f'that the first one ({leader}) is reachable') from None
  # The coordination service installs a C++ SIGTERM handler (TensorFlow's preemption notifier)
  # that swallows the signal: the worker would go on until SIGKILL, and a Python handler set
  # earlier would never run. Give SIGTERM back to Python: its handler, or the default (exit).
  if sigterm is not None and threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, sigterm)
  return strategy


def _tpu(config):
  """TPUStrategy over config.tpu ('' = this machine's TPU)."""
  name = config.tpu or 'local'
  address = urllib.parse.urlparse(name) if name.startswith('grpc://') else None
  if address is not None:
    # An unreachable address makes TensorFlow's connect wait forever: probe it first.
    try:
      socket.create_connection((address.hostname, address.port),
                               timeout=_TPU_CONNECT_SECONDS).close()
    except (OSError, TypeError, ValueError) as e:
      raise UserError(f'strategy tpu: cannot reach the TPU at {name} ({e}): check '
                      '--config.tpu') from None
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, OSError, RuntimeError, tf.errors.OpError) as e:
    reason = ' '.join(str(e).split())[:120]
    raise UserError(f'strategy tpu found no TPU {name!r} ({reason}): run on a TPU VM, name a '
                    'TPU with --config.tpu=NAME or grpc://HOST:PORT, or pick another '
                    '--strategy') from None
  return tf.distribute.TPUStrategy(resolver)


def build(config):
  """The strategy named by config.strategy, over the devices the config allows.

  Devices: config.num_gpus GPUs per worker (-1 all, 0 none: the CPU); without GPUs the CPU,
  split into config.num_cpu_devices logical devices when > 0. The config's own checks are
  config.validate's: call it first.
  """
  if 'TF_CONFIG' in os.environ and not os.environ['TF_CONFIG'].strip():
    # TensorFlow parses it in every strategy's constructor and fails with a JSON traceback.
    raise UserError('TF_CONFIG is set but empty: unset it (or give it a cluster)')
  if config.strategy == 'tpu':
    strategy = _tpu(config)
    devices = strategy.extended.worker_devices
  else:
    num_gpus = select_gpus(config.num_gpus)
    if config.strategy == 'multi_worker_mirrored':
      strategy = _multi_worker(config, num_gpus)
      devices = strategy.extended.worker_devices
    else:
      if config.num_cpu_devices > 0:
        split_cpu(config.num_cpu_devices)
      gpus = tf.config.list_logical_devices('GPU')
      devices = ([d.name for d in gpus] or
                 [d.name for d in tf.config.list_logical_devices('CPU')])
      if config.strategy == 'default':
        strategy = tf.distribute.get_strategy()
      elif config.strategy == 'one_device':
        strategy = tf.distribute.OneDeviceStrategy(devices[0])
      else:
        strategy = tf.distribute.MirroredStrategy(devices)
  logging.info('Strategy %s with %d replica(s) over %s (worker %d of %d).', config.strategy,
               strategy.num_replicas_in_sync, list(devices), worker_index(strategy),
               num_workers(strategy))
  return strategy


def _task(strategy):
  """(cluster dict, task type, task id) of a multi-worker strategy, or None for one worker.

  A TPUStrategy has a single client whatever its hosts, so it counts as one worker.
  """
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
    return None
  if resolver.task_type is None:
    return None
  return resolver.cluster_spec().as_dict(), resolver.task_type, resolver.task_id


def is_chief(strategy):
  """Whether this worker writes the run's outputs: the only worker, the 'chief' task, or worker
  0 of a cluster without a chief."""
  task = _task(strategy)
  if task is None:
    return True
  cluster, task_type, task_id = task
  return task_type == 'chief' or (task_type == 'worker' and task_id == 0
                                  and 'chief' not in cluster)


def worker_index(strategy):
  """This worker's place among the training workers: the chief 0, then the workers in order."""
  task = _task(strategy)
  if task is None:
    return 0
  cluster, task_type, task_id = task
  if task_type == 'chief':
    return 0
  if task_type == 'worker':
    return len(cluster.get('chief', ())) + task_id
  raise ValueError(f'task type {task_type!r} does not train')


def num_workers(strategy):
  """How many processes train together (chief and workers; evaluators do not count)."""
  task = _task(strategy)
  if task is None:
    return 1
  cluster = task[0]
  return len(cluster.get('chief', ())) + len(cluster.get('worker', ()))


class WorkerLostError(Exception):
  """Another worker of this multi-worker run vanished (killed, frozen, its node gone): this one
  cannot go on, and the run's last checkpoint is the place to resume from."""

  def __init__(self, lost, reason):
    self.lost = lost  # e.g. 'worker 1', or '' when TensorFlow's message names none
    super().__init__(f'lost {lost or "another worker"} ({reason}): stopped without saving; '
                     're-run the same command to resume from the last checkpoint')


def _task_names(text):
  """The tasks TensorFlow names in `text` ('/job:worker/replica:0/task:1'), as {'worker 1'}."""
  return {f'{job} {int(index)}' for job, index in
          re.findall(r'/job:(\w+)(?:/replica:\d+)?/task:(\d+)', text)}


def _lost(message, own, leader):
  """(the lost task, e.g. 'worker 1' or '' if unknown, why it counts as lost) from the message
  of TensorFlow's error on this worker (`own`), the coordination service on `leader`."""
  others = _task_names(message) - {own}
  if 'unhealthy' in message:  # the service missed the task's heartbeats
    return (others.pop() if len(others) == 1 else ''), 'its heartbeats stopped'
  if not others and 'CoordinationService/Heartbeat' in message:
    # This worker's heartbeats went unanswered: the leader, which hosts the service, is gone.
    return leader, 'it stopped answering heartbeats'
  detail = message.split('aborted by: ', 1)[-1].strip()
  detail = (detail.splitlines() or ['no message'])[0][:100]
  return (others.pop() if len(others) == 1 else ''), detail


@contextlib.contextmanager
def lost_worker_errors(strategy):
  """Turns TensorFlow's errors of a vanished peer into WorkerLostError (multi-worker only):
  the collectives abort once the coordination service misses the peer's heartbeats."""
  task = _task(strategy)
  if task is None:
    yield
    return
  cluster, task_type, task_id = task
  try:
    yield
  except LOST_WORKER_ERRORS as e:
    leader = _task_names(multi_worker_util.coordination_leader(tf.train.ClusterSpec(cluster)))
    lost, why = _lost(str(e), f'{task_type} {task_id}', leader.pop())
    raise WorkerLostError(lost, f'{type(e).__name__}: {why}') from None
