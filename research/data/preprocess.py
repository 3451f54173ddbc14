"""On-device input adaptation: augment, pad-resize and normalise uint8 batches.

One function serves training, evaluation and prediction, so what the model sees at serving time
is exactly what it saw in evaluation. It runs inside the compiled step: the host ships uint8
batches at source resolution and the accelerator does the (for 227×227 inputs, expensive) resize.

Randomness is stateless and per example: every draw of an example is keyed by (seed, step) and
the example's position in the global batch (`Draws`), so a resumed run repeats a step's
augmentation exactly, and an example is augmented alike whichever replica holds it.
Everything is vectorised over the batch (per-example parameters, one projective transform per
geometric stage, colour ops selected with tf.where): nothing loops over examples.
"""

import math

import numpy as np
import tensorflow as tf

from research.core import config as config_lib

# RandAugment's ops. Digits draw from the geometric ones only (config.augment.color_ops False).
GEOMETRIC_OPS = ('identity', 'rotate', 'shear_x', 'shear_y', 'translate_x', 'translate_y')
COLOR_OPS = ('autocontrast', 'equalize', 'solarize', 'color', 'posterize', 'contrast',
             'brightness', 'sharpness')

# Each op's strength at magnitude 10 (RandAugment's, as timm sets them): degrees, shear
# factor, fraction of the side, and the enhance factors' largest change from 1.
_MAX_ROTATE, _MAX_SHEAR, _MAX_TRANSLATE, _MAX_ENHANCE = 30.0, 0.3, 0.45, 0.9
_MAX_POSTERIZE_BITS_DROPPED = 4

# Draw salts: each random quantity has its own stream under the step's seed.
_RANDAUGMENT_SALT = 100
MIXING_SALT = 200
_ERASE_SALT = 300


def preprocess(images, *, input_size=0, training=False, augment=None, seed=None,
               positions=None, global_batch=0):
  """uint8 [B, H, W, C] → float32 [B, S, S, C] in [-1, 1]; augments only when training.

  `positions` (int32 [B]) are the examples' rows in a global batch of `global_batch` (the
  default: this batch is the global one), and key their random draws (`Draws`).
  """
  x = tf.cast(images, tf.float32) / 255.0
  if training and augment is not None:
    x = random_augment(x, augment, seed, positions, global_batch)
  if input_size and tuple(x.shape[1:3]) != (input_size, input_size):
    x = pad_resize(x, input_size)
  return x * 2.0 - 1.0


def pad_resize(x, size):
  """float [B, H, W, C] → [B, size, size, C]: tf.image.resize_with_pad(x, size, size) (bilinear,
  aspect kept, centred on zero padding), equal to within float rounding.

  A grey image made larger (MNIST for AlexNet or VGG) is resized by two matmuls with fixed
  interpolation matrices whose padding rows are zero: bilinear interpolation is separable and
  linear in the pixels. For 128 digits from 28² to 227² that runs ~2× as fast as resize and pad
  on a CPU (`python -m launch.benchmark --augment`). Colour images and shrinking keep TF's
  resize: there the matmuls do more work than its gather.
  """
  _, h, w, c = x.shape
  if c != 1 or h is None or w is None or h > size or w > size:
    return tf.image.resize_with_pad(x, size, size)
  rows, cols = (tf.constant(m) for m in _pad_resize_matrices(h, w, size))
  x = tf.matmul(x[..., 0], cols, transpose_b=True)  # [B, H, size]: the columns resized
  return tf.matmul(rows, x)[..., None]  # one matrix for the whole batch, broadcast


def _pad_resize_matrices(h, w, size):
  """([size, h], [size, w]) float32: row i of each holds the weights of the input pixels in
  output row (column) i. Sizes and offsets are tf.image.resize_with_pad's in float32, as it
  computes them eagerly; the weights are those of its bilinear kernel with half-pixel centres."""
  f32 = np.float32
  ratio = max(f32(w) / f32(size), f32(h) / f32(size))
  return tuple(_bilinear_matrix(n, int(np.floor(f32(n) / ratio)),
                                max(0, int(np.floor((f32(size) - f32(n) / ratio) / f32(2)))),
                                size)
               for n in (h, w))


def _bilinear_matrix(n_in, n_out, offset, size):
  """[size, n_in]: rows offset … offset + n_out - 1 interpolate n_in pixels to n_out, the other
  rows (padding) are zero."""
  scale = np.float32(n_in) / np.float32(n_out)
  p = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
  lerp = p - np.floor(p)
  low = np.clip(np.floor(p), 0, n_in - 1).astype(int)
  high = np.clip(np.ceil(p), 0, n_in - 1).astype(int)
  m = np.zeros((size, n_in), np.float32)
  rows = np.arange(n_out) + offset
  np.add.at(m, (rows, low), 1.0 - lerp)
  np.add.at(m, (rows, high), lerp)
  return m


