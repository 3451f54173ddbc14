"""A workdir is never corrupted or lost: one writer at a time, and failed writes lose nothing.

The lock's rules are tested on lock files written by hand (a live process, a dead one, a reused
PID, another host, the same job); two real `launch.train` processes on one workdir show the
refusal and the take-over. Failed writes are real ones: ENOSPC from /dev/full behind the
temporary file of a JSON write, and from a full tmpfs under TensorFlow's checkpoint and event
writers.
"""

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from unittest import mock

from absl.testing import parameterized
import numpy as np
from PIL import Image
import tensorflow as tf

from research.apps import evaluate
from research.apps import predict
from research.core import checkpoints
from research.core import layout
from research.core.errors import UserError
from research.infra import processes
from research.infra import workdir_lock
from research.train import saving
from research.train import setup as setup_lib
from research.train import trainer
from tests import helpers

_ENOSPC = r'No space left on device \(ENOSPC, errno 28\)'


def _write_holder(workdir, age=0.0, **fields):
  os.makedirs(workdir, exist_ok=True)
  holder = {'host': socket.gethostname(), 'pid': 1, 'pid_start': None, 'job_id': '',
            'since': '2026-01-01T00:00:00+00:00', **fields}
  path = os.path.join(workdir, layout.LOCK)
  with open(path, 'w') as f:
    json.dump(holder, f)
  os.utime(path, (time.time() - age, time.time() - age))


@contextlib.contextmanager
def _sleeper():
  proc = subprocess.Popen(['sleep', '600'])
  try:
    yield proc
  finally:
    proc.kill()
    proc.wait()


class LockRulesTest(tf.test.TestCase):
  """Who may take a held lock, and what a refusal says."""

  def setUp(self):
    super().setUp()
    self.workdir = self.create_tempdir().full_path
    self.enter_context(mock.patch.dict(os.environ, {'SLURM_JOB_ID': '', 'RESEARCH_JOB_ID': ''}))

  def test_the_lock_names_its_holder_and_release_removes_it(self):
    lock = workdir_lock.WorkdirLock(self.workdir).acquire()
    held = workdir_lock.read(self.workdir)
    self.assertEqual(held['pid'], os.getpid())
    self.assertEqual(held['host'], socket.gethostname())
    self.assertIn(f'held by pid {os.getpid()} on {socket.gethostname()}',
                  workdir_lock.status(self.workdir))
    lock.release()
    self.assertIsNone(workdir_lock.read(self.workdir))
    self.assertIn('free', workdir_lock.status(self.workdir))

  def test_a_live_process_on_this_host_keeps_it(self):
    with _sleeper() as proc:
      _write_holder(self.workdir, pid=proc.pid,
                    pid_start=processes.start_ticks(proc.pid), job_id='41')
      with self.assertRaisesRegex(
          UserError, rf'workdir .* is in use by another run \(pid {proc.pid} on '
          rf'{re.escape(socket.gethostname())}, job 41, since 2026-01-01.*\): wait for it'):
        workdir_lock.WorkdirLock(self.workdir).acquire()
    self.assertEqual(workdir_lock.read(self.workdir)['pid'], proc.pid)  # untouched

  def test_a_dead_process_or_a_reused_pid_on_this_host_is_taken_over(self):
    with _sleeper() as proc:
      start = processes.start_ticks(proc.pid)
    for pid, pid_start in ((proc.pid, start), (os.getppid(), 1)):  # gone; PID of another process
      _write_holder(self.workdir, pid=pid, pid_start=pid_start)
      with self.assertLogs(level='WARNING') as logs:
        lock = workdir_lock.WorkdirLock(self.workdir).acquire()
      self.assertIn('its process is no longer running', '\n'.join(logs.output))
      self.assertEqual(workdir_lock.read(self.workdir)['pid'], os.getpid())
      lock.release()

  def test_another_host_keeps_it_until_stale(self):
    _write_holder(self.workdir, host='elsewhere', pid=123, age=60)
    with self.assertRaisesRegex(UserError, r'pid 123 on elsewhere.* refreshed 60s ago'):
      workdir_lock.WorkdirLock(self.workdir, stale_seconds=300).acquire()
    _write_holder(self.workdir, host='elsewhere', pid=123, age=400)
    with self.assertLogs(level='WARNING') as logs:
      workdir_lock.WorkdirLock(self.workdir, stale_seconds=300).acquire().release()
    self.assertIn('not refreshed for 400s', '\n'.join(logs.output))

  def test_an_earlier_start_of_the_same_job_is_taken_over(self):
    _write_holder(self.workdir, host='elsewhere', pid=123, job_id='77')
    with mock.patch.dict(os.environ, {'SLURM_JOB_ID': '78'}):
      with self.assertRaises(UserError):
        workdir_lock.WorkdirLock(self.workdir).acquire()
    with mock.patch.dict(os.environ, {'SLURM_JOB_ID': '77'}):
      lock = workdir_lock.WorkdirLock(self.workdir).acquire()
    self.assertEqual(workdir_lock.read(self.workdir)['job_id'], '77')
    lock.release()

  def test_the_holder_refreshes_it_and_stops_writing_once_taken_over(self):
    lock = workdir_lock.WorkdirLock(self.workdir, heartbeat_seconds=0.05).acquire()
    path = os.path.join(self.workdir, layout.LOCK)
    os.utime(path, (time.time() - 1000, time.time() - 1000))
    time.sleep(0.5)
    self.assertLess(workdir_lock.read(self.workdir)['age'], 5)
    lock.check()
    _write_holder(self.workdir, host='elsewhere', pid=9)
    with self.assertRaisesRegex(UserError, r'lost the lock of workdir .*now pid 9 on elsewhere'):
      lock.check()
    lock.release()  # not ours any more: left in place
    self.assertEqual(workdir_lock.read(self.workdir)['pid'], 9)


