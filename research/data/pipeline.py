"""tf.data pipelines over random-access sources: the host ships uint8 batches, nothing else.

The order is one function of (seed, epoch) for every source: epoch e is a stateless
permutation of the split keyed by (seed, e), cut into global batches, and input pipeline p takes
rows p, p+k, ... of each. So exact resume needs only the step, and each worker reads only its own
rows. In-memory sources are gathered whole (normalisation, resizing and augmentation happen on
the device inside the compiled step, preprocess.py); streaming sources read a batch of records,
then decode and crop each example on the host (decode.py), keyed by (seed, epoch, index).

A streamed example that cannot be read or decoded (a file cut short or replaced after the listing,
a corrupt record) fails the batch that holds it; `raise_if_bad_example` then names it and the step.
A source with `skip_bad` set instead turns such an example into a placeholder of weight 0 (zero
image, label 0) in its place, so every other example keeps its place and resume stays exact.
"""

import re
import threading

from absl import logging
import numpy as np
import tensorflow as tf

from research.core.errors import UserError

# Skipped examples named in a warning, per process; the rest are counted in the training log.
_WARN_AT_MOST = 10
_warned = set()
_warned_lock = threading.Lock()


def steps_per_epoch(num_examples, global_batch_size):
  """Full batches per epoch; each epoch's remainder is dropped (a different one every epoch)."""
  return num_examples // global_batch_size