class Draws:
  """Per-example random values keyed by (seed, global position).

  Each quantity (a salt) is drawn for the whole global batch from the step's seed, and this
  batch's rows are gathered: an example gets the same values whether one device holds the whole
  batch or a replica holds a slice of it. Drawing a global batch of scalars costs nothing next
  to one image op.
  """

  def __init__(self, seed, batch_size, positions=None, global_batch=0):
    self.seed = seed
    if positions is None:
      positions, global_batch = tf.range(batch_size), batch_size
    self.positions, self.global_batch = positions, global_batch

  def _key(self, salt):
    return tf.random.experimental.stateless_fold_in(self.seed, salt)

  def uniform(self, salt, low=0.0, high=1.0):
    """float32 [B] uniform in [low, high)."""
    values = tf.random.stateless_uniform([self.global_batch], seed=self._key(salt), minval=low,
                                         maxval=high)
    return tf.gather(values, self.positions)

  def integers(self, salt, high):
    """int32 [B] uniform in [0, high)."""
    values = tf.random.stateless_uniform([self.global_batch], seed=self._key(salt), minval=0,
                                         maxval=high, dtype=tf.int32)
    return tf.gather(values, self.positions)

  def beta(self, salt, alpha):
    """float32 [B] from Beta(alpha, alpha), as the ratio of two Gamma(alpha) draws."""
    g = tf.random.stateless_gamma([2, self.global_batch], seed=self._key(salt), alpha=alpha)
    return tf.gather(tf.math.divide_no_nan(g[0], g[0] + g[1]), self.positions)

  def sign(self, salt):
    """float32 [B] of ±1, each with probability 1/2."""
    return tf.where(self.uniform(salt) < 0.5, -1.0, 1.0)


def random_augment(x, cfg, seed, positions=None, global_batch=0):
  """Random affine (rotation, scale, translation, horizontal flip), colour jitter, RandAugment.

  `cfg` has rotate (degrees), scale (± fraction), translate (± fraction of the side), flip (bool),
  brightness and contrast (± fractions), invert (the probability of 1 - x), and randaugment
  (num_ops, magnitude) with color_ops (bool). Digits keep flip and colour ops off: a mirrored 2
  is not a 2.
  """
  draws = Draws(seed, tf.shape(x)[0], positions, global_batch)
  if cfg.rotate or cfg.scale or cfg.translate or cfg.flip:
    x = _random_affine(x, cfg, draws)
  if cfg.brightness or cfg.contrast:
    delta = draws.uniform(5, -cfg.brightness, cfg.brightness)[:, None, None, None]
    factor = draws.uniform(6, 1.0 - cfg.contrast, 1.0 + cfg.contrast)[:, None, None, None]
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = tf.clip_by_value((x - mean) * factor + mean + delta, 0.0, 1.0)
  if cfg.get('invert', 0.0):  # light on dark becomes dark on light: polarity is not the class
    flipped = draws.uniform(8) < cfg.invert
    x = tf.where(flipped[:, None, None, None], 1.0 - x, x)
  num_ops, magnitude = cfg.get('randaugment', (0, 0))
  if num_ops:
    x = rand_augment(x, num_ops, magnitude, cfg.get('color_ops', True), draws)
  if cfg.get('erase', 0.0):
    x = random_erase(x, cfg, draws)
  return x


def random_erase(x, cfg, draws):
  """Random erasing (Zhong et al., 2020): with probability `cfg.erase` an image has one
  rectangle of `erase_area` (a range of fractions of the image) and `erase_aspect` (a range of
  height / width, drawn on a log scale) filled with one random grey level, so that the class
  must be told from what the occlusion leaves. The rectangle lies inside the image."""
  h, w = x.shape[1], x.shape[2]
  erased = draws.uniform(_ERASE_SALT) < cfg.erase
  area = draws.uniform(_ERASE_SALT + 1, *cfg.erase_area) * (h * w)
  aspect = tf.exp(draws.uniform(_ERASE_SALT + 2, *(math.log(a) for a in cfg.erase_aspect)))
  height = tf.minimum(tf.sqrt(area * aspect), h)
  width = tf.minimum(tf.sqrt(area / aspect), w)
  top = draws.uniform(_ERASE_SALT + 3) * (h - height)
  left = draws.uniform(_ERASE_SALT + 4) * (w - width)
  ys = tf.range(h, dtype=tf.float32)[None, :, None] + 0.5  # pixel centres
  xs = tf.range(w, dtype=tf.float32)[None, None, :] + 0.5
  inside = ((ys >= top[:, None, None]) & (ys < (top + height)[:, None, None])
            & (xs >= left[:, None, None]) & (xs < (left + width)[:, None, None])
            & erased[:, None, None])
  fill = draws.uniform(_ERASE_SALT + 5)[:, None, None, None]
  return tf.where(inside[..., None], fill, x)


