"""End to end: `launch.train --strategy=multi_worker_mirrored --local_workers=2` on real MNIST.

Two worker processes on this machine train one model over gRPC: they must end with identical
weights, the chief alone must write the workdir (the other worker's checkpoints go to a
temporary directory it removes), and a worker killed or frozen mid-run must end the command with
the lost-worker status within config.worker_lost_seconds, the chief's last checkpoint whole and
resumable.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from unittest import mock

from absl.testing import parameterized
import tensorflow as tf

from research.core import checkpoints
from research.core import outputs
from research.core import strategy as strategy_lib
from research.core.errors import UserError
from research.infra import processes
from tests import helpers

# A slice of MNIST: what is tested is how the workers start, agree and stop, not what they learn,
# and reading the whole train split took each worker more time than the rest of a short run.
_TINY = ['--strategy=multi_worker_mirrored', '--local_workers=2', '--config.batch_size=16',
         '--config.steps_per_loop=2', '--config.log_every_steps=2',
         '--config.dataset.train_split=train[:2000]', '--config.dataset.test_split=test[:1000]',
         '--config.dataset.validation_size=100', '--config.eval_batch_size=500']


# Short enough for a quick test. The heartbeat timeout is a third of it (research/core/strategy.py):
# a survivor notices the loss once that much of its peer's heartbeats is missing, which leaves
# twice the timeout for a loaded machine. What the test times is that notice (the survivor's
# verdict line), not the exit after it: tearing TensorFlow down takes the longer the busier the
# machine, and depends on nothing the heartbeats decide.
_LOST_SECONDS = 12


def _command(workdir, *flags):
  return [sys.executable, '-m', 'launch.train', f'--workdir={workdir}', *_TINY, *flags]


def _env(tmpdir):
  """No cluster from the machine running the test; the workers' temporary files in `tmpdir`."""
  env = {k: v for k, v in os.environ.items() if k not in helpers.cluster_variables()}
  return {**env, 'TF_CPP_MIN_LOG_LEVEL': '2', 'TMPDIR': tmpdir}


class TwoLocalWorkersTest(tf.test.TestCase):

  @classmethod
  def extra_flags(cls):
    """Flags beside _TINY, for subclasses (runs before the command, with cls.tmp made)."""
    return ()

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    helpers.require_real_data()
    cls.tmp = tempfile.mkdtemp()
    cls.workdir = os.path.join(cls.tmp, 'run')
    cls.worker_tmp = os.path.join(cls.tmp, 'worker_tmp')
    os.makedirs(cls.worker_tmp)
    cls.proc = subprocess.run(
        _command(cls.workdir, '--config.num_train_steps=6', '--config.checkpoint_every_steps=4',
                 *cls.extra_flags()),
        cwd=helpers.ROOT, env=_env(cls.worker_tmp), capture_output=True, text=True,
        timeout=300)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_both_workers_finish(self):
    self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-5000:])
    # TensorFlow's messages (the collectives log some) come once, in absl's format.
    self.assertIn('Collective all_reduce', self.proc.stderr)
    self.assertNotIn('INFO:tensorflow:', self.proc.stderr)
    for i in range(2):
      self.assertRegex(self.proc.stdout, rf'\[worker {i}\] test accuracy .* after 6 steps')

  def test_workers_end_with_identical_weights(self):
    digests = dict(re.findall(r'^\[worker (\d)\] weights digest (\w+)$', self.proc.stdout,
                              re.MULTILINE))
    self.assertLen(digests, 2, self.proc.stdout + self.proc.stderr[-3000:])
    self.assertEqual(digests['0'], digests['1'])
    results = outputs.read_json(os.path.join(self.workdir, 'results.json'))
    self.assertEqual(results['weights_digest'], digests['0'])

  def test_checkpoints_written_once_by_the_chief(self):
    self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-5000:])
    checkpoints = os.path.join(self.workdir, 'checkpoints')
    self.assertEqual(tf.train.get_checkpoint_state(checkpoints).all_model_checkpoint_paths,
                     [os.path.join(checkpoints, f'ckpt-{n}') for n in (4, 6)])
    for root, dirs, files in os.walk(self.workdir):
      for name in dirs + files:
        self.assertNotRegex(name, 'worker|temp', os.path.join(root, name))
    self.assertEqual(os.listdir(self.worker_tmp), [])  # the other worker's are gone


class TwoLocalWorkersStreamingTest(TwoLocalWorkersTest):
  """The same on the streaming path (MNIST from ArrayRecord shards): each worker reads only its
  rows of every global batch, and the chief alone could have prepared the data."""

  @classmethod
  def extra_flags(cls):
    return ('--config.dataset.pipeline=stream',
            f'--data_dir={helpers.streaming_mnist()}')

  def test_both_workers_streamed(self):
    for i in range(2):
      self.assertRegex(self.proc.stderr, rf'\[worker {i}\] .*Loaded mnist \(stream pipeline\)')


