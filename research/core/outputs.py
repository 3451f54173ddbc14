"""How a run writes its outputs: JSON files and other files atomically, the weights' digest, the
layer table; and the one-line error of a failed write. Which files a workdir holds is
research/core/layout.py's."""

import contextlib
import errno
import hashlib
import json
import os
import re
import uuid

import numpy as np

from research.core.errors import UserError


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


def write_atomic(path, data, what='file'):
  """Writes bytes `data` to `path` atomically and durably: a temporary sibling, synced, then
  renamed over `path`. A crash (even kill -9) leaves the old file or the new one; what it can
  leave besides is a temporary named `.<name>.incomplete-*`, which nothing reads and
  `remove_incomplete` deletes. A failed write raises a one-line UserError."""
  directory, name = os.path.split(path)
  tmp = os.path.join(directory, f'.{name}.incomplete-{uuid.uuid4().hex}')
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise write_error(what, path, e,
                      'the previous version is unchanged' if os.path.exists(path) else '') from None


def remove_incomplete(path):
  """Deletes what interrupted `write_atomic`s of `path` left behind; returns how many."""
  directory, name = os.path.split(path)
  removed = 0
  with contextlib.suppress(OSError):
    for entry in os.scandir(directory or '.'):
      if entry.name.startswith(f'.{name}.incomplete-'):
        with contextlib.suppress(OSError):
          os.remove(entry.path)
          removed += 1
  return removed


def read_json(path):
  with open(path) as f:
    return json.load(f)


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