def _random_affine(x, cfg, draws):
  """One projective-transform op per batch: zero fill outside, bilinear inside."""
  h, w = x.shape[1], x.shape[2]
  angle = draws.uniform(1, -cfg.rotate, cfg.rotate) * (math.pi / 180.0)
  scale = draws.uniform(2, 1.0 - cfg.scale, 1.0 + cfg.scale)
  tx = draws.uniform(3, -cfg.translate, cfg.translate) * w
  ty = draws.uniform(4, -cfg.translate, cfg.translate) * h
  flip = tf.ones_like(angle)
  if cfg.flip:
    flip = tf.where(draws.uniform(7) < 0.5, -1.0, 1.0)
  # The op maps each output pixel to an input pixel, so it takes the inverse transform:
  # in = (1/s)·R(-θ)·F·(out - c - t) + c, with F the optional mirror about the vertical axis.
  cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
  return _transform(x, cos * flip, sin, -sin * flip, cos, tx, ty)


def _transform(x, a0, a1, b0, b1, tx, ty):
  """Each image resampled at in = A·(out - c - t) + c, A = [[a0, a1], [b0, b1]] ([B] each)
  about the centre c: one op for the batch, bilinear inside, zero fill outside."""
  h, w = x.shape[1], x.shape[2]
  cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
  a2 = cx - a0 * (cx + tx) - a1 * (cy + ty)
  b2 = cy - b0 * (cx + tx) - b1 * (cy + ty)
  zeros = tf.zeros_like(a0)
  transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=x, transforms=transforms, output_shape=[h, w], fill_value=0.0,
      interpolation='BILINEAR', fill_mode='CONSTANT')


def rand_augment(x, num_ops, magnitude, color_ops, draws):
  """RandAugment on float [B, H, W, C] in [0, 1]: `num_ops` rounds, in each of which every
  example applies one op drawn uniformly (identity included), at `magnitude` (0-10) with a random
  sign for the signed ones. Magnitude 0 leaves every op but autocontrast and equalize (which
  have no strength) the identity. Without `color_ops` the ops are the geometric ones only.

  Per round the batch is partitioned by op: one projective transform for the examples that drew
  a geometric op, each colour op on the examples that drew it, then stitched back in order. So an
  image pays for its own op only (computing every op on the whole batch and selecting with
  tf.where cost 8x more at 224×224), and every op works per image, whatever else is in its part.
  Values stay float between ops (PIL's RandAugment rounds to uint8 after each).
  """
  ops = GEOMETRIC_OPS + (COLOR_OPS if color_ops else ())
  # Part 0: identity; 1: any geometric op; 2 + k: the k-th colour op.
  part_of_op = tf.constant([0] + [1] * (len(GEOMETRIC_OPS) - 1) +
                           list(range(2, 2 + len(ops) - len(GEOMETRIC_OPS))))
  num_parts = 2 + len(ops) - len(GEOMETRIC_OPS)
  m = float(magnitude) / config_lib.RANDAUGMENT_MAX_MAGNITUDE
  index, shape = tf.range(tf.shape(x)[0]), x.shape
  for round_ in range(num_ops):
    salt = _RANDAUGMENT_SALT + 2 * round_
    op = draws.integers(salt, len(ops))
    signed = draws.sign(salt + 1) * m
    parts = tf.dynamic_partition(tf.stack([index, op], 1), tf.gather(part_of_op, op), num_parts)
    outs = []
    for number, part in enumerate(parts):
      images = tf.gather(x, part[:, 0])
      if number == 1:
        images = geometric_op(images, part[:, 1], tf.gather(signed, part[:, 0]), ops)
      elif number > 1:
        name = ops[len(GEOMETRIC_OPS) + number - 2]
        images = _COLOR_FNS[name](images, tf.gather(signed, part[:, 0]), m)
      outs.append(images)
    x = tf.dynamic_stitch([part[:, 0] for part in parts], outs)
    x.set_shape(shape)  # the stitch forgets the batch size, which compiled models may need
  return x


