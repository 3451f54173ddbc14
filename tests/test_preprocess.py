"""On-device preprocessing: normalisation, pad-resize, and augmentation semantics."""

from absl.testing import parameterized
import ml_collections
import numpy as np
import tensorflow as tf

from research.core import config as config_lib
from research.data import preprocess


def _augment(dataset='mnist', **kw):
  return ml_collections.ConfigDict({**config_lib.augment_preset(dataset), **kw})


def _digits(n=4, size=28):
  rng = np.random.default_rng(0)
  x = np.zeros((n, size, size, 1), np.uint8)
  x[:, 8:20, 10:18] = rng.integers(100, 256, (n, 12, 8, 1))
  return tf.constant(x)


class PreprocessTest(tf.test.TestCase, parameterized.TestCase):

  def test_maps_uint8_to_minus_one_one(self):
    x = tf.constant([[[[0]], [[255]]]], tf.uint8)
    self.assertAllClose(preprocess.preprocess(x), [[[[-1.0]], [[1.0]]]])

  @parameterized.parameters((28, 28, 227), (28, 28, 224), (20, 40, 64))
  def test_pad_resize_keeps_aspect_and_pads_black(self, h, w, size):
    x = tf.fill((1, h, w, 1), tf.constant(255, tf.uint8))
    y = preprocess.preprocess(x, input_size=size)[0, ..., 0].numpy()
    self.assertEqual(y.shape, (size, size))
    white = y > 0.99
    rows, cols = np.where(white)
    content_h, content_w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    self.assertAllClose(content_w / content_h, w / h, atol=0.05)
    if h != w:  # the short side is padded with black (-1 after normalisation)
      self.assertAllClose(y[0], -np.ones(size))

  @parameterized.parameters((28, 28, 1, 227), (20, 40, 1, 64), (41, 97, 1, 227), (27, 13, 1, 100),
                            (5, 7, 1, 8), (28, 28, 3, 64), (64, 48, 1, 32))
  def test_pad_resize_is_tf_resize_with_pad(self, h, w, c, size):
    x = tf.constant(np.random.default_rng(0).uniform(0, 1, (2, h, w, c)), tf.float32)
    self.assertAllClose(preprocess.pad_resize(x, size), tf.image.resize_with_pad(x, size, size),
                        rtol=0, atol=1e-6)

  @parameterized.parameters((1, 227, False), (3, 227, True), (1, 16, True))
  def test_pad_resize_uses_matmuls_to_enlarge_grey_images(self, c, size, resizes):
    graph = tf.function(lambda x: preprocess.pad_resize(x, size)).get_concrete_function(
        tf.TensorSpec([4, 28, 28, c], tf.float32)).graph
    ops = {op.type for op in graph.get_operations()}
    self.assertEqual('ResizeBilinear' in ops, resizes, ops)

  def test_eval_is_identity_apart_from_normalisation(self):
    x = _digits()
    seed = tf.constant([1, 2], tf.int64)
    a = preprocess.preprocess(x, training=False, augment=_augment(), seed=seed)
    self.assertAllClose(a, tf.cast(x, tf.float32) / 127.5 - 1.0)

  def test_augmentation_is_deterministic_for_a_seed(self):
    x = _digits()
    s1, s2 = tf.constant([1, 2], tf.int64), tf.constant([1, 3], tf.int64)
    a = preprocess.preprocess(x, training=True, augment=_augment(), seed=s1)
    b = preprocess.preprocess(x, training=True, augment=_augment(), seed=s1)
    c = preprocess.preprocess(x, training=True, augment=_augment(), seed=s2)
    self.assertAllEqual(a, b)
    self.assertNotAllClose(a, c)

  def test_zero_strength_augmentation_is_identity(self):
    x = _digits()
    none = _augment(rotate=0.0, scale=0.0, translate=0.0, flip=False)
    seed = tf.constant([0, 0], tf.int64)
    a = preprocess.preprocess(x, training=True, augment=none, seed=seed)
    self.assertAllClose(a, preprocess.preprocess(x), atol=1e-5)

  def test_digit_augmentation_moves_ink_a_little_and_never_mirrors(self):
    x = _digits(64)
    y = preprocess.random_augment(tf.cast(x, tf.float32) / 255, _augment(),
                                  tf.constant([5, 6], tf.int64))
    self.assertFalse(_augment().flip)
    ink_before = tf.reduce_sum(tf.cast(x, tf.float32) / 255, [1, 2, 3])
    ink_after = tf.reduce_sum(y, [1, 2, 3])
    # Scale ±10% changes the ink area by at most ~21%; nothing is lost off the edges.
    self.assertAllInRange(ink_after / ink_before, 0.75, 1.3)
    self.assertNotAllClose(y, tf.cast(x, tf.float32) / 255)

  def test_translation_of_a_single_pixel(self):
    x = np.zeros((1, 9, 9, 1), np.float32)
    x[0, 4, 4] = 1.0
    cfg = _augment(rotate=0.0, scale=0.0, translate=0.3, flip=False)
    y = preprocess.random_augment(tf.constant(x), cfg, tf.constant([0, 1], tf.int64)).numpy()
    self.assertAllClose(y.sum(), 1.0, atol=1e-4)  # moved, not lost or blurred away

  def test_flip_mirrors_some_images_of_a_batch(self):
    x = np.zeros((32, 5, 5, 1), np.float32)
    x[:, 2, 0] = 1.0
    cfg = _augment('cifar10', translate=0.0, brightness=0.0, contrast=0.0)
    y = preprocess.random_augment(tf.constant(x), cfg, tf.constant([3, 4], tf.int64)).numpy()
    flipped = y[:, 2, 4, 0] > 0.99
    kept = y[:, 2, 0, 0] > 0.99
    self.assertTrue(flipped.any() and kept.any())
    self.assertTrue(np.all(flipped ^ kept))

  @parameterized.parameters(0.0, 0.3, 1.0)
  def test_invert_turns_the_drawn_share_of_a_batch_into_its_negative(self, p):
    x = tf.cast(_digits(256), tf.float32) / 255
    still = _augment(rotate=0.0, scale=0.0, translate=0.0, invert=p)
    y = preprocess.random_augment(x, still, tf.constant([1, 2], tf.int64)).numpy()
    inverted = np.all(np.isclose(y, 1.0 - x.numpy()), axis=(1, 2, 3))
    kept = np.all(y == x.numpy(), axis=(1, 2, 3))
    self.assertTrue(np.all(inverted ^ kept))  # each image whole, one way or the other
    self.assertNear(inverted.mean(), p, 0.1)
    # Keyed by place in the global batch: the second half alone draws as it did in the whole.
    half = preprocess.random_augment(x[128:], still, tf.constant([1, 2], tf.int64),
                                     tf.range(128, 256), 256)
    self.assertAllEqual(half, y[128:])