def epoch_order(n, global_batch_size, seed, epoch):
  """Epoch `epoch`'s global batches of example indices: int64 [steps per epoch, batch]."""
  per_epoch = steps_per_epoch(n, global_batch_size)
  order = tf.random.experimental.stateless_shuffle(
      tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
  return tf.reshape(order[:per_epoch * global_batch_size], [per_epoch, global_batch_size])


def step_batch(n, global_batch_size, seed, step):
  """(epoch, example indices) of the global batch that training step `step` reads: the step
  that takes the step counter from `step` - 1 to `step`."""
  epoch, position = divmod(step - 1, steps_per_epoch(n, global_batch_size))
  return epoch, epoch_order(n, global_batch_size, seed, tf.constant(epoch, tf.int64))[position]


def per_replica_batches(batches, global_batch_size, input_context):
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


def replica_positions(replica_id, global_batch_size, num_replicas, num_pipelines=1):
  """The rows of the global batch that replica `replica_id` trains on, in its batch's order:
  int32 [per-replica batch], following `per_replica_batches`'s layout (pipeline p of k serves
  replicas p·r .. p·r + r - 1, r = num_replicas / k, as the strategies number them)."""
  per_replica = global_batch_size // num_replicas
  replicas_here = num_replicas // num_pipelines
  replica_id = tf.cast(replica_id, tf.int32)
  p, local = replica_id // replicas_here, replica_id % replicas_here
  return p + num_pipelines * (local * per_replica + tf.range(per_replica))


def example_seed(seed, epoch, index):
  """The host-side randomness of one example in one epoch: independent of batch and worker."""
  base = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
  return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


def _decode(source, seed, epoch, index, payload):
  """One streamed example's pixels: its training crop keyed by (seed, epoch, index), or without
  a seed evaluation's centre crop."""
  key = None if seed is None else example_seed(seed, epoch, index)
  return source.decode(payload, key)


def _read_one(source, seed, epoch, index):
  """Example `index` (an int64 scalar tensor) read and decoded alone: (image, label)."""
  payload, label = source.read(index[None])
  return _decode(source, seed, epoch, index, payload[0]), label[0]


def _fetch(source, batches, per_replica, seed=None):
  """(epoch, indices) per-replica batches → (images, labels) from `source`; (images, labels,
  weights) from a source that skips bad examples."""
  if not source.streaming:
    gather = source.gather_fn()
    return batches.map(lambda _, idx: gather(idx), num_parallel_calls=tf.data.AUTOTUNE)
  if source.skip_bad:
    return _fetch_skipping(source, batches, per_replica, seed)

  def read(epoch, idx):
    payload, labels = source.read(idx)
    return tf.fill(tf.shape(idx), epoch), idx, payload, labels

  def decode(epoch, index, payload, label):
    return _decode(source, seed, epoch, index, payload), label

  ds = batches.map(read, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(per_replica, drop_remainder=True)


def _fetch_skipping(source, batches, per_replica, seed):
  """_fetch's streaming path where each example is read and decoded alone and one that fails
  becomes a placeholder of weight 0: (images, labels, weights) batches of the same shape, every
  example at its place. A separate path, so that the default one keeps its batched reads."""
  c = source.crop
  blank = (tf.zeros([c.size, c.size, c.channels], tf.uint8), tf.constant(0, tf.int32),
           tf.constant(0.0))

  def example(epoch, index):
    return *_read_one(source, seed, epoch, index), tf.constant(1.0)

  def placeholder(epoch, index):
    warned = tf.py_function(lambda e, i: _warn_skipped(source, seed, int(e), int(i)),
                            [epoch, index], tf.int64)
    with tf.control_dependencies([warned]):
      return tf.nest.map_structure(tf.identity, blank)

  def one(epoch, index):
    # Errors drop the example's own element only; the placeholder then takes its place.
    pair = tf.data.Dataset.from_tensors((epoch, index))
    return pair.map(example).ignore_errors().concatenate(pair.map(placeholder)).take(1)

  ds = batches.map(lambda epoch, idx: (tf.fill(tf.shape(idx), epoch), idx)).unbatch()
  # One element per example, block_length 1, deterministic: the output keeps the input's order.
  ds = ds.interleave(one, cycle_length=per_replica, block_length=1,
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(per_replica, drop_remainder=True)


def example_problem(source, seed, epoch, index):
  """Why example `index` of a streaming source fails to read or decode as `_fetch` does it in
  `epoch` (its crop depends on the epoch: a JPEG cut short may crop fine from its top rows),
  or '' when it reads and decodes."""
  try:
    _read_one(source, seed, tf.constant(epoch, tf.int64), tf.constant(index, tf.int64))
  except (tf.errors.OpError, ValueError) as e:
    return error_text(e)
  return ''


def error_text(error):
  """A TensorFlow error's own words on one line, without the graph's node and function names."""
  text = str(getattr(error, 'message', error))
  text = re.sub(r'\{\{[^}]*\}\}|\[\[.*?\]\]|\[Op:[^\]]*\].*$', ' ', text, flags=re.S)
  text = re.sub(r'Error in user-defined function passed to .*? iterator: \S+: ', '', text)
  return ' '.join(text.split())[:300]


def _warn_skipped(source, seed, epoch, index):
  """Names the first few bad examples a skipping pipeline meets, with why (at most once each)."""
  name = source.describe(index)
  with _warned_lock:
    if name in _warned or len(_warned) >= _WARN_AT_MOST:
      return index
    _warned.add(name)
    count = len(_warned)
  logging.warning('Skipping example %d (%s): %s; it weighs 0 in every batch that holds it '
                  '(config.dataset.skip_bad_examples)%s.', index, name,
                  example_problem(source, seed, epoch, index) or 'it failed to read or decode',
                  '' if count < _WARN_AT_MOST else '; further ones are only counted in the '
                  'training log')
  return index


def raise_if_bad_example(error, source, global_batch_size, seed, step, checkpoint):
  """Raises a one-line UserError naming the example whose failure `error` is, when the batch of
  training step `step` holds an example that fails alone; returns otherwise (another error).

  `checkpoint` is the latest one saved (or None): nothing after it was saved.
  """
  if not source.streaming:
    return  # decoded at load: nothing is read while training
  epoch, indices = step_batch(len(source), global_batch_size, seed, step)
  for index in (int(i) for i in indices.numpy()):
    why = example_problem(source, seed, epoch, index)
    if why:
      raise UserError(
          f'training example {index} ({source.describe(index)}) read for step {step} is '
          f'corrupt ({why}): remove or replace it, or set config.dataset.skip_bad_examples=True;'
          f' nothing was saved from step {step} on; the last checkpoint is '
          f'{checkpoint or "none (no save yet)"}') from error


def raise_if_bad_eval_example(error, source, split, checkpoint):
  """The evaluation counterpart of raise_if_bad_example: finds the first example of the
  `split` source that fails to read or decode alone (one parallel pass, as fast as evaluating)
  and raises a one-line UserError naming it; returns when none does (another error)."""
  if not source.streaming:
    return

  def read_one(index):
    # The image is returned, so that its decode is not pruned from the graph.
    return index, _read_one(source, None, tf.constant(-1, tf.int64), index)[0]

  readable = tf.data.Dataset.range(len(source)).map(
      read_one, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  good = {int(i) for i, _ in readable.as_numpy_iterator()}
  bad = next((i for i in range(len(source)) if i not in good), None)
  if bad is None:
    return
  raise UserError(
      f'{split} example {bad} ({source.describe(bad)}) is corrupt '
      f'({example_problem(source, None, -1, bad)}): remove or replace it, or set '
      'config.dataset.skip_bad_examples=True (it then counts as padding); the training '
      f'checkpoints are kept (the latest is {checkpoint or "none"}): re-run to evaluate again'
  ) from error


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
    rows = epoch_order(n, global_batch_size, seed, epoch)
    return tf.data.Dataset.from_tensor_slices((tf.fill([per_epoch], epoch), rows))

  ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch_batches)
  ds, per_replica = per_replica_batches(ds.skip(skip_steps), global_batch_size, input_context)
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
  ds, per_replica = per_replica_batches(ds, global_batch_size, input_context)
  ds = ds.map(lambda e, idx: ((e, tf.minimum(idx, n - 1)), tf.cast(idx < n, tf.float32)))
  masks = ds.map(lambda _, mask: mask)
  examples = _fetch(source, ds.map(lambda pair, _: pair), per_replica)

  def with_mask(example, mask):
    images, labels, *weights = example
    return images, labels, mask * weights[0] if weights else mask  # skipped ones: as padding

  return tf.data.Dataset.zip((examples, masks)).map(with_mask).prefetch(tf.data.AUTOTUNE)
