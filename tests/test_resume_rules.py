"""A resumed run is the experiment it started as: what may change on resume, and its record.

A run's own settings (seed, model, data, optimizer, schedule, precision, ...) are refused on
resume unless named in `accept`; steps, cadence, data location and devices may change. Either
way config.json stays as the run started, and each change is appended to config_changes.json
with the step it took effect at; results.json's precision names each precision with its steps.
"""

import json
import os
import shutil
import tempfile

from absl.testing import parameterized
import tensorflow as tf

from research.core import checkpoints
from research.core import config as config_lib
from research.core import layout
from research.core import outputs
from research.core.errors import UserError
from research.train import setup as setup_lib
from research.train import trainer
from tests import helpers


def _train(workdir, accept=(), **overrides):
  config = helpers.tiny_config(image_grid_size=0, **overrides)
  with helpers.mock_tfds():
    return trainer.train_and_evaluate(config, workdir, accept=accept)


class ResumeRulesTest(tf.test.TestCase, parameterized.TestCase):
  """One 2-step run for the class; each test resumes a copy of its own."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.finished = os.path.join(cls.tmp, 'run')
    _train(cls.finished)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def setUp(self):
    super().setUp()
    self.workdir = os.path.join(self.create_tempdir().full_path, 'run')
    shutil.copytree(self.finished, self.workdir)

  def _train(self, workdir, accept=(), **overrides):
    return _train(workdir, accept, **overrides)

  @parameterized.named_parameters(
      ('seed', dict(seed=7), 'seed=0 (now 7)'),
      ('learning_rate', dict(schedule=dict(learning_rate=0.5)),
       'schedule.learning_rate=0.001 (now 0.5)'),
      ('precision', dict(mixed_precision='mixed_bfloat16'),
       'mixed_precision="float32" (now "mixed_bfloat16")'),
      ('model_field', dict(model=dict(dropout=0.3)), 'model.dropout=0.0 (now 0.3)'),
  )
  def test_a_change_of_the_experiment_is_refused_and_nothing_written(self, change, said):
    before = helpers.snapshot(self.workdir)
    config = helpers.tiny_config(image_grid_size=0, num_train_steps=4)
    for key, value in change.items():
      if isinstance(value, dict):
        config[key].update(value)
      else:
        config[key] = value
    with helpers.mock_tfds(), self.assertRaisesRegex(UserError, 'accept_changes') as caught:
      trainer.train_and_evaluate(config, self.workdir)
    self.assertIn(said, str(caught.exception))
    self.assertEqual(helpers.snapshot(self.workdir), before)

  def test_every_refused_field_is_named_with_both_values(self):
    config = helpers.tiny_config(image_grid_size=0, seed=3, label_smoothing=0.1)
    with self.assertRaises(UserError) as caught:
      setup_lib.check_workdir(config, self.workdir, start_over=False)
    self.assertIn('seed=0 (now 3)', str(caught.exception))
    self.assertIn('label_smoothing=0.0 (now 0.1)', str(caught.exception))
    self.assertIn('--accept_changes=label_smoothing,seed', str(caught.exception))

  def test_an_accepted_change_is_recorded_with_its_step_and_config_json_kept(self):
    original = outputs.read_json(os.path.join(self.workdir, layout.CONFIG))
    results = self._train(self.workdir, accept=('schedule.learning_rate',), num_train_steps=4,
                          schedule=dict(learning_rate=0.5))
    self.assertEqual(results['step'], 4)
    self.assertEqual(outputs.read_json(os.path.join(self.workdir, layout.CONFIG)),
                     original)
    changes = layout.read_config_changes(self.workdir)
    self.assertLen(changes, 1)
    self.assertEqual(changes[0]['step'], 2)
    self.assertEqual(changes[0]['fields'], {'num_train_steps': [2, 4],
                                            'schedule.learning_rate': [0.001, 0.5]})
    # Readers see the run as it trains now; the history says from which step.
    self.assertEqual(config_lib.load(self.workdir).schedule.learning_rate, 0.5)
    self.assertEqual(config_lib.load(self.workdir, original=True).schedule.learning_rate, 0.001)
    self.assertEqual(config_lib.history(self.workdir, 'schedule.learning_rate'),
                     [(0, 0.001), (2, 0.5)])
    # The same command again (a requeue) changes nothing more.
    self._train(self.workdir, accept=('schedule.learning_rate',), num_train_steps=4,
                schedule=dict(learning_rate=0.5))
    self.assertLen(layout.read_config_changes(self.workdir), 1)

  def test_more_steps_and_cadence_change_freely_and_are_recorded(self):
    self._train(self.workdir, num_train_steps=3, log_every_steps=3, eval_batch_size=8)
    changes = layout.read_config_changes(self.workdir)
    self.assertEqual(changes[0]['fields'], {'num_train_steps': [2, 3], 'log_every_steps': [1, 3],
                                            'eval_batch_size': [16, 8]})

  def test_results_name_each_precision_with_its_steps(self):
    results = self._train(self.workdir, accept=('mixed_precision',), num_train_steps=3,
                          mixed_precision='mixed_bfloat16')
    self.assertEqual(results['precision'], 'float32 (steps 1-2), mixed_bfloat16 (steps 3-3)')
    self.assertEqual(layout.read_results(self.workdir)['precision'], results['precision'])

  def test_fewer_steps_than_reached_are_refused(self):
    before = helpers.snapshot(self.workdir)
    with self.assertRaisesRegex(UserError, 'has reached step 2, past the 1 steps asked for'):
      self._train(self.workdir, num_train_steps=1)
    self.assertEqual(helpers.snapshot(self.workdir), before)

  def test_a_section_accepts_each_of_its_fields(self):
    config = helpers.tiny_config(image_grid_size=0,
                                 schedule=dict(learning_rate=0.5, warmup_epochs=0.0))
    diff = setup_lib.check_workdir(config, self.workdir, False, accept=('schedule',))
    self.assertEqual(set(diff), {'schedule.learning_rate', 'schedule.warmup_epochs'})
    with self.assertRaisesRegex(UserError, 'accept_changes=schedule.learning_rate'):
      setup_lib.check_workdir(config, self.workdir, False, accept=('schedule.warmup_epochs',))

  def test_unknown_accepted_field_is_refused(self):
    with self.assertRaisesRegex(UserError, 'learning_rat, not config fields'):
      setup_lib.check_workdir(helpers.tiny_config(), self.workdir, False, accept=('learning_rat',))

  def test_an_accepted_change_the_checkpoint_cannot_take_is_one_balanced_line(self):
    before = helpers.snapshot(self.workdir)
    config = helpers.tiny_config(image_grid_size=0, num_train_steps=4)
    config.model.filters = (8, 8)
    with helpers.mock_tfds(), self.assertRaisesRegex(
        UserError, 'does not match this model and optimizer') as caught:
      trainer.train_and_evaluate(config, self.workdir, accept=('model.filters',))
    message = str(caught.exception)
    self.assertNotIn('\n', message)
    self.assertEqual(message.count('('), message.count(')'), message)
    self.assertEqual(helpers.snapshot(self.workdir), before)

  def test_start_over_takes_any_config(self):
    config = helpers.tiny_config(image_grid_size=0, seed=5)
    self.assertEqual(setup_lib.check_workdir(config, self.workdir, start_over=True), {})


class BriefTest(tf.test.TestCase):
  """An error's text inside a one-line message: cut at a word, its brackets closed."""

  def test_a_long_line_is_cut_at_a_word_and_its_brackets_closed(self):
    text = ('Unresolved object in checkpoint (root).optimizer._variables.1: attributes '
            '{VARIABLE_VALUE} (Showing 1 of 12 unresolved objects, with their paths)\nmore')
    short = checkpoints.brief(text, limit=100)
    self.assertLessEqual(len(short), 106)
    self.assertTrue(short.endswith('Showing ...)'), short)
    self.assertEqual(short.count('('), short.count(')'))
    self.assertEqual(checkpoints.brief('short (one) line\nsecond'), 'short (one) line')


class SavedConfigTest(tf.test.TestCase):

  def test_a_run_saved_before_the_placeholder_reads_num_epochs_from_it(self):
    workdir = self.create_tempdir().full_path
    config = config_lib.base()
    config_lib.save(config, workdir)
    saved = outputs.read_json(os.path.join(workdir, layout.CONFIG))
    saved['num_train_steps'] = -1  # how earlier versions wrote "num_epochs decides"
    with open(os.path.join(workdir, layout.CONFIG), 'w') as f:
      json.dump(saved, f)
    self.assertIsNone(config_lib.load(workdir).num_train_steps)
    self.assertEqual(config_lib.differences(config_lib.load(workdir), config), {})

  def test_auto_precision_is_no_change(self):
    saved = config_lib.base()
    saved.mixed_precision = 'float32'
    config = config_lib.base()  # auto keeps the run's own
    self.assertEqual(config_lib.differences(saved, config), {})
    config.mixed_precision = 'mixed_bfloat16'
    self.assertEqual(config_lib.differences(saved, config),
                     {'mixed_precision': ['float32', 'mixed_bfloat16']})


if __name__ == '__main__':
  tf.test.main()
