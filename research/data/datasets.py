"""Loads a dataset's splits as random-access sources: in memory, or streamed from disk.

Small fixed-size datasets (MNIST, Fashion-MNIST, CIFAR) are decoded once into uint8 arrays; the
rest (variable image sizes, splits beyond a RAM budget, a researcher's own image folders) stay on
disk and are read by index. Either way the per-epoch order is a pure function of (seed, epoch)
(pipeline.py): exact resume needs only a step count, never a tf.data iterator state.
"""

import dataclasses
import os
import socket

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from research.core.errors import UserError
from research.data import arrayrecord
from research.data import decode as decode_lib
from research.data import folder
from research.data import pack
from research.data import pipeline
from research.data import sources

PIPELINES = ('auto', 'memory', 'stream')

# tfds first tries its mirror bucket, then the dataset's own URLs; if the mirror's host cannot even
# be resolved there is no network, and tfds' download retries would hang for minutes.
_DOWNLOAD_PROBE = ('storage.googleapis.com', 443)


@dataclasses.dataclass(frozen=True)
class Data:
  train: object | None  # a source (sources.py) or None when not loaded
  validation: object | None
  test: object | None
  num_classes: int
  class_names: tuple
  image_shape: tuple  # (H, W, C) of what the pipeline ships: source size, or the crop's
  pipeline: str  # memory or stream
  fingerprint: dict  # what fixes the examples and their order: resume refuses another


def data_dir(dataset_config):
  """The data dir in force: config (from --data_dir), else TFDS_DATA_DIR, else tfds' default."""
  path = dataset_config.data_dir or os.environ.get('TFDS_DATA_DIR', '')
  if path and not os.path.isdir(path):
    source = 'data_dir' if dataset_config.data_dir else 'TFDS_DATA_DIR'
    raise UserError(f'{source} {path!r} is not a directory: point --data_dir or TFDS_DATA_DIR '
                    'at an existing tfds data dir (or unset both to download to the default)')
  if path and not os.access(path, os.R_OK | os.X_OK):
    raise UserError(f'data dir {path!r} is not readable: fix its permissions or pass another '
                    '--data_dir')
  return path or None


def check_download_reachable(name):
  """Fails within seconds when a download is needed and there is no network."""
  if any(os.environ.get(v) for v in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY')):
    return  # the proxy decides; a direct probe would say nothing
  try:
    socket.create_connection(_DOWNLOAD_PROBE, timeout=5).close()
  except OSError as e:
    raise UserError(f'dataset {name!r} is not in the data dir and cannot be downloaded ({e}): '
                    'set TFDS_DATA_DIR or --data_dir to a dir that holds it prepared') from None


def _plan(dataset_config, shape):
  """memory or stream, from config.dataset.pipeline and what is known before any download."""
  mode = dataset_config.pipeline
  if mode not in PIPELINES:
    raise UserError(f'unknown pipeline {mode!r}: use one of {", ".join(PIPELINES)}')
  if mode == 'memory' and None in shape:
    raise UserError(f'dataset {dataset_config.name!r} has variable image sizes {shape}: it cannot '
                    'be held in memory; use --config.dataset.pipeline=stream (or auto)')
  if mode == 'auto':
    return 'stream' if None in shape else 'auto'
  return mode


def builder(dataset_config, prepare=True, random_access=False):
  """The tfds builder, prepared (downloaded if needed and `prepare` allows); as ArrayRecord
  when `random_access` or the dataset can only stream."""
  name = dataset_config.name
  path = data_dir(dataset_config)
  try:
    b = tfds.builder(name, data_dir=path)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f'unknown dataset {name!r}: use a tfds name such as mnist, fashion_mnist, '
                    'cifar10 or imagenet2012, or folder:PATH for your own images') from None
  if 'image' not in b.info.features or 'label' not in b.info.features:
    raise UserError(f'dataset {name!r} has no image/label features: pick an image '
                    'classification dataset')
  if b.is_prepared():
    return b
  if not (prepare and dataset_config.download):
    raise UserError(f'dataset {name!r} is not prepared under {path or "the default data dir"}: '
                    f'run python -m launch.prepare --dataset={name}'
                    f'{" --data_dir=" + path if path else ""}, or set TFDS_DATA_DIR/--data_dir')
  plan = _plan(dataset_config, tuple(b.info.features['image'].shape))
  manual_dir = dataset_config.manual_dir or None
  if getattr(b, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None) and not manual_dir:
    raise UserError(f'dataset {name!r} must be downloaded by hand: put its files in a directory '
                    'and pass --config.dataset.manual_dir=DIR to launch.train (--manual_dir=DIR '
                    f'to launch.prepare); tfds\' instructions for {name} say which files')
  check_download_reachable(name)
  if plan == 'stream' or random_access:
    # Random access needs ArrayRecord shards; preparing them directly spares a conversion.
    b = tfds.builder(name, data_dir=path, file_format='array_record')
  logging.info('Preparing %s under %s (download on first use).', name, path or 'default dir')
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return b


