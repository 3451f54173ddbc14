"""Random-access sources: a split as `len()` examples fetched by global index.

Every dataset is read through the same (seed, epoch) index order (pipeline.py); sources differ
only in how a batch of indices becomes examples:
- `ArraySource`: decoded uint8 arrays in memory (small fixed-size datasets), gathered whole.
- `FileSource`: image files on disk (a researcher's own folders), read by path.
- `RecordSource`: a tfds dataset prepared as ArrayRecord, read a batch of records at a time.
The two streaming ones yield encoded bytes that the host decodes and crops per example
(decode.py), keyed by (seed, epoch, index), so any split of the work gives the same pixels.
"""

import abc
import copy
import dataclasses

import numpy as np
import tensorflow as tf

from research.data import decode


class Source(abc.ABC):
  """What every source is to the pipeline: `len()` examples, a window of them (`subset`), and
  two facts: whether it streams encoded bytes the host decodes (else it is decoded arrays), and
  whether a bad example is skipped (weight 0) rather than stopping the run."""
  streaming = False
  skip_bad = False

  @abc.abstractmethod
  def __len__(self):
    """The number of examples."""

  @abc.abstractmethod
  def subset(self, start, stop):
    """The examples [start, stop) as a source of the same kind."""


@dataclasses.dataclass(frozen=True)
class ArraySource(Source):
  """A split decoded into memory at source resolution; the device pad-resizes it."""
  images: np.ndarray  # uint8, [N, H, W, C]
  labels: np.ndarray  # int32, [N]

  def __len__(self):
    return len(self.labels)

  def subset(self, start, stop):
    return ArraySource(self.images[start:stop], self.labels[start:stop])

  def gather_fn(self):
    """idx [B] → (uint8 images [B, H, W, C], int32 labels [B]), from constants made once."""
    images, labels = tf.constant(self.images), tf.constant(self.labels)
    return lambda idx: (tf.gather(images, idx), tf.gather(labels, idx))


@dataclasses.dataclass(frozen=True)
class Crop:
  """How a streaming source brings every image to the model's input (see decode.py)."""
  size: int
  channels: int
  area: tuple = (0.08, 1.0)
  aspect: tuple = (0.75, 4 / 3)
  eval_fraction: float = 0.875
  fit: str = 'crop'  # crop (the above), or letterbox: the whole image, aspect kept, padded


FITS = ('crop', 'letterbox')


def crop_fingerprint(crop):
  """The crop as a data fingerprint records it; `fit` only when it is not the default, so that a
  run recorded before the field existed still resumes."""
  fields = dataclasses.asdict(crop)
  if fields['fit'] == 'crop':
    del fields['fit']
  return fields


class _Streaming(Source):
  """Shared by the streaming sources: a window [start, start + length) of a longer listing,
  read in batches (`read`) and decoded per example (`decode`). With `skip_bad` the pipeline
  masks out an example that fails to read or decode instead of stopping (pipeline.py)."""
  streaming = True

  def __init__(self, crop, start, length, skip_bad=False):
    self.crop, self.start, self.length, self.skip_bad = crop, start, length, skip_bad

  def __len__(self):
    return self.length

  def subset(self, start, stop):
    start, stop, _ = slice(start, stop).indices(self.length)
    view = copy.copy(self)  # shares the listing or reader: a window onto the same examples
    view.start, view.length = self.start + start, max(stop - start, 0)
    return view

  def read(self, idx):
    """idx [B] (int64, within this window) → (payload string [B], labels int32 [B])."""
    raise NotImplementedError

  def load(self, payload):
    """One payload → its encoded image bytes."""
    return payload

  def describe(self, index):
    """Where example `index` (within this window) is stored, for a message naming it."""
    raise NotImplementedError

  def decode(self, payload, seed=None):
    """Encoded bytes → uint8 [size, size, channels]: a random-resized crop keyed by `seed`
    (shape [2]) when given, else evaluation's centre crop; or for `fit` letterbox the whole
    image."""
    data, c = self.load(payload), self.crop
    if c.fit == 'letterbox':  # the same whole image in training and evaluation
      return decode.letterbox(data, c.size, c.channels)
    if seed is None:
      return decode.eval_crop(data, c.size, c.channels, c.eval_fraction)
    return decode.train_crop(data, c.size, c.channels, seed, c.area, c.aspect)


class FileSource(_Streaming):
  """Image files by path; `tf.io.read_file` is random access already."""

  def __init__(self, paths, labels, crop, skip_bad=False):
    super().__init__(crop, 0, len(paths), skip_bad)
    # Made once, eagerly: every pipeline's functions capture the same two tensors.
    with tf.init_scope():
      self.paths, self.labels = tf.constant(list(paths)), tf.constant(labels, tf.int32)

  def read(self, idx):
    idx = idx + self.start
    return tf.gather(self.paths, idx), tf.gather(self.labels, idx)

  def load(self, payload):
    return tf.io.read_file(payload)

  def describe(self, index):
    with tf.init_scope():
      return self.paths[index + self.start].numpy().decode()


class RecordSource(_Streaming):
  """A tfds ArrayRecord data source: serialized examples by index, a batch per read (the
  reader fetches a batch with its own threads), parsed in TF; nothing decodes in Python."""

  def __init__(self, data_source, parse, crop, skip_bad=False):
    super().__init__(crop, 0, len(data_source), skip_bad)
    self.data_source, self.parse = data_source, parse

  def describe(self, index):
    key = index + self.start
    split = getattr(self.data_source, 'split', None)
    text = f'record {key}' + (f' of split {split}' if split else '')
    try:  # the shard and the record within it: array_record's reader keeps them privately
      reader = self.data_source.data_source
      shard, position = reader._reader_idx_and_position(key)  # pylint: disable=protected-access
      path = reader._read_instructions[shard].filename  # pylint: disable=protected-access
    except (AttributeError, IndexError, TypeError, ValueError):
      return text
    return f'{text}: {path}, record {position}'

  def _fetch(self, idx):
    records = self.data_source.__getitems__([int(i) + self.start for i in idx])
    return np.array(records, dtype=object)

  def read(self, idx):
    serialized = tf.numpy_function(self._fetch, [idx], tf.string, stateful=False)
    serialized.set_shape(idx.shape)
    return self.parse(serialized)