def _train_args(workdir, steps):
  # Small splits: the final evaluation of a finished run is no part of what is tested.
  return [f'--workdir={workdir}', '--config=configs/cnn_mnist.py',
          f'--config.num_train_steps={steps}', '--config.batch_size=64',
          '--config.dataset.train_split=train[:7000]', '--config.dataset.validation_size=2000',
          '--config.dataset.test_split=test[:2000]', '--config.eval_every_epochs=100',
          '--config.eval_batch_size=1000', '--config.steps_per_loop=5',
          '--config.log_every_steps=5', '--config.checkpoint_every_steps=5',
          '--config.image_grid_size=0', '--mixed_precision=float32']


class TwoTrainersTest(tf.test.TestCase):
  """Real processes: a second run on a held workdir is refused; a dead holder's is taken over."""

  def test_second_run_refused_then_takes_over_from_a_killed_first(self):
    helpers.require_real_data()
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', 'SLURM_JOB_ID': '', 'RESEARCH_JOB_ID': ''}
    first = subprocess.Popen([sys.executable, '-m', 'launch.train', *_train_args(workdir, 100000)],
                             cwd=helpers.ROOT, env=env, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    # The checks run forked from a server, whose imports overlap the first run's start-up.
    helpers.command_server()
    try:
      for line in first.stdout:
        if re.search(r'step 10/', line):
          break
      holder = rf'pid {first.pid} on {re.escape(socket.gethostname())}'
      for extra in ([], ['--start_over']):
        second = helpers.run_forked('launch.train', *_train_args(workdir, 100000), *extra,
                                    env={'SLURM_JOB_ID': ''})
        self.assertEqual(second.returncode, 2, second.stderr[-2000:])
        self.assertRegex(helpers.error_line(second),
                         rf'^error: workdir .* is in use by another run \({holder}, since ')
      self.assertEqual(os.listdir(os.path.dirname(workdir)), ['run'])  # nothing moved aside
      status = helpers.run_forked('launch.submit', '--status', f'--workdir={workdir}')
      self.assertRegex(status.stdout, rf'workdir lock: held by {holder}')
      export = helpers.run_forked('launch.export', f'--workdir={workdir}',
                                  f'--out={os.path.join(workdir, "export")}', '--checkpoint=latest')
      self.assertEqual(export.returncode, 2, export.stderr[-2000:])
      self.assertRegex(helpers.error_line(export), r'lies inside the training workdir')
    finally:
      first.kill()  # kill -9: the lock stays behind, naming a dead process
      first.wait()
    latest = checkpoints.checkpoint_paths(os.path.join(workdir, 'checkpoints'))[-1]
    step = int(latest.rsplit('-', 1)[1])
    third = helpers.run_forked('launch.train', *_train_args(workdir, step + 5),
                               env={'SLURM_JOB_ID': ''})
    self.assertEqual(third.returncode, 0, third.stderr[-3000:])
    self.assertRegex(third.stderr, rf'Taking over the lock of .* from pid {first.pid} .*its '
                     'process is no longer running')
    self.assertRegex(third.stderr, rf'Resumed from .*ckpt-{step}: step {step} ')
    self.assertIsNone(workdir_lock.read(workdir))  # released at the end


@contextlib.contextmanager
def _mounted(test, what, *steps):
  """A new directory that each mount command of `steps` (its argv, the directory appended) is
  applied to in turn (needs root, as CI has); yields its path. `what` names the mount."""
  path = test.create_tempdir().full_path
  for i, argv in enumerate(steps):
    mount = subprocess.run(argv + [path], capture_output=True, text=True)
    if mount.returncode:
      if i:
        subprocess.run(['umount', '-l', path], check=False)
      if os.environ.get('CI'):
        test.fail(f'cannot mount {what}: {mount.stderr.strip()}')
      test.skipTest(f'mounting {what} needs root: {mount.stderr.strip()}')
  try:
    yield path
  finally:
    subprocess.run(['umount', '-l', path], check=False)


def _small_disk(test, size='64m'):
  """A tmpfs of `size` on a new directory; yields its path."""
  return _mounted(test, 'a tmpfs for the full-disk tests',
                  ['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs'])


def _read_only(test, source):
  """`source` bind-mounted read-only on a new directory; yields its path."""
  return _mounted(test, 'a read-only bind mount', ['mount', '--bind', source],
                  ['mount', '-o', 'remount,bind,ro'])


def _fill(directory):
  """Takes every free byte of `directory`'s filesystem."""
  with open(os.path.join(directory, 'filler'), 'wb', buffering=0) as f:
    with contextlib.suppress(OSError):
      while True:
        f.write(b'\0' * (1 << 16))


def _leftovers(workdir):
  """Temporary or partial files a failed write might have left."""
  found = []
  for root, dirs, files in os.walk(workdir):
    found += [os.path.join(root, n) for n in dirs + files
              if '_temp' in n or n.endswith('.tmp') or '.tempstate' in n]
  return found


class FailedWritesTest(tf.test.TestCase, parameterized.TestCase):
  """Disk full at each write site: one line with the path and errno; nothing complete lost."""

  def _train(self, workdir, **overrides):
    config = helpers.tiny_config(**{'checkpoint_every_steps': 2, **overrides})
    with helpers.mock_tfds():
      return trainer.train_and_evaluate(config, workdir)

  @parameterized.parameters('config.json', 'data_info.json', 'results.json',
                            'checkpoints/best/best.json')
  def test_full_disk_at_a_json_file(self, name):
    workdir = self.create_tempdir().full_path
    path = os.path.join(workdir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink('/dev/full', path + '.tmp')  # the atomic write's temporary file: ENOSPC
    with self.assertRaisesRegex(UserError, rf'^could not write file {re.escape(path)}: '
                                rf'{_ENOSPC}') as raised:
      self._train(workdir)
    self.assertNotIn('\n', str(raised.exception))
    self.assertFalse(os.path.lexists(path + '.tmp'))
    self.assertFalse(os.path.exists(path))
    self.assertIsNone(workdir_lock.read(workdir))  # a failed run lets the workdir go

  def test_full_disk_at_a_checkpoint_keeps_the_one_before(self):
    with _small_disk(self) as disk:
      workdir = os.path.join(disk, 'run')
      self._train(workdir, num_train_steps=2)
      save = saving.Saver.save

      def fill_then_save(saver, step):
        _fill(disk)
        return save(saver, step)

      with mock.patch.object(saving.Saver, 'save', fill_then_save):
        with self.assertRaisesRegex(
            UserError, rf'^could not write checkpoint {re.escape(workdir)}/checkpoints/ckpt-4: '
            rf'{_ENOSPC}; the latest checkpoint, .*/ckpt-2, is complete'):
          self._train(workdir, num_train_steps=4)
      self.assertEqual(_leftovers(workdir), [])
      listed = checkpoints.checkpoint_paths(os.path.join(workdir, 'checkpoints'))
      self.assertEndsWith(listed[-1], 'ckpt-2')
      self.assertEmpty([n for n in os.listdir(os.path.join(workdir, 'checkpoints'))
                        if n.startswith('ckpt-4')])
      os.remove(os.path.join(disk, 'filler'))
      with self.assertLogs(level='INFO') as logs:
        self.assertEqual(self._train(workdir, num_train_steps=4)['step'], 4)
      self.assertRegex('\n'.join(logs.output), r'Resumed from .*ckpt-2: step 2 ')

  def test_full_disk_at_the_tensorboard_events(self):
    with _small_disk(self) as disk:
      workdir = os.path.join(disk, 'run')
      self._train(workdir, num_train_steps=2)
      scalar = tf.summary.scalar
      filled = []

      def fill_then_write(*args, **kwargs):
        if not filled:
          _fill(disk)
          filled.append(True)
        return scalar(*args, **kwargs)

      # No checkpoint or evaluation before the end: the events writer's buffer reaches the
      # disk first (after some 70 scalars).
      with mock.patch.object(tf.summary, 'scalar', fill_then_write):
        with self.assertRaisesRegex(
            UserError, rf'^could not write TensorBoard events file {re.escape(workdir)}/'
            rf'(train|validation)/events\.out\.tfevents\.\S+: {_ENOSPC}; the latest '
            r'checkpoint, .*/ckpt-2, is complete'):
          self._train(workdir, num_train_steps=60, checkpoint_every_steps=100,
                      eval_every_epochs=1000.0)
      self.assertEndsWith(
          checkpoints.checkpoint_paths(os.path.join(workdir, 'checkpoints'))[-1], 'ckpt-2')


class FullDiskProcessTest(tf.test.TestCase):
  """launch.train on a disk too small for its first checkpoint: exit 2, one line, no debris."""

  def test_first_checkpoint_does_not_fit(self):
    helpers.require_real_data()
    with _small_disk(self, size='512k') as disk:
      workdir = os.path.join(disk, 'run')
      proc = helpers.run_cli('launch.train', *_train_args(workdir, 10))
      self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
      self.assertRegex(helpers.error_line(proc),
                       rf'^error: could not write checkpoint {re.escape(workdir)}/checkpoints/'
                       rf'ckpt-5: {_ENOSPC}; no checkpoint was saved yet')
      self.assertEqual(_leftovers(workdir), [])
      self.assertEqual(checkpoints.checkpoint_paths(os.path.join(workdir, 'checkpoints')), [])
      self.assertIsNone(workdir_lock.read(workdir))
      self.assertTrue(os.path.exists(os.path.join(workdir, 'config.json')))


class MultiWorkerLockTest(tf.test.TestCase):
  """Workers of one job share the chief's lock, and all of them hear of a refusal."""

  def test_a_held_workdir_stops_every_worker_of_a_local_cluster(self):
    helpers.require_real_data()
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    env = {k: v for k, v in os.environ.items() if k != 'TF_CONFIG' and not k.startswith('SLURM')}
    with _sleeper() as holder:
      _write_holder(workdir, pid=holder.pid, pid_start=processes.start_ticks(holder.pid))
      proc = subprocess.run(
          [sys.executable, '-m', 'launch.train', f'--workdir={workdir}',
           '--strategy=multi_worker_mirrored', '--local_workers=2', '--config.batch_size=16',
           '--config.num_train_steps=4', '--config.dataset.validation_size=100'],
          cwd=helpers.ROOT, env={**env, 'TF_CPP_MIN_LOG_LEVEL': '2'}, capture_output=True,
          text=True, timeout=300)
    self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
    self.assertRegex(proc.stderr, rf'\[worker 0\] error: workdir .* is in use by another run '
                     rf'\(pid {holder.pid} ')
    self.assertRegex(proc.stderr, r'\[worker 1\] error: the chief could not take the lock of '
                     'workdir')
    self.assertEqual(os.listdir(workdir), [layout.LOCK])  # the holder's; nothing else


class UnusableWorkdirTest(tf.test.TestCase, parameterized.TestCase):
  """A workdir that cannot be created or written, or is no run's, is one line and nothing
  written; a finished run on read-only storage is still evaluated and predicted from."""

  @parameterized.named_parameters(
      ('parent_is_a_file', lambda tmp: os.path.join(tmp, 'file', 'run'),
       r'Not a directory \(ENOTDIR, errno 20\)'),
      ('name_too_long', lambda tmp: os.path.join(tmp, 'x' * 300),
       r'File name too long \(ENAMETOOLONG, errno 36\)'),
      ('empty', lambda tmp: '', '--workdir is empty'),
  )
  def test_one_line_and_nothing_written(self, workdir_in, message):
    tmp = self.create_tempdir().full_path
    with open(os.path.join(tmp, 'file'), 'w') as f:
      f.write('a file\n')
    config = helpers.tiny_config(image_grid_size=0)
    with helpers.mock_tfds(), self.assertRaisesRegex(UserError, message):
      trainer.train_and_evaluate(config, workdir_in(tmp))
    self.assertEqual(sorted(os.listdir(tmp)), ['file'])

  def test_a_folder_of_other_files_is_not_written_into(self):
    folder = self.create_tempdir().full_path
    for name in ('a.png', 'b.png', 'notes.txt', 'zz.txt'):
      with open(os.path.join(folder, name), 'w') as f:
        f.write(name)
    with self.assertRaisesRegex(UserError, r"directory of other files \(a.png, b.png, "
                                r"notes.txt, ...\), not a run"):
      setup_lib.check_workdir(helpers.tiny_config(), folder, start_over=True)
    self.assertEqual(sorted(os.listdir(folder)), ['a.png', 'b.png', 'notes.txt', 'zz.txt'])

  def test_a_finished_run_on_read_only_storage_is_evaluated_and_predicted_from(self):
    run = os.path.join(self.create_tempdir().full_path, 'run')
    config = helpers.tiny_config(image_grid_size=0)
    with helpers.mock_tfds():
      trainer.train_and_evaluate(config, run)
    files = sorted(os.listdir(run))
    with _read_only(self, run) as ro, helpers.mock_tfds():
      with self.assertRaisesRegex(UserError, r'Read-only file system \(EROFS, errno 30\).*'
                                  'launch.evaluate --out'):
        trainer.train_and_evaluate(config, ro)
      with self.assertLogs(level='WARNING') as logs:
        metrics = evaluate.evaluate(ro, 'test')
      self.assertTrue(any('is read-only: the metrics are printed, not written' in line
                          for line in logs.output), logs.output)
      self.assertBetween(metrics['accuracy'], 0.0, 1.0)
      out = os.path.join(self.create_tempdir().full_path, 'eval')
      evaluate.evaluate(ro, 'test', out=out)
      self.assertCountEqual(os.listdir(out), ['eval_test.json', 'confusion_test.png'])
      image = os.path.join(self.create_tempdir().full_path, 'digit.png')
      Image.fromarray(np.full((28, 28), 200, np.uint8)).save(image)
      (prediction,) = predict.predict(ro, [image])
      self.assertEqual(prediction.error, '')
      self.assertLen(prediction.top, 3)
    self.assertEqual(sorted(os.listdir(run)), files)
