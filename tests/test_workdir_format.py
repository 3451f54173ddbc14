"""A workdir written by an earlier version of the trainer resumes bitwise as an uninterrupted run
of today's code: the files of a workdir keep their names and contents."""

import os
import shutil

import tensorflow as tf

from research.core import config as config_lib
from research.core import layout
from research.train import trainer
from tests import helpers

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'workdir_2026_12')


def _config(**overrides):
  """The fixture's run (tests/fixtures/README.md)."""
  c = helpers.tiny_config(num_train_steps=4, image_grid_size=0, eval_every_epochs=1 / 3,
                          **overrides)
  c.model.filters = (2,)
  c.model.dense_units = (4,)
  c.model.dropout = 0.2
  c.model.batch_norm = True
  return c


class FormerWorkdirTest(tf.test.TestCase):

  def test_resumes_at_its_step_and_ends_as_the_uninterrupted_run(self):
    former = os.path.join(self.create_tempdir().full_path, 'run')
    shutil.copytree(FIXTURE, former)
    earlier = layout.read_results(former)
    with helpers.mock_tfds():
      with self.assertLogs(level='INFO') as logs:
        resumed = trainer.train_and_evaluate(_config(keep_checkpoints=1), former)
      uninterrupted = trainer.train_and_evaluate(_config(keep_checkpoints=1),
                                                 self.create_tempdir().full_path)
    self.assertRegex('\n'.join(logs.output), r'Resumed from .*ckpt-2: step 2 of 4')
    self.assertEqual(resumed['step'], 4)
    self.assertEqual(resumed['weights_digest'], uninterrupted['weights_digest'])
    # The former record and config history carry on.
    self.assertGreater(resumed['train_seconds'], earlier['train_seconds'])
    self.assertEqual(config_lib.history(former, 'keep_checkpoints'), [(0, 3), (1, 1)])
    self.assertLen(layout.read_config_changes(former), 1)


if __name__ == '__main__':
  tf.test.main()