class RandomEraseTest(tf.test.TestCase, parameterized.TestCase):

  def _erase(self, x, p, positions=None, global_batch=0):
    cfg = _augment(rotate=0.0, scale=0.0, translate=0.0, erase=p, erase_area=(0.02, 0.33),
                   erase_aspect=(0.3, 3.3))
    return preprocess.random_augment(x, cfg, tf.constant([3, 4], tf.int64), positions,
                                     global_batch).numpy()

  @parameterized.parameters(0.0, 0.5, 1.0)
  def test_the_drawn_share_of_a_batch_has_one_rectangle_of_one_grey(self, p):
    # Distinct values everywhere, so that changed pixels are exactly the erased ones.
    x = tf.random.stateless_uniform((256, 20, 24, 1), seed=(0, 1), minval=0.01, maxval=0.99)
    y = self._erase(x, p)
    changed = y != x.numpy()
    erased = changed.any(axis=(1, 2, 3))
    self.assertNear(erased.mean(), p, 0.1)
    for image, mask in zip(y[erased], changed[erased]):
      rows, cols = np.nonzero(mask[..., 0])
      box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1, 0]
      self.assertTrue(box.all())  # one solid rectangle
      self.assertLen(np.unique(image[mask]), 1)  # filled with one grey level
      self.assertBetween(mask.mean(), 0.005, 0.4)  # its area, to whole pixels
    # Keyed by place in the global batch: the second half alone draws as it did in the whole.
    self.assertAllEqual(self._erase(x[128:], p, tf.range(128, 256), 256), y[128:])

  def test_rectangles_vary_in_area_and_shape(self):
    x = tf.random.stateless_uniform((256, 32, 32, 1), seed=(0, 2), minval=0.01, maxval=0.99)
    changed = (self._erase(x, 1.0) != x.numpy())[..., 0]
    heights = changed.any(axis=2).sum(axis=1)
    widths = changed.any(axis=1).sum(axis=1)
    self.assertGreater(np.ptp(changed.mean(axis=(1, 2))), 0.2)
    self.assertTrue((heights > 2 * widths).any() and (widths > 2 * heights).any())


