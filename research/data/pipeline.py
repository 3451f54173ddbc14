"""tf.data pipelines over uint8 arrays: the host ships small uint8 batches, nothing else.

Decoding already happened once (datasets.py); normalisation, resizing and augmentation happen
on the device inside the compiled step (preprocess.py), so these pipelines only pick example
indices, split each global batch among replicas, and gather.
"""

import numpy as np
import tensorflow as tf


def steps_per_epoch(num_examples, global_batch_size):
  """Full batches per epoch; each epoch's remainder is dropped (a different one every epoch)."""
  return num_examples // global_batch_size


def _per_replica(index_batches, global_batch_size, input_context):
  """Global batches of indices → this pipeline's per-replica batches, in replica order.

  Pipeline p takes rows p, p+k, ... of each global batch and hands them out to its replicas in
  consecutive slices, so the union over all replicas is exactly the single-device batch.
  """
  ctx = input_context or tf.distribute.InputContext()
  per_replica = ctx.get_per_replica_batch_size(global_batch_size)
  replicas_here = ctx.num_replicas_in_sync // ctx.num_input_pipelines
  k, p = ctx.num_input_pipelines, ctx.input_pipeline_id
  return index_batches.map(
      lambda idx: tf.reshape(idx[p::k], [replicas_here, per_replica])).unbatch()


def train_dataset(split, global_batch_size, seed, start_step=0, input_context=None):
  """An endless stream of (images uint8, labels int32) per-replica batches from `start_step` on.

  Epoch e is a stateless permutation of the examples keyed by (seed, e), so the stream is a pure
  function of (seed, step): resuming needs only the step.
  """
  n = len(split)
  per_epoch = steps_per_epoch(n, global_batch_size)
  if per_epoch == 0:
    raise ValueError(f'batch size {global_batch_size} exceeds the {n} training examples')
  first_epoch, skip_steps = divmod(start_step, per_epoch)
  images, labels = tf.constant(split.images), tf.constant(split.labels)

  def epoch_batches(epoch):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    return tf.data.Dataset.from_tensor_slices(
        tf.reshape(order[:per_epoch * global_batch_size], [per_epoch, global_batch_size]))

  ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch_batches)
  ds = _per_replica(ds.skip(skip_steps), global_batch_size, input_context)
  ds = ds.map(lambda idx: (tf.gather(images, idx), tf.gather(labels, idx)),
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(split, global_batch_size, input_context=None):
  """Every example exactly once, as (images, labels, mask) per-replica batches.

  The last global batch is padded to full size with mask 0, so the compiled step sees one shape
  and no example is dropped or counted twice, whatever the replica count.
  """
  n = len(split)
  padded = -(-n // global_batch_size) * global_batch_size
  images, labels = tf.constant(split.images), tf.constant(split.labels)
  ds = tf.data.Dataset.range(padded).batch(global_batch_size)
  ds = _per_replica(ds, global_batch_size, input_context)

  def gather(idx):
    safe = tf.minimum(idx, n - 1)
    return tf.gather(images, safe), tf.gather(labels, safe), tf.cast(idx < n, tf.float32)

  return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
