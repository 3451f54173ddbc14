"""The entry points as a user runs them: bad input gives one clear line, exit != 0, no damage."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image
import tensorflow as tf

from tests import helpers


class TrainFlagsTest(tf.test.TestCase):
  """The rest of train's bad input is tests/test_bad_input.py's table."""

  def test_missing_dataset_offline_fails_fast(self):
    if shutil.which('unshare') is None or os.geteuid() != 0:
      self.skipTest('needs root and unshare to cut the network off')
    workdir = self.create_tempdir().full_path
    empty = self.create_tempdir().full_path
    env = {k: '' for k in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY')}
    start = time.time()
    proc = subprocess.run(
        ['unshare', '-n', sys.executable, '-m', 'launch.train', f'--workdir={workdir}',
         f'--data_dir={empty}', '--dataset=fashion_mnist'], cwd=helpers.ROOT,
        env={**os.environ, **env, 'TF_CPP_MIN_LOG_LEVEL': '2'}, capture_output=True,
        text=True, timeout=120)
    self.assertLess(time.time() - start, 60)
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
    self.assertIn('TFDS_DATA_DIR', helpers.error_line(proc))
    self.assertIn('--data_dir', helpers.error_line(proc))


class RealRunCliTest(tf.test.TestCase):
  """Train once on real MNIST (a few steps), then exercise evaluate, predict and refusals."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    helpers.require_real_data()
    cls.tmp = tempfile.mkdtemp()
    cls.workdir = os.path.join(cls.tmp, 'run')
    # The commands after the training run forked from a server, which makes the imports once
    # (meanwhile); the training and the run started over stay fresh processes, as a user's are.
    helpers.command_server()
    cls.train = helpers.run_cli(
        'launch.train', '--model=cnn', '--dataset=mnist', f'--workdir={cls.workdir}',
        '--config.num_train_steps=30', '--config.batch_size=32', '--config.log_every_steps=10',
        '--config.dataset.train_split=train[:5000]', '--config.dataset.validation_size=500',
        '--config.eval_batch_size=500')

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_train_prints_test_accuracy_and_writes_outputs(self):
    self.assertEqual(self.train.returncode, 0, self.train.stderr[-3000:])
    self.assertIn('test accuracy', self.train.stdout)
    self.assertIn('conv1', self.train.stderr)  # the per-layer table
    self.assertIn('img/s', self.train.stderr)
    for name in ('config.json', 'results.json', 'inputs.png'):
      self.assertTrue(os.path.exists(os.path.join(self.workdir, name)), name)

  def test_train_log_says_once_what_runs_and_has_no_loading_noise(self):
    self.assertEqual(self.train.returncode, 0, self.train.stderr[-3000:])
    plans = [line for line in self.train.stderr.splitlines() if '] Training cnn (' in line]
    self.assertLen(plans, 1)
    self.assertRegex(plans[0], r'Training cnn \([\d,]+ parameters\) on mnist \([\d,]+ train, '
                     r'500 validation, 10,000 test; memory pipeline\), strategy default with 1 '
                     r'replica, (float32|mixed_bfloat16): 30 steps \([\d.]+ epochs\) at batch 32 '
                     r'in .*/run, from scratch\.$')
    # auto's choice on this machine, with its reason, once; the plan line names the same.
    (chosen,) = re.findall(r'\] Precision (\S+) \(auto: the CPU has ', self.train.stderr)
    self.assertIn(f'replica, {chosen}: ', plans[0])
    for noise in ('absl::InitializeLog', 'Sharding callback duration'):
      self.assertNotIn(noise, self.train.stderr)

  def test_evaluate_writes_json_and_confusion(self):
    proc = helpers.run_forked('launch.evaluate', f'--workdir={self.workdir}', '--split=test')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn('10000 examples', proc.stdout)
    self.assertTrue(os.path.exists(os.path.join(self.workdir, 'eval_test.json')))
    self.assertTrue(os.path.exists(os.path.join(self.workdir, 'confusion_test.png')))

  def test_predict_reports_bad_files_and_goes_on(self):
    tmp = self.create_tempdir()
    digit = np.zeros((56, 40, 3), np.uint8)
    digit[10:46, 18:24] = 255  # a thick "1", colour, another size than 28×28
    good = os.path.join(tmp.full_path, 'one.png')
    Image.fromarray(digit).save(good)
    jpeg = os.path.join(tmp.full_path, 'one.jpg')
    Image.fromarray(digit[..., 0]).save(jpeg)
    with open(good, 'rb') as f:
      data = f.read()
    truncated = tmp.create_file('cut.png', content=data[:len(data) // 2]).full_path
    empty = tmp.create_file('empty.png', content=b'').full_path
    text = tmp.create_file('notes.png', content='not an image').full_path
    proc = helpers.run_forked('launch.predict', f'--workdir={self.workdir}', good, truncated,
                              empty, text, jpeg, os.path.join(tmp.full_path, 'missing.png'))
    self.assertNotEqual(proc.returncode, 0)
    out = proc.stdout.splitlines()
    self.assertLen(out, 2, proc.stdout + proc.stderr)
    for line in out:
      self.assertRegex(line, r'one\.(png|jpg): \d: \d+\.\d%')
    for name in ('cut.png', 'empty.png', 'notes.png', 'missing.png'):
      self.assertRegex(proc.stderr, rf'{name}: error: ')
    self.assertIn('4 of 6', helpers.error_line(proc))

  def test_other_model_in_the_same_workdir_is_refused(self):
    before = sorted(os.listdir(os.path.join(self.workdir, 'checkpoints')))
    proc = helpers.run_forked('launch.train', '--model=cnn_dropout', f'--workdir={self.workdir}',
                              '--config.num_train_steps=2')
    self.assertEqual(proc.returncode, 2)
    self.assertIn("holds a run with model.name='cnn'", helpers.error_line(proc))
    self.assertEqual(sorted(os.listdir(os.path.join(self.workdir, 'checkpoints'))), before)

  def test_start_over_moves_the_other_run_aside_and_trains(self):
    workdir = os.path.join(self.tmp, 'copy')
    shutil.copytree(self.workdir, workdir)
    proc = helpers.run_cli('launch.train', '--model=cnn_dropout', f'--workdir={workdir}',
                           '--start_over', '--config.num_train_steps=2',
                           '--config.dataset.validation_size=500', '--config.image_grid_size=0')
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    (aside,) = [d for d in os.listdir(self.tmp) if d.startswith('copy.replaced-')]
    self.assertTrue(os.path.exists(os.path.join(self.tmp, aside, 'checkpoints', 'checkpoint')))
    self.assertIn('"cnn_dropout"', open(os.path.join(workdir, 'config.json')).read())

  def test_evaluate_of_a_workdir_without_run(self):
    proc = helpers.run_forked('launch.evaluate', f'--workdir={self.create_tempdir().full_path}')
    self.assertEqual(proc.returncode, 2)
    self.assertIn('holds no config.json', helpers.error_line(proc))
