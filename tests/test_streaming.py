"""The streaming path: host decoding and crops, image folders, and the index order it shares
with the in-memory path (same order, same rows per worker, same stream after a resume)."""

import io
import os
import shutil
import tempfile
from unittest import mock

from absl.testing import parameterized
import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from research.core import checkpoints
from research.core import config as config_lib
from research.core import outputs
from research.core.errors import UserError
from research.data import arrayrecord
from research.data import datasets
from research.data import decode
from research.data import folder
from research.data import pipeline
from research.data import sources
from research.train import trainer
from tests import helpers


def _encode(pixels, fmt='PNG'):
  buffer = io.BytesIO()
  Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(buffer, fmt)
  return buffer.getvalue()


def _pixels(h, w, c, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


class DecodeTest(tf.test.TestCase, parameterized.TestCase):

  def test_train_crop_is_a_function_of_its_seed(self):
    data = _encode(_pixels(60, 90, 3), 'JPEG')
    a = decode.train_crop(data, 32, 3, tf.constant([1, 2], tf.int64))
    b = decode.train_crop(data, 32, 3, tf.constant([1, 2], tf.int64))
    c = decode.train_crop(data, 32, 3, tf.constant([1, 3], tf.int64))
    self.assertEqual(a.dtype, tf.uint8)
    self.assertEqual(a.shape, (32, 32, 3))
    self.assertAllEqual(a, b)
    self.assertNotAllEqual(a, c)

  def test_full_area_crop_and_full_eval_crop_keep_a_square_png_exactly(self):
    pixels = _pixels(24, 24, 1)
    data = _encode(pixels)
    self.assertAllEqual(decode.eval_crop(data, 24, 1, fraction=1.0), pixels)
    whole = decode.train_crop(data, 24, 1, tf.constant([0, 0], tf.int64), area=(1.0, 1.0),
                              aspect=(1.0, 1.0))
    self.assertAllEqual(whole, pixels)

  def test_eval_crop_takes_the_centre_of_the_shorter_side(self):
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, 20:60] = 255  # the centre 40×40 square is white, the sides black
    out = decode.eval_crop(_encode(pixels), 20, 3, fraction=1.0)
    self.assertAllEqual(out, np.full((20, 20, 3), 255, np.uint8))

  def test_jpeg_is_decoded_inside_the_box_only_and_matches_a_full_decode(self):
    # Grey: no chroma upsampling, whose edge handling differs between a crop and the whole.
    data = _encode(_pixels(64, 48, 1, seed=1), 'JPEG')
    partial = decode.decode_box(data, 1, lambda shape: tf.constant([5, 11, 32, 24]))
    self.assertAllEqual(partial, tf.io.decode_jpeg(data)[5:37, 11:35])

  @parameterized.named_parameters(
      ('grey_png_to_colour', 1, 'PNG', 3), ('colour_jpeg_to_grey', 3, 'JPEG', 1),
      ('rgba_png_to_colour', 4, 'PNG', 3), ('rgba_png_to_grey', 4, 'PNG', 1),
      ('gif', 3, 'GIF', 3), ('bmp', 3, 'BMP', 1))
  def test_any_format_and_channel_count_comes_out_at_the_asked_channels(self, c, fmt, want):
    pixels = _pixels(30, 40, c)
    if c == 4:
      data = io.BytesIO()
      Image.fromarray(pixels, 'RGBA').save(data, fmt)
      data = data.getvalue()
    else:
      data = _encode(pixels, fmt)
    for out in (decode.eval_crop(data, 16, want),
                decode.train_crop(data, 16, want, tf.constant([0, 1], tf.int64))):
      self.assertEqual(out.shape, (16, 16, want))

  def test_grey_conversion_of_colour_uses_rec601_luma_as_pil_does(self):
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[..., 1] = 200  # pure green
    out = decode.eval_crop(_encode(pixels), 8, 1, fraction=1.0)
    self.assertAllClose(out, np.full((8, 8, 1), round(200 * 0.587)), atol=1)

  @parameterized.parameters(1, 3)
  def test_cmyk_jpeg_comes_out_at_the_asked_channels_as_its_colour_decode(self, channels):
    # libjpeg turns a four-component JPEG into colour but not into grey.
    buffer = io.BytesIO()
    Image.fromarray(_pixels(30, 40, 3)).convert('CMYK').save(buffer, 'JPEG', quality=95)
    data = buffer.getvalue()
    colour = decode.to_channels(tf.io.decode_jpeg(data, channels=3), channels)
    self.assertAllEqual(decode.eval_crop(data, 30, channels, fraction=1.0),
                        decode.eval_crop(_encode(colour.numpy()), 30, channels, fraction=1.0))
    whole = decode.train_crop(data, 16, channels, tf.constant([0, 1], tf.int64))
    self.assertEqual(whole.shape, (16, 16, channels))
    self.assertAllEqual(decode.letterbox(data, 30, channels),
                        decode.letterbox(_encode(colour.numpy()), 30, channels))

  def test_sixteen_bit_png_is_scaled_to_eight_bits(self):
    pixels = np.full((10, 10), 65535, np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, 'PNG')
    out = decode.eval_crop(buffer.getvalue(), 10, 1, fraction=1.0)
    self.assertAllEqual(out, np.full((10, 10, 1), 255, np.uint8))


