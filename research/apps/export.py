"""Exports a training run's checkpoint as a TF SavedModel for serving.

Two signatures, both returning `probabilities` float32 [N, classes], `class_index` int32 [N]
and `class_name` string [N]:

- `serving_default(images)`: string [N] of encoded files (PNG, JPEG, GIF, BMP; any size, grey
  or colour, 8 or 16 bits, alpha), decoded and brought to the source shape as
  `research.apps.predict` does (pad-resized for in-memory runs, centre-cropped for streamed ones);
- `serve_uint8(images)`: uint8 [N, H, W, C] already at the run's source image shape.

Both then apply the evaluation preprocessing and the model inside the graph. The SavedModel
holds only TensorFlow functions and variables, so plain `tf.saved_model.load` serves it without
this package or Keras objects. `assets.extra/` holds the run's config.json and export_info.json
(class names, shapes, the checkpoint used).
"""

import json
import os
import shutil
import tempfile

from absl import logging
import tensorflow as tf

from research.apps import predict
from research.core import checkpoints
from research.core import config as config_lib
from research.core import layout
from research.core.errors import UserError
from research.data import decode
from research.data import preprocess

EXTRA_DIR = 'assets.extra'
INFO_FILE = 'export_info.json'


class Serving(tf.Module):
  """The model's variables and the two serving functions; nothing Keras is saved."""

  def __init__(self, config, info, model):
    super().__init__()
    self._model = model  # used while tracing only; the variables below are what is saved
    self.model_variables = list(model.variables)
    self.class_names = tf.constant(info['class_names'])
    self._input_size = config.model.input_size
    self._shape = tuple(int(d) for d in info['image_shape'])
    self._pipeline = info.get('pipeline', 'memory')
    crop = info.get('fingerprint', {}).get('crop', {})
    self._fraction, self._fit = crop.get('eval_fraction', 0.875), crop.get('fit', 'crop')
    h, w, c = self._shape
    self.serve_uint8 = tf.function(
        self._outputs, input_signature=[tf.TensorSpec([None, h, w, c], tf.uint8, 'images')])
    self.serving_default = tf.function(
        self._from_bytes, input_signature=[tf.TensorSpec([None], tf.string, 'images')])

  def _decode(self, data):
    h, _, c = self._shape
    if self._pipeline == 'stream':
      if self._fit == 'letterbox':
        return decode.letterbox(data, h, c)
      return decode.eval_crop(data, h, c, self._fraction)
    return predict.decode_padded(data, self._shape)

  def _from_bytes(self, images):
    decoded = tf.map_fn(self._decode, images,
                        fn_output_signature=tf.TensorSpec(list(self._shape), tf.uint8))
    return self._outputs(decoded)

  def _outputs(self, images):
    x = preprocess.preprocess(images, input_size=self._input_size, training=False)
    p = tf.cast(tf.nn.softmax(self._model(x, training=False)), tf.float32)
    index = tf.argmax(p, axis=-1, output_type=tf.int32)
    return {'probabilities': p, 'class_index': index,
            'class_name': tf.gather(self.class_names, index)}


# What `_export` writes at the top of an export: tf.saved_model.save's files and EXTRA_DIR.
EXPORT_ENTRIES = frozenset({'saved_model.pb', 'fingerprint.pb', 'variables', 'assets', EXTRA_DIR})


def is_export(directory):
  """Whether `directory` holds an export as `export` writes it, and nothing else."""
  try:
    entries = set(os.listdir(directory))
  except OSError:
    return False
  return (os.path.isfile(os.path.join(directory, 'saved_model.pb'))
          and os.path.isfile(os.path.join(directory, EXTRA_DIR, INFO_FILE))
          and entries <= EXPORT_ENTRIES)


