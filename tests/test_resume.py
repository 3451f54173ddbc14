"""Exact resume and preemption safety, with real processes and real signals.

A deterministic run of N steps and the same run stopped by SIGTERM (or killed with SIGKILL at
random points) and resumed must end with bitwise-equal weights: the checkpoint holds every state
that shapes training, and nothing else needs restoring.
"""

import glob
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from research.core import checkpoints
from research.core import outputs
from research.core.errors import UserError
from research.infra import preemption
from research.train import setup as setup_lib
from research.train import steps
from research.train import trainer
from tests import helpers

# 2,500 training examples at batch 64: 39 steps an epoch, so the run crosses epoch boundaries
# (a new shuffle each) and stops land mid-epoch; 1,000 validation examples, evaluated at the end
# only. Deterministic ops: bitwise repeatable.
_STEPS = 150
_FLAGS = ('--config.dataset.train_split=train[:3500]',
          '--config.batch_size=64', '--config.dataset.validation_size=1000',
          '--config.eval_every_epochs=100', '--config.eval_batch_size=1000',
          '--config.steps_per_loop=25', '--config.log_every_steps=25',
          '--config.checkpoint_every_steps=25', '--config.image_grid_size=0',
          '--deterministic')


def _start(workdir, config='configs/cnn_mnist.py', extra=()):
  """launch.train in the background, its output (absl's log) read line by line."""
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  return subprocess.Popen([sys.executable, '-m', 'launch.train', f'--workdir={workdir}',
                           f'--config={config}', *_FLAGS, *extra], cwd=helpers.ROOT, env=env,
                          text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(proc, pattern, timeout=120):
  """Reads the process' output until a line matches `pattern`; returns the lines read."""
  lines, deadline = [], time.time() + timeout
  for line in proc.stdout:
    lines.append(line)
    if re.search(pattern, line) or time.time() > deadline:
      return lines
  return lines


def _finish(proc, timeout=300):
  out, _ = proc.communicate(timeout=timeout)
  return out


def _results(workdir):
  return outputs.read_json(os.path.join(workdir, 'results.json'))


class ProcessResumeTest(tf.test.TestCase):
  """One uninterrupted reference run, then interrupted runs that must end identical to it."""

  CONFIG = 'configs/cnn_mnist.py'  # batch norm and augmentation
  EXTRA = ()
  STEPS = _STEPS
  # Each of the four kinds of point once (a random point of each): a kill costs a start-up,
  # and more kills of one kind add samples of a case already tested, not a case.
  KILLS = 4

  def assert_same_run(self, workdir):
    """Bitwise-equal weights on one device."""
    self.assertEqual(_results(workdir)['weights_digest'],
                     _results(self.reference)['weights_digest'])

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    helpers.require_real_data()
    cls.tmp = tempfile.mkdtemp()
    cls.reference = os.path.join(cls.tmp, 'reference')
    out = cls.finish(cls.reference)
    assert os.path.exists(os.path.join(cls.reference, 'results.json')), out[-3000:]

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)

  @classmethod
  def extra(cls):
    """The flags beside _FLAGS: the run's length, then the class' own."""
    return (f'--config.num_train_steps={cls.STEPS}', *cls.EXTRA)

  @classmethod
  def finish(cls, workdir):
    """launch.train on `workdir` to its end; its output. Forked (helpers.run_forked): a run no
    signal interrupts needs no interpreter of its own."""
    proc = helpers.run_forked('launch.train', f'--workdir={workdir}', f'--config={cls.CONFIG}',
                              *_FLAGS, *cls.extra())
    return proc.stdout + proc.stderr

  def test_sigterm_mid_epoch_saves_exits_zero_and_resume_ends_as_the_uninterrupted_run(self):
    workdir = os.path.join(self.tmp, 'sigterm')
    proc = _start(workdir, self.CONFIG, self.extra())
    _wait_for(proc, rf'step 25/{self.STEPS}')
    proc.send_signal(signal.SIGTERM)
    out = _finish(proc)
    self.assertEqual(proc.returncode, 0, out[-3000:])
    stopped = _results(workdir)
    self.assertEqual(stopped['preempted'], 'SIGTERM')
    self.assertBetween(stopped['step'], 26, self.STEPS - 1)
    self.assertIn('re-run the same command to resume', out)
    saved = checkpoints.checkpoint_paths(os.path.join(workdir, 'checkpoints'))
    self.assertEndsWith(saved[-1], f'ckpt-{stopped["step"]}')

    out = self.finish(workdir)
    self.assertRegex(out, rf'Resumed from .*ckpt-{stopped["step"]}: step {stopped["step"]} ')
    resumed = _results(workdir)
    self.assertEqual(resumed['step'], self.STEPS)
    self.assertEqual(resumed['preempted'], '')
    self.assert_same_run(workdir)

  def _kill(self, proc, kind, rng, directory):
    """SIGKILLs `proc` at a point of `kind`; returns where, in words."""
    if kind == 'start-up':  # importing, loading data, building, restoring
      time.sleep(rng.uniform(0.0, 4.0))
    elif kind == 'training':  # a step or two of logging after a chosen one: steps, saving
      listed = checkpoints.checkpoint_paths(directory)
      done = int(listed[-1].rsplit('-', 1)[1]) if listed else 0
      # By steps, not seconds: on a fast machine seconds would finish the run before the last
      # kills, which then strike a process that has nothing left to train.
      target = min(done + 25 * rng.randint(1, 2), self.STEPS - 25)
      if target > done:
        _wait_for(proc, rf'step {target}/{self.STEPS}')
        time.sleep(rng.uniform(0.0, 0.5))
      else:  # nothing left to train before the end: its start-up
        _wait_for(proc, r'Strategy ')
        time.sleep(rng.uniform(0.0, 1.0))
    elif kind == 'checkpoint write':
      partial = _stop_inside_a_checkpoint_write(proc, directory)
      proc.kill()
      return f'inside the write of {partial}' if partial else 'at the end (no write caught)'
    elif kind == 'final evaluation':  # validation, saves, test of 10,000 examples, results
      end = self.STEPS
      _wait_for(proc, rf'step {end}/{end}|Resumed from .*ckpt-{end}:', timeout=300)
      time.sleep(rng.uniform(0.0, 0.5))
    proc.kill()
    return kind

  def test_kill_9_at_random_points_each_resumes_from_the_last_complete_checkpoint(self):
    workdir = os.path.join(self.tmp, 'kill9')
    directory = os.path.join(workdir, 'checkpoints')
    rng = random.Random(0)
    kinds = ['training'] * self.KILLS
    if self.KILLS >= 4:
      # One of each special point, after a training kill so that each finds a checkpoint to
      # resume from; the final evaluation comes last.
      middle = ['start-up', 'checkpoint write'] + ['training'] * (self.KILLS - 4)
      rng.shuffle(middle)
      kinds = ['training', *middle, 'final evaluation']
    for i, kind in enumerate(kinds):
      before = checkpoints.checkpoint_paths(directory)
      proc = _start(workdir, self.CONFIG, self.extra())
      where = self._kill(proc, kind, rng, directory)
      out = _finish(proc)
      after = checkpoints.checkpoint_paths(directory)
      print(f'kill -9 #{i + 1}: {where}; latest checkpoint before the start '
            f'{os.path.basename(before[-1]) if before else "none"}, after the kill '
            f'{os.path.basename(after[-1]) if after else "none"}')
      self.assertEqual(proc.returncode, -signal.SIGKILL, out[-2000:])
      if kind == 'checkpoint write':
        self.assertStartsWith(where, 'inside the write of')
      if kind == 'final evaluation':
        self.assertNotRegex(out, rf'step {self.STEPS} test: ')
      if before and 'Resumed from' in out:
        self.assertIn(f'Resumed from {before[-1]}: ', out)
    last = checkpoints.checkpoint_paths(directory)
    out = self.finish(workdir)
    if last:
      self.assertIn(f'Resumed from {last[-1]}: ', out)
    self.assertEqual(_results(workdir)['step'], self.STEPS)
    self.assert_same_run(workdir)


