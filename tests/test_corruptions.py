"""Corruptions do what they are named for, repeatably; launch.evaluate --corruptions scores a
run on them and draws the chart; a bad name is one line before anything loads."""

import json
import os

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from research.apps import corruptions
from research.apps import evaluate
from research.core import plots
from research.core.errors import UserError
from research.train import trainer
from tests import helpers


def _digits(n=4, side=28):
  """Bright strokes on black, as MNIST: a cross in each image."""
  x = np.zeros((n, side, side, 1), np.uint8)
  x[:, side // 2 - 1:side // 2 + 2, 4:-4] = 255
  x[:, 4:-4, side // 2 - 1:side // 2 + 2] = 255
  return tf.constant(x)


_INDEX = tf.range(4, dtype=tf.int64)


class CorruptionTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(*corruptions.CORRUPTIONS)
  def test_shape_dtype_and_repeatability(self, name):
    x = _digits()
    for severity in corruptions.severities(name):
      a = corruptions.apply(name, x, severity, _INDEX)
      self.assertEqual(a.dtype, tf.uint8)
      self.assertEqual(a.shape, x.shape)
      self.assertAllEqual(a, corruptions.apply(name, x, severity, _INDEX))
      self.assertNotAllEqual(a, x)

  @parameterized.parameters('gaussian_noise', 'gaussian_blur', 'pixelate', 'thicken', 'thin',
                            'shift', 'contrast')
  def test_damage_grows_with_severity(self, name):
    t = np.arange(28) - 13.5  # a bright blob: smooth, so that no shift lands on itself
    blob = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / 50.0) * 255
    x = tf.constant(np.repeat(blob[None, ..., None], 4, 0).astype(np.uint8))
    errors = [float(tf.reduce_mean(tf.abs(tf.cast(corruptions.apply(name, x, s, _INDEX),
                                                  tf.float32) - tf.cast(x, tf.float32))))
              for s in corruptions.SEVERITIES]
    self.assertEqual(errors, sorted(set(errors)), errors)  # strictly
    self.assertGreater(errors[-1], errors[0])

  def test_each_does_what_it_is_named_for(self):
    x = _digits()
    ink = lambda y: int(tf.reduce_sum(tf.cast(y > 127, tf.int32)))  # noqa: E731
    self.assertGreater(ink(corruptions.apply('thicken', x, 3, _INDEX)), ink(x))
    self.assertLess(ink(corruptions.apply('thin', x, 5, _INDEX)), ink(x))
    self.assertAllEqual(corruptions.apply('invert', x, 1, _INDEX), 255 - x)
    shifted = corruptions.apply('shift', x, 2, _INDEX)  # 3 px down and right at 28
    self.assertAllEqual(shifted[:, 3:, 3:], x[:, :-3, :-3])
    self.assertAllEqual(shifted[:, :3], tf.zeros_like(shifted[:, :3]))
    low = corruptions.apply('contrast', x, 5, _INDEX)
    self.assertLess(int(tf.reduce_max(low)) - int(tf.reduce_min(low)), 20)
    # noise is keyed by the example: two equal images get different noise, re-runs the same
    noisy = corruptions.apply('gaussian_noise', x, 1, _INDEX)
    self.assertNotAllEqual(noisy[0], noisy[1])
    blurred = corruptions.apply('gaussian_blur', x, 3, _INDEX)
    self.assertAllClose(tf.reduce_sum(tf.cast(blurred, tf.float32)),
                        tf.reduce_sum(tf.cast(x, tf.float32)), rtol=0.02)  # spreads, keeps ink

  def test_names_are_checked(self):
    self.assertEqual(corruptions.parse('all'), list(corruptions.CORRUPTIONS))
    self.assertEqual(corruptions.parse('shift, invert'), ['shift', 'invert'])
    with self.assertRaisesRegex(UserError, r'^unknown corruption fog: use all, or any of '):
      corruptions.parse('shift,fog')


class CorruptedEvaluationTest(tf.test.TestCase):

  def test_scores_every_severity_writes_json_and_chart(self):
    workdir = self.create_tempdir().full_path
    with helpers.mock_tfds():
      trainer.train_and_evaluate(helpers.tiny_config(num_train_steps=4), workdir)
      record = evaluate.evaluate_corrupted(workdir, ['invert', 'shift'])
      clean = evaluate.evaluate(workdir)['accuracy']
    self.assertEqual(record['clean_accuracy'], clean)
    self.assertEqual(list(record['accuracy']), ['invert', 'shift'])
    self.assertEqual(list(record['accuracy']['shift']), ['1', '2', '3', '4', '5'])
    self.assertEqual(list(record['accuracy']['invert']), ['1'])
    with open(os.path.join(workdir, 'eval_test_corrupt.json')) as f:
      self.assertEqual(json.load(f)['accuracy'], record['accuracy'])
    self.assertTrue(os.path.exists(os.path.join(workdir, 'corrupt_test.png')))

  def test_chart_names_every_corruption_legibly(self):
    table = {name: {str(s): 0.9 - 0.1 * s for s in corruptions.severities(name)}
             for name in corruptions.CORRUPTIONS}
    fig = plots.corruption_chart_figure(0.99, table, title='cnn on mnist test')
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    self.assertEqual(labels, list(corruptions.CORRUPTIONS))
    sizes = [t.get_fontsize() for t in fig.findobj(
        lambda a: hasattr(a, 'get_fontsize') and hasattr(a, 'get_text') and a.get_text())]
    self.assertGreaterEqual(min(sizes), plots.MIN_FONT)
    path = os.path.join(self.create_tempdir().full_path, 'chart.png')
    self.assertEqual(plots.corruption_chart(0.99, table, path).shape[-1], 3)


class CommandTest(tf.test.TestCase):

  def test_bad_corruption_name_is_one_line_before_loading(self):
    proc = helpers.run_cli('launch.evaluate', '--workdir=/no/such/run', '--corruptions=fog')
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
    self.assertRegex(helpers.error_line(proc), r'^error: unknown corruption fog: use all')