def _check_out(out, workdir, overwrite):
  """Refuses an `out` whose replacement could lose anything but a previous export: a training
  workdir, a folder holding or inside one, other files, a file or a link."""
  real, run = os.path.realpath(out), os.path.realpath(workdir)
  suggestion = f'--out={run.rstrip(os.sep)}-export'
  if os.path.commonpath([real, run]) == real:
    what = 'is' if real == run else f'holds {run!r},'
    raise UserError(f'--out {out!r} {what} the workdir of the run being exported: pass a new '
                    f'folder outside it, e.g. {suggestion}')
  for parent in (real, *_parents(real)):
    if parent == run or layout.is_workdir(parent):
      raise UserError(f'--out {out!r} lies inside the training workdir {parent!r}: pass a new '
                      f'folder outside any workdir, e.g. {suggestion}')
  if os.path.islink(out):
    raise UserError(f'--out {out!r} is a symbolic link: pass the folder itself, or another --out')
  if not os.path.lexists(out):
    return
  if not os.path.isdir(out):
    raise UserError(f'--out {out!r} is a file: remove it or pass a folder for the export')
  if not os.listdir(out):
    return
  if not is_export(out):
    raise UserError(f'--out {out!r} holds files that are not an export (only a folder that holds '
                    'an export and nothing else is replaced, even with --overwrite): pass a new '
                    'or empty folder')
  if not overwrite:
    raise UserError(f'--out {out!r} already holds an export: pass another --out, or --overwrite '
                    'to replace it')


def _parents(path):
  while os.path.dirname(path) != path:
    path = os.path.dirname(path)
    yield path


def _umask():
  mask = os.umask(0)
  os.umask(mask)
  return mask


def export(workdir, out, checkpoint='best', overwrite=False):
  """Writes the SavedModel of `workdir`'s `checkpoint` (see checkpoints.load_for_inference) to
  `out`. Refuses an `out` that is, holds or lies inside a training workdir, or that holds
  anything but a previous export; replaces a previous export only with `overwrite`. Returns the
  export info."""
  out = os.path.abspath(out)
  _check_out(out, workdir, overwrite)
  return _export(workdir, out, checkpoint)


def _export(workdir, out, checkpoint):
  config, info, model, path = checkpoints.load_for_inference(workdir, checkpoint)
  module = Serving(config, info, model)
  shape = [int(d) for d in info['image_shape']]
  signatures = {'serving_default': module.serving_default.get_concrete_function(),
                'serve_uint8': module.serve_uint8.get_concrete_function()}
  export_info = {
      'workdir': os.path.abspath(workdir),
      'checkpoint': os.path.abspath(path),
      'class_names': list(info['class_names']),
      'image_shape': shape,
      'pipeline': info.get('pipeline', 'memory'),
      'input_size': config.model.input_size,
      'signatures': {
          'serving_default': 'images: string [N] encoded PNG/JPEG/GIF/BMP',
          'serve_uint8': f'images: uint8 [N, {", ".join(map(str, shape))}]'},
      'outputs': {'probabilities': 'float32 [N, classes]', 'class_index': 'int32 [N]',
                  'class_name': 'string [N]'},
  }
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  # Everything is written beside `out` first and moved into place at the end: a failure, or a
  # refused --out, leaves whatever was there untouched.
  staging = tempfile.mkdtemp(prefix=os.path.basename(out) + '.export-', dir=parent)
  try:
    # mkdtemp makes it private (0700); the export is a folder like any other.
    os.chmod(staging, 0o777 & ~_umask())
    _save(module, staging, signatures)
    os.makedirs(os.path.join(staging, EXTRA_DIR), exist_ok=True)
    with open(os.path.join(staging, EXTRA_DIR, INFO_FILE), 'w') as f:
      json.dump(export_info, f, indent=2)
    config_lib.save(config, os.path.join(staging, EXTRA_DIR))
    _swap_in(staging, out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  logging.info('Exported %s (%s classes) to %s.', path, len(info['class_names']), out)
  return export_info


def _swap_in(staging, out):
  """Moves `staging` to `out`; an existing `out` is moved aside first and removed only after."""
  old = None
  if os.path.lexists(out):
    if os.path.isdir(out) and not os.listdir(out):
      os.rmdir(out)
    else:
      old = tempfile.mkdtemp(prefix=os.path.basename(out) + '.replaced-',
                             dir=os.path.dirname(out))
      os.rmdir(old)
      os.rename(out, old)
  try:
    os.rename(staging, out)
  except OSError:
    if old is not None:
      os.rename(old, out)
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def _save(module, directory, signatures):
  """tf.saved_model.save, leaving the process's log level as it found it.

  Saving silences absl around each object it walks and then restores the verbosity through
  absl's flag, which pins absl's logger at WARNING when nobody had set a level: every INFO line
  of the process after an export was lost (the training log of a notebook, a test's logs).
  """
  absl_logger = logging.get_absl_logger()
  level = absl_logger.level
  try:
    tf.saved_model.save(module, directory, signatures=signatures)
  finally:
    absl_logger.setLevel(level)