def _stop_inside_a_checkpoint_write(proc, directory, timeout=300):
  """Watches `directory` for a checkpoint's temporary files and stops `proc` (SIGSTOP) the
  moment they appear; returns their path if they are still there once it is stopped, i.e. the
  process is frozen inside that write. None when the process ends first."""
  deadline = time.time() + timeout
  patterns = [os.path.join(directory, '*_temp'), os.path.join(directory, 'best', '*_temp')]
  while proc.poll() is None and time.time() < deadline:
    partial = [p for pattern in patterns for p in glob.glob(pattern)]
    if partial:
      proc.send_signal(signal.SIGSTOP)
      still = [p for p in partial if os.path.exists(p)]
      if still:
        return still[0]
      proc.send_signal(signal.SIGCONT)
  return None


class DropoutProcessResumeTest(ProcessResumeTest):
  """Dropout draws from Keras SeedGenerators: their states must be in the checkpoint too."""

  CONFIG = 'configs/cnn_dropout_mnist.py'
  test_kill_9_at_random_points_each_resumes_from_the_last_complete_checkpoint = None


class MirroredProcessResumeTest(ProcessResumeTest):
  """The same under MirroredStrategy over 2 logical CPU devices: equal within 1e-6."""

  EXTRA = ('--config.strategy=mirrored', '--config.num_cpu_devices=2')
  # Two epochs, the stop in the first: a mirrored step costs twice a one-device step here, and
  # the more when the machine is busy (each step waits for both replicas' threads).
  STEPS = 80
  test_kill_9_at_random_points_each_resumes_from_the_last_complete_checkpoint = None

  def assert_same_run(self, workdir):
    _, _, model, _ = checkpoints.load_for_inference(workdir, 'latest')
    _, _, reference, _ = checkpoints.load_for_inference(self.reference, 'latest')
    self.assertLen(model.weights, len(reference.weights))
    for a, b in zip(model.weights, reference.weights):
      self.assertAllClose(a.numpy(), b.numpy(), rtol=0, atol=1e-6, msg=a.path)