def _read(b, split, channels):
  """Decodes a split with parallel PNG/JPEG decoding into uint8 arrays, from its tfrecord
  shards, or from its ArrayRecord ones where it was prepared in that format alone."""
  if b.info.file_format == tfds.core.file_adapters.FileFormat.ARRAY_RECORD:
    source = arrayrecord.open_source(arrayrecord.version_dir(b), split)
    records = sources.RecordSource(source, arrayrecord.parse, crop=None)
    ds = tf.data.Dataset.range(len(records)).batch(1024).map(records.read).unbatch()
  else:
    ds = b.as_dataset(split=split, decoders={'image': tfds.decode.SkipDecoding()})
    ds = ds.map(lambda example: (example['image'], example['label']))

  def decode(image, label):
    if image.dtype == tf.string:
      image = decode_lib.decode_to_channels(image, channels)
    return image, tf.cast(label, tf.int32)

  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(4096).prefetch(2)
  images, labels = [], []
  try:
    for x, y in ds.as_numpy_iterator():
      images.append(x)
      labels.append(y)
  except tf.errors.OpError as e:
    paths = [i.filename for i in b.info.splits[split].file_instructions]
    bad = [p for p in paths if not _shard_readable(p, b.info.file_format)]
    named = ', '.join(bad or paths[:3]) + ('' if bad or len(paths) <= 3 else ', ...')
    raise UserError(f'split {split!r} of {b.name!r} has a corrupt or cut-short shard ({named}: '
                    f'{pipeline.error_text(e)}): prepare the dataset again: delete '
                    f'{arrayrecord.version_dir(b)}, then run '
                    f'{arrayrecord.prepare_command(arrayrecord.version_dir(b))}') from None
  if not images:
    raise UserError(f'split {split!r} of {b.name!r} is empty: check the split name')
  return sources.ArraySource(np.concatenate(images), np.concatenate(labels))


def _shard_readable(path, file_format):
  """Whether every record of one tfrecord or ArrayRecord shard reads and parses."""
  try:
    if file_format == tfds.core.file_adapters.FileFormat.ARRAY_RECORD:
      records = arrayrecord.read_shard(path)
    else:
      records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    arrayrecord.parse(tf.constant(records, tf.string))
  except (tf.errors.OpError, RuntimeError, ValueError):
    return False
  return True


def _channels(dataset_config, native):
  """The channel count every image is brought to: the config's, else the dataset's own."""
  channels = dataset_config.channels or native
  if channels not in (1, 3):
    raise UserError(f'dataset.channels={dataset_config.channels}: use '
                    '--config.dataset.channels=1 (grey), 3 (colour) or 0 (the dataset\'s own)')
  return channels


def crop(dataset_config, input_size, shape):
  """The streaming crop: the model's input size, the dataset's (or the config's) channels."""
  size = input_size
  if not size:
    if None in shape[:2] or shape[0] != shape[1]:
      raise UserError(f'dataset {dataset_config.name!r} has images of size {shape[:2]}: the '
                      'streaming pipeline crops them to a square, so set '
                      '--config.model.input_size (e.g. 224)')
    size = shape[0]
  channels = _channels(dataset_config, shape[-1] or 3)
  fit = dataset_config.get('fit', 'crop')
  if fit not in sources.FITS:
    raise UserError(f'dataset.fit={fit!r}: use crop (a random-resized crop in training, the '
                    'centre in evaluation: photographs) or letterbox (the whole image, aspect '
                    'kept, padded: digits, documents)')
  return sources.Crop(size=size, channels=channels, area=tuple(dataset_config.crop_area),
                      aspect=tuple(dataset_config.crop_aspect),
                      eval_fraction=dataset_config.eval_crop, fit=fit)


def _split_sizes(b, names):
  """{split: examples}; empty when the builder does not know its splits (tfds' mock data)."""
  splits = b.info.splits
  if not splits:
    return {}
  missing = [n for n in names if n.split('[')[0] not in splits]
  if missing:
    raise UserError(f'dataset {b.name!r} has no split {missing[0]!r}: use one of '
                    f'{", ".join(sorted(splits.keys()))}')
  return {n: splits[n].num_examples for n in names}


def _with_validation(dataset_config, train):
  """(train, validation): validation is the tail of the train split, the same examples for
  every seed, a fixed validation set."""
  n_val = dataset_config.validation_size
  if not 0 <= n_val < len(train):
    raise UserError(f'validation_size {n_val} must be in [0, {len(train)}): lower '
                    '--config.dataset.validation_size')
  if not n_val:
    return train, None
  return train.subset(0, len(train) - n_val), train.subset(len(train) - n_val, len(train))


