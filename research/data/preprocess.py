"""On-device input adaptation: augment, pad-resize and normalise uint8 batches.

One function serves training, evaluation and prediction, so what the model sees at serving time
is exactly what it saw in evaluation. It runs inside the compiled step: the host ships uint8
batches at source resolution and the accelerator does the (for 227×227 inputs, expensive) resize.
Randomness is stateless, keyed by a seed tensor, so a step's augmentation depends only on
(seed, step, replica) and a resumed run repeats it exactly.
"""

import math

import tensorflow as tf


def preprocess(images, *, input_size=0, training=False, augment=None, seed=None):
  """uint8 [B, H, W, C] → float32 [B, S, S, C] in [-1, 1]; augments only when training."""
  x = tf.cast(images, tf.float32) / 255.0
  if training and augment is not None:
    x = random_augment(x, augment, seed)
  if input_size and tuple(x.shape[1:3]) != (input_size, input_size):
    x = tf.image.resize_with_pad(x, input_size, input_size)
  return x * 2.0 - 1.0


def _uniform(seed, salt, shape, low, high):
  return tf.random.stateless_uniform(
      shape, seed=tf.random.experimental.stateless_fold_in(seed, salt), minval=low, maxval=high)


def random_augment(x, cfg, seed):
  """Random affine (rotation, scale, translation, horizontal flip) and colour jitter.

  `cfg` has rotate (degrees), scale (± fraction), translate (± fraction of the side), flip (bool),
  brightness and contrast (± fractions). Digits keep flip off: a mirrored 2 is not a 2.
  """
  if cfg.rotate or cfg.scale or cfg.translate or cfg.flip:
    x = _random_affine(x, cfg, seed)
  if cfg.brightness or cfg.contrast:
    b = tf.shape(x)[0]
    delta = _uniform(seed, 5, [b, 1, 1, 1], -cfg.brightness, cfg.brightness)
    factor = _uniform(seed, 6, [b, 1, 1, 1], 1.0 - cfg.contrast, 1.0 + cfg.contrast)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = tf.clip_by_value((x - mean) * factor + mean + delta, 0.0, 1.0)
  return x


def _random_affine(x, cfg, seed):
  """One projective-transform op per batch: zero fill outside, bilinear inside."""
  b = tf.shape(x)[0]
  h, w = x.shape[1], x.shape[2]
  angle = _uniform(seed, 1, [b], -cfg.rotate, cfg.rotate) * (math.pi / 180.0)
  scale = _uniform(seed, 2, [b], 1.0 - cfg.scale, 1.0 + cfg.scale)
  tx = _uniform(seed, 3, [b], -cfg.translate, cfg.translate) * w
  ty = _uniform(seed, 4, [b], -cfg.translate, cfg.translate) * h
  flip = tf.ones([b])
  if cfg.flip:
    flip = tf.where(_uniform(seed, 7, [b], 0.0, 1.0) < 0.5, -1.0, 1.0)
  # The op maps each output pixel to an input pixel, so it takes the inverse transform:
  # in = (1/s)·R(-θ)·F·(out - c - t) + c, with F the optional mirror about the vertical axis.
  cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
  a0, a1 = cos * flip, sin
  b0, b1 = -sin * flip, cos
  cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
  a2 = cx - a0 * (cx + tx) - a1 * (cy + ty)
  b2 = cy - b0 * (cx + tx) - b1 * (cy + ty)
  zeros = tf.zeros([b])
  transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=x, transforms=transforms, output_shape=[h, w], fill_value=0.0,
      interpolation='BILINEAR', fill_mode='CONSTANT')
