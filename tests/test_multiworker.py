"""End to end: `launch.train --strategy=multi_worker_mirrored --local_workers=2` on real MNIST.

Two worker processes on this machine train one model over gRPC: they must end with identical
weights, the chief alone must write the workdir (the other worker's checkpoints go to a
temporary directory it removes), and a worker killed mid-run must end the command, non-zero,
within a bounded time.
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

import tensorflow as tf

from research import outputs
from tests import helpers

_TINY = ['--strategy=multi_worker_mirrored', '--local_workers=2', '--config.batch_size=16',
         '--config.steps_per_loop=2', '--config.log_every_steps=2',
         '--config.dataset.validation_size=100', '--config.eval_batch_size=500']


def _command(workdir, *flags):
  return [sys.executable, '-m', 'launch.train', f'--workdir={workdir}', *_TINY, *flags]


def _env(tmpdir):
  """No cluster from the machine running the test; the workers' temporary files in `tmpdir`."""
  env = {k: v for k, v in os.environ.items() if k != 'TF_CONFIG' and not k.startswith('SLURM')}
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

  def start(self):
    """The command with a run too long to finish, once both workers have logged a step;
    returns (process, output lines so far and to come, worker pids)."""
    helpers.require_real_data()
    tmp = self.create_tempdir().full_path
    self.workdir = os.path.join(tmp, 'run')
    proc = subprocess.Popen(
        _command(self.workdir, '--config.num_train_steps=100000'), cwd=helpers.ROOT,
        env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    self.addCleanup(proc.kill)
    lines, training = [], {0: threading.Event(), 1: threading.Event()}

    def read():
      for line in proc.stdout:
        lines.append(line)
        match = re.match(r'\[worker (\d)\] .*\] step \d+/100000', line)
        if match:
          training[int(match.group(1))].set()

    self.reader = threading.Thread(target=read, daemon=True)
    self.reader.start()
    for i in range(2):
      self.assertTrue(training[i].wait(180), f'worker {i} never trained:\n' + ''.join(lines))
    pids = [int(p) for p in re.search(r'Started 2 workers \(pids \[(\d+), (\d+)\]\)',
                                      ''.join(lines)).groups()]
    return proc, lines, pids

  def test_killed_worker_ends_the_command(self):
    proc, lines, pids = self.start()
    os.kill(pids[1], signal.SIGKILL)
    start = time.time()
    proc.wait(timeout=60)
    self.reader.join(10)
    self.assertLess(time.time() - start, 30)
    self.assertNotEqual(proc.returncode, 0)
    self.assertEqual(lines[-1].strip(), f'error: worker 1 (pid {pids[1]}) was killed by '
                     'SIGKILL; stopped the other workers')
    self.assertFalse(helpers.alive(pids[0]))

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
