"""What a run gives TensorBoard: a profile trace of the steps asked for, the config as
hyperparameters, test metrics at the end, and a training-loss tag that says when it includes
label smoothing."""

import os

import tensorflow as tf

from research.core.errors import UserError
from research.train import trainer
from tests import helpers


def _events(workdir, name):
  """{tag: [values]} and the plugin names of `workdir/name`'s event files."""
  tags, plugins = {}, set()
  for path in tf.io.gfile.glob(os.path.join(workdir, name, 'events.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        plugins.add(v.metadata.plugin_data.plugin_name)
        value = tf.make_ndarray(v.tensor) if v.HasField('tensor') else None
        if value is not None and value.dtype.kind == 'f' and value.size == 1:
          tags.setdefault(v.tag, []).append(float(value.ravel()[0]))
  return tags, plugins


class TensorBoardTest(tf.test.TestCase):

  def _train(self, **overrides):
    workdir = self.create_tempdir().full_path
    with helpers.mock_tfds():
      results = trainer.train_and_evaluate(helpers.tiny_config(**overrides), workdir)
    return workdir, results

  def test_profile_hparams_test_metrics_and_smoothed_loss_tag(self):
    workdir, results = self._train(num_train_steps=4, profile_steps=(1, 3), label_smoothing=0.1,
                                   steps_per_loop=4, log_every_steps=4)
    traces = tf.io.gfile.glob(os.path.join(workdir, 'train', 'plugins', 'profile', '*',
                                           '*.xplane.pb'))
    self.assertLen(traces, 1)
    train, plugins = _events(workdir, 'train')
    self.assertIn('hparams', plugins)
    self.assertIn('loss_with_label_smoothing', train)
    self.assertNotIn('loss', train)
    validation, _ = _events(workdir, 'validation')
    self.assertIn('loss', validation)
    test, _ = _events(workdir, 'test')
    self.assertEqual(test['accuracy'], [results['test_accuracy']])
    self.assertEqual(set(test), {'loss', 'accuracy', 'top5_accuracy'})

  def test_plain_loss_keeps_its_tag_and_no_profile_by_default(self):
    workdir, _ = self._train()
    train, _ = _events(workdir, 'train')
    self.assertIn('loss', train)
    self.assertEmpty(tf.io.gfile.glob(os.path.join(workdir, 'train', 'plugins', 'profile')))

  def test_profile_range_outside_the_run_is_one_line_before_writing(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    for steps in ((2, 9), (3, 3), (-1, 2)):
      with helpers.mock_tfds(), self.assertRaisesRegex(
          UserError, r'^config.profile_steps=\(.*\) is outside the run: give \(start, stop\) '
          r'with 0 <= start < stop <= 4 '):
        trainer.train_and_evaluate(helpers.tiny_config(num_train_steps=4, profile_steps=steps),
                                   workdir)
      self.assertFalse(os.path.exists(workdir))
