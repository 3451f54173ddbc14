"""Classifies image files with a training run's checkpoint (its best by default).

Any PNG/JPEG/GIF/BMP, any size, grey or colour: each file is decoded, brought to the dataset's
channels and source size (aspect kept, zero padding), and then goes through exactly the
evaluation preprocessing.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from research import checkpoints
from research.data import decode
from research.data import preprocess


@dataclasses.dataclass
class Prediction:
  path: str
  top: list  # [(class name, probability)], most probable first; empty on error
  error: str = ''


def load_image(path, image_shape, pipeline='memory', eval_fraction=0.875):
  """uint8 [H, W, C] as the run's evaluation pipeline shipped it: padded to the dataset's source
  shape (memory), or centre-cropped to it (stream); raises ValueError naming what is wrong."""
  try:
    data = tf.io.read_file(path)
  except tf.errors.OpError as e:
    raise ValueError(f'cannot read: {e.message.splitlines()[0]}') from None
  if not int(tf.strings.length(data)):
    raise ValueError('empty file')
  h, w, c = image_shape
  try:
    if pipeline == 'stream':
      return decode.eval_crop(data, h, c, eval_fraction)
    image = tf.io.decode_image(data, channels=c, expand_animations=False)
  except tf.errors.OpError as e:
    raise ValueError(f'not a readable image ({e.message.splitlines()[0][:80]})') from None
  image = tf.image.resize_with_pad(tf.cast(image, tf.float32), h, w)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def predict(workdir, paths, top_k=3, checkpoint='best'):
  """One Prediction per path; unreadable files get an error and the others go on."""
  config, info, model, _ = checkpoints.load_for_inference(workdir, checkpoint)
  names = info['class_names']

  @tf.function
  def probabilities(images):
    x = preprocess.preprocess(images, input_size=config.model.input_size, training=False)
    return tf.nn.softmax(model(x, training=False))

  results = []
  for path in paths:
    try:
      image = load_image(path, info['image_shape'], info.get('pipeline', 'memory'),
                         info.get('fingerprint', {}).get('crop', {}).get('eval_fraction', 0.875))
    except ValueError as e:
      results.append(Prediction(path, [], str(e)))
      continue
    p = probabilities(image[None]).numpy()[0]
    order = np.argsort(-p)[:top_k]
    results.append(Prediction(path, [(names[i], float(p[i])) for i in order]))
  return results
