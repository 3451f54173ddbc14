"""Random access to prepared tfds datasets through their ArrayRecord shards.

The training pipeline fetches examples by global index, so its order stays a pure function of
(seed, step) for datasets that do not fit in memory. tfds serves that from ArrayRecord shards; a
dataset prepared as tfrecord is converted in place, shard by shard and record by record, so index
i is the same example in both formats and the directory then serves both readers. tfds' own
`convert_format` needs apache_beam, hence the small converter here.
"""

import json
import os
import uuid

from absl import logging
from array_record.python import array_record_module
import tensorflow as tf
import tensorflow_datasets as tfds

from research.core.errors import UserError

_ARRAY_RECORD = tfds.core.file_adapters.FileFormat.ARRAY_RECORD
_TFRECORD = tfds.core.file_adapters.FileFormat.TFRECORD
_INFO_FILE = 'dataset_info.json'
# tfds writes its ArrayRecord shards with these options (file_adapters.ArrayRecordFileAdapter):
# one record per chunk, so a random read decompresses only the record asked for.
_WRITER_OPTIONS = 'group_size:1'
# How tfds serialises an image classification example (`features.get_serialized_info()`): an
# Image feature is its encoded PNG/JPEG bytes, a ClassLabel an int64. Other features (imagenet's
# file_name, ...) are skipped by parse_example.
_EXAMPLE_SPEC = {
    'image': tf.io.FixedLenFeature([], tf.string),
    'label': tf.io.FixedLenFeature([], tf.int64),
}


def version_dir(builder):
  """The directory of a prepared dataset's version: data_dir/name[/config]/version."""
  return os.fspath(builder.data_dir)


def _read_info(path):
  """dataset_info.json of `path` as tfds parses it, or None when there is none."""
  try:
    return tfds.core.dataset_info.read_proto_from_builder_dir(path)
  except tfds.core.dataset_info.DatasetInfoFileError:
    return None


def _shard_paths(info, path, file_format):
  """{split: [shard path, ...]} for `file_format`, named by tfds' own filename template."""
  splits = tfds.core.dataset_info.get_split_dict_from_proto(info, path, file_format=file_format)
  return {name: [os.fspath(p) for p in split.filepaths] for name, split in splits.items()}


def _formats(info):
  # Datasets prepared before tfds recorded a file format are tfrecord.
  return {info.file_format or _TFRECORD.value, *info.alternative_file_formats}


def has_array_record(version_dir):  # pylint: disable=redefined-outer-name
  """Whether dataset_info.json lists ArrayRecord and every split's ArrayRecord shards exist."""
  info = _read_info(version_dir)
  if info is None or not info.splits or _ARRAY_RECORD.value not in _formats(info):
    return False
  shards = _shard_paths(info, version_dir, _ARRAY_RECORD)
  return all(os.path.isfile(p) for paths in shards.values() for p in paths)


def _prepare_command(path, info):
  """The command that prepares the dataset in `path` with ArrayRecord shards."""
  path = os.path.abspath(path)
  if info is not None and info.name:
    name, config = info.name, info.config_name
  else:
    # No metadata to say otherwise: assume the common data_dir/name/version layout.
    name, config = os.path.basename(os.path.dirname(path)), ''
  data_dir = path
  for _ in range(3 if config else 2):
    data_dir = os.path.dirname(data_dir)
  dataset = f'{name}/{config}' if config else name
  return f'python -m launch.prepare --dataset={dataset} --data_dir={data_dir}'


def prepare_command(version_dir):  # pylint: disable=redefined-outer-name
  """The command that prepares the dataset in `version_dir` again, once it is deleted."""
  return _prepare_command(version_dir, _read_info(version_dir))


def write_shard(dst, records, num_records, source, expected_by, rerun, options=_WRITER_OPTIONS):
  """Writes the records of iterable `records` into the ArrayRecord shard `dst`, in order, as
  tfds writes its shards (one record per chunk); there must be `num_records` of them.

  The shard is written under a temporary name and renamed only once complete and synced, so an
  interrupted write (even kill -9) never leaves a partial shard that readers would take for a
  whole one. The errors name `source` (where the records come from), `expected_by` (what says
  how many there are) and `rerun` (what to run again). `options`: the ArrayRecord writer's.
  """
  directory, name = os.path.split(dst)
  tmp = os.path.join(directory, f'.{name}.incomplete-{uuid.uuid4().hex}')
  fix = f'free disk space or make {directory} writable, then {rerun}'
  try:
    writer = array_record_module.ArrayRecordWriter(tmp, options)
    # The writer reports a failed open through ok(), not by raising.
    if not writer.ok():
      raise UserError(f'cannot create a shard in {directory}: {fix}')
    count = 0
    try:
      for record in records:
        writer.write(record)
        count += 1
    finally:
      writer.close()
    if count != num_records:
      raise UserError(f'{source} holds {count} records but {expected_by} {num_records}: '
                      'prepare the dataset again')
    with open(tmp, 'rb') as f:
      os.fsync(f.fileno())
    os.replace(tmp, dst)
  except (OSError, RuntimeError) as e:
    # RuntimeError: how the ArrayRecord writer reports a failed write (e.g. a full disk).
    raise UserError(f'cannot write {dst} ({e}): {fix}') from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _copy_shard(src, dst, num_records):
  """Copies the tfrecord shard `src` into the ArrayRecord shard `dst`, in record order."""
  write_shard(dst, tf.data.TFRecordDataset(src).as_numpy_iterator(), num_records, src,
              'dataset_info.json says', 'convert again')


