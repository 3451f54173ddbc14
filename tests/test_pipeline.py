"""Input pipeline tests: seeded order, resume by step, replica split, exact evaluation."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from research.data import pipeline
from research.data import sources


def _split(n, h=4):
  images = (np.arange(n, dtype=np.int64)[:, None, None, None] % 256).astype(np.uint8)
  return sources.ArraySource(np.broadcast_to(images, (n, h, h, 1)).copy(),
                             np.arange(n, dtype=np.int32))


def _labels(ds, steps):
  return [y.numpy() for _, y in ds.take(steps)]


class TrainDatasetTest(tf.test.TestCase, parameterized.TestCase):

  def test_ships_uint8_at_source_resolution(self):
    x, y = next(iter(pipeline.train_dataset(_split(50), 8, seed=0)))
    self.assertEqual(x.dtype, tf.uint8)
    self.assertEqual(tuple(x.shape), (8, 4, 4, 1))
    self.assertEqual(y.dtype, tf.int32)

  def test_an_epoch_visits_distinct_examples_and_drops_the_remainder(self):
    batches = _labels(pipeline.train_dataset(_split(50), 8, seed=0), 6)  # 6 full batches
    seen = np.concatenate(batches)
    self.assertLen(np.unique(seen), 48)

  def test_same_seed_same_order_other_seed_other_order(self):
    a = _labels(pipeline.train_dataset(_split(64), 8, seed=3), 10)
    b = _labels(pipeline.train_dataset(_split(64), 8, seed=3), 10)
    c = _labels(pipeline.train_dataset(_split(64), 8, seed=4), 10)
    self.assertAllEqual(a, b)
    self.assertNotAllEqual(a, c)

  def test_epochs_are_reshuffled(self):
    batches = _labels(pipeline.train_dataset(_split(64), 64, seed=0), 2)
    self.assertNotAllEqual(batches[0], batches[1])
    self.assertAllEqual(np.sort(batches[0]), np.sort(batches[1]))

  @parameterized.parameters(0, 3, 7, 8, 19)
  def test_start_step_continues_the_same_stream(self, start):
    full = _labels(pipeline.train_dataset(_split(60), 8, seed=1), 25)
    resumed = _labels(pipeline.train_dataset(_split(60), 8, seed=1, start_step=start),
                      25 - start)
    self.assertAllEqual(full[start:], resumed)

  @parameterized.parameters((2, 1), (2, 2), (4, 2))
  def test_replicas_share_out_exactly_the_global_batch(self, replicas, pipelines):
    full = _labels(pipeline.train_dataset(_split(64), 16, seed=2), 3)
    per_pipeline = []
    for p in range(pipelines):
      ctx = tf.distribute.InputContext(pipelines, p, replicas)
      ds = pipeline.train_dataset(_split(64), 16, seed=2, input_context=ctx)
      per_pipeline.append(_labels(ds, 3 * replicas // pipelines))
    for step in range(3):
      k = replicas // pipelines
      union = np.concatenate([b for labels in per_pipeline for b in labels[step * k:
                                                                           (step + 1) * k]])
      self.assertLen(union, 16)
      self.assertAllEqual(np.sort(union), np.sort(full[step]))

  @parameterized.parameters((1, 1), (2, 1), (2, 2), (4, 2))
  def test_replica_positions_are_the_rows_per_replica_hands_out(self, replicas, pipelines):
    rows = tf.data.Dataset.from_tensors((tf.constant(0, tf.int64), tf.range(16, dtype=tf.int64)))
    for p in range(pipelines):
      ctx = tf.distribute.InputContext(pipelines, p, replicas)
      ds, _ = pipeline.per_replica_batches(rows, 16, ctx)
      for local, (_, idx) in enumerate(ds):
        replica = p * (replicas // pipelines) + local
        self.assertAllEqual(pipeline.replica_positions(replica, 16, replicas, pipelines), idx)

  def test_no_autotuning_thread_to_wait_for_at_exit(self):
    ds = pipeline.train_dataset(_split(10), 4, seed=0)
    self.assertFalse(ds.options().autotune.enabled)

  def test_batch_larger_than_data_is_an_error(self):
    with self.assertRaisesRegex(ValueError, 'exceeds'):
      pipeline.train_dataset(_split(5), 8, seed=0)


class EvalDatasetTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((50, 16, None), (50, 10, None), (7, 16, None), (50, 16, (2, 1)),
                            (51, 16, (4, 2)))
  def test_every_example_exactly_once(self, n, batch, ctx_shape):
    contexts = [None]
    if ctx_shape:
      replicas, pipelines = ctx_shape
      contexts = [tf.distribute.InputContext(pipelines, p, replicas) for p in range(pipelines)]
    counted = []
    for ctx in contexts:
      for x, y, m in pipeline.eval_dataset(_split(n), batch, ctx):
        self.assertEqual(x.shape[0], y.shape[0])
        counted.append(y.numpy()[m.numpy() == 1])
    self.assertAllEqual(np.sort(np.concatenate(counted)), np.arange(n))

  def test_batches_have_one_shape(self):
    shapes = {tuple(x.shape) for x, _, _ in pipeline.eval_dataset(_split(50), 16)}
    self.assertEqual(shapes, {(16, 4, 4, 1)})
