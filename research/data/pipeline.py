"""tf.data pipelines over random-access sources: the host ships uint8 batches, nothing else.

The order is one function of (seed, epoch) for every source: epoch e is a stateless
permutation of the split keyed by (seed, e), cut into global batches, and input pipeline p takes
rows p, p+k, ... of each. So exact resume needs only the step, and each worker reads only its own
rows. In-memory sources are gathered whole (normalisation, resizing and augmentation happen on
the device inside the compiled step, preprocess.py); streaming sources read a batch of records,
then decode and crop each example on the host (decode.py), keyed by (seed, epoch, index).
"""

import numpy as np
import tensorflow as tf


def steps_per_epoch(num_examples, global_batch_size):
  """Full batches per epoch; each epoch's remainder is dropped (a different one every epoch)."""
  return num_examples // global_batch_size


def _per_replica(batches, global_batch_size, input_context):
  """Global (epoch, index batch) pairs → this pipeline's per-replica ones, in replica order.

  Pipeline p takes rows p, p+k, ... of each global batch and hands them out to its replicas in
  consecutive slices, so the union over all replicas is exactly the single-device batch.
  """
  ctx = input_context or tf.distribute.InputContext()
  per_replica = ctx.get_per_replica_batch_size(global_batch_size)
  replicas_here = ctx.num_replicas_in_sync // ctx.num_input_pipelines
  k, p = ctx.num_input_pipelines, ctx.input_pipeline_id

  def split(epoch, idx):
    rows = tf.reshape(idx[p::k], [replicas_here, per_replica])
    return tf.fill([replicas_here], epoch), rows

  return batches.map(split).unbatch(), per_replica


def example_seed(seed, epoch, index):
  """The host-side randomness of one example in one epoch: independent of batch and worker."""
  base = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
  return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


def _fetch(source, batches, per_replica, seed=None):
  """(epoch, indices) per-replica batches → (images, labels) from `source`."""
  if not source.streaming:
    gather = source.gather_fn()
    return batches.map(lambda _, idx: gather(idx), num_parallel_calls=tf.data.AUTOTUNE)

  def read(epoch, idx):
    payload, labels = source.read(idx)
    return tf.fill(tf.shape(idx), epoch), idx, payload, labels

  def decode(epoch, index, payload, label):
    key = None if seed is None else example_seed(seed, epoch, index)
    return source.decode(payload, key), label

  ds = batches.map(read, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(per_replica, drop_remainder=True)


def train_dataset(source, global_batch_size, seed, start_step=0, input_context=None):
  """An endless stream of (images uint8, labels int32) per-replica batches from `start_step` on.

  Epoch e is a stateless permutation of the examples keyed by (seed, e), so the stream is a pure
  function of (seed, step): resuming needs only the step.
  """
  n = len(source)
  per_epoch = steps_per_epoch(n, global_batch_size)
  if per_epoch == 0:
    raise ValueError(f'batch size {global_batch_size} exceeds the {n} training examples')
  first_epoch, skip_steps = divmod(start_step, per_epoch)

  def epoch_batches(epoch):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    rows = tf.reshape(order[:per_epoch * global_batch_size], [per_epoch, global_batch_size])
    return tf.data.Dataset.from_tensor_slices((tf.fill([per_epoch], epoch), rows))

  ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch_batches)
  ds, per_replica = _per_replica(ds.skip(skip_steps), global_batch_size, input_context)
  return without_autotuning(_fetch(source, ds, per_replica, seed).prefetch(tf.data.AUTOTUNE))


def without_autotuning(ds):
  """`ds` without tf.data's autotuning model thread, for endless streams.

  On an endless stream the thread's optimization period grows to many seconds, and destroying
  the iterator waits that long for it: a process sat 15–35 s after its last step. Without it the
  parallel maps use every core and prefetch sizes its buffer itself, which is what autotuning
  settled on here anyway (docs/precision.md has the figures).
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.with_options(options)


def eval_dataset(source, global_batch_size, input_context=None):
  """Every example exactly once, as (images, labels, mask) per-replica batches.

  The last global batch is padded to full size with mask 0, so the compiled step sees one shape
  and no example is dropped or counted twice, whatever the replica count.
  """
  n = len(source)
  padded = -(-n // global_batch_size) * global_batch_size
  ds = tf.data.Dataset.range(padded).batch(global_batch_size).map(
      lambda idx: (tf.constant(-1, tf.int64), idx))
  ds, per_replica = _per_replica(ds, global_batch_size, input_context)
  ds = ds.map(lambda e, idx: ((e, tf.minimum(idx, n - 1)), tf.cast(idx < n, tf.float32)))
  masks = ds.map(lambda _, mask: mask)
  examples = _fetch(source, ds.map(lambda pair, _: pair), per_replica)
  return tf.data.Dataset.zip((examples, masks)).map(
      lambda example, mask: (*example, mask)).prefetch(tf.data.AUTOTUNE)