class StreamingProcessResumeTest(ProcessResumeTest):
  """The same on the streaming path: MNIST read by index from ArrayRecord shards, each example
  decoded and random-resized-cropped on the host, keyed by (seed, epoch, index)."""

  KILLS = 1

  @classmethod
  def setUpClass(cls):
    helpers.require_real_data()
    cls.EXTRA = ('--config.dataset.pipeline=stream', f'--data_dir={helpers.streaming_mnist()}')
    super().setUpClass()

  def test_the_run_streamed(self):
    info = outputs.read_json(os.path.join(self.reference, 'data_info.json'))
    self.assertEqual(info['pipeline'], 'stream')
    self.assertEqual(info['fingerprint']['crop']['size'], 28)


class PreemptionWatcherTest(tf.test.TestCase):

  def test_a_signal_sets_the_flag_and_further_notices_are_ignored_after(self):
    before = {s: signal.getsignal(s) for s in preemption.SIGNALS}
    self.addCleanup(lambda: [signal.signal(s, h) for s, h in before.items()])
    watcher = preemption.Watcher()
    with watcher.watching():
      self.assertEqual(float(watcher.flag.numpy()), 0.0)
    self.assertEqual({s: signal.getsignal(s) for s in preemption.SIGNALS}, before)  # no notice
    with watcher.watching():
      self.assertEqual(float(watcher.flag.numpy()), 0.0)
      os.kill(os.getpid(), signal.SIGUSR1)
      deadline = time.time() + 5
      while not float(watcher.flag.numpy()) and time.time() < deadline:
        time.sleep(0.01)
      self.assertEqual(float(watcher.flag.numpy()), 1.0)
    self.assertEqual(watcher.signal_name, 'SIGUSR1')
    # Stopped: a repeated notice on the way out is ignored, Ctrl-C is the user's again.
    self.assertIs(signal.getsignal(signal.SIGUSR1), signal.SIG_IGN)
    self.assertIs(signal.getsignal(signal.SIGTERM), signal.SIG_IGN)
    self.assertIs(signal.getsignal(signal.SIGINT), before[signal.SIGINT])
    os.kill(os.getpid(), signal.SIGUSR1)  # would end this process by the signal

  def test_train_call_with_the_flag_set_runs_exactly_one_more_step(self):
    config = helpers.tiny_config(num_train_steps=10)
    strategy = tf.distribute.get_strategy()
    model, optimizer, _, step = setup_lib.build_state(config, strategy, 10, (28, 28, 1), 10, 8)
    flag = tf.Variable(1.0)
    train = steps.make_train_fn(strategy, model, optimizer, config, step, flag)
    images = np.zeros((8, 28, 28, 1), np.uint8)
    batches = iter(tf.data.Dataset.from_tensors((images, np.zeros(8, np.int32))).repeat())
    out = train(batches, tf.constant(5))
    self.assertEqual(int(step.numpy()), 1)
    self.assertEqual(out['count'], 8)  # one batch counted
    self.assertGreater(out['stop'], 0)  # and reported as a stop
    flag.assign(0.0)
    self.assertEqual(train(batches, tf.constant(5))['stop'], 0)
    self.assertEqual(int(step.numpy()), 6)