class DuringTrainingTest(tf.test.TestCase):
  """A long run, interrupted once both workers train."""

  def start(self, *flags, checkpointed=False):
    """The command with a run too long to finish, once both workers have logged a step (and
    the chief has written a checkpoint, if `checkpointed`); returns (process, output lines so
    far and to come, worker pids)."""
    helpers.require_real_data()
    tmp = self.create_tempdir().full_path
    self.workdir = os.path.join(tmp, 'run')
    self.env = _env(tmp)
    proc = subprocess.Popen(
        _command(self.workdir, '--config.num_train_steps=100000', *flags), cwd=helpers.ROOT,
        env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    self.addCleanup(proc.kill)
    lines, training = [], {0: threading.Event(), 1: threading.Event()}
    self.arrivals = []  # when each line of `lines` was read (time.monotonic())

    def read():
      for line in proc.stdout:
        self.arrivals.append(time.monotonic())
        lines.append(line)
        match = re.match(r'\[worker (\d)\] .*\] step \d+/100000', line)
        if match:
          training[int(match.group(1))].set()

    self.reader = threading.Thread(target=read, daemon=True)
    self.reader.start()
    for i in range(2):
      self.assertTrue(training[i].wait(180), f'worker {i} never trained:\n' + ''.join(lines))
    deadline = time.time() + 60
    while checkpointed and not self.checkpoints():
      self.assertLess(time.time(), deadline, 'no checkpoint:\n' + ''.join(lines[-20:]))
      time.sleep(0.1)
    pids = [int(p) for p in re.search(r'Started 2 workers \(pids \[(\d+), (\d+)\]\)',
                                      ''.join(lines)).groups()]
    for pid in pids:  # a frozen worker left behind by a failed test
      self.addCleanup(lambda pid=pid: helpers.alive(pid) and os.kill(pid, signal.SIGKILL))
    return proc, lines, pids

  def checkpoints(self):
    return checkpoints.checkpoint_paths(os.path.join(self.workdir, 'checkpoints'))

  def lose_worker_1(self, signum):
    """Worker 1 killed or frozen by `signum` mid-run, after a checkpoint: the command must end
    with the lost-worker status within the bound, nothing saved after the loss. Returns the
    output, the pids and the chief's latest checkpoint."""
    proc, lines, pids = self.start(f'--config.worker_lost_seconds={_LOST_SECONDS}',
                                   '--config.checkpoint_every_steps=10', checkpointed=True)
    os.kill(pids[1], signum)
    lost_at = time.monotonic()
    proc.wait(timeout=60)
    self.reader.join(10)
    output = ''.join(lines)
    self.assertEqual(proc.returncode, processes.LOST_WORKER_EXIT_CODE, output[-5000:])
    # The survivor's verdict, and when it came: within the configured bound of the loss.
    noticed = [t for line, t in zip(lines, self.arrivals)
               if re.match(r'\[worker 0\] error: lost worker 1 \(', line)]
    self.assertLen(noticed, 1, output[-3000:])
    self.assertLess(noticed[0] - lost_at, _LOST_SECONDS, output[-3000:])
    self.assertFalse(any(helpers.alive(pid) for pid in pids))
    # The chief's latest checkpoint is whole: listed, restorable, its step counter at its number
    # (a step ends a chunk; one cut short by the loss is never saved).
    latest = self.checkpoints()[-1]
    number = int(latest.rsplit('-', 1)[1])
    self.assertEqual(number % 10, 0)
    self.assertEqual(
        tf.train.load_checkpoint(latest).get_tensor('step/.ATTRIBUTES/VARIABLE_VALUE'), number)
    _, _, _, restored = checkpoints.load_for_inference(self.workdir, latest)
    self.assertEqual(restored, latest)
    last_step = max(int(n) for n in re.findall(r'(?m)^\[worker 0\] .*\] step (\d+)/', output))
    self.assertLessEqual(number, last_step)
    return output, pids, number

  def test_killed_worker_ends_the_run_as_lost_and_it_resumes(self):
    output, pids, number = self.lose_worker_1(signal.SIGKILL)
    self.assertEqual(output.strip().splitlines()[-1],
                     f'error: worker 1 (pid {pids[1]}) was killed by SIGKILL; the others exited '
                     f'by themselves: a lost worker, exit status {processes.LOST_WORKER_EXIT_CODE}')
    # The same command (with an end in reach) resumes from that checkpoint and finishes.
    rerun = subprocess.run(
        _command(self.workdir, f'--config.num_train_steps={number + 2}'), cwd=helpers.ROOT,
        env=self.env, capture_output=True, text=True, timeout=300)
    self.assertEqual(rerun.returncode, 0, rerun.stderr[-5000:])
    self.assertIn(f'Resumed from {os.path.join(self.workdir, "checkpoints", f"ckpt-{number}")}',
                  rerun.stderr)
    for i in range(2):
      self.assertRegex(rerun.stdout, rf'\[worker {i}\] test accuracy .* after {number + 2} steps')

  def test_frozen_worker_ends_the_run_as_lost(self):
    output, pids, _ = self.lose_worker_1(signal.SIGSTOP)
    self.assertEqual(output.strip().splitlines()[-1],
                     f'error: worker 0 (pid {pids[0]}) exited with status '
                     f'{processes.LOST_WORKER_EXIT_CODE}; killed worker 1 (stopped): a lost '
                     f'worker, exit status {processes.LOST_WORKER_EXIT_CODE}')

  def test_sigterm_to_the_command_stops_both_workers_at_one_saved_step(self):
    proc, lines, _ = self.start()
    proc.send_signal(signal.SIGTERM)  # what a scheduler's preemption notice does
    proc.wait(timeout=120)
    self.reader.join(10)
    output = ''.join(lines)
    self.assertEqual(proc.returncode, 0, output[-5000:])
    stops = dict(re.findall(r'^\[worker (\d)\] stopped by SIGTERM at step (\d+), saved',
                            output, re.MULTILINE))
    self.assertLen(stops, 2, output[-5000:])
    self.assertEqual(stops['0'], stops['1'])
    latest = tf.train.latest_checkpoint(os.path.join(self.workdir, 'checkpoints'))
    self.assertEqual(os.path.basename(latest), f'ckpt-{stops["0"]}')


def _worker_of_two(index):
  """A stand-in multi-worker strategy: worker `index` of a 2-worker cluster."""
  spec = tf.train.ClusterSpec({'worker': ['localhost:1', 'localhost:2']})
  return types.SimpleNamespace(cluster_resolver=tf.distribute.cluster_resolver.
                               SimpleClusterResolver(spec, task_type='worker', task_id=index))


class LostWorkerErrorsTest(tf.test.TestCase, parameterized.TestCase):
  """Which worker a survivor names, from TensorFlow's errors as the workers above met them."""

  @parameterized.named_parameters(
      # worker 1 frozen or killed: the service on worker 0 missed its heartbeats
      ('heartbeats_stopped', 0, tf.errors.UnavailableError,
       'Graph execution error:\n\nDetected at node while/CollectiveReduceV2\nCollective ops is '
       'aborted by: Error reported from /job:worker/task:1: The following tasks are unhealthy '
       '(stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed.',
       'worker 1', 'its heartbeats stopped'),
      # worker 0, the leader, killed: its connections closed
      ('leader_killed', 1, tf.errors.UnavailableError,
       'Collective ops is aborted by: recvmsg:Connection reset by peer\nAdditional GRPC error '
       'information from remote target /job:worker/replica:0/task:0 while calling '
       '/tensorflow.WorkerService/RecvBuf:', 'worker 0', 'recvmsg:Connection reset by peer'),
      # worker 0, the leader, frozen: this worker's heartbeats to it time out
      ('leader_frozen', 1, tf.errors.DeadlineExceededError,
       'Collective ops is aborted by: Deadline Exceeded\nRPC: '
       '/tensorflow.CoordinationService/Heartbeat\nThe error could be from a previous operation.',
       'worker 0', 'it stopped answering heartbeats'),
      ('unknown', 0, tf.errors.CancelledError, 'Cancelled', '', 'Cancelled'))
  def test_names_the_lost_worker(self, index, error, message, lost, why):
    with self.assertRaises(strategy_lib.WorkerLostError) as caught:
      with strategy_lib.lost_worker_errors(_worker_of_two(index)):
        raise error(None, None, message)
    self.assertEqual(caught.exception.lost, lost)
    self.assertEqual(str(caught.exception),
                     f'lost {lost or "another worker"} ({error.__name__}: {why}): stopped '
                     'without saving; re-run the same command to resume from the last checkpoint')

  def test_other_errors_and_one_worker_pass_through(self):
    with self.assertRaises(tf.errors.InvalidArgumentError):
      with strategy_lib.lost_worker_errors(_worker_of_two(0)):
        raise tf.errors.InvalidArgumentError(None, None, 'a bug')
    with self.assertRaises(tf.errors.UnavailableError):
      with strategy_lib.lost_worker_errors(tf.distribute.get_strategy()):
        raise tf.errors.UnavailableError(None, None, 'a file system away')

  def test_a_bound_too_short_for_the_heartbeats_is_refused(self):
    config = helpers.tiny_config(strategy='multi_worker_mirrored', num_gpus=0,
                                 worker_lost_seconds=2.0)
    tf_config = '{"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": ' \
                '"worker", "index": 1}}'
    with mock.patch.dict(os.environ, {'TF_CONFIG': tf_config}):
      with self.assertRaisesRegex(UserError, r'^worker_lost_seconds=2.0 is too short for the '
                                  r'heartbeats: give 3 or more$'):
        strategy_lib.build(config)
