"""launch.results' table across runs: the settings that differ, each run's state and figures,
sorting, seeds folded into mean ± spread, the formats, curves, and runs read while they train."""

import csv
import io
import json
import os
import shutil
import tempfile

import tensorflow as tf

from research.apps import runs
from research.core import layout
from research.core import outputs
from research.core.errors import UserError
from research.infra import workdir_lock
from research.train import trainer
from tests import helpers


def _train(workdir, **overrides):
  config = helpers.tiny_config(image_grid_size=0, eval_every_epochs=0.25, **overrides)
  with helpers.mock_tfds():
    return trainer.train_and_evaluate(config, workdir)


class RunsTableTest(tf.test.TestCase):
  """Three finished runs (two seeds of one learning rate, one of another) and copies of one in
  every other state."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.sweep = os.path.join(cls.tmp, 'sweep')
    cls.results = {}
    # c also logs at another cadence, which is not a setting of the experiment.
    for name, seed, lr, log in (('a', 0, 1e-3, 1), ('b', 1, 1e-3, 1), ('c', 0, 1e-2, 2)):
      cls.results[name] = _train(os.path.join(cls.sweep, name), seed=seed, num_train_steps=8,
                                 log_every_steps=log, schedule=dict(learning_rate=lr))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _finished(self):
    return [runs.read(w) for w in runs.find([self.sweep])]

  def test_one_row_per_run_with_the_settings_that_differ(self):
    columns, table = runs.rows(self._finished())
    # Cadence and devices are not settings of the experiment; seed and learning rate are.
    self.assertEqual(columns[:3], ['run', 'schedule.learning_rate', 'seed'])
    self.assertEqual(columns[3:], list(runs.METRICS))
    self.assertEqual([r['run'] for r in table],
                     [os.path.join(self.sweep, n) for n in ('a', 'b', 'c')])
    a = table[0]
    self.assertEqual((a['state'], a['step']), ('done', '8/8'))
    self.assertEqual(a['test_accuracy'], self.results['a']['test_accuracy'])
    self.assertEqual(a['precision'], 'float32')
    validation = [v for _, v in self._finished()[0].curves['accuracy']]
    self.assertLen(validation, 4)  # evaluated every quarter epoch of 2 steps, and at the end
    self.assertEqual(a['best_validation_accuracy'], max(validation))

  def test_sorting_descending_puts_missing_values_last(self):
    finished = self._finished()
    _, table = runs.rows(finished, sort='-test_accuracy')
    accuracies = [r['test_accuracy'] for r in table]
    self.assertEqual(accuracies, sorted(accuracies, reverse=True))
    with self.assertRaisesRegex(UserError, '--sort=bogus: no such column'):
      runs.rows(finished, sort='bogus')

  def test_seeds_fold_into_mean_and_spread(self):
    columns, table = runs.rows(self._finished(), group='seed')
    self.assertNotIn('seed', columns)
    self.assertLen(table, 2)
    pair = next(r for r in table if r['runs'] == 2)
    a, b = (self.results[n]['test_accuracy'] for n in ('a', 'b'))
    self.assertAllClose(pair['test_accuracy']['mean'], (a + b) / 2)
    self.assertAllClose(pair['test_accuracy']['spread'], abs(a - b) / 2 ** 0.5)
    self.assertIn(' ± ', runs.text(columns, table))
    with self.assertRaisesRegex(UserError, '--group=sed: no such config field'):
      runs.rows(self._finished(), group='sed')

  def test_formats_read_back(self):
    columns, table = runs.rows(self._finished())
    parsed = list(csv.DictReader(io.StringIO(runs.csv_text(columns, table))))
    self.assertEqual(float(parsed[2]['test_accuracy']), table[2]['test_accuracy'])
    self.assertEqual(json.loads(runs.json_text(columns, table))[1]['seed'], 1)
    lines = runs.text(columns, table).splitlines()
    self.assertLen(lines, 4)
    self.assertTrue(lines[0].startswith('run'))

  def test_every_state(self):
    base = os.path.join(self.sweep, 'a')
    states = os.path.join(self.tmp, 'states')
    for name in ('running', 'preempted', 'stopped', 'new'):
      shutil.copytree(base, os.path.join(states, name))
    results = layout.read_results(base)
    outputs.write_json(os.path.join(states, 'preempted', layout.RESULTS),
                       {**results, 'preempted': 'SIGTERM', 'step': 6})
    os.remove(os.path.join(states, 'stopped', layout.RESULTS))
    new = os.path.join(states, 'new')
    for entry in os.listdir(new):
      if entry != 'config.json':
        shutil.rmtree(os.path.join(new, entry), ignore_errors=True)
        if os.path.isfile(os.path.join(new, entry)):
          os.remove(os.path.join(new, entry))
    lock = workdir_lock.WorkdirLock(os.path.join(states, 'running')).acquire()
    try:
      read = {os.path.basename(r.workdir): r for r in map(runs.read, runs.find([states]))}
    finally:
      lock.release()
    self.assertEqual({k: r.state for k, r in read.items()},
                     {'running': 'running', 'preempted': 'preempted', 'stopped': 'stopped',
                      'new': 'new'})
    self.assertEqual(read['stopped'].values['step'], '8/8')  # from its latest checkpoint
    self.assertEqual(read['new'].values['step'], '0/8')

  def test_a_run_whose_events_file_is_being_written_is_read_up_to_it(self):
    workdir = os.path.join(self.tmp, 'writing')
    shutil.copytree(os.path.join(self.sweep, 'c'), workdir)
    events = sorted(os.listdir(os.path.join(workdir, 'validation')))[-1]
    with open(os.path.join(workdir, 'validation', events), 'ab') as f:
      f.write(b'\x20\x00\x00\x00\x00\x00\x00\x00partial')  # a record's length, then too little
    self.assertLen(runs.read(workdir).curves['accuracy'], 4)

  def test_curves_picture(self):
    path = os.path.join(self.create_tempdir().full_path, 'curves.png')
    pixels = runs.curves(self._finished(), path)
    self.assertTrue(os.path.getsize(path) > 10000)
    self.assertEqual(pixels.shape[-1], 3)

  def test_paths_globs_and_a_path_without_runs(self):
    pattern = os.path.join(self.sweep, '[ab]')
    self.assertEqual(runs.find([pattern, os.path.join(self.sweep, 'a')]),
                     [os.path.join(self.sweep, n) for n in ('a', 'b')])
    empty = self.create_tempdir().full_path
    with self.assertRaisesRegex(UserError, 'holds no training run'):
      runs.find([empty])


if __name__ == '__main__':
  tf.test.main()