class CheckpointFilesTest(tf.test.TestCase):
  """Fallback past a damaged checkpoint, the best checkpoint, size, NaN guard, starting over."""

  def _train(self, workdir, accept=(), **overrides):
    config = helpers.tiny_config(**{'checkpoint_every_steps': 2, **overrides})
    with helpers.mock_tfds():
      return trainer.train_and_evaluate(config, workdir,
                                        start_over=overrides.get('start_over', False),
                                        accept=accept)

  def test_truncated_latest_checkpoint_resumes_from_the_previous_one(self):
    workdir = self.create_tempdir().full_path
    self._train(workdir, num_train_steps=4)
    latest = checkpoints.checkpoint_paths(os.path.join(workdir, 'checkpoints'))[-1]
    self.assertEndsWith(latest, 'ckpt-4')
    data = latest + '.data-00000-of-00001'
    with open(data, 'r+b') as f:
      f.truncate(os.path.getsize(data) // 2)
    with self.assertLogs(level='INFO') as logs:
      results = self._train(workdir, num_train_steps=6)
    log = '\n'.join(logs.output)
    self.assertIn('ckpt-4 is unreadable', log)
    self.assertRegex(log, r'Resumed from .*ckpt-2: step 2 ')
    self.assertEqual(results['step'], 6)

  def test_resume_adds_to_the_former_train_summary_json(self):
    # A workdir trained before the run record was named results.json holds train_summary.json.
    workdir = self.create_tempdir().full_path
    earlier = {**self._train(workdir, num_train_steps=2), 'train_seconds': 1000.0,
               'wall_seconds': 2000.0}
    os.remove(os.path.join(workdir, 'results.json'))
    former = os.path.join(workdir, 'train_summary.json')
    outputs.write_json(former, earlier)
    results = self._train(workdir, num_train_steps=4)
    self.assertEqual(results['step'], 4)
    self.assertEqual(outputs.read_json(os.path.join(workdir, 'results.json')), results)
    self.assertEqual(outputs.read_json(former), earlier)  # read, never rewritten
    this_run_wall = results['wall_seconds'] - 2000.0
    self.assertGreater(this_run_wall, 0.0)
    self.assertBetween(results['train_seconds'], 1000.0, 1000.0 + this_run_wall)

  def test_best_checkpoint_is_kept_beside_the_latest(self):
    workdir = self.create_tempdir().full_path
    self._train(workdir, num_train_steps=6, keep_checkpoints=1, eval_every_epochs=0.1)
    best = outputs.read_json(os.path.join(workdir, 'checkpoints', 'best', 'best.json'))
    kept = checkpoints.checkpoint_paths(os.path.join(workdir, 'checkpoints', 'best'))
    self.assertLen(kept, 1)
    self.assertEndsWith(kept[0], f'ckpt-{best["step"]}')
    self.assertLen(checkpoints.checkpoint_paths(os.path.join(workdir, 'checkpoints')), 1)

  def test_checkpoint_is_about_the_size_of_model_and_optimizer(self):
    workdir = self.create_tempdir().full_path
    config = helpers.load_config('cnn_mnist')
    config.update(dict(num_train_steps=2, batch_size=8, steps_per_loop=1, image_grid_size=0))
    config.dataset.validation_size = 16
    with helpers.mock_tfds():
      trainer.train_and_evaluate(config, workdir)
    model, optimizer, _, _ = setup_lib.build_state(config, tf.distribute.get_strategy(), 10,
                                                   (28, 28, 1), 2, 1)
    state_bytes = sum(v.numpy().nbytes for v in model.variables + optimizer.variables)
    (path,) = checkpoints.checkpoint_paths(os.path.join(workdir, 'checkpoints'))
    files = tf.io.gfile.glob(path + '.*')
    size = sum(os.path.getsize(f) for f in files)
    self.assertGreater(state_bytes, 3e6)  # large enough for the bound to mean something
    self.assertLessEqual(size, 1.1 * state_bytes + 2**20)

  def test_non_finite_loss_stops_with_the_step_range_and_keeps_good_checkpoints(self):
    workdir = self.create_tempdir().full_path
    self._train(workdir, num_train_steps=2)
    # The resume diverges on purpose: a learning rate the run accepts as a change.
    with self.assertRaisesRegex(UserError, r'between steps \d+ and \d+.*last good checkpoint'):
      self._train(workdir, accept=('schedule',), num_train_steps=30, checkpoint_every_steps=1,
                  schedule=dict(name='constant', learning_rate=1e30, warmup_epochs=0.0,
                                final_fraction=0.0, boundaries_epochs=(1.0,),
                                decay_factor=0.1))
    # every checkpoint left restores to finite weights
    for path in checkpoints.checkpoint_paths(os.path.join(workdir, 'checkpoints')):
      for name, _ in tf.train.list_variables(path):
        if name.startswith('model/'):
          self.assertTrue(np.all(np.isfinite(tf.train.load_variable(path, name))), name)

  def test_start_over_moves_the_old_run_aside(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    self._train(workdir)
    config = helpers.tiny_config('cnn_dropout', checkpoint_every_steps=2)
    with helpers.mock_tfds():
      with self.assertRaisesRegex(UserError, 'pass a new --workdir'):
        trainer.train_and_evaluate(config, workdir)
      results = trainer.train_and_evaluate(config, workdir, start_over=True)
    self.assertEqual(results['step'], 2)
    (aside,) = [d for d in os.listdir(os.path.dirname(workdir)) if '.replaced-' in d]
    old = os.path.join(os.path.dirname(workdir), aside)
    self.assertEqual(outputs.read_json(os.path.join(old, 'config.json'))['model']['name'], 'cnn')
    self.assertNotEmpty(checkpoints.checkpoint_paths(os.path.join(old, 'checkpoints')))


class MixedPrecisionTest(tf.test.TestCase):

  def test_mixed_float16_trains_with_finite_loss_and_checkpoints_the_loss_scale(self):
    workdir = self.create_tempdir().full_path
    config = helpers.tiny_config(num_train_steps=3, mixed_precision='mixed_float16')
    with helpers.mock_tfds():
      results = trainer.train_and_evaluate(config, workdir)
    self.assertTrue(np.isfinite(results['train_loss']))
    (path,) = checkpoints.checkpoint_paths(os.path.join(workdir, 'checkpoints'))
    names = [n for n, _ in tf.train.list_variables(path) if 'dynamic_scale' in n]
    self.assertLen(names, 1)
    self.assertGreater(tf.train.load_variable(path, names[0]), 1.0)
    self.assertEqual(keras.config.dtype_policy().name, 'float32')  # restored after the build