class LetterboxTest(tf.test.TestCase, parameterized.TestCase):
  """dataset.fit=letterbox: the whole image, aspect kept, on zero padding, in training and
  evaluation alike (digits, documents), as the in-memory path pad-resizes."""

  def test_the_whole_image_is_centred_on_zero_padding(self):
    out = decode.letterbox(_encode(np.full((20, 40, 1), 255, np.uint8)), 20, 1)
    self.assertAllEqual(out[5:15], np.full((10, 20, 1), 255, np.uint8))
    self.assertAllEqual(out[:5], np.zeros((5, 20, 1), np.uint8))
    self.assertAllEqual(out[15:], np.zeros((5, 20, 1), np.uint8))

  @parameterized.parameters((30, 70, 3, 32), (90, 40, 1, 28), (12, 12, 1, 40), (1, 300, 1, 16))
  def test_it_is_tf_resize_with_pad_antialiased(self, h, w, c, size):
    pixels = _pixels(h, w, c, seed=h)
    got = tf.function(lambda data: decode.letterbox(data, size, c))(_encode(pixels))
    if h > 1:
      want = tf.image.resize_with_pad(tf.cast(pixels, tf.float32), size, size, antialias=True)
      self.assertAllEqual(got, tf.cast(tf.clip_by_value(tf.round(want), 0, 255), tf.uint8))
    else:  # a sliver is kept a pixel high where resize_with_pad would fail
      self.assertEqual(int(tf.reduce_sum(tf.cast(got > 0, tf.int32))), size * c)

  def test_training_and_evaluation_see_the_same_image_whatever_the_seed(self):
    data = _encode(_pixels(30, 50, 3), 'JPEG')
    path = os.path.join(self.create_tempdir().full_path, 'a.jpg')
    with open(path, 'wb') as f:
      f.write(data)
    source = sources.FileSource([path], [0], sources.Crop(size=24, channels=3, fit='letterbox'))
    evaluated = source.decode(tf.constant(path))
    for seed in ([0, 1], [5, 9]):
      self.assertAllEqual(source.decode(tf.constant(path), tf.constant(seed, tf.int64)),
                          evaluated)
    self.assertAllEqual(evaluated, decode.letterbox(data, 24, 3))

  def test_predict_and_export_letterbox_a_letterboxed_run(self):
    from research.apps import export  # pylint: disable=g-import-not-at-top
    from research.apps import predict  # pylint: disable=g-import-not-at-top
    data = _encode(_pixels(30, 50, 1))
    want = decode.letterbox(data, 16, 1)
    self.assertAllEqual(predict.decode_bytes(data, (16, 16, 1), 'stream', fit='letterbox'), want)
    self.assertNotAllEqual(predict.decode_bytes(data, (16, 16, 1), 'stream'), want)
    info = {'image_shape': [16, 16, 1], 'pipeline': 'stream', 'class_names': ['a'],
            'fingerprint': {'crop': {'fit': 'letterbox'}}}
    serving = export.Serving(config_lib.base('cnn', 'folder:/x'), info, mock.Mock(variables=[]))
    self.assertAllEqual(serving._decode(tf.constant(data)), want)

  def test_streamed_digits_are_the_memory_paths_batches(self):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 12, 12, 1), dtype=np.uint8)
    labels = np.arange(24, dtype=np.int32)
    paths = image_files(self.create_tempdir().full_path, images)
    stream = sources.FileSource(paths, labels, sources.Crop(size=12, channels=1, fit='letterbox'))
    memory = sources.ArraySource(images, labels)
    for (xm, ym), (xs, ys) in zip(pipeline.train_dataset(memory, 8, seed=3).take(6),
                                  pipeline.train_dataset(stream, 8, seed=3).take(6)):
      self.assertAllEqual(ym, ys)
      self.assertAllEqual(xm, xs)

  def test_fit_reaches_the_crop_and_the_fingerprint_only_when_not_the_default(self):
    root = helpers.write_image_folder(self.create_tempdir().full_path, per_class=3)
    cropped = datasets.load(_folder_config(root), input_size=16)
    self.assertEqual(cropped.train.crop.fit, 'crop')
    # As a run recorded it before letterboxing existed: such a workdir still resumes.
    self.assertEqual(set(cropped.fingerprint['crop']),
                     {'size', 'channels', 'area', 'aspect', 'eval_fraction'})
    boxed = datasets.load(_folder_config(root, fit='letterbox'), input_size=16)
    self.assertEqual(boxed.train.crop.fit, 'letterbox')
    self.assertEqual(boxed.fingerprint['crop']['fit'], 'letterbox')
    with self.assertRaisesRegex(UserError, r"^dataset.fit='pad': use crop .* or letterbox"):
      datasets.load(_folder_config(root, fit='pad'), input_size=16)

  def test_the_digits_style_is_picked_by_name(self):
    path = os.path.join(config_lib.CONFIG_DIR, 'default.py')
    digits = config_lib.load_file(path, 'cnn,folder:/data/digits,digits')
    self.assertEqual(digits.dataset.name, 'folder:/data/digits')
    self.assertEqual(digits.dataset.fit, 'letterbox')
    self.assertEqual(digits.dataset.channels, 1)
    self.assertFalse(digits.augment.flip)
    self.assertFalse(digits.augment.color_ops)
    self.assertEqual((digits.augment.brightness, digits.augment.contrast), (0.0, 0.0))
    self.assertGreater(digits.augment.translate, 0.0)
    photos = config_lib.load_file(path, 'cnn,folder:/data/pets')
    self.assertEqual(photos.dataset.fit, 'crop')
    self.assertTrue(photos.augment.flip)
    self.assertEqual(config_lib.load_file(path, 'cnn,folder:/data/pets,photos'), photos)
    with self.assertRaisesRegex(UserError, r"unknown style 'digit': use one of photos, digits"):
      config_lib.load_file(path, 'cnn,folder:/data/digits,digit')