def _load_tfds(dataset_config, splits, input_size, prepare):
  b = builder(dataset_config, prepare)
  shape = tuple(b.info.features['image'].shape)
  plan = _plan(dataset_config, shape)
  names = {'train': dataset_config.train_split, 'test': dataset_config.test_split}
  wanted = sorted({names['train'] if s in ('train', 'validation') else names['test']
                   for s in splits})
  if plan != 'stream':
    decoded = sum(_split_sizes(b, wanted).values()) * int(np.prod(shape))
    if plan == 'auto':
      plan = 'stream' if decoded > dataset_config.memory_budget_gb * 2**30 else 'memory'
  if plan == 'memory':
    channels = _channels(dataset_config, shape[-1])
    read = lambda split: _read(b, split, channels)  # noqa: E731
    image_shape = shape[:2] + (channels,)
    fingerprint = {}
  else:
    c = crop(dataset_config, input_size, shape)
    version_dir = arrayrecord.version_dir(b)
    read = lambda split: sources.RecordSource(  # noqa: E731
        arrayrecord.open_source(version_dir, split), arrayrecord.parse, c,
        dataset_config.skip_bad_examples)
    image_shape = (c.size, c.size, c.channels)
    fingerprint = {'crop': sources.crop_fingerprint(c)}
  loaded = {name: read(name) for name in wanted}
  train = validation = test = None
  if 'train' in splits or 'validation' in splits:
    train, validation = _with_validation(dataset_config, loaded[names['train']])
  if 'test' in splits:
    test = loaded[names['test']]
  fingerprint.update(dataset=b.name, version=str(b.version), pipeline=plan,
                     splits={n: len(source) for n, source in loaded.items()})
  label = b.info.features['label']
  return Data(train=train, validation=validation, test=test, num_classes=label.num_classes,
              class_names=tuple(label.names), image_shape=image_shape, pipeline=plan,
              fingerprint=fingerprint)


def _load_folder(dataset_config, splits, input_size, prepare):
  # Only a preparing process writes the folder's index: the others read what it wrote.
  listing = folder.list_images(dataset_config, write=prepare)
  if dataset_config.pipeline == 'memory':
    raise UserError('image folders stream (their images vary in size): drop '
                    '--config.dataset.pipeline=memory or set it to stream or auto')
  c = crop(dataset_config, input_size, (None, None, dataset_config.channels or 3))
  packed = pack.open_pack(dataset_config, listing)
  if packed:
    # The same examples at the same indices as the files: the same crops and fingerprint.
    logging.info('Reading image folder %s from its ArrayRecord pack %s.', dataset_config.name,
                 pack.pack_dir(dataset_config, listing))

  def source(split):
    if packed:
      return sources.RecordSource(packed[split], arrayrecord.parse, c,
                                  dataset_config.skip_bad_examples)
    return sources.FileSource(*listing.splits[split], c, dataset_config.skip_bad_examples)

  train = validation = test = None
  if 'train' in splits or 'validation' in splits:
    train, validation = _with_validation(dataset_config, source('train'))
  if 'test' in splits:
    test = source('test')
  fingerprint = dict(dataset=dataset_config.name, version=listing.digest, pipeline='stream',
                     splits={k: len(v[0]) for k, v in listing.splits.items()},
                     crop=sources.crop_fingerprint(c))
  return Data(train=train, validation=validation, test=test, num_classes=len(listing.classes),
              class_names=tuple(listing.classes), image_shape=(c.size, c.size, c.channels),
              pipeline='stream', fingerprint=fingerprint)


def load(dataset_config, splits=('train', 'validation', 'test'), input_size=0, prepare=True):
  """The requested splits as sources; validation is the tail of the train split.

  A tfds name or `folder:PATH`. Small fixed-size datasets are decoded into memory; variable-size
  ones, folders and splits larger than `memory_budget_gb` stream, cropped to `input_size`
  (config.dataset.pipeline forces either). `prepare=False`: never download or prepare (workers
  other than the chief, which prepares first).
  """
  if folder.is_folder(dataset_config.name):
    data = _load_folder(dataset_config, splits, input_size, prepare)
  else:
    data = _load_tfds(dataset_config, splits, input_size, prepare)
  loaded = {k: len(v) for k, v in (('train', data.train), ('validation', data.validation),
                                   ('test', data.test)) if v is not None}
  logging.info('Loaded %s (%s pipeline): %s; images %s.', dataset_config.name, data.pipeline,
               ', '.join(f'{k} {n}' for k, n in loaded.items()), data.image_shape)
  return data