def geometric_op(x, op, signed, ops):
  """Each example's geometric op (index `op` into `ops`) at signed strength `signed` [B], as one
  transform for the batch: at most one of rotation, shear and translation is non-zero per
  example, so one matrix holds whichever it is."""
  h, w = x.shape[1], x.shape[2]

  def amount(name, full):
    return tf.where(op == ops.index(name), signed * full, 0.0)

  angle = amount('rotate', _MAX_ROTATE * math.pi / 180.0)
  shear_x, shear_y = amount('shear_x', _MAX_SHEAR), amount('shear_y', _MAX_SHEAR)
  tx, ty = amount('translate_x', _MAX_TRANSLATE * w), amount('translate_y', _MAX_TRANSLATE * h)
  cos, sin = tf.cos(angle), tf.sin(angle)
  return _transform(x, cos, sin + shear_x, shear_y - sin, cos, tx, ty)


def _blend(x, degenerate, factor):
  """PIL's enhance: degenerate + f·(x - degenerate), written so that f = 1 gives x exactly."""
  f = factor[:, None, None, None]
  return tf.clip_by_value(x + (f - 1.0) * (x - degenerate), 0.0, 1.0)


def _grey(x):
  return tf.image.rgb_to_grayscale(x) if x.shape[-1] == 3 else x


def _autocontrast(x, signed, m):
  del signed, m  # no strength
  low = tf.reduce_min(x, axis=[1, 2], keepdims=True)
  high = tf.reduce_max(x, axis=[1, 2], keepdims=True)
  return tf.where(high > low, (x - low) / tf.maximum(high - low, 1e-6), x)


def _equalize(x, signed, m):
  """PIL's histogram equalisation per image and channel, on 256 levels: one bincount for the
  batch's [B·C, 256] histograms, one gather through their lookup tables."""
  del signed, m
  b, c = tf.shape(x)[0], x.shape[-1]
  levels = tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.int32)
  offsets = (tf.range(b)[:, None, None, None] * c + tf.range(c)) * 256
  index = levels + offsets
  hist = tf.reshape(tf.math.bincount(tf.reshape(index, [-1]), minlength=b * c * 256,
                                     maxlength=b * c * 256), [b * c, 256])
  top = tf.reduce_max(tf.reshape(tf.transpose(levels, [0, 3, 1, 2]), [b * c, -1]), axis=1)
  total = tf.reduce_sum(hist, axis=1)
  step = (total - tf.gather(hist, top, batch_dims=1)) // 255
  below = tf.cumsum(hist, axis=1, exclusive=True)
  safe = tf.maximum(step, 1)[:, None]
  lut = tf.minimum((below + safe // 2) // safe, 255)
  # A channel of one level (step 0) stays as it is, as in PIL.
  lut = tf.where(step[:, None] > 0, lut, tf.range(256)[None])
  out = tf.gather(tf.reshape(lut, [-1]), index)
  return tf.cast(out, tf.float32) / 255.0


def _solarize(x, signed, m):
  del signed
  return tf.where(x > 1.0 - m, 1.0 - x, x)


def _posterize(x, signed, m):
  del signed
  dropped = round(_MAX_POSTERIZE_BITS_DROPPED * m)
  if not dropped:
    return x
  bucket = 2.0 ** dropped
  return tf.floor(tf.round(x * 255.0) / bucket) * bucket / 255.0


def _color(x, signed, m):
  del m
  return _blend(x, _grey(x), 1.0 + _MAX_ENHANCE * signed)


def _contrast(x, signed, m):
  del m
  mean = tf.reduce_mean(_grey(x), axis=[1, 2, 3], keepdims=True)
  return _blend(x, mean, 1.0 + _MAX_ENHANCE * signed)


def _brightness(x, signed, m):
  del m
  return _blend(x, tf.zeros_like(x), 1.0 + _MAX_ENHANCE * signed)


def _sharpness(x, signed, m):
  """PIL's sharpness: blend with its 3×3 smoothing filter, which leaves the border pixels."""
  del m
  h, w, c = x.shape[1:]
  kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, c, 1])
  smooth = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], 'SAME')  # its border is replaced
  inner = np.zeros([1, h, w, 1], bool)
  inner[:, 1:-1, 1:-1] = True
  degenerate = tf.where(inner, smooth, x)
  return _blend(x, degenerate, 1.0 + _MAX_ENHANCE * signed)


_COLOR_FNS = dict(autocontrast=_autocontrast, equalize=_equalize, solarize=_solarize,
                  color=_color, posterize=_posterize, contrast=_contrast,
                  brightness=_brightness, sharpness=_sharpness)
