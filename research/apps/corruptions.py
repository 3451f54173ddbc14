"""Corrupted copies of an evaluation split: how a model holds up off its test set.

After MNIST-C (Mu & Gilmer 2019) and ImageNet-C (Hendrycks & Dietterich 2019): each corruption
has five severities (inversion has one), applied to the uint8 images as the pipeline delivers
them, before the model's own preprocessing. Sizes scale with the image side, so one definition
serves 28-pixel digits and 224-pixel photos. Random ones (noise) are keyed by (severity, example
index): a score is repeatable and does not depend on the batch size or the replica count.
"""

import numpy as np
import tensorflow as tf

from research.core.errors import UserError

SEVERITIES = (1, 2, 3, 4, 5)


def _float(x):
  return tf.cast(x, tf.float32)


def _to_uint8(x):
  return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def gaussian_noise(x, severity, index):
  sigma = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1] * 255.0
  seeds = tf.stack([tf.fill(tf.shape(index), tf.cast(severity, tf.int64)), index], axis=1)

  def one(args):
    image, seed = args
    return tf.random.stateless_normal(tf.shape(image), seed=seed, stddev=sigma)

  noise = tf.map_fn(one, (_float(x), seeds), fn_output_signature=tf.float32)
  return _to_uint8(_float(x) + noise)


def _gaussian_kernel(sigma):
  radius = int(np.ceil(3 * sigma))
  t = np.arange(-radius, radius + 1, dtype=np.float32)
  k = np.exp(-0.5 * (t / sigma) ** 2)
  return k / k.sum()


def gaussian_blur(x, severity, index):
  del index
  side = int(x.shape[1])
  sigma = max((0.02, 0.035, 0.05, 0.07, 0.1)[severity - 1] * side, 0.3)
  k = _gaussian_kernel(sigma)
  c = int(x.shape[-1])
  images = _float(x)
  # Separable: a row pass then a column pass, each channel on its own (depthwise).
  row = tf.constant(np.tile(k[None, :, None, None], [1, 1, c, 1]))
  col = tf.constant(np.tile(k[:, None, None, None], [1, 1, c, 1]))
  images = tf.nn.depthwise_conv2d(images, row, [1, 1, 1, 1], 'SAME')
  images = tf.nn.depthwise_conv2d(images, col, [1, 1, 1, 1], 'SAME')
  return _to_uint8(images)


def pixelate(x, severity, index):
  """Downscale (area average) then upscale back: lost resolution."""
  del index
  h, w = int(x.shape[1]), int(x.shape[2])
  f = (0.75, 0.6, 0.5, 0.4, 0.3)[severity - 1]
  small = tf.image.resize(_float(x), [max(int(h * f), 1), max(int(w * f), 1)], 'area')
  return _to_uint8(tf.image.resize(small, [h, w], 'bilinear'))


def _max_filter(x, size):
  return tf.nn.max_pool2d(x, size, 1, 'SAME')


def thicken(x, severity, index):
  """Grey dilation: bright strokes grow (digits are bright on dark)."""
  del index
  size = 1 + int(round((0.04, 0.08, 0.11, 0.15, 0.19)[severity - 1] * int(x.shape[1])))
  return _to_uint8(_max_filter(_float(x), max(size, 2)))


def thin(x, severity, index):
  """Bright strokes worn away: a blend toward the grey erosion by one pixel (an erosion any
  larger erases a digit's 2-3 pixel strokes outright)."""
  del index
  a = (0.2, 0.4, 0.6, 0.8, 1.0)[severity - 1]
  images = _float(x)
  return _to_uint8((1 - a) * images - a * _max_filter(-images, 2))


def shift(x, severity, index):
  """Translation down and right by a fraction of the side, the border filled with black."""
  del index
  h, w = int(x.shape[1]), int(x.shape[2])
  d = max(int(round((0.05, 0.1, 0.15, 0.2, 0.25)[severity - 1] * h)), 1)
  padded = tf.pad(x, [[0, 0], [d, 0], [d, 0], [0, 0]])
  return padded[:, :h, :w, :]


def contrast(x, severity, index):
  """Pixels pulled toward each image's mean."""
  del index
  c = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
  images = _float(x)
  mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
  return _to_uint8((images - mean) * c + mean)


def invert(x, severity, index):
  del severity, index
  return 255 - x


CORRUPTIONS = {
    'gaussian_noise': gaussian_noise, 'gaussian_blur': gaussian_blur, 'pixelate': pixelate,
    'thicken': thicken, 'thin': thin, 'shift': shift, 'contrast': contrast, 'invert': invert}
# Corruptions with a single level (reported as severity 1).
SINGLE_LEVEL = ('invert',)


def parse(text):
  """'all' or a comma-separated list of names → the names, checked; a bad name is one line."""
  names = list(CORRUPTIONS) if text.strip() == 'all' else [
      n.strip() for n in text.split(',') if n.strip()]
  unknown = [n for n in names if n not in CORRUPTIONS]
  if unknown or not names:
    raise UserError(f'unknown corruption {", ".join(unknown) or repr(text)}: use all, or any of '
                    f'{", ".join(CORRUPTIONS)} separated by commas')
  return names


def severities(name):
  return (1,) if name in SINGLE_LEVEL else SEVERITIES


def apply(name, images, severity, index):
  """`images` uint8 [B, H, W, C] of examples `index` (int64 [B]) corrupted by `name`."""
  return CORRUPTIONS[name](images, severity, index)
