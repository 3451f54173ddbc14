"""Distribution is exact: a mirrored step over 2 logical CPU devices equals a one-device step."""

import json

from absl.testing import parameterized
import tensorflow as tf

from tests import helpers
from tests import mirrored_step


class MirroredEquivalenceTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((), ('batch_norm',), ('recipe',))
  def test_one_mirrored_step_matches_one_device_with_the_same_global_batch(self, *args):
    # A process of its own: the CPU can be split into logical devices only before TensorFlow
    # starts (the command server imported it, started nothing).
    proc = helpers.run_forked('tests.mirrored_step', *args)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    self.assertEqual(result['replicas'], 2)
    self.assertGreater(result['update_size'], 1e-4)  # the step moved the weights
    self.assertLess(result['loss_diff'], 1e-6)
    # Batch norm's path: one fused kernel on one replica, all-reduced statistics on several.
    batch_norm = 'batch_norm' in args
    self.assertEqual((result['fused_one_device'], result['fused_mirrored']), (batch_norm, False))
    if batch_norm:
      # Synchronized batch norm's variance is E[x²] − E[x]² of all-reduced sums, one device's a
      # two-pass variance: the cancellation costs a few float32 ulps of the moving variance.
      self.assertLess(result['weight_rel_diff'], 2e-6)
    else:
      self.assertLess(result['weight_diff'], 1e-6)
    # The gradient norm is the global batch's: summed once across replicas, before clipping.
    self.assertLess(result['grad_norm_diff'], 1e-6 * result['grad_norm'])
    if 'recipe' in args:
      self.assertGreater(result['grad_norm'], mirrored_step.CLIP)  # so the clip was active
      self.assertEqual(result['ema_size'], 8)  # the tiny CNN's kernels and biases
      self.assertLess(result['ema_diff'], 1e-6)
      self.assertTrue(result['swap_ok'])


class OptimizerEquivalenceTest(tf.test.TestCase):

  def test_every_optimizer_steps_alike_on_one_device_and_two_replicas(self):
    proc = helpers.run_forked('tests.mirrored_step', 'optimizers')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    self.assertEqual(result['replicas'], 2)
    self.assertCountEqual(result['optimizers'], [n for n, _ in mirrored_step.OPTIMIZERS])
    for name, (diff, update) in result['optimizers'].items():
      self.assertGreater(update, 1e-4, name)
      if name == 'sgd':  # the update is the gradient times the rate: equal to rounding
        self.assertLess(diff, 1e-6, name)
      else:
        # Adaptive first steps divide the gradient by its own size (Adam, LAMB: g/(|g| + eps);
        # Lion: sign(g)), which turns rounding-level differences of gradients near zero into
        # larger ones; a replica stepping on its own half of the batch differs by far more.
        self.assertLess(diff, 2e-3 * update, name)
