"""What a run leaves in its workdir besides checkpoints: JSON files, PNGs, the layer table."""

import contextlib
import errno
import hashlib
import json
import os
import re

import numpy as np
from PIL import Image, ImageDraw

from research.errors import UserError

# The run record: step, metrics, seconds and weights digest, rewritten at the end of every run.
RESULTS = 'results.json'
# Its former name: a workdir trained before the rename still holds it, and resumes from it.
_FORMER_RESULTS = 'train_summary.json'


# TensorFlow's file errors end in "<path>; <strerror>" (tsl's IOError), without the errno.
_TF_FILE_ERROR = re.compile(r'(/[^;{}]*); ([^;\[\n]+?)\s*(?:\[Op:|$)', re.M)
_ERRNO_OF = {os.strerror(code): code for code in errno.errorcode}


def write_error(what, path, error, consequence=''):
  """A UserError for a write that failed (disk full, quota, read-only, I/O error): one line
  naming the file (`path`, or None for the one the error names), the system's reason and its
  errno, and what the run left behind."""
  reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  code = getattr(error, 'errno', None)
  if isinstance(error, OSError):
    path = error.filename or path
    reason = error.strerror or reason
  else:
    match = _TF_FILE_ERROR.search(str(error))
    if match:
      path, reason = path or match.group(1), match.group(2).strip()
      code = _ERRNO_OF.get(reason)
  if code in errno.errorcode:
    reason = f'{reason} ({errno.errorcode[code]}, errno {code})'
  return UserError(f'could not write {what} {path}: {reason}'
                   + (f'; {consequence}' if consequence else ''))


def write_json(path, obj):
  """Atomic: a crash leaves the old file or the new one, never half of one. A failed write
  (disk full) leaves the old one and no temporary file, and raises a one-line UserError."""
  tmp = path + '.tmp'
  try:
    with open(tmp, 'w') as f:
      json.dump(obj, f, indent=2, sort_keys=True)
      f.write('\n')
    os.replace(tmp, path)
  except OSError as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise write_error('file', path, e,
                      'the previous version is unchanged' if os.path.exists(path) else '') from None


def _save_image(image, path):
  try:
    image.save(path)
  except OSError as e:
    raise write_error('image', path, e) from None


def read_json(path):
  with open(path) as f:
    return json.load(f)


def read_results(workdir):
  """The run record of `workdir` ({} before its first run ends): results.json, else the
  train_summary.json of a run made before the rename."""
  for name in (RESULTS, _FORMER_RESULTS):
    path = os.path.join(workdir, name)
    if os.path.exists(path):
      return read_json(path)
  return {}


def weights_digest(model):
  """sha256 over every model weight's bytes (trainable and not: BN statistics count), in the
  model's fixed order. Random-generator states are not weights and are left out."""
  h = hashlib.sha256()
  for v in model.weights:
    h.update(v.path.encode())
    h.update(np.ascontiguousarray(v.numpy()).tobytes())
  return h.hexdigest()


def layer_table(model, input_shape):
  """The per-layer table (name, output shape, parameters) and total, as printable text."""
  rows = model.layer_table(input_shape)
  lines = [f'{"layer":<14}{"output shape":<22}{"params":>14}', '-' * 50]
  lines += [f'{name:<14}{str(shape):<22}{params:>14,}' for name, shape, params in rows]
  lines += ['-' * 50, f'{"total":<36}{model.count_params():>14,}']
  return '\n'.join(lines)


def image_grid(images, labels, class_names, path, cols=8, scale=3):
  """Saves float images in [-1, 1] (as the model sees them) as a labelled PNG grid."""
  images = np.clip((np.asarray(images) + 1.0) * 127.5, 0, 255).astype(np.uint8)
  n, h, w, c = images.shape
  rows = -(-n // cols)
  cell_h, cell_w = h * scale + 12, w * scale
  grid = Image.new('RGB', (cols * cell_w, rows * cell_h), 'white')
  draw = ImageDraw.Draw(grid)
  for i in range(n):
    tile = Image.fromarray(images[i, ..., 0] if c == 1 else images[i]).convert('RGB')
    x, y = (i % cols) * cell_w, (i // cols) * cell_h
    grid.paste(tile.resize((w * scale, h * scale), Image.NEAREST), (x, y + 12))
    draw.text((x + 2, y), str(class_names[labels[i]])[:w * scale // 6], fill='black')
  _save_image(grid, path)
  return np.asarray(grid)


def confusion_png(matrix, class_names, path, cell=36):
  """A confusion matrix (rows true, columns predicted) with counts, shaded by row fraction."""
  k = len(matrix)
  margin = 80
  img = Image.new('RGB', (margin + k * cell, margin + k * cell), 'white')
  draw = ImageDraw.Draw(img)
  frac = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  for i in range(k):
    draw.text((2, margin + i * cell + cell // 3), str(class_names[i])[:12], fill='black')
    draw.text((margin + i * cell + 2, margin - 14), str(class_names[i])[:5], fill='black')
    for j in range(k):
      shade = int(255 * (1 - frac[i, j]))
      box = [margin + j * cell, margin + i * cell, margin + (j + 1) * cell - 1,
             margin + (i + 1) * cell - 1]
      draw.rectangle(box, fill=(shade, shade, 255))
      draw.text((box[0] + 3, box[1] + cell // 3), str(int(matrix[i, j])),
                fill='white' if shade < 128 else 'black')
  draw.text((2, 2), 'rows: true class, columns: predicted', fill='black')
  _save_image(img, path)
