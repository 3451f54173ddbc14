"""ArrayRecord conversion and random access: same examples at the same indices as tfrecord."""

import json
import os
import re
import shutil
import tempfile
from unittest import mock

from absl.testing import parameterized
from array_record.python import array_record_module
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from research.core.errors import UserError
from research.data import arrayrecord

_NUM_SHARDS = 3
_RAW_BYTES = tfds.decode.DeserializeMethod.RAW_BYTES
_REAL_WRITER = array_record_module.ArrayRecordWriter


class TinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Every example distinct (pixel value = its key) and of varied size, unlike DummyMnist's."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description='Tiny grayscale images.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 1)),
            'label': tfds.features.ClassLabel(num_classes=7),
        }),
        supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(30, 0), 'test': self._generate_examples(12, 100)}

  def _generate_examples(self, n, first):
    for key in range(first, first + n):
      yield key, {'image': np.full((3 + key % 4, 2 + key % 3, 1), key, np.uint8),
                  'label': key % 7}


class TinyImagesWithConfig(TinyImages, skip_registration=True):
  """The same data under data_dir/name/config/version."""

  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name='small')]


def prepare_builder(builder_cls, data_dir, file_format='tfrecord'):
  builder = builder_cls(data_dir=data_dir, file_format=file_format)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(num_shards=_NUM_SHARDS))
  return builder


def _decoded(serialized):
  """(list of uint8 images, int32 labels) of serialized examples, through arrayrecord.parse."""
  image_bytes, labels = arrayrecord.parse(serialized)
  return [tf.io.decode_png(b).numpy() for b in image_bytes], labels.numpy()


def _snapshot(path):
  """{file name: (size, mtime)} of a directory."""
  return {n: (os.stat(os.path.join(path, n)).st_size, os.stat(os.path.join(path, n)).st_mtime_ns)
          for n in os.listdir(path)}


class DiskFullWriter:
  """An ArrayRecordWriter whose disk fills up after `limit` records, failing the way the real one
  does (RuntimeError from write)."""

  limit = 0

  def __init__(self, path, options):
    self._writer = _REAL_WRITER(path, options)

  def ok(self):
    return self._writer.ok()

  def write(self, record):
    if DiskFullWriter.limit <= 0:
      raise RuntimeError('PWriteFully() failed: No space left on device')
    DiskFullWriter.limit -= 1
    self._writer.write(record)

  def close(self):
    self._writer.close()


class UnopenableWriter(DiskFullWriter):
  """A writer in a read-only dir: the real one reports a failed open through ok(), not by raising.
  (Tests run as root here, where a chmod would not stop the write.)"""

  def ok(self):
    return False


class ArrayRecordTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    cls._data_dir = os.path.join(cls._tmp.name, 'tfrecord')
    builder = prepare_builder(TinyImages, cls._data_dir)
    cls._relative_dir = os.path.relpath(arrayrecord.version_dir(builder), cls._data_dir)
    cls._expected = {}
    for split in ('train', 'test'):
      ds = builder.as_dataset(split=split, shuffle_files=False)
      examples = list(ds.as_numpy_iterator())
      cls._expected[split] = ([e['image'] for e in examples],
                              np.array([e['label'] for e in examples]))

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def _tfrecord_copy(self):
    """(data dir, version dir) of a fresh copy of the tfrecord-only dataset."""
    data_dir = os.path.join(self.create_tempdir().full_path, 'data')
    shutil.copytree(self._data_dir, data_dir)
    return data_dir, os.path.join(data_dir, self._relative_dir)

  def _assert_reads_expected(self, path, split, indices=None):
    images, labels = self._expected[split]
    source = arrayrecord.open_source(path, split)
    self.assertLen(source, len(labels))
    indices = list(range(len(labels))) if indices is None else indices
    got_images, got_labels = _decoded(source.__getitems__(indices))
    self.assertAllEqual(got_labels, labels[indices])
    for i, image in zip(indices, got_images):
      self.assertAllEqual(image, images[i])

  def test_version_dir_is_data_dir_name_version(self):
    data_dir, path = self._tfrecord_copy()
    builder = TinyImages(data_dir=data_dir)
    self.assertEqual(arrayrecord.version_dir(builder), path)
    self.assertEqual(path, os.path.join(data_dir, 'tiny_images', '1.0.0'))

  def test_converted_shards_hold_every_index_in_tfrecord_order(self):
    _, path = self._tfrecord_copy()
    written = arrayrecord.convert_to_array_record(path)
    self.assertLen(written, 2 * _NUM_SHARDS)
    self.assertTrue(all(os.path.isfile(p) for p in written))
    for split in ('train', 'test'):
      self._assert_reads_expected(path, split)
    # A scattered batch comes back in the order asked for, across shard boundaries.
    self._assert_reads_expected(path, 'train', [29, 0, 17, 3, 3, 11, 28, 9])

  def test_parse_gives_image_bytes_and_int32_labels(self):
    _, path = self._tfrecord_copy()
    arrayrecord.convert_to_array_record(path)
    image_bytes, labels = arrayrecord.parse(
        arrayrecord.open_source(path, 'train').__getitems__([0, 1, 2, 3]))
    self.assertEqual(image_bytes.dtype, tf.string)
    self.assertEqual(labels.dtype, tf.int32)
    self.assertEqual(image_bytes.shape, (4,))
    self.assertEqual(labels.shape, (4,))
    self.assertTrue(all(b.startswith(b'\x89PNG') for b in image_bytes.numpy()))

  def test_has_array_record_only_when_every_shard_is_there(self):
    _, path = self._tfrecord_copy()
    self.assertFalse(arrayrecord.has_array_record(path))
    written = arrayrecord.convert_to_array_record(path)
    self.assertTrue(arrayrecord.has_array_record(path))
    os.remove(written[-1])
    self.assertFalse(arrayrecord.has_array_record(path))

  def test_shards_not_listed_in_dataset_info_do_not_count(self):
    _, path = self._tfrecord_copy()
    info_path = os.path.join(path, 'dataset_info.json')
    with open(info_path) as f:
      before = f.read()
    arrayrecord.convert_to_array_record(path)
    with open(info_path, 'w') as f:
      f.write(before)
    self.assertFalse(arrayrecord.has_array_record(path))

  def test_second_conversion_writes_nothing(self):
    _, path = self._tfrecord_copy()
    arrayrecord.convert_to_array_record(path)
    before = _snapshot(path)
    self.assertEqual(arrayrecord.convert_to_array_record(path), [])
    self.assertEqual(_snapshot(path), before)

  def test_dataset_info_gains_the_format_and_keeps_every_other_field(self):
    _, path = self._tfrecord_copy()
    info_path = os.path.join(path, 'dataset_info.json')
    with open(info_path) as f:
      before = json.load(f)
    self.assertNotIn('alternativeFileFormats', before)
    arrayrecord.convert_to_array_record(path)
    with open(info_path) as f:
      after = json.load(f)
    self.assertEqual(after.pop('alternativeFileFormats'), ['array_record'])
    self.assertEqual(after, before)
    # The tfrecord reader still reads the dir, the same examples in the same order.
    ds = tfds.builder_from_directory(path).as_dataset(split='test', shuffle_files=False)
    self.assertAllEqual([e['label'] for e in ds.as_numpy_iterator()], self._expected['test'][1])

  def test_interrupted_conversion_leaves_no_partial_shard_and_resumes(self):
    _, path = self._tfrecord_copy()
    info_path = os.path.join(path, 'dataset_info.json')
    with open(info_path) as f:
      info_before = f.read()
    first_shard = len(self._expected['train'][1]) // _NUM_SHARDS
    DiskFullWriter.limit = first_shard + 2  # fails inside the second train shard
    with mock.patch.object(array_record_module, 'ArrayRecordWriter', DiskFullWriter):
      with self.assertRaisesRegex(UserError, r'tiny_images-train\.array_record-00001-of-00003'):
        arrayrecord.convert_to_array_record(path)
    left = sorted(n for n in os.listdir(path) if 'array_record' in n)
    self.assertEqual(left, ['tiny_images-train.array_record-00000-of-00003'])
    with open(info_path) as f:
      self.assertEqual(f.read(), info_before)
    self.assertFalse(arrayrecord.has_array_record(path))
    resumed = arrayrecord.convert_to_array_record(path)
    self.assertLen(resumed, 2 * _NUM_SHARDS - 1)
    self._assert_reads_expected(path, 'train')

  def test_shard_shorter_than_dataset_info_says_is_not_renamed_into_place(self):
    _, path = self._tfrecord_copy()
    info_path = os.path.join(path, 'dataset_info.json')
    with open(info_path) as f:
      info = json.load(f)
    test_split = next(s for s in info['splits'] if s['name'] == 'test')
    test_split['shardLengths'][0] = str(int(test_split['shardLengths'][0]) + 1)
    with open(info_path, 'w') as f:
      json.dump(info, f)
    with self.assertRaisesRegex(UserError, 'tiny_images-test.tfrecord-00000-of-00003 holds'):
      arrayrecord.convert_to_array_record(path)
    self.assertFalse(
        os.path.exists(os.path.join(path, 'tiny_images-test.array_record-00000-of-00003')))

  def test_unwritable_dir_names_the_path(self):
    _, path = self._tfrecord_copy()
    before = _snapshot(path)
    with mock.patch.object(array_record_module, 'ArrayRecordWriter', UnopenableWriter):
      with self.assertRaisesRegex(UserError, 'cannot create .*' + re.escape(path)):
        arrayrecord.convert_to_array_record(path)
    self.assertEqual(_snapshot(path), before)

  def test_dir_without_dataset_info_is_a_user_error(self):
    path = os.path.join(self.create_tempdir().full_path, 'tiny_images', '1.0.0')
    os.makedirs(path)
    with self.assertRaisesRegex(UserError, 'has no dataset_info.json'):
      arrayrecord.convert_to_array_record(path)
    self.assertFalse(arrayrecord.has_array_record(path))

  def test_unconverted_dir_names_the_prepare_command(self):
    data_dir, path = self._tfrecord_copy()
    with self.assertRaises(UserError) as e:
      arrayrecord.open_source(path, 'train')
    self.assertIn(f'python -m launch.prepare --dataset=tiny_images --data_dir={data_dir}',
                  str(e.exception))
    self.assertNotIn('\n', str(e.exception))

  def test_prepare_command_of_a_config_names_name_slash_config(self):
    data_dir = self.create_tempdir().full_path
    path = arrayrecord.version_dir(prepare_builder(TinyImagesWithConfig, data_dir))
    self.assertEqual(path, os.path.join(data_dir, 'tiny_images_with_config', 'small', '1.0.0'))
    with self.assertRaisesRegex(UserError, 'launch.prepare --dataset=tiny_images_with_config/small '
                                f'--data_dir={data_dir}$'):
      arrayrecord.open_source(path, 'train')

  @parameterized.parameters('validation', 'train[200%:]')
  def test_bad_split_names_the_splits_that_exist(self, split):
    _, path = self._tfrecord_copy()
    arrayrecord.convert_to_array_record(path)
    with self.assertRaisesRegex(UserError, 'use one of train, test'):
      arrayrecord.open_source(path, split)

  def test_split_slices_are_accepted(self):
    _, path = self._tfrecord_copy()
    arrayrecord.convert_to_array_record(path)
    tail = arrayrecord.open_source(path, 'train[24:]')
    _, labels = _decoded(tail.__getitems__(list(range(len(tail)))))
    self.assertAllEqual(labels, self._expected['train'][1][24:])

  def test_dataset_built_as_array_record_reads_in_the_tfrecord_build_order(self):
    builder = prepare_builder(TinyImages, self.create_tempdir().full_path,
                              file_format='array_record')
    path = arrayrecord.version_dir(builder)
    self.assertTrue(arrayrecord.has_array_record(path))
    self.assertEqual(arrayrecord.convert_to_array_record(path), [])
    for split in ('train', 'test'):
      self._assert_reads_expected(path, split)


