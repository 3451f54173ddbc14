"""Bad data met mid-run: a corrupt image file or record stops training in one line naming it and
the step, with nothing saved from that step; with config.dataset.skip_bad_examples it weighs 0
in its batches instead, is counted, and exact resume still holds. A corrupt shard of a dataset
decoded into memory is one line naming the shard."""

import glob
import os
import re
import shutil
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from research.core import config as config_lib
from research.core import outputs
from research.core.errors import UserError
from research.data import arrayrecord
from research.data import datasets
from research.data import folder
from research.data import pipeline
from research.data import sources
from research.train import setup as setup_lib
from research.train import steps
from tests import helpers
from tests import test_streaming


def _cut_middle(path):
  """Keeps a file's first and last bytes and drops the rest: the folder listing, which reads
  only a file's header and end, keeps it; decoding it fails."""
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:64] + data[-32:])


def _first_step_reading(index, n, batch, seed, after=0):
  """The first training step after `after` whose global batch holds example `index`."""
  step = after + 1
  while index not in pipeline.step_batch(n, batch, seed, step)[1].numpy():
    step += 1
  return step


# AlexNet at a sixteenth of its width on 67×67 crops, 3 steps an epoch (24 training images at
# batch 8), a checkpoint every step, a constant learning rate (so a run of 6 steps equals one of
# 2 then resumed to 6), deterministic ops.
_STEPS = 6
_RUN = ('--model=alexnet', '--config.model.width_divisor=16', '--config.model.input_size=67',
        '--config.batch_size=8', f'--config.num_train_steps={_STEPS}',
        '--config.steps_per_loop=1', '--config.log_every_steps=1',
        '--config.checkpoint_every_steps=1', '--config.dataset.validation_size=8',
        '--config.eval_batch_size=8', '--config.schedule.name=constant',
        '--config.schedule.warmup_epochs=0', '--config.image_grid_size=0', '--deterministic')
_SKIP = '--config.dataset.skip_bad_examples=true'


