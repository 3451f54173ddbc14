"""Loads a tfds image dataset once, decoded, into uint8 arrays at source resolution.

Small datasets (MNIST, Fashion-MNIST, CIFAR) fit in memory many times over, and keeping them as
arrays makes the per-epoch order a pure function of (seed, epoch): exact resume needs only a step
count, never a tf.data iterator state.
"""

import dataclasses
import os
import socket

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from research.errors import UserError

# tfds first tries its mirror bucket, then the dataset's own URLs; if the mirror's host cannot even
# be resolved there is no network, and tfds' download retries would hang for minutes.
_DOWNLOAD_PROBE = ('storage.googleapis.com', 443)


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # uint8, [N, H, W, C]
  labels: np.ndarray  # int32, [N]

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Data:
  train: Split | None
  validation: Split | None
  test: Split | None
  num_classes: int
  class_names: tuple
  image_shape: tuple  # (H, W, C) at source resolution


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


def _check_download_reachable(name):
  """Fails within seconds when a download is needed and there is no network."""
  if any(os.environ.get(v) for v in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY')):
    return  # the proxy decides; a direct probe would say nothing
  try:
    socket.create_connection(_DOWNLOAD_PROBE, timeout=5).close()
  except OSError as e:
    raise UserError(f'dataset {name!r} is not in the data dir and cannot be downloaded ({e}): '
                    'set TFDS_DATA_DIR or --data_dir to a dir that holds it prepared') from None


def builder(dataset_config):
  """The tfds builder, prepared (downloaded if needed and allowed)."""
  name = dataset_config.name
  path = data_dir(dataset_config)
  try:
    b = tfds.builder(name, data_dir=path)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f'unknown dataset {name!r}: use a tfds name such as mnist, fashion_mnist, '
                    'cifar10 or imagenet2012') from None
  if 'image' not in b.info.features or 'label' not in b.info.features:
    raise UserError(f'dataset {name!r} has no image/label features: pick an image '
                    'classification dataset')
  if not b.is_prepared():
    if not dataset_config.download:
      raise UserError(f'dataset {name!r} is not prepared under {path or "the default data dir"}: '
                      'set TFDS_DATA_DIR or --data_dir, or allow --config.dataset.download')
    _check_download_reachable(name)
    logging.info('Preparing %s under %s (download on first use).', name, path or 'default dir')
    manual_dir = dataset_config.manual_dir or None
    b.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return b


def _read(b, split, channels):
  """Decodes a split with parallel PNG/JPEG decoding into uint8 arrays."""
  ds = b.as_dataset(split=split, decoders={'image': tfds.decode.SkipDecoding()})

  def decode(example):
    image = example['image']
    if image.dtype == tf.string:
      image = tf.io.decode_image(image, channels=channels, expand_animations=False)
    return image, tf.cast(example['label'], tf.int32)

  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(4096).prefetch(2)
  images, labels = [], []
  for x, y in ds.as_numpy_iterator():
    images.append(x)
    labels.append(y)
  if not images:
    raise UserError(f'split {split!r} of {b.name!r} is empty: check the split name')
  return Split(np.concatenate(images), np.concatenate(labels))


def load(dataset_config, splits=('train', 'validation', 'test')):
  """Loads the requested splits as uint8 arrays; validation is the tail of the train split."""
  b = builder(dataset_config)
  shape = tuple(b.info.features['image'].shape)
  if None in shape:
    raise UserError(f'dataset {dataset_config.name!r} has variable image sizes {shape}: '
                    'it needs the streaming pipeline, which is not implemented yet')
  label_feature = b.info.features['label']
  train = validation = test = None
  if 'train' in splits or 'validation' in splits:
    train = _read(b, dataset_config.train_split, shape[-1])
    n_val = dataset_config.validation_size
    if not 0 <= n_val < len(train):
      raise UserError(f'validation_size {n_val} must be in [0, {len(train)}): lower '
                      '--config.dataset.validation_size')
    if n_val:
      # The tail of train, the same examples for every seed: a fixed validation set.
      validation = Split(train.images[-n_val:], train.labels[-n_val:])
      train = Split(train.images[:-n_val], train.labels[:-n_val])
  if 'test' in splits:
    test = _read(b, dataset_config.test_split, shape[-1])
  logging.info('Loaded %s %s: %s, images %s.', dataset_config.name, '/'.join(splits),
               ', '.join(f'{k} {len(v)}' for k, v in
                         (('train', train), ('validation', validation), ('test', test)) if v),
               shape)
  return Data(train=train, validation=validation, test=test,
              num_classes=label_feature.num_classes, class_names=tuple(label_feature.names),
              image_shape=shape)