def _folder_config(root, **dataset):
  c = config_lib.base('alexnet', f'{config_lib.FOLDER_PREFIX}{root}')
  c.dataset.update(dataset)
  return c.dataset


class FolderTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path

  def test_classes_labels_and_a_held_out_test_split(self):
    helpers.write_image_folder(self.root, classes=('b', 'a', 'c'), per_class=10)
    listing = folder.list_images(_folder_config(self.root))
    self.assertEqual(listing.classes, ['a', 'b', 'c'])
    train_paths, train_labels = listing.splits['train']
    test_paths, _ = listing.splits['test']
    self.assertLen(test_paths, 3)  # 10% of 30
    self.assertLen(train_paths, 27)
    self.assertEmpty(set(train_paths) & set(test_paths))
    for path, label in zip(train_paths, train_labels):
      self.assertEqual(os.path.basename(os.path.dirname(path)), listing.classes[label])
    # hash order mixes the classes: the tail (validation) is not one class
    self.assertLen(set(train_labels[-9:]), 3)

  def test_a_test_or_val_folder_is_the_test_split(self):
    helpers.write_image_folder(self.root, per_class=4, splits=('train', 'val'))
    listing = folder.list_images(_folder_config(self.root))
    self.assertLen(listing.splits['train'][0], 12)
    self.assertTrue(all('/val/' in p for p in listing.splits['test'][0]))

  def test_order_does_not_depend_on_when_files_were_written(self):
    helpers.write_image_folder(self.root, per_class=5)
    first = folder.list_images(_folder_config(self.root))
    other = self.create_tempdir().full_path
    helpers.write_image_folder(other, classes=('emu', 'dog', 'cat'), per_class=5)
    second = folder.list_images(_folder_config(other))
    rel = lambda paths: [os.path.relpath(p, os.path.dirname(os.path.dirname(os.path.dirname(p))))  # noqa: E731,E501
                         for p in paths]
    self.assertEqual(rel(first.splits['train'][0]), rel(second.splits['train'][0]))
    self.assertEqual(first.digest, folder.list_images(_folder_config(self.root)).digest)

  def test_non_images_and_truncated_files_are_skipped_with_a_warning_naming_them(self):
    helpers.write_image_folder(self.root, per_class=4)
    cat = os.path.join(self.root, 'train', 'cat')
    with open(os.path.join(cat, 'notes.txt'), 'w') as f:
      f.write('not an image')
    with open(os.path.join(cat, 'fake.jpg'), 'w') as f:
      f.write('not a jpeg either')
    with open(os.path.join(cat, '0.jpg'), 'rb') as f:
      jpeg = f.read()
    with open(os.path.join(cat, 'cut.jpg'), 'wb') as f:
      f.write(jpeg[:len(jpeg) // 2])
    with open(os.path.join(cat, '1.png'), 'rb') as f:
      png = f.read()
    with open(os.path.join(cat, 'cut.png'), 'wb') as f:
      f.write(png[:len(png) - 20])
    with self.assertLogs(level='WARNING') as logs:
      listing = folder.list_images(_folder_config(self.root))
    log = '\n'.join(logs.output)
    for name, why in (('notes.txt', 'no image file extension'), ('fake.jpg', 'not a PNG'),
                      ('cut.jpg', 'truncated JPEG'), ('cut.png', 'truncated PNG')):
      self.assertRegex(log, f'{name}: {why}')
    paths = listing.splits['train'][0] + listing.splits['test'][0]
    self.assertLen(paths, 12)
    self.assertLen(listing.skipped, 4)

  def test_bad_folders_are_one_line_errors(self):
    with self.assertRaisesRegex(UserError, 'does not exist'):
      folder.list_images(_folder_config(os.path.join(self.root, 'nothing')))
    with self.assertRaisesRegex(UserError, 'has no train/ folder'):
      folder.list_images(_folder_config(self.root))
    os.makedirs(os.path.join(self.root, 'train'))
    with self.assertRaisesRegex(UserError, 'has no class folders'):
      folder.list_images(_folder_config(self.root))
    helpers.write_image_folder(self.root, per_class=3)
    os.makedirs(os.path.join(self.root, 'train', 'empty'))
    with self.assertRaisesRegex(UserError, r'class folder .*/train/empty has no images'):
      folder.list_images(_folder_config(self.root))
    os.rmdir(os.path.join(self.root, 'train', 'empty'))
    with self.assertRaisesRegex(UserError, "no split 'holdout'"):
      folder.list_images(_folder_config(self.root, test_split='holdout'))
    with self.assertRaisesRegex(UserError, 'test_fraction'):
      folder.list_images(_folder_config(self.root, test_fraction=0.0))

  def test_a_class_whose_files_are_all_unreadable_is_refused_like_an_empty_one(self):
    helpers.write_image_folder(self.root, per_class=3)
    dog = os.path.join(self.root, 'train', 'dog')
    for name in os.listdir(dog):
      with open(os.path.join(dog, name), 'r+b') as f:
        f.truncate(40)  # a header and no end: every file of the class is skipped
    with self.assertRaisesRegex(
        UserError, r'^class folder .*/train/dog has no readable images \(3 files skipped, '
        r'e\.g\. \d\.\w+: truncated (JPEG|PNG) .*\): add some or remove the folder$'):
      folder.list_images(_folder_config(self.root))

  def test_load_needs_an_input_size_and_refuses_the_memory_pipeline(self):
    helpers.write_image_folder(self.root, per_class=3)
    with self.assertRaisesRegex(UserError, 'input_size'):
      datasets.load(_folder_config(self.root), input_size=0)
    with self.assertRaisesRegex(UserError, 'stream'):
      datasets.load(_folder_config(self.root, pipeline='memory'), input_size=32)
    with self.assertRaisesRegex(UserError, r'channels=2: use --config.dataset.channels=1'):
      datasets.load(_folder_config(self.root, channels=2), input_size=32)
    data = datasets.load(_folder_config(self.root, channels=1), input_size=32)
    self.assertEqual(data.image_shape, (32, 32, 1))
    self.assertEqual(data.class_names, ('cat', 'dog', 'emu'))
    self.assertEqual(data.pipeline, 'stream')


def image_files(root, images):
  """The images as PNG files, in index order: a FileSource that equals ArraySource(images)."""
  paths = []
  for i, pixels in enumerate(images):
    paths.append(os.path.join(root, f'{i:04d}.png'))
    with open(paths[-1], 'wb') as f:
      f.write(_encode(pixels))
  return paths


class StreamingPipelineTest(tf.test.TestCase, parameterized.TestCase):
  """One index order for every source: a streamed split equals the in-memory one."""

  N, SIZE = 40, 12

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.images = rng.integers(0, 256, (self.N, self.SIZE, self.SIZE, 1), dtype=np.uint8)
    self.labels = np.arange(self.N, dtype=np.int32)
    self.paths = image_files(self.create_tempdir().full_path, self.images)
    self.memory = sources.ArraySource(self.images, self.labels)

  def _stream(self, **crop):
    return sources.FileSource(self.paths, self.labels,
                              sources.Crop(size=self.SIZE, channels=1, **crop))

  def _batches(self, ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]

  def test_whole_image_crops_give_the_memory_path_batches_bitwise(self):
    stream = self._stream(area=(1.0, 1.0), aspect=(1.0, 1.0))
    for (xm, ym), (xs, ys) in zip(
        self._batches(pipeline.train_dataset(self.memory, 8, seed=3), 12),
        self._batches(pipeline.train_dataset(stream, 8, seed=3), 12)):
      self.assertAllEqual(ym, ys)
      self.assertAllEqual(xm, xs)

  def test_eval_visits_every_example_once_as_the_memory_path_does(self):
    stream = self._stream(eval_fraction=1.0)
    got = list(pipeline.eval_dataset(stream, 16))
    want = list(pipeline.eval_dataset(self.memory, 16))
    self.assertLen(got, 3)
    for (xs, ys, ms), (xm, ym, mm) in zip(got, want):
      self.assertAllEqual(ms, mm)
      self.assertAllEqual(ys, ym)
      self.assertAllEqual(xs, xm)

  def test_crops_differ_by_epoch_and_example(self):
    stream = self._stream()
    # one batch per epoch: the second batch holds the same examples in the next epoch
    (x0, y0), (x1, y1) = self._batches(pipeline.train_dataset(stream, self.N, seed=0), 2)
    order0, order1 = np.argsort(y0), np.argsort(y1)
    self.assertNotAllEqual(x0[order0], x1[order1])  # same examples, new crops next epoch

  @parameterized.parameters((2, 1), (2, 2), (4, 2))
  def test_workers_read_their_rows_and_together_the_single_device_batch(self, replicas,
                                                                        pipelines):
    stream = self._stream()
    full = self._batches(pipeline.train_dataset(stream, 8, seed=2), 3)
    per_pipeline = []
    for p in range(pipelines):
      ctx = tf.distribute.InputContext(pipelines, p, replicas)
      ds = pipeline.train_dataset(stream, 8, seed=2, input_context=ctx)
      per_pipeline.append(self._batches(ds, 3 * replicas // pipelines))
    k = replicas // pipelines
    for step in range(3):
      parts = [b for batches in per_pipeline for b in batches[step * k:(step + 1) * k]]
      images = np.concatenate([x for x, _ in parts])
      labels = np.concatenate([y for _, y in parts])
      order, want = np.argsort(labels), np.argsort(full[step][1])
      self.assertAllEqual(labels[order], full[step][1][want])
      self.assertAllEqual(images[order], full[step][0][want])  # same crops on any worker

  @parameterized.parameters(0, 4, 5, 11)
  def test_start_step_continues_the_same_stream(self, start):
    stream = self._stream()
    full = self._batches(pipeline.train_dataset(stream, 8, seed=1), 14)
    resumed = self._batches(pipeline.train_dataset(stream, 8, seed=1, start_step=start),
                            14 - start)
    for (xa, ya), (xb, yb) in zip(full[start:], resumed):
      self.assertAllEqual(ya, yb)
      self.assertAllEqual(xa, xb)

  def test_a_validation_tail_is_a_window_of_the_listing(self):
    stream = self._stream(eval_fraction=1.0)
    tail = stream.subset(30, 40)
    self.assertLen(tail, 10)
    (x, y, m), = list(pipeline.eval_dataset(tail, 10))
    self.assertAllEqual(y, np.arange(30, 40))
    self.assertAllEqual(x, self.images[30:40])


# AlexNet at a tenth of its width on 67×67 crops: the README's own-images command, sized to run in
# seconds.
_FOLDER_RUN = ('--model=alexnet', '--config.model.width_divisor=16', '--config.model.input_size=67',
               '--config.batch_size=8', '--config.num_train_steps=6', '--config.steps_per_loop=3',
               '--config.log_every_steps=3', '--config.dataset.validation_size=8',
               '--config.eval_batch_size=8')


class FolderCliTest(tf.test.TestCase):
  """`launch.train --dataset=folder:DIR` as a user runs it, then evaluate, predict, prepare."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.images = helpers.write_image_folder(os.path.join(cls.tmp, 'pets'), per_class=12)
    cls.workdir = os.path.join(cls.tmp, 'run')
    # The commands after the training run fork from a server that makes the imports once
    # (meanwhile); the training stays a fresh process, as a user's is.
    helpers.command_server()
    cls.train = helpers.run_cli('launch.train', f'--dataset=folder:{cls.images}',
                                f'--workdir={cls.workdir}', *_FOLDER_RUN)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_trains_and_evaluates_on_the_held_out_images(self):
    self.assertEqual(self.train.returncode, 0, self.train.stderr[-3000:])
    self.assertIn('test accuracy', self.train.stdout)
    self.assertIn('(stream pipeline): train 24, validation 8, test 4', self.train.stderr)
    info = outputs.read_json(os.path.join(self.workdir, 'data_info.json'))
    self.assertEqual(info['class_names'], ['cat', 'dog', 'emu'])
    self.assertEqual(info['image_shape'], [67, 67, 3])
    proc = helpers.run_forked('launch.evaluate', f'--workdir={self.workdir}', '--split=validation')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn('(8 examples)', proc.stdout)

  def test_predict_names_the_folder_classes(self):
    image = os.path.join(self.images, 'train', 'dog', '0.jpg')
    proc = helpers.run_forked('launch.predict', f'--workdir={self.workdir}', image)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertRegex(proc.stdout, r'0\.jpg: (cat|dog|emu): \d+\.\d%, (cat|dog|emu)')

  def test_resume_with_another_crop_is_refused_and_nothing_is_written(self):
    config = os.path.join(self.workdir, 'config.json')
    before = open(config).read()
    checkpoints_before = sorted(os.listdir(os.path.join(self.workdir, 'checkpoints')))
    proc = helpers.run_forked('launch.train', f'--dataset=folder:{self.images}',
                              f'--workdir={self.workdir}', *_FOLDER_RUN,
                              '--config.dataset.eval_crop=0.9', '--config.num_train_steps=9')
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
    self.assertRegex(helpers.error_line(proc),
                     r'^error: workdir .* holds a run on other data \(crop differ.*pass a new '
                     r'--workdir')
    self.assertEqual(open(config).read(), before)
    self.assertEqual(sorted(os.listdir(os.path.join(self.workdir, 'checkpoints'))),
                     checkpoints_before)

  def test_mirrored_over_two_devices_ends_as_one_device(self):
    # The host's crops are keyed by example, so both runs see the same pixels, and so are the
    # device's augmentation draws; dropout draws per replica, so it is off; SGD and float32 keep
    # rounding small (auto would pick bfloat16 on some machines, whose rounding differs between
    # layouts).
    same = ('--config.model.dropout=0.0',
            '--config.optimizer.name=sgd', '--mixed_precision=float32',
            '--config.schedule.learning_rate=0.05', '--config.image_grid_size=0')
    runs = {}
    for name, extra in (('one', ()), ('mirrored', ('--strategy=mirrored',
                                                   '--num_cpu_devices=2'))):
      workdir = os.path.join(self.tmp, f'equal-{name}')
      proc = helpers.run_forked('launch.train', f'--dataset=folder:{self.images}',
                                f'--workdir={workdir}', *_FOLDER_RUN, *same, *extra)
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
      runs[name] = checkpoints.load_for_inference(workdir, 'latest')[2]
    self.assertIn('Strategy mirrored with 2 replica(s)', proc.stderr)
    moved = False
    for a, b in zip(runs['one'].weights, runs['mirrored'].weights):
      self.assertAllClose(a.numpy(), b.numpy(), rtol=0, atol=1e-5, msg=a.path)
      moved = moved or bool(np.any(a.numpy() != 0))
    self.assertTrue(moved)

  def test_prepare_counts_the_folder(self):
    proc = helpers.run_forked('launch.prepare', f'--dataset=folder:{self.images}')
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertIn('3 classes (cat, dog, emu)', proc.stdout)
    self.assertRegex(proc.stdout, r'train: 32 images, [\d.]+ KiB')
    self.assertIn('test: 4 images', proc.stdout)

  def test_a_model_without_input_size_gets_one_line(self):
    proc = helpers.run_forked('launch.train', f'--dataset=folder:{self.images}', '--model=cnn',
                              f'--workdir={os.path.join(self.tmp, "cnn")}')
    self.assertEqual(proc.returncode, 2)
    self.assertRegex(helpers.error_line(proc), r'^error: .*--config.model.input_size')
    self.assertFalse(os.path.exists(os.path.join(self.tmp, 'cnn')))


class _PerIndexReads:
  """tfds' mocked data source reads one index at a time only (its `__getitems__` gets no self)."""

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitems__(self, keys):
    return [self.source[k] for k in keys]


class ImagenetConfigTest(tf.test.TestCase, parameterized.TestCase):
  """The ImageNet configs' tiny variants train and evaluate (top-1 and top-5) on streamed data."""

  @parameterized.parameters('alexnet_imagenet', 'vgg16_imagenet')
  def test_tiny_variant_trains_on_an_image_folder(self, name):
    root = helpers.write_image_folder(self.create_tempdir().full_path, per_class=10)
    config = helpers.load_config(name, 'tiny')
    config.dataset.name = f'{config_lib.FOLDER_PREFIX}{root}'
    config.dataset.validation_size = 8
    workdir = self.create_tempdir().full_path
    results = trainer.train_and_evaluate(config, workdir)
    self.assertEqual(results['step'], config.num_train_steps)
    self.assertBetween(results['test_top5_accuracy'], 1.0, 1.0)  # 3 classes: top-5 is all
    info = outputs.read_json(os.path.join(workdir, 'data_info.json'))
    size = config.model.input_size
    self.assertEqual(info['image_shape'], [size, size, 3])
    self.assertEqual(info['pipeline'], 'stream')

  def test_imagenet2012_asks_for_its_manual_download(self):
    config = helpers.load_config('alexnet_imagenet', 'tiny')
    with helpers.mock_tfds(num_examples=64):
      with self.assertRaisesRegex(UserError, r'imagenet2012.*downloaded by hand.*manual_dir'):
        datasets.load(config.dataset, input_size=67)

  def test_imagenet2012_streams_its_records_with_1000_classes(self):
    config = helpers.load_config('alexnet_imagenet', 'tiny')
    config.dataset.manual_dir = self.create_tempdir().full_path
    workdir = self.create_tempdir().full_path

    def open_source(version_dir, split):
      del version_dir  # the mock has no files: its builder serves random records for any split
      return _PerIndexReads(tfds.builder('imagenet2012').as_data_source(
          split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES))

    with helpers.mock_tfds(num_examples=64), mock.patch.object(arrayrecord, 'open_source',
                                                               open_source):
      results = trainer.train_and_evaluate(config, workdir)
    info = outputs.read_json(os.path.join(workdir, 'data_info.json'))
    self.assertEqual(info['num_classes'], 1000)
    self.assertEqual(info['fingerprint']['splits'], {'train': 64, 'validation': 64})
    self.assertEqual(results['step'], 4)
    self.assertIn('test_top5_accuracy', results)


class PrepareCliTest(tf.test.TestCase):
  """A tfds dataset prepared as tfrecord only: training on the streaming path names the prepare
  command; the command converts it in place; training then streams it."""

  def test_refused_then_prepared_then_trained(self):
    from tests import test_arrayrecord  # pylint: disable=g-import-not-at-top
    data_dir = self.create_tempdir().full_path
    # Variable-size images, as tfrecord.
    test_arrayrecord.prepare_builder(test_arrayrecord.TinyImages, data_dir)
    run = ('--model=alexnet', '--dataset=tiny_images', f'--data_dir={data_dir}',
           '--config.model.width_divisor=16', '--config.model.input_size=67',
           '--config.batch_size=4', '--config.num_train_steps=2', '--config.steps_per_loop=1',
           '--config.dataset.validation_size=6', '--config.eval_batch_size=6',
           '--config.dataset.channels=1')
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    refused = helpers.run_forked('launch.train', f'--workdir={workdir}', *run)
    self.assertEqual(refused.returncode, 2, refused.stderr[-2000:])
    self.assertIn(f'run python -m launch.prepare --dataset=tiny_images --data_dir={data_dir}',
                  helpers.error_line(refused))
    self.assertFalse(os.path.exists(os.path.join(workdir, 'checkpoints')))

    prepared = helpers.run_forked('launch.prepare', '--dataset=tiny_images',
                                  f'--data_dir={data_dir}')
    self.assertEqual(prepared.returncode, 0, prepared.stderr[-2000:])
    self.assertRegex(prepared.stdout, r'tiny_images 1\.0\.0: converted 6 tfrecord shards to '
                                      r'ArrayRecord in .* added\)')
    self.assertIn('train: 30 examples', prepared.stdout)
    again = helpers.run_forked('launch.prepare', '--dataset=tiny_images', f'--data_dir={data_dir}')
    self.assertIn('prepared for random access', again.stdout)

    trained = helpers.run_forked('launch.train', f'--workdir={workdir}', *run)
    self.assertEqual(trained.returncode, 0, trained.stderr[-2000:])
    self.assertIn('Loaded tiny_images (stream pipeline): train 24, validation 6, test 12',
                  trained.stderr)

  def test_unknown_split_is_one_line(self):
    proc = helpers.run_forked('launch.train', '--dataset=mnist',
                              '--config.dataset.test_split=tset',
                              f'--workdir={self.create_tempdir().full_path}',
                              env={'TFDS_DATA_DIR': helpers.require_real_data()})
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
    self.assertRegex(helpers.error_line(proc),
                     r"^error: dataset 'mnist' has no split 'tset': use one of test, train$")


class FixedImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """4×4 grey images whose pixels are their key: small and fixed-size, so `auto` keeps them in
  memory."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(4, 4, 1)),
        'label': tfds.features.ClassLabel(num_classes=5)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(40), 'test': self._generate_examples(10)}

  def _generate_examples(self, n):
    for key in range(n):
      yield key, {'image': np.full((4, 4, 1), key, np.uint8), 'label': key % 5}


class TfdsFormatsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters('tfrecord', 'array_record')
  def test_a_small_dataset_loads_into_memory_from_either_format(self, file_format):
    data_dir = self.create_tempdir().full_path
    FixedImages(data_dir=data_dir, file_format=file_format).download_and_prepare()
    config = config_lib.base('cnn', 'fixed_images').dataset
    config.update(data_dir=data_dir, validation_size=8)
    data = datasets.load(config)
    self.assertEqual(data.pipeline, 'memory')
    self.assertLen(data.train, 32)
    self.assertLen(data.validation, 8)
    # tfds shuffles at preparation; every example is there, pixels and label agreeing
    keys = np.concatenate([data.train.images, data.validation.images])[:, 0, 0, 0]
    self.assertAllEqual(np.sort(keys), np.arange(40))
    labels = np.concatenate([data.train.labels, data.validation.labels])
    self.assertAllEqual(labels, keys % 5)
    if file_format == 'array_record':
      config.pipeline = 'stream'
      streamed = datasets.load(config, splits=('test',))
      (x, y, _), = list(pipeline.eval_dataset(streamed.test, 10))
      self.assertAllEqual(y, x.numpy()[:, 0, 0, 0] % 5)
