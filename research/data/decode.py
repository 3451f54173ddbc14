"""Host-side decoding for the streaming pipeline: encoded bytes → uint8 at the model's input size.

Variable-size images cannot be batched before they are cropped, so the host decodes each one and
crops it to the square side the model takes; the device then gets small uint8 batches of one
shape and does flip, colour jitter and normalisation inside the compiled step, as for in-memory
data. Training takes a random-resized crop (Inception's: a box of 8–100% of the area, aspect
3/4–4/3); evaluation a centre crop of `eval_crop` of the shorter side, resized. JPEG files are
decoded only inside the crop box. Images whose whole matters (digits, documents) are letterboxed
instead, in training and evaluation alike: resized whole, aspect kept, onto zero padding. All
randomness is stateless, keyed by the caller (the pipeline keys it by seed, epoch and example
index), so a resumed or re-sharded run crops alike.
"""

import tensorflow as tf


def to_channels(image, channels):
  """uint8 [H, W, c] with c in 1–4 → [H, W, channels]: grey and colour files mix in one dataset
  (an alpha channel is dropped)."""
  c = tf.shape(image)[-1]
  if channels == 3:
    return tf.cond(c < 3, lambda: tf.tile(image[..., :1], [1, 1, 3]), lambda: image[..., :3])
  return tf.cond(c < 3, lambda: image[..., :1], lambda: tf.cast(tf.round(
      tf.image.rgb_to_grayscale(tf.cast(image[..., :3], tf.float32))), tf.uint8))


def _decode_any(data, channels):
  """Any image format TF reads (PNG, JPEG, GIF's first frame, BMP, 8 or 16 bits) → uint8."""
  image = tf.io.decode_image(data, channels=0, dtype=tf.uint8, expand_animations=False)
  return to_channels(image, channels)


def colour_only(data):
  """Whether encoded `data` decodes to colour but not to grey: GIF and BMP (TensorFlow's
  decoders give 3 or 4 channels) and four-component JPEGs (CMYK, YCCK), which libjpeg converts to
  RGB but refuses to turn grey ("Unsupported color conversion request")."""
  head = tf.strings.substr(data, 0, 2)
  return tf.logical_or(
      tf.logical_or(tf.equal(head, 'GI'), tf.equal(head, 'BM')),
      tf.cond(tf.io.is_jpeg(data), lambda: tf.io.extract_jpeg_shape(data)[2] == 4,
              lambda: tf.constant(False)))


def decode_to_channels(data, channels):
  """Encoded PNG, JPEG, GIF (first frame) or BMP → uint8 [H, W, channels] by the format's own
  decoder, grey ↔ colour included; what it cannot make grey is decoded to colour and made grey
  here."""
  def decode(c):
    return lambda: tf.io.decode_image(data, channels=c, expand_animations=False)

  if channels != 1:
    return decode(channels)()
  return tf.cond(colour_only(data), lambda: tf.image.rgb_to_grayscale(decode(3)()), decode(1))


def decode_box(data, channels, box_of):
  """Decodes the box `box_of([height, width])` ([y, x, h, w]) of encoded `data`: a JPEG only
  inside the box, from its header's shape; anything else whole, once, then sliced."""
  def jpeg():
    shape = tf.io.extract_jpeg_shape(data)
    box = box_of(shape[:2])
    if channels != 1:
      return tf.io.decode_and_crop_jpeg(data, box, channels=channels)  # grey → colour too
    # libjpeg makes a colour JPEG grey itself, but not a four-component (CMYK) one.
    return tf.cond(
        shape[2] == 4,
        lambda: to_channels(tf.io.decode_and_crop_jpeg(data, box, channels=3), 1),
        lambda: tf.io.decode_and_crop_jpeg(data, box, channels=1))

  def other():
    image = _decode_any(data, channels)
    box = box_of(tf.shape(image)[:2])
    return tf.slice(image, [box[0], box[1], 0], [box[2], box[3], -1])

  return tf.cond(tf.io.is_jpeg(data), jpeg, other)


def _resize(image, size, channels):
  x = tf.image.resize(tf.cast(image, tf.float32), [size, size], antialias=True)
  x = tf.ensure_shape(x, [size, size, channels])
  return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)


def train_crop(data, size, channels, seed, area=(0.08, 1.0), aspect=(0.75, 4 / 3)):
  """A random-resized crop of encoded `data` to uint8 [size, size, channels]; `seed` is a
  stateless seed, shape [2]. Falls back to the whole image after 10 failed draws."""
  def box_of(shape):
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.concat([shape, [channels]], 0), bounding_boxes=tf.zeros([1, 0, 4]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=aspect, area_range=area, max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    return tf.stack([begin[0], begin[1], extent[0], extent[1]])

  return _resize(decode_box(data, channels, box_of), size, channels)


def eval_crop(data, size, channels, fraction=0.875):
  """The centre square of `fraction` of the shorter side, resized to [size, size, channels]."""
  def box_of(shape):
    side = tf.maximum(tf.cast(tf.cast(tf.reduce_min(shape), tf.float32) * fraction, tf.int32), 1)
    return tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, side, side])

  return _resize(decode_box(data, channels, box_of), size, channels)


def _f32_div(x, y):
  """x / y rounded to float32 as eager float32 division rounds it, computed in float64 (exact
  for these operands after one rounding) so that Grappler's arithmetic rewrites of float32
  division in a graph cannot shift it."""
  return tf.cast(tf.cast(x, tf.float64) / tf.cast(y, tf.float64), tf.float32)


def resize_with_pad(image, height, width, antialias=False):
  """tf.image.resize_with_pad(image, height, width, antialias=antialias) as it runs eagerly:
  the image's aspect kept, centred on zero padding. In a graph, with the image's size unknown
  until run time, Grappler rewrites its float32 size arithmetic and a 41×97 image comes out 27
  pixels wide instead of 28; the sizes are therefore worked out here, in its order and rounding,
  and the resize and pad are its own ops."""
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  ratio = tf.maximum(_f32_div(w, float(width)), _f32_div(h, float(height)))
  resized_h, resized_w = _f32_div(h, ratio), _f32_div(w, ratio)
  # At least a pixel: a sliver of an image (1×500) would otherwise resize to nothing and fail.
  size = tf.maximum(tf.cast(tf.floor(tf.stack([resized_h, resized_w])), tf.int32), 1)
  pad_h = tf.maximum(0, tf.cast(tf.floor((float(height) - resized_h) / 2), tf.int32))
  pad_w = tf.maximum(0, tf.cast(tf.floor((float(width) - resized_w) / 2), tf.int32))
  resized = tf.image.resize(image, size, method='bilinear', antialias=antialias)
  return tf.image.pad_to_bounding_box(resized, pad_h, pad_w, height, width)


def letterbox(data, size, channels):
  """The whole image of encoded `data` in uint8 [size, size, channels]: aspect kept, centred on
  zero padding (the in-memory path's pad-resize, done on the host; antialiased when it shrinks,
  as the crops are). Nothing is cut off and nothing is random."""
  image = resize_with_pad(tf.cast(_decode_any(data, channels), tf.float32), size, size,
                          antialias=True)
  image = tf.ensure_shape(image, [size, size, channels])
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
