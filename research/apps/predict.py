"""Classifies image files with a training run's checkpoint (its best by default) or with its
exported SavedModel.

Any PNG/JPEG/GIF/BMP, any size, grey or colour: each file is decoded on the host, brought to the
dataset's channels and source size (aspect kept, zero padding), and then goes through exactly the
evaluation preprocessing, many files to a batch. Inputs may be files, directories (searched
recursively for image extensions) or glob patterns.
"""

import csv
import dataclasses
import glob
import json
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from research.core import checkpoints
from research.core.errors import UserError
from research.data import decode
from research.data import preprocess
from research.infra import tf_startup

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.gif', '.bmp')
NOT_AN_IMAGE = 'not a readable image (PNG, JPEG, GIF or BMP)'
_GLOB_CHARS = frozenset('*?[')


@dataclasses.dataclass
class Prediction:
  path: str
  top: list  # [(class name, probability)], most probable first; empty on error
  error: str = ''


def _is_image_name(path):
  return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _files_under(directory):
  """The files under `directory`, each real directory visited once: a linked directory is
  followed unless it was seen already (its own path first), so a link back up the tree (a loop)
  adds nothing. Remote paths (gs://...) have no links and are walked as they are."""
  if '://' in directory:
    return [os.path.join(root, name) for root, _, names in tf.io.gfile.walk(directory)
            for name in names]
  files, seen = [], set()
  real, linked = [directory], []
  while real or linked:
    current = real.pop() if real else linked.pop()
    try:
      info = os.stat(current)
      entries = list(os.scandir(current))
    except OSError as e:
      logging.warning('Cannot list %s: %s.', current, e.strerror)
      continue
    if (info.st_dev, info.st_ino) in seen:
      continue
    seen.add((info.st_dev, info.st_ino))
    for entry in entries:
      if entry.is_dir():
        (linked if entry.is_symlink() else real).append(entry.path)
      else:
        files.append(entry.path)
  return files


def expand_inputs(inputs):
  """The files to classify, in order: a file as named (always tried), a directory's image files
  (recursively, sorted), a glob's matches (image files only). Raises UserError for a directory or
  pattern that yields no image."""
  paths, ignored = [], 0
  for arg in inputs:
    if tf.io.gfile.isdir(arg):
      files = _files_under(arg)
      found = [f for f in files if _is_image_name(f)]
      ignored += len(files) - len(found)
      if not found:
        raise UserError(f'{arg}: directory holds no image file ({", ".join(IMAGE_EXTENSIONS)})')
      paths.extend(sorted(found))
    elif _GLOB_CHARS & set(arg) and not tf.io.gfile.exists(arg):
      matches = sorted(glob.glob(arg, recursive=True))
      images = [m for m in matches if _is_image_name(m) and not os.path.isdir(m)]
      ignored += len(matches) - len(images)
      if not images:
        raise UserError(f'{arg}: pattern matches no image file')
      paths.extend(images)
    else:
      paths.append(arg)
  if ignored:
    logging.info('Ignored %d file(s) without an image extension (%s).', ignored,
                 ', '.join(IMAGE_EXTENSIONS))
  return paths, ignored


def read_bytes(path):
  """The file's bytes; raises ValueError in plain words when it cannot be read or is empty."""
  if not tf.io.gfile.exists(path):
    raise ValueError('cannot read: no such file')
  if tf.io.gfile.isdir(path):
    raise ValueError('cannot read: a directory')
  try:
    data = tf.io.read_file(path)
  except tf.errors.PermissionDeniedError:
    raise ValueError('cannot read: permission denied') from None
  except tf.errors.OpError as e:
    raise ValueError(f'cannot read: {e.message.splitlines()[0][:80]}') from None
  if not int(tf.strings.length(data)):
    raise ValueError('empty file')
  return data


def decode_padded(data, image_shape):
  """Encoded bytes → uint8 [H, W, C] of `image_shape`: decoded to its channels, resized into it
  with the aspect kept and zero padding. Graph-safe, so that the export traces the same ops and
  gets the same pixels as this module does eagerly."""
  h, w, c = image_shape
  image = decode.resize_with_pad(tf.cast(decode.decode_to_channels(data, c), tf.float32), h, w)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def decode_bytes(data, image_shape, pipeline='memory', eval_fraction=0.875, fit='crop'):
  """uint8 [H, W, C] as the run's evaluation pipeline shipped it: padded to the dataset's source
  shape (memory), or centre-cropped (stream) or letterboxed (stream, fit 'letterbox') to it;
  raises ValueError when not an image."""
  h, _, c = image_shape
  try:
    if pipeline == 'stream':
      if fit == 'letterbox':
        return decode.letterbox(data, h, c)
      return decode.eval_crop(data, h, c, eval_fraction)
    return decode_padded(data, image_shape)
  except tf.errors.OpError:
    # TensorFlow's message names ops and internals; which of the four formats failed, or where,
    # does not help whoever passed the file.
    raise ValueError(NOT_AN_IMAGE) from None