class MockDataTest(tf.test.TestCase):
  """What `tfds.testing.mock_data` gives an ArrayRecord reader (tfds 4.9.10).

  The pip package ships no testing/metadata, so the mock falls back to the builder's code: no
  splits, nothing prepared, and the same random examples for any split name and any index.
  """

  def _source(self):
    builder = tfds.builder('imagenet2012')
    return builder, builder.as_data_source('train', deserialize_method=_RAW_BYTES)

  def test_records_are_serialized_examples_that_parse_handles(self):
    with tfds.testing.mock_data(num_examples=4):
      builder, source = self._source()
      self.assertLen(source, 4)
      records = [source[i] for i in range(4)]
    self.assertTrue(all(isinstance(r, bytes) for r in records))
    image_bytes, labels = arrayrecord.parse(records)
    self.assertAllInRange(labels, 0, 999)
    for b in image_bytes:
      self.assertTrue(tf.io.is_jpeg(b))
      self.assertEqual(tf.io.decode_jpeg(b).shape[-1], 3)
    self.assertFalse(builder.is_prepared())
    self.assertEqual(builder.info.features['image'].shape, (None, None, 3))
    self.assertEmpty(builder.info.splits)

  def test_batched_reads_fail_under_the_mock(self):
    # tfds sets `__getitems__` on its MagicMock as a plain attribute, so it gets no `self`: tests
    # of batched readers must read per index under this mock. Fails once tfds fixes it.
    with tfds.testing.mock_data(num_examples=4):
      _, source = self._source()
      with self.assertRaises(TypeError):
        source.__getitems__([0, 1])


if __name__ == '__main__':
  tf.test.main()