def _add_format(info_path, file_format):
  """Adds `file_format` to alternativeFileFormats, keeping every other field as written."""
  with open(info_path) as f:
    fields = json.load(f)
  fields['alternativeFileFormats'] = fields.get('alternativeFileFormats', []) + [file_format]
  tmp = f'{info_path}.tmp-{uuid.uuid4().hex}'
  try:
    with open(tmp, 'w') as f:
      json.dump(fields, f, indent=2)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, info_path)
  except OSError as e:
    raise UserError(f'cannot write {info_path} ({e}): free disk space or make it writable, '
                    'then convert again') from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def convert_to_array_record(version_dir):  # pylint: disable=redefined-outer-name
  """Adds ArrayRecord shards next to a dataset's tfrecord shards; returns the paths written.

  Shards already converted are kept, so a rerun after an interruption converts only the rest and
  a rerun after success converts nothing. Run it from one process: two concurrent conversions of
  the same directory would each write every missing shard.
  """
  info = _read_info(version_dir)
  if info is None:
    raise UserError(f'{version_dir} has no {_INFO_FILE}: prepare the dataset first with '
                    f'{_prepare_command(version_dir, None)}')
  source_format = info.file_format or _TFRECORD.value
  if source_format == _ARRAY_RECORD.value:
    return []
  if source_format != _TFRECORD.value:
    raise UserError(f'{version_dir} holds {source_format} shards, only tfrecord converts: '
                    f'prepare it again with {_prepare_command(version_dir, info)}')
  splits = tfds.core.dataset_info.get_split_dict_from_proto(
      info, version_dir, file_format=_TFRECORD)
  targets = _shard_paths(info, version_dir, _ARRAY_RECORD)
  written = []
  for name, split in splits.items():
    sources = [os.fspath(p) for p in split.filepaths]
    for src, dst, num_records in zip(sources, targets[name], split.shard_lengths):
      if os.path.isfile(dst):
        continue
      if not os.path.isfile(src):
        raise UserError(f'{src} is missing: prepare the dataset again with '
                        f'{_prepare_command(version_dir, info)}')
      _copy_shard(src, dst, num_records)
      logging.info('Wrote %s (%d records).', dst, num_records)
      written.append(dst)
  if _ARRAY_RECORD.value not in info.alternative_file_formats:
    _add_format(os.path.join(version_dir, _INFO_FILE), _ARRAY_RECORD.value)
  return written


def open_source(version_dir, split):  # pylint: disable=redefined-outer-name
  """The ArrayRecordDataSource of `split`; `__getitems__(indices)` gives serialized tf.Examples.

  `split` takes tfds' split syntax, slices included (e.g. 'train[99%:]').
  """
  if not has_array_record(version_dir):
    raise UserError(f'{version_dir} has no ArrayRecord shards: run '
                    f'{_prepare_command(version_dir, _read_info(version_dir))}')
  builder = tfds.builder_from_directory(version_dir)
  try:
    builder.info.splits[split]
  except (KeyError, ValueError) as e:
    reason = ' '.join(str(e).split())
    raise UserError(f'bad split {split!r} for {version_dir} ({reason}): use one of '
                    f'{", ".join(builder.info.splits)}, optionally sliced like "train[:90%]"'
                    ) from None
  # Explicit format: a directory may also hold another random-access format (parquet).
  return builder.as_data_source(split=split,
                                deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES,
                                file_format=_ARRAY_RECORD)


def read_shard(path):
  """Every record of one ArrayRecord shard, in order (a check that it reads whole)."""
  reader = array_record_module.ArrayRecordReader(path)
  try:
    if not reader.ok():
      raise ValueError(f'cannot open {path}')
    return reader.read_all()
  finally:
    reader.close()


def parse(serialized):
  """Serialized tf.Examples [B] -> (encoded image bytes, tf.string [B]; label, tf.int32 [B])."""
  features = tf.io.parse_example(serialized, _EXAMPLE_SPEC)
  return features['image'], tf.cast(features['label'], tf.int32)
