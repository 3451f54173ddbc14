"""Strategies from the config: clusters from TF_CONFIG and Slurm, the errors a user can cause,
the worker helpers, the dtype policy, and two real workers training in sync on this machine.

Cases that need logical CPU devices, a TPU probe or a cluster run in fresh processes: those
settings can be made only once per process, before TensorFlow starts.
"""

import json
import os
import subprocess
import sys
import time
import types
from unittest import mock

from absl.testing import parameterized
import tensorflow as tf

from research.core import config as config_lib
from research.core import strategy as strategy_lib
from research.core.errors import UserError
from research.infra import local_cluster
from tests import helpers

_SimpleResolver = tf.distribute.cluster_resolver.SimpleClusterResolver


def _slurm_env(procid, nodes='node[01-02]', tasks_per_node='1(x2)', ntasks=2, job='4242'):
  """The variables srun sets for task `procid` of a job step (what SlurmClusterResolver reads
  and what tells us we are under Slurm), plus PATH without nvidia-smi."""
  node_names = {'node[01-02]': ['node01', 'node02'], 'node01': ['node01']}[nodes]
  per_node = ntasks // len(node_names)
  return {
      'PATH': '/nonexistent', 'SLURM_JOB_ID': job, 'SLURM_JOBID': job,
      'SLURM_PROCID': str(procid), 'SLURM_NTASKS': str(ntasks), 'SLURM_NPROCS': str(ntasks),
      'SLURM_NNODES': str(len(node_names)), 'SLURM_JOB_NODELIST': nodes,
      'SLURM_NODELIST': nodes, 'SLURM_TASKS_PER_NODE': tasks_per_node,
      'SLURM_STEP_ID': '0', 'SLURM_STEP_NUM_TASKS': str(ntasks),
      'SLURM_STEP_NUM_NODES': str(len(node_names)), 'SLURM_STEP_NODELIST': nodes,
      'SLURM_STEP_TASKS_PER_NODE': tasks_per_node, 'SLURM_NODEID': str(procid // per_node),
      'SLURM_LOCALID': str(procid % per_node), 'SLURMD_NODENAME': node_names[procid // per_node],
  }


class ClusterResolverTest(tf.test.TestCase, parameterized.TestCase):

  def resolve(self, env, num_gpus=0):
    with mock.patch.dict(os.environ, env, clear=True):
      r = strategy_lib.cluster_resolver(num_gpus)
      return r.cluster_spec().as_dict(), r.task_type, r.task_id, r.num_accelerators()

  def test_tf_config(self):
    env = {'TF_CONFIG': local_cluster.tf_config(['h0:1000', 'h1:1001'], 1)}
    self.assertEqual(self.resolve(env),
                     ({'worker': ['h0:1000', 'h1:1001']}, 'worker', 1, {}))

  def test_tf_config_with_chief_and_gpus(self):
    env = {'TF_CONFIG': json.dumps({'cluster': {'chief': ['c:1'], 'worker': ['w:2']},
                                    'task': {'type': 'chief', 'index': 0}})}
    spec, task_type, task_id, accelerators = self.resolve(env, num_gpus=2)
    self.assertEqual((spec, task_type, task_id), ({'chief': ['c:1'], 'worker': ['w:2']},
                                                  'chief', 0))
    self.assertEqual(accelerators, {'GPU': 2})

  def test_tf_config_wins_over_slurm(self):
    env = {**_slurm_env(0), 'TF_CONFIG': local_cluster.tf_config(['a:1'], 0)}
    self.assertEqual(self.resolve(env)[0], {'worker': ['a:1']})

  @parameterized.named_parameters(
      ('not_json', '{worker: a:1}'),
      ('no_task', '{"cluster": {"worker": ["a:1"]}}'),
      ('task_outside_cluster', local_cluster.tf_config(['a:1', 'b:2'], 2)),
  )
  def test_bad_tf_config(self, text):
    with self.assertRaisesRegex(UserError, 'TF_CONFIG'):
      self.resolve({'TF_CONFIG': text})

  def test_slurm_two_nodes_one_task_each(self):
    base = strategy_lib.default_port_base('4242')
    for procid in (0, 1):
      spec, task_type, task_id, accelerators = self.resolve(_slurm_env(procid))
      self.assertEqual(spec, {'worker': [f'node01:{base}', f'node02:{base}']})
      self.assertEqual((task_type, task_id), ('worker', procid))
      self.assertEqual(accelerators, {})  # no GPU asked: one CPU replica per worker

  def test_slurm_one_node_two_tasks_get_consecutive_ports(self):
    env = {**_slurm_env(1, nodes='node01', tasks_per_node='2'), strategy_lib.PORT_BASE_ENV: '20000'}
    spec, task_type, task_id, _ = self.resolve(env)
    self.assertEqual(spec, {'worker': ['node01:20000', 'node01:20001']})
    self.assertEqual((task_type, task_id), ('worker', 1))

  def test_slurm_leaves_cuda_visible_devices_alone(self):
    env = {**_slurm_env(1), 'CUDA_VISIBLE_DEVICES': '3'}
    with mock.patch.dict(os.environ, env, clear=True):
      r = strategy_lib.cluster_resolver(num_gpus=1)
      self.assertEqual(os.environ['CUDA_VISIBLE_DEVICES'], '3')
    self.assertEqual(r.num_accelerators(), {'GPU': 1})

  def test_slurm_port_base_differs_between_jobs_and_stays_below_ephemeral_ports(self):
    bases = {strategy_lib.default_port_base(str(job)) for job in range(1000, 1100)}
    self.assertLen(bases, 100)
    self.assertTrue(all(12000 <= b < 32000 for b in bases))

  def test_slurm_job_without_step_asks_for_srun(self):
    env = {k: v for k, v in _slurm_env(0).items() if not k.startswith('SLURM_STEP')}
    with self.assertRaisesRegex(UserError, 'not in a job step.*srun'):
      self.resolve(env)

  def test_no_cluster(self):
    with self.assertRaisesRegex(UserError, 'set TF_CONFIG, run under Slurm.*--local_workers'):
      self.resolve({'PATH': os.environ.get('PATH', '')})


class BuildErrorsTest(tf.test.TestCase):
  """Refusals that happen before any device or cluster is set up: safe in this process."""

  def test_multi_worker_without_cluster(self):
    config = helpers.tiny_config(strategy='multi_worker_mirrored')
    with mock.patch.dict(os.environ, {'PATH': os.environ.get('PATH', '')}, clear=True):
      with self.assertRaisesRegex(UserError, 'needs a cluster: set TF_CONFIG'):
        strategy_lib.build(config)

  def test_multi_worker_refuses_cpu_split(self):
    config = helpers.tiny_config(strategy='multi_worker_mirrored', num_cpu_devices=2)
    with self.assertRaisesRegex(UserError, 'num_cpu_devices=2 does not apply'):
      config_lib.validate(config)

  def test_more_gpus_than_the_machine_has(self):
    n = len(tf.config.list_physical_devices('GPU')) + 1
    with self.assertRaisesRegex(UserError, f'num_gpus={n} but this machine has {n - 1} GPU'):
      strategy_lib.build(helpers.tiny_config(num_gpus=n))

  def test_empty_tf_config(self):
    with mock.patch.dict(os.environ, {'TF_CONFIG': ' '}):
      with self.assertRaisesRegex(UserError, 'TF_CONFIG is set but empty: unset it'):
        strategy_lib.build(helpers.tiny_config(strategy='mirrored'))

  def test_unknown_strategy(self):
    with self.assertRaisesRegex(UserError, "unknown strategy 'horovod'.*multi_worker_mirrored"):
      config_lib.validate(helpers.tiny_config(strategy='horovod'))

  def test_default_and_one_device_without_gpus(self):
    for name in ('default', 'one_device'):
      strategy = strategy_lib.build(helpers.tiny_config(strategy=name, num_gpus=0))
      self.assertEqual(strategy.num_replicas_in_sync, 1)


def _fake(cluster, task_type, task_id):
  """A strategy as the helpers see it: only its cluster resolver matters."""
  return types.SimpleNamespace(cluster_resolver=_SimpleResolver(
      tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id))


_WORKERS = {'worker': ['w0:1', 'w1:1', 'w2:1']}
_CHIEF = {'chief': ['c:1'], 'worker': ['w0:1', 'w1:1'], 'evaluator': ['e:1']}


class WorkerHelpersTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ('first_worker', _WORKERS, 'worker', 0, True, 0, 3),
      ('last_worker', _WORKERS, 'worker', 2, False, 2, 3),
      ('chief', _CHIEF, 'chief', 0, True, 0, 3),
      ('worker_0_beside_a_chief', _CHIEF, 'worker', 0, False, 1, 3),
      ('worker_1_beside_a_chief', _CHIEF, 'worker', 1, False, 2, 3),
  )
  def test_multi_worker(self, cluster, task_type, task_id, chief, index, count):
    strategy = _fake(cluster, task_type, task_id)
    self.assertEqual(strategy_lib.is_chief(strategy), chief)
    self.assertEqual(strategy_lib.worker_index(strategy), index)
    self.assertEqual(strategy_lib.num_workers(strategy), count)

  def test_evaluator_is_no_training_worker(self):
    strategy = _fake(_CHIEF, 'evaluator', 0)
    self.assertFalse(strategy_lib.is_chief(strategy))
    with self.assertRaisesRegex(ValueError, 'evaluator'):
      strategy_lib.worker_index(strategy)

  def test_single_worker_strategies(self):
    no_task = _fake({}, None, None)  # what MultiWorkerMirroredStrategy without a cluster has
    for strategy in (tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(['/cpu:0']),
                     no_task):
      self.assertTrue(strategy_lib.is_chief(strategy))
      self.assertEqual(strategy_lib.worker_index(strategy), 0)
      self.assertEqual(strategy_lib.num_workers(strategy), 1)


def _python(script, env=None, timeout=120):
  """Runs `python -c script` from the repo root; returns the CompletedProcess."""
  return subprocess.run([sys.executable, '-c', script], cwd=helpers.ROOT, capture_output=True,
                        text=True, timeout=timeout,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', **(env or {})})


def _last_json(proc):
  return json.loads(proc.stdout.strip().splitlines()[-1])


_MIRRORED_BATCHES = '''
import json
from research.core import config
from research.core import strategy
from research.core.errors import UserError
from research.train import optim
from tests import helpers
ok = strategy.build(helpers.tiny_config(strategy='mirrored', num_cpu_devices=2, batch_size=8))
try:
  config.validate(helpers.tiny_config(batch_size=7), ok.num_replicas_in_sync)
  error = None
except UserError as e:
  error = str(e)
print(json.dumps({'replicas': ok.num_replicas_in_sync, 'error': error}))
'''

_TPU = '''
import json, sys
from research.core import strategy
from research.core.errors import UserError
from research.train import optim
from tests import helpers
errors = []
for tpu in (sys.argv[1], ''):
  try:
    strategy.build(helpers.tiny_config(strategy='tpu', tpu=tpu))
    errors.append(None)
  except UserError as e:
    errors.append(str(e))
print(json.dumps(errors))
'''


class FreshProcessTest(tf.test.TestCase):

  def test_batch_must_divide_over_two_logical_cpus(self):
    proc = _python(_MIRRORED_BATCHES)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    result = _last_json(proc)
    self.assertEqual(result['replicas'], 2)
    self.assertEqual(result['error'], 'batch_size 7 does not divide over 2 replicas: make it a '
                     'multiple of 2')

  def test_tpu_without_a_tpu(self):
    port = local_cluster.free_ports(1)[0]  # nothing listens there: refused at once
    start = time.time()
    proc = _python(_TPU.replace('sys.argv[1]', repr(f'grpc://127.0.0.1:{port}')))
    self.assertLess(time.time() - start, 60)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    unreachable, local = _last_json(proc)
    self.assertRegex(unreachable, rf'^strategy tpu: cannot reach the TPU at grpc://127.0.0.1:'
                     rf'{port} .*check --config.tpu$')
    self.assertRegex(local, r"^strategy tpu found no TPU 'local' .*--config.tpu=NAME")
    for message in (unreachable, local):
      self.assertNotIn('\n', message)


# A worker of a 2-worker cluster (TF_CONFIG): builds the strategy from a config, trains a small
# Keras model 3 steps on data that differ per worker, prints what the test checks as JSON.
_WORKER = '''
import hashlib, json, sys
from research.core import strategy as strategy_lib
from tests import helpers
import keras, numpy as np, tensorflow as tf
config = helpers.tiny_config(strategy='multi_worker_mirrored', num_gpus=0, batch_size=8,
                             cluster_timeout_seconds=float(sys.argv[1]))
strategy = strategy_lib.build(config)
with strategy.scope():
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
  optimizer = keras.optimizers.SGD(0.1)
  optimizer.build(model.trainable_variables)
initial = [v.numpy() for v in model.weights]
contexts = []

def dataset(ctx):
  contexts.append((ctx.num_input_pipelines, ctx.input_pipeline_id))
  x = tf.random.stateless_normal([32, 4], seed=[7, ctx.input_pipeline_id])
  y = tf.random.stateless_uniform([32], [7, ctx.input_pipeline_id], maxval=3, dtype=tf.int32)
  return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(
      ctx.get_per_replica_batch_size(config.batch_size))

@tf.function
def step(iterator):
  def replica(x, y):
    with tf.GradientTape() as tape:
      per_example = keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True)
      loss = tf.nn.compute_average_loss(per_example, global_batch_size=config.batch_size)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
  strategy.run(replica, args=next(iterator))

iterator = iter(strategy.distribute_datasets_from_function(dataset))
for _ in range(3):
  step(iterator)
digest = hashlib.sha256(b''.join(v.numpy().tobytes() for v in model.weights)).hexdigest()
caught = next(int(line.split()[1], 16) for line in open('/proc/self/status')
              if line.startswith('SigCgt:'))
print(json.dumps({
    'sigterm_caught': bool(caught >> (15 - 1) & 1),
    'chief': strategy_lib.is_chief(strategy), 'index': strategy_lib.worker_index(strategy),
    'workers': strategy_lib.num_workers(strategy), 'replicas': strategy.num_replicas_in_sync,
    'contexts': contexts, 'digest': digest,
    'moved': max(float(np.abs(v.numpy() - w).max()) for v, w in zip(model.weights, initial))}))
'''


class TwoWorkersTest(tf.test.TestCase):
  """Two local processes form a MultiWorkerMirroredStrategy cluster over gRPC on localhost."""

  def start(self, addresses, index, timeout):
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2',
           'TF_CONFIG': local_cluster.tf_config(addresses, index)}
    proc = subprocess.Popen([sys.executable, '-c', _WORKER, str(timeout)], cwd=helpers.ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    self.addCleanup(proc.kill)
    return proc

  def test_two_workers_train_in_sync(self):
    addresses = [f'127.0.0.1:{p}' for p in local_cluster.free_ports(2)]
    procs = [self.start(addresses, i, 60) for i in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
      self.assertEqual(proc.returncode, 0, err[-3000:])
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    self.assertEqual((first['chief'], first['index']), (True, 0))
    self.assertEqual((second['chief'], second['index']), (False, 1))
    for result in (first, second):
      self.assertEqual((result['workers'], result['replicas']), (2, 2))
    # Each worker reads its own pipeline (no auto-sharding): ids 0 and 1 of 2.
    self.assertEqual(first['contexts'], [[2, 0]])
    self.assertEqual(second['contexts'], [[2, 1]])
    self.assertGreater(first['moved'], 1e-3)
    # TensorFlow's C++ SIGTERM handler is gone: SIGTERM ends a worker that set no handler.
    self.assertFalse(first['sigterm_caught'] or second['sigterm_caught'])
    # Different data on each worker: only the gradient all-reduce keeps the weights equal.
    self.assertEqual(first['digest'], second['digest'])

  def test_missing_worker_fails_within_the_timeout(self):
    addresses = [f'127.0.0.1:{p}' for p in local_cluster.free_ports(2)]
    start = time.time()
    proc = self.start(addresses, 0, 3)  # worker 1 never starts
    _, err = proc.communicate(timeout=120)
    self.assertLess(time.time() - start, 45)
    self.assertNotEqual(proc.returncode, 0)
    self.assertRegex(err, r'UserError: worker 0: not all 2 workers connected within 3\.0s '
                     rf'\(.*\): start every worker, and check that the first one '
                     rf'\({addresses[0]}\) is reachable')
