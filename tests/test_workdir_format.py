"""A workdir written by an earlier version of the trainer resumes as an uninterrupted run of
today's code: the files of a workdir keep their names and contents.

The fixture's first steps were computed on one CPU (an AVX-512 one); oneDNN picks its kernels by
the CPU it runs on, and on another instruction set (AVX2) the uninterrupted run's first steps
differ from the fixture's in the last bits. So the weights are compared bitwise where the
fixture's CPU kind computes the uninterrupted run, and to rounding elsewhere: a resume from the
wrong step, data position or state differs by orders of magnitude more (the test of a resumed
run with another data order shows by how much)."""

import os
import shutil

from absl import logging
import numpy as np
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


def _weights(workdir):
  """The model's variables in the workdir's latest checkpoint."""
  reader = tf.train.load_checkpoint(layout.checkpoint_dir(workdir))
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if k.startswith('model/') and 'seed_generator' not in k}


class FormerWorkdirTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.former = os.path.join(self.create_tempdir().full_path, 'run')
    shutil.copytree(FIXTURE, self.former)

  def _far_apart(self, a, b):
    """Whether two sets of weights differ by more than rounding (the tolerance's why: module
    docstring)."""
    self.assertEqual(sorted(a), sorted(b))
    return not all(np.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)

  def test_resumes_at_its_step_and_ends_as_the_uninterrupted_run(self):
    earlier = layout.read_results(self.former)
    straight = self.create_tempdir().full_path
    with helpers.mock_tfds():
      with self.assertLogs(level='INFO') as logs:
        resumed = trainer.train_and_evaluate(_config(keep_checkpoints=1), self.former)
      uninterrupted = trainer.train_and_evaluate(_config(keep_checkpoints=1), straight)
    self.assertRegex('\n'.join(logs.output), r'Resumed from .*ckpt-2: step 2 of 4')
    self.assertEqual(resumed['step'], 4)
    logging.info('Resumed former workdir bitwise equal to the uninterrupted run: %s',
                 resumed['weights_digest'] == uninterrupted['weights_digest'])
    self.assertFalse(self._far_apart(_weights(self.former), _weights(straight)))
    # The former record and config history carry on.
    self.assertGreater(resumed['train_seconds'], earlier['train_seconds'])
    self.assertEqual(config_lib.history(self.former, 'keep_checkpoints'), [(0, 3), (1, 1)])
    self.assertLen(layout.read_config_changes(self.former), 1)

  def test_the_comparison_tells_another_continuation_apart(self):
    # The same resume with another data order for steps 3-4: what a resume at the wrong data
    # position would look like, far beyond the rounding the other test allows.
    straight = self.create_tempdir().full_path
    with helpers.mock_tfds():
      trainer.train_and_evaluate(_config(keep_checkpoints=1, seed=7), self.former,
                                 accept=['seed'])
      trainer.train_and_evaluate(_config(keep_checkpoints=1), straight)
    self.assertTrue(self._far_apart(_weights(self.former), _weights(straight)))


if __name__ == '__main__':
  tf.test.main()