class FolderRunTest(tf.test.TestCase):
  """launch.train on an image folder where one training PNG is corrupt."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.images = helpers.write_image_folder(os.path.join(cls.tmp, 'pets'), per_class=12)
    c = config_lib.base('alexnet', f'{config_lib.FOLDER_PREFIX}{cls.images}').dataset
    paths = folder.list_images(c).splits['train'][0][:-8]  # the training window
    cls.n = len(paths)
    # The bad file: a PNG of the second step's batch, so that a checkpoint precedes it.
    cls.step = 2
    cls.bad = next(int(i) for i in pipeline.step_batch(cls.n, 8, 0, cls.step)[1].numpy()
                   if paths[i].endswith('.png'))
    cls.path = paths[cls.bad]
    _cut_middle(cls.path)
    cls.times_read = sum(cls.bad in pipeline.step_batch(cls.n, 8, 0, s)[1].numpy()
                         for s in range(1, _STEPS + 1))
    # The runs after the reference fork from a server that makes the imports once (meanwhile);
    # the reference stays a fresh process, as a user's is.
    helpers.command_server()
    cls.skipping, cls.reference = cls._train('reference', _SKIP, run=helpers.run_cli)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  @classmethod
  def _train(cls, name, *extra, run=None):
    workdir = os.path.join(cls.tmp, name)
    proc = (run or helpers.run_forked)('launch.train', f'--dataset=folder:{cls.images}',
                                       f'--workdir={workdir}', *_RUN, *extra)
    return proc, workdir

  def test_stops_in_one_line_naming_it_and_the_step_then_resumes_exactly_skipping_it(self):
    proc, workdir = self._train('stops')
    self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
    s = self.step
    self.assertRegex(
        helpers.error_line(proc),
        rf'^error: training example {self.bad} \({re.escape(self.path)}\) read for step {s} is '
        r'corrupt \(.+\): remove or replace it, or set config.dataset.skip_bad_examples=True; '
        rf'nothing was saved from step {s} on; the last checkpoint is '
        rf'{re.escape(os.path.join(workdir, "checkpoints", f"ckpt-{s - 1}"))}$')
    saved = {int(m.group(1)) for f in os.listdir(os.path.join(workdir, 'checkpoints'))
             if (m := re.match(r'ckpt-(\d+)\.', f))}
    self.assertEqual(saved, set(range(max(1, s - 3), s)))  # keep 3: the latest is the step before
    self.assertFalse(os.path.exists(os.path.join(workdir, 'results.json')))

    # As the message says: re-run skipping it. It resumes from the step before and ends as the
    # run that skipped it from the start.
    resumed, _ = self._train('stops', _SKIP)
    self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
    self.assertRegex(resumed.stderr, rf'Resumed from .*ckpt-{s - 1}: step {s - 1} ')
    results = outputs.read_json(os.path.join(workdir, 'results.json'))
    self.assertEqual(results['bad_examples_skipped'], self.times_read)
    self.assertEqual(results['weights_digest'], self._reference_results()['weights_digest'])

  def _reference_results(self):
    self.assertEqual(self.skipping.returncode, 0, self.skipping.stderr[-3000:])
    return outputs.read_json(os.path.join(self.reference, 'results.json'))

  def test_skipped_it_is_named_once_and_counted_in_the_log_results_and_tensorboard(self):
    results = self._reference_results()
    self.assertEqual(results['step'], _STEPS)
    self.assertEqual(results['bad_examples_skipped'], self.times_read)
    log = self.skipping.stderr
    self.assertEqual(log.count(f'Skipping example {self.bad} ({self.path}): '), 1)
    self.assertEqual(len(re.findall(r'step \d+/6 .*, 1 bad examples skipped', log)),
                     self.times_read)
    logged = sum(float(tf.make_ndarray(v.tensor))
                 for events in glob.glob(os.path.join(self.reference, 'train', 'events.*'))
                 for e in tf.compat.v1.train.summary_iterator(events)
                 for v in e.summary.value if v.tag == 'bad_examples')
    self.assertEqual(logged, self.times_read)

    # Resumed for another epoch: results.json adds this run's count to the earlier runs'.
    longer = os.path.join(self.tmp, 'longer')
    shutil.copytree(self.reference, longer)
    proc = helpers.run_forked('launch.train', f'--dataset=folder:{self.images}',
                              f'--workdir={longer}', *_RUN, _SKIP, '--config.num_train_steps=9')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    more = sum(self.bad in pipeline.step_batch(self.n, 8, 0, s)[1].numpy() for s in (7, 8, 9))
    self.assertEqual(more, 1)
    self.assertEqual(outputs.read_json(os.path.join(longer, 'results.json'))[
        'bad_examples_skipped'], self.times_read + more)


class _Corrupted:
  """A tfds data source with some records replaced: what a reader hands back from a shard
  damaged on disk."""

  def __init__(self, source, replaced):
    self.source, self.replaced = source, replaced

  def __len__(self):
    return len(self.source)

  def __getitems__(self, keys):
    return [self.replaced.get(k, r) for k, r in zip(keys, self.source.__getitems__(keys))]

  def __getattr__(self, name):  # split and the reader, which name a record's shard
    return getattr(self.source, name)


def _example(image_bytes, label):
  return tf.train.Example(features=tf.train.Features(feature={
      'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
      'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
  })).SerializeToString()


class RecordSourceTest(tf.test.TestCase, parameterized.TestCase):
  """A tfds ArrayRecord split streamed with a record that does not parse and one whose image
  does not decode."""

  BATCH = 8

  def setUp(self):
    super().setUp()
    data_dir = self.create_tempdir().full_path
    test_streaming.FixedImages(data_dir=data_dir, file_format='array_record').download_and_prepare()
    self.version_dir = os.path.join(data_dir, 'fixed_images', '1.0.0')
    self.clean = arrayrecord.open_source(self.version_dir, 'train')
    self.bad = {5: b'not a serialized example', 17: _example(b'\x89PNG\r\n\x1a\n cut', 1)}

  def _source(self, skip_bad, corrupt=True):
    data = _Corrupted(self.clean, self.bad) if corrupt else self.clean
    return sources.RecordSource(data, arrayrecord.parse, sources.Crop(size=4, channels=1),
                                skip_bad=skip_bad)

  def test_error_names_the_record_its_shard_and_the_step(self):
    source = self._source(skip_bad=False)
    first = min(_first_step_reading(k, len(source), self.BATCH, 0) for k in self.bad)
    batches = iter(pipeline.train_dataset(source, self.BATCH, seed=0))
    for _ in range(first - 1):
      next(batches)
    with self.assertRaises(tf.errors.OpError) as failed:
      next(batches)
    indices = pipeline.step_batch(len(source), self.BATCH, 0, first)[1].numpy()
    k = next(int(i) for i in indices if int(i) in self.bad)
    with self.assertRaisesRegex(
        UserError, rf'^training example {k} \(record {k} of split train: .*fixed_images-train'
        rf'\.array_record-00000-of-00001, record {k}\) read for step {first} is corrupt \(.+\): '
        r'remove or replace it.*the last checkpoint is none \(no save yet\)$'):
      pipeline.raise_if_bad_example(failed.exception, source, self.BATCH, 0, first, None)
    # A step whose batch holds no bad record: not this error (the caller re-raises its own).
    clean_step = next(s for s in range(1, 20) if not set(self.bad) & set(
        pipeline.step_batch(len(source), self.BATCH, 0, s)[1].numpy().tolist()))
    pipeline.raise_if_bad_example(failed.exception, source, self.BATCH, 0, clean_step, None)

  def test_skipped_records_weigh_zero_and_every_other_example_is_unchanged(self):
    steps_read = 10  # two epochs of 5
    with self.assertLogs(level='WARNING') as logs:
      got = list(pipeline.train_dataset(self._source(skip_bad=True), self.BATCH, 0).take(
          steps_read))
    want = list(pipeline.train_dataset(self._source(False, corrupt=False), self.BATCH, 0).take(
        steps_read))
    met = 0
    for step, ((x, y, w), (x0, y0)) in enumerate(zip(got, want), 1):
      indices = pipeline.step_batch(len(self.clean), self.BATCH, 0, step)[1].numpy()
      bad = np.isin(indices, list(self.bad))
      met += bad.sum()
      self.assertAllEqual(w, np.where(bad, 0.0, 1.0))
      self.assertAllEqual(tf.boolean_mask(x, ~bad), tf.boolean_mask(x0, ~bad))
      self.assertAllEqual(tf.boolean_mask(y, ~bad), tf.boolean_mask(y0, ~bad))
      self.assertAllEqual(tf.boolean_mask(x, bad), tf.zeros_like(tf.boolean_mask(x0, bad)))
    self.assertEqual(met, 2 * len(self.bad))  # each bad record once an epoch
    log = '\n'.join(logs.output)
    for k in self.bad:
      self.assertRegex(log, rf'Skipping example {k} \(record {k} of split train: ')

  def test_evaluation_counts_a_skipped_record_as_padding(self):
    (_, _, mask), (_, _, clean_mask) = [
        next(iter(pipeline.eval_dataset(s, 40))) for s in (self._source(skip_bad=True),
                                                           self._source(False, corrupt=False))]
    self.assertAllEqual(clean_mask, np.ones(40))
    self.assertAllEqual(mask, [0.0 if i in self.bad else 1.0 for i in range(40)])

  def test_evaluation_error_names_the_first_bad_record(self):
    source = self._source(skip_bad=False)
    with self.assertRaises(tf.errors.OpError) as failed:
      list(pipeline.eval_dataset(source, 40))
    with self.assertRaisesRegex(
        UserError, r'^validation example 5 \(record 5 of split train: .*\) is corrupt \(.+\): '
        r'remove or replace it.*the latest is none\): re-run to evaluate again$'):
      pipeline.raise_if_bad_eval_example(failed.exception, source, 'validation', None)
    pipeline.raise_if_bad_eval_example(failed.exception, self._source(False, corrupt=False),
                                       'validation', None)  # nothing bad: the caller re-raises


class SkippingPipelineTest(tf.test.TestCase, parameterized.TestCase):
  """Image files one of which is corrupt, streamed in skip mode: the stream stays a pure
  function of (seed, step) on any layout of replicas and workers."""

  N, BATCH, BAD = 40, 8, 13

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (self.N, 12, 12, 1), dtype=np.uint8)
    paths = test_streaming.image_files(self.create_tempdir().full_path, images)
    _cut_middle(paths[self.BAD])
    self.source = sources.FileSource(paths, np.arange(self.N, dtype=np.int32),
                                     sources.Crop(size=12, channels=1), skip_bad=True)

  def _batches(self, ds, n):
    return [tuple(t.numpy() for t in batch) for batch in ds.take(n)]

  @parameterized.parameters(3, 5, 9)
  def test_a_resumed_stream_is_the_tail_of_the_whole_one(self, start):
    whole = self._batches(pipeline.train_dataset(self.source, self.BATCH, seed=1), 12)
    resumed = self._batches(pipeline.train_dataset(self.source, self.BATCH, seed=1,
                                                   start_step=start), 12 - start)
    for a, b in zip(whole[start:], resumed):
      for x, y in zip(a, b):
        self.assertAllEqual(x, y)
    weights = np.concatenate([w for _, _, w in whole])
    labels = np.concatenate([y for _, y, _ in whole])
    self.assertEqual(int((weights == 0).sum()), 2)  # read once in each of the 2 epochs
    self.assertNotIn(self.BAD, labels[weights == 1])

  @parameterized.parameters((2, 1), (2, 2))
  def test_replicas_together_read_the_single_device_batch_weights_included(self, replicas,
                                                                           pipelines):
    full = self._batches(pipeline.train_dataset(self.source, self.BATCH, seed=2), 5)
    per_pipeline = []
    for p in range(pipelines):
      ctx = tf.distribute.InputContext(pipelines, p, replicas)
      ds = pipeline.train_dataset(self.source, self.BATCH, seed=2, input_context=ctx)
      per_pipeline.append(self._batches(ds, 5 * replicas // pipelines))
    k = replicas // pipelines
    zeros = 0
    for step in range(5):
      parts = [b for batches in per_pipeline for b in batches[step * k:(step + 1) * k]]
      x, y, w = (np.concatenate([part[i] for part in parts]) for i in range(3))
      order, want = np.argsort(y), np.argsort(full[step][1])
      self.assertAllEqual(y[order], full[step][1][want])
      self.assertAllEqual(w[order], full[step][2][want])
      self.assertAllEqual(x[order], full[step][0][want])
      zeros += int((w == 0).sum())
    self.assertEqual(zeros, 1)  # 5 steps of 8: the first epoch reads it once


class MaskedLossTest(tf.test.TestCase):
  """The compiled step: an example of weight 0 adds nothing to the loss, gradients or counts."""

  def _step(self, images, labels, weights):
    config = helpers.tiny_config()
    config.optimizer.name = 'sgd'  # Adam's first step moves by the gradient's sign alone
    config.schedule.warmup_epochs = 0.0  # else the first step's learning rate is 0
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    model, optimizer, _, step = setup_lib.build_state(config, strategy, 10, (28, 28, 1), 10, 8)
    train = steps.make_train_fn(strategy, model, optimizer, config, step, tf.Variable(0.0))
    batch = (images, labels) if weights is None else (images, labels, weights)
    out = train(iter(tf.data.Dataset.from_tensors(batch).repeat()), tf.constant(1))
    return out, [v.numpy() for v in model.trainable_variables]

  def test_masked_examples_change_nothing(self):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, 8).astype(np.int32)
    weights = np.array([1, 1, 0, 1, 1, 1, 0, 1], np.float32)
    other = images.copy()
    other[weights == 0] = 255 - other[weights == 0]  # other pixels where the weight is 0
    out, trained = self._step(images, labels, weights)
    out_other, trained_other = self._step(other, labels, weights)
    _, unmasked = self._step(other, labels, np.ones(8, np.float32))
    self.assertEqual(out['count'], 6)  # the examples trained on
    self.assertAllClose(out, out_other)
    for a, b, c in zip(trained, trained_other, unmasked):
      self.assertAllClose(a, b)
    self.assertFalse(all(np.allclose(a, c) for a, c in zip(trained, unmasked)))


class MemoryShardTest(tf.test.TestCase, parameterized.TestCase):
  """A small tfds dataset is decoded at load: a cut-short shard fails there, naming itself."""

  @parameterized.parameters('tfrecord', 'array_record')
  def test_a_truncated_shard_is_one_line_naming_it(self, file_format):
    data_dir = self.create_tempdir().full_path
    test_streaming.FixedImages(data_dir=data_dir, file_format=file_format).download_and_prepare()
    shard, = glob.glob(os.path.join(data_dir, 'fixed_images', '1.0.0', '*-train.*'))
    with open(shard, 'rb') as f:
      data = f.read()
    with open(shard, 'wb') as f:
      f.write(data[:len(data) // 2])
    config = config_lib.base('cnn', 'fixed_images').dataset
    config.update(data_dir=data_dir, validation_size=8)
    with self.assertRaisesRegex(
        UserError, rf"^split 'train' of 'fixed_images' has a corrupt or cut-short shard "
        rf"\({re.escape(shard)}: [^\n]+\): prepare the dataset again: delete .*, then run "
        rf'python -m launch.prepare --dataset=fixed_images --data_dir={re.escape(data_dir)}$'):
      datasets.load(config)


class ConfigTest(tf.test.TestCase):

  def test_skip_bad_examples_must_be_a_bool(self):
    config = config_lib.base('alexnet', 'folder:/data')
    self.assertIs(config.dataset.skip_bad_examples, False)
    with config.dataset.ignore_type():
      config.dataset.skip_bad_examples = 'yes'
    with self.assertRaisesRegex(UserError, r'dataset.skip_bad_examples=.*should be a bool'):
      config_lib.check_types(config)
