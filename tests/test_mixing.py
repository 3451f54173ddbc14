"""Mixup and cutmix (research/data/mixing.py), their loss, and per-example keying by global
position: an example is augmented and paired alike on one device or split over replicas."""

from absl.testing import parameterized
import ml_collections
import numpy as np
import tensorflow as tf

from research.core import config as config_lib
from research.data import mixing
from research.data import pipeline
from research.data import preprocess
from research.train import steps

_SEED = tf.constant([4, 7], tf.int64)


def _augment(dataset='cifar10', **kw):
  return ml_collections.ConfigDict({**config_lib.base(dataset=dataset).augment.to_dict(), **kw})


def _distinct(n=16, size=8, channels=1):
  """Images of one value each, all values distinct: a pixel tells which image it came from."""
  values = np.arange(1, n + 1, dtype=np.float32) / (n + 1)
  return tf.constant(np.broadcast_to(values[:, None, None, None], (n, size, size, channels)))


class MixupCutmixTest(tf.test.TestCase, parameterized.TestCase):

  def test_partners_are_neighbours_in_pairs(self):
    x, labels = _distinct(), tf.range(16)
    _, partners, _ = mixing.mix(x, labels, None, _augment(mixup_alpha=1.0), _SEED)
    self.assertAllEqual(partners, [1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14])

  def test_mixup_blends_with_the_partner_by_lam(self):
    x = tf.random.stateless_uniform([16, 8, 8, 3], seed=[1, 2])
    y, partners, lam = mixing.mix(x, tf.range(16), None, _augment(mixup_alpha=0.4), _SEED)
    partner_x = tf.gather(x, partners)
    lam4 = lam[:, None, None, None]
    self.assertAllClose(y, lam4 * x + (1.0 - lam4) * partner_x, atol=1e-7)
    self.assertAllInRange(lam, 0.0, 1.0)
    self.assertLess(float(tf.reduce_max(lam)), 1.0)  # every example mixed (mix_prob 1)

  def test_cutmix_pastes_a_box_of_the_partner_and_lam_is_what_is_left(self):
    x = _distinct(64, size=10)
    y, partners, lam = mixing.mix(x, tf.range(64), None, _augment(cutmix_alpha=1.0), _SEED)
    y, x, lam = y.numpy()[..., 0], x.numpy()[..., 0], lam.numpy()
    partner_x = x[partners.numpy()]
    some_box = False
    for i in range(64):
      pasted = y[i] == partner_x[i]
      self.assertTrue(np.all(pasted | (y[i] == x[i])))  # nothing else enters
      rows, cols = np.where(pasted)
      if len(rows):
        some_box = True
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        self.assertEqual(box, len(rows))  # a rectangle
      self.assertAllClose(lam[i], 1.0 - pasted.sum() / pasted.size)
    self.assertTrue(some_box)

  def test_both_on_switches_between_cutmix_and_mixup(self):
    x = _distinct(64)
    y, partners, _ = mixing.mix(x, tf.range(64), None,
                                _augment(mixup_alpha=1.0, cutmix_alpha=1.0), _SEED)
    y, x = y.numpy()[..., 0], x.numpy()[..., 0]
    from_box = [np.any(y[i] == x[p]) and np.any(y[i] == x[i])
                for i, p in enumerate(partners.numpy())]
    self.assertTrue(any(from_box) and not all(from_box))

  @parameterized.parameters(dict(mix_prob=0.0, mixup_alpha=1.0, cutmix_alpha=1.0),
                            dict(mixup_alpha=0.0, cutmix_alpha=0.0))
  def test_no_mixing_leaves_the_batch_unchanged(self, **kw):
    x = tf.random.stateless_uniform([8, 8, 8, 3], seed=[1, 2])
    y, partners, lam = mixing.mix(x, tf.range(8), None, _augment(**kw), _SEED)
    self.assertAllEqual(y, x)
    if partners is not None:
      self.assertAllEqual(lam, tf.ones([8]))

  def test_a_partner_of_weight_0_lends_nothing(self):
    x = tf.random.stateless_uniform([8, 8, 8, 1], seed=[1, 2])
    weights = tf.constant([1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    y, _, lam = mixing.mix(x, tf.range(8), weights, _augment(mixup_alpha=1.0), _SEED)
    self.assertAllEqual(y[0], x[0])
    self.assertEqual(float(lam[0]), 1.0)
    self.assertLess(float(lam[2]), 1.0)

  @parameterized.parameters(0.0, 0.1)
  def test_mixed_loss_is_the_lam_weighted_sum_of_both_labels_losses(self, smoothing):
    logits = tf.random.stateless_normal([4, 5], seed=[3, 4])
    labels, partners = tf.constant([0, 1, 2, 3]), tf.constant([4, 1, 0, 2])
    lam = tf.constant([0.3, 0.5, 1.0, 0.0])
    mixed = steps.cross_entropy(labels, logits, smoothing, partners, lam)
    expected = (lam * steps.cross_entropy(labels, logits, smoothing)
                + (1 - lam) * steps.cross_entropy(partners, logits, smoothing))
    self.assertAllClose(mixed, expected, atol=1e-6)
    # Soft labels that sum to 1: against uniform logits the loss is log(classes) whatever lam.
    flat = steps.cross_entropy(labels, tf.zeros([4, 5]), smoothing, partners, lam)
    self.assertAllClose(flat, np.full(4, np.log(5.0)), atol=1e-6)

  def test_accuracy_counts_the_dominant_label(self):
    labels, partners = tf.constant([0, 1, 2]), tf.constant([5, 6, 7])
    self.assertAllEqual(mixing.dominant(labels, partners, tf.constant([0.5, 0.49, 0.9])),
                        [0, 6, 2])
    self.assertAllEqual(mixing.dominant(labels, None, None), labels)


class GlobalKeyingTest(tf.test.TestCase, parameterized.TestCase):
  """An example's augmentation depends on (seed, step, its row of the global batch) only."""

  def _augment_and_mix(self, images, labels, cfg, positions=None, global_batch=0):
    x = preprocess.preprocess(images, training=True, augment=cfg, seed=_SEED,
                              positions=positions, global_batch=global_batch)
    return mixing.mix(x, labels, None, cfg, _SEED, positions, global_batch)

  @parameterized.parameters(('cifar10', 3), ('mnist', 1))
  def test_one_replica_equals_two_replicas_together(self, dataset, channels):
    cfg = _augment(dataset, randaugment=(2, 9), mixup_alpha=0.4, cutmix_alpha=1.0)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (16, 12, 12, channels), dtype=np.uint8))
    labels = tf.range(16)
    whole = self._augment_and_mix(images, labels, cfg)
    halves = []
    for replica in range(2):
      rows = pipeline.replica_positions(replica, 16, 2)
      halves.append(self._augment_and_mix(tf.gather(images, rows), tf.gather(labels, rows), cfg,
                                          rows, 16))
    for one, two in zip(whole, zip(*halves)):
      self.assertAllEqual(one, tf.concat(two, 0))

  def test_two_pipelines_augment_each_example_as_one_device_does(self):
    # Pairs form among a pipeline's rows then, so compare the augmentation before mixing.
    cfg = _augment(randaugment=(2, 9))
    images = tf.constant(np.random.default_rng(1).integers(0, 256, (16, 12, 12, 3), np.uint8))
    whole = preprocess.preprocess(images, training=True, augment=cfg, seed=_SEED)
    for replica in range(4):
      rows = pipeline.replica_positions(replica, 16, 4, num_pipelines=2)
      part = preprocess.preprocess(tf.gather(images, rows), training=True, augment=cfg,
                                   seed=_SEED, positions=rows, global_batch=16)
      self.assertAllEqual(part, tf.gather(whole, rows))


if __name__ == '__main__':
  tf.test.main()