def _decoder(image_shape, pipeline='memory', eval_fraction=0.875, fit='crop'):
  """decode_bytes as one traced function: a file's dozen small ops cost several times more run
  eagerly one by one, and the graph-safe ops give the same pixels."""
  traced = tf.function(lambda data: decode_bytes(data, image_shape, pipeline, eval_fraction, fit),
                       input_signature=[tf.TensorSpec([], tf.string)])
  held = tf_startup.HeldStderr()

  def decode_one(data):
    # A failed decode logs TensorFlow's and libjpeg's lines about ops and markers; the file's
    # one-line error replaces them.
    with held:
      try:
        return traced(data)
      except tf.errors.OpError:
        held.drop()
        raise ValueError(NOT_AN_IMAGE) from None

  return decode_one


def _top(p, names, top_k):
  order = np.argsort(-p)[:top_k]
  return [(names[i], float(p[i])) for i in order]


def _checkpoint_model(workdir, checkpoint):
  config, info, model, _ = checkpoints.load_for_inference(workdir, checkpoint)

  @tf.function
  def probabilities(images):
    x = preprocess.preprocess(images, input_size=config.model.input_size, training=False)
    return tf.nn.softmax(model(x, training=False))

  crop = info.get('fingerprint', {}).get('crop', {})
  decode_one = _decoder(info['image_shape'], info.get('pipeline', 'memory'),
                        crop.get('eval_fraction', 0.875), crop.get('fit', 'crop'))

  def run(batch):
    return probabilities(tf.stack([image for _, image in batch])).numpy()

  return info['class_names'], decode_one, run


def _saved_model(directory):
  info_file = os.path.join(directory, 'assets.extra', 'export_info.json')
  if not tf.io.gfile.exists(info_file):
    raise UserError(f'--saved_model={directory}: no SavedModel export (missing {info_file})')
  with tf.io.gfile.GFile(info_file) as f:
    info = json.load(f)
  serve = tf.saved_model.load(directory).signatures['serving_default']
  check = _decoder(info['image_shape'], info.get('pipeline', 'memory'))

  def decode_one(data):
    # Checked here so that one bad file is reported alone instead of failing its whole batch;
    # the model decodes the bytes again itself.
    check(data)
    return data

  def run(batch):
    return serve(images=tf.stack([data for data, _ in batch]))['probabilities'].numpy()

  return info['class_names'], decode_one, run


def predict(workdir, paths, top_k=3, checkpoint='best', batch_size=256, saved_model=None):
  """One Prediction per path, in order; unreadable files get an error and the others go on.
  Uses `saved_model` (an export directory) instead of `workdir` when given."""
  if saved_model:
    names, decode_one, run = _saved_model(saved_model)
  else:
    names, decode_one, run = _checkpoint_model(workdir, checkpoint)
  start = time.perf_counter()
  results = [None] * len(paths)
  batch = []  # [(index, (bytes, decoded))]

  def flush():
    if batch:
      for (i, _), p in zip(batch, run([item for _, item in batch])):
        results[i] = Prediction(paths[i], _top(p, names, top_k))
      batch.clear()

  for i, path in enumerate(paths):
    try:
      data = read_bytes(path)
      batch.append((i, (data, decode_one(data))))
    except ValueError as e:
      results[i] = Prediction(path, [], str(e))
      continue
    if len(batch) >= batch_size:
      flush()
  flush()
  seconds = time.perf_counter() - start
  logging.info('Classified %d file(s) in %.2fs (%.0f img/s, batches of %d).', len(paths),
               seconds, len(paths) / max(seconds, 1e-9), batch_size)
  return results


def write_csv(results, out, top_k):
  """One row per result: path, top-k class names and probabilities, and the error if any."""
  header = ['path']
  for k in range(1, top_k + 1):
    header += [f'class_{k}', f'probability_{k}']
  with tf.io.gfile.GFile(out, 'w') as f:
    writer = csv.writer(f)
    writer.writerow(header + ['error'])
    for r in results:
      row = [r.path]
      for k in range(top_k):
        row += [r.top[k][0], f'{r.top[k][1]:.6f}'] if k < len(r.top) else ['', '']
      writer.writerow(row + [r.error])


def run(inputs, *, workdir=None, saved_model=None, checkpoint='best', top_k=3, batch_size=256,
        output=None):
  """Everything launch.predict does but printing: expands `inputs`, classifies them and writes
  `output` (CSV) when given. Returns the Predictions."""
  if bool(workdir) == bool(saved_model):
    raise UserError('pass exactly one of --workdir (a training run) and --saved_model (an export)')
  if not inputs:
    raise UserError('no image given: pass image files, directories or patterns after the flags')
  paths, _ = expand_inputs(inputs)
  results = predict(workdir, paths, top_k, checkpoint, batch_size, saved_model)
  if output:
    write_csv(results, output, top_k)
    logging.info('Wrote %d row(s) to %s.', len(results), output)
  return results