class RandAugmentTest(tf.test.TestCase, parameterized.TestCase):

  def _run(self, x, dataset='cifar10', ops=(2, 9), step=1):
    cfg = _augment(dataset, rotate=0.0, scale=0.0, translate=0.0, flip=False, brightness=0.0,
                   contrast=0.0, randaugment=ops)
    seed = tf.constant([0, step], tf.int64)
    return preprocess.random_augment(tf.cast(x, tf.float32) / 255, cfg, seed)

  def test_deterministic_per_seed_and_step_and_different_across_steps(self):
    x = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 3), np.uint8)
    self.assertAllEqual(self._run(x), self._run(x))
    self.assertNotAllClose(self._run(x), self._run(x, step=2))
    self.assertNotAllClose(self._run(x), tf.cast(x, tf.float32) / 255)

  def test_digits_draw_geometric_ops_only(self):
    # A constant image under rotation, shear and translation keeps its level where content is
    # left and blends towards the zero fill elsewhere: its brightest pixel stays the level. Any
    # colour op (brighter, darker, solarized, posterized, equalized, autocontrast) moves it.
    # Magnitude 5: three translations one way (3.6 pixels each) leave a column of content.
    level = 0.6
    x = np.full((256, 16, 16, 1), round(level * 255), np.uint8)
    y = self._run(x, 'mnist', ops=(3, 5)).numpy()
    level = round(level * 255) / 255
    self.assertAllClose(y.max(axis=(1, 2, 3)), np.full(256, level), atol=1e-5)
    self.assertLess(y.min(), level - 0.1)  # and the geometric ops did move content

  def test_other_datasets_draw_colour_ops_too(self):
    x = np.full((256, 16, 16, 3), 150, np.uint8)
    y = self._run(x, ops=(1, 10)).numpy()
    self.assertTrue(np.any(y.max(axis=(1, 2, 3)) > 150 / 255 + 0.1))

  @parameterized.parameters(*[name for name in preprocess.GEOMETRIC_OPS + preprocess.COLOR_OPS
                              if name not in ('autocontrast', 'equalize')])
  def test_magnitude_0_is_the_identity(self, name):
    x = tf.random.stateless_uniform([4, 10, 10, 3], seed=[1, 2])
    ops = preprocess.GEOMETRIC_OPS + preprocess.COLOR_OPS
    signed = tf.constant([0.0, -0.0, 0.0, 0.0])
    if name in preprocess.GEOMETRIC_OPS:
      y = preprocess.geometric_op(x, tf.fill([4], ops.index(name)), signed, ops)
    else:
      y = preprocess._COLOR_FNS[name](x, signed, 0.0)
    self.assertAllEqual(y, x)

  def test_randaugment_at_magnitude_0_for_digits_is_the_identity(self):
    x = _digits(16)
    self.assertAllEqual(self._run(x, 'mnist', ops=(2, 0)), tf.cast(x, tf.float32) / 255)

  def test_equalize_matches_pil(self):
    from PIL import Image, ImageOps  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(3)
    # 48×48 pixels over 140 levels: PIL's step (pixels per output level) is above 1.
    x = rng.integers(40, 180, (3, 48, 48, 3)).astype(np.uint8)
    x[2] = 77  # one level: left as it is
    y = preprocess._COLOR_FNS['equalize'](tf.constant(x, tf.float32) / 255, None, None)
    expected = np.stack([np.asarray(ImageOps.equalize(Image.fromarray(image))) for image in x])
    self.assertAllEqual(np.round(y.numpy() * 255).astype(np.uint8), expected)

  @parameterized.parameters(('rotate', 1), ('translate_x', 0), ('shear_x', 1))
  def test_geometric_ops_move_content_the_stated_way(self, name, axis_moves):
    # translate_x shifts columns; rotation and shear_x move a point off the centre row.
    x = np.zeros((1, 15, 15, 1), np.float32)
    x[0, 3, 7] = 1.0  # above the centre
    ops = preprocess.GEOMETRIC_OPS
    y = preprocess.geometric_op(tf.constant(x), tf.constant([ops.index(name)]),
                                tf.constant([1.0]), ops).numpy()[0, ..., 0]
    self.assertNotAllClose(y, x[0, ..., 0])
    if name == 'translate_x':
      self.assertAllClose(y.sum(axis=0)[7], 0.0)  # left its column
