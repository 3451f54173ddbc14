"""The compiled steps: several training steps per call, and one exact evaluation step.

Both run the replica function under `strategy.run`, so the same code serves one device, mirrored
GPUs and multi-worker jobs. Each replica returns sums (loss, correct, count), reduced with SUM
across replicas: the aggregate metrics are exact whatever the replica count.
"""

import keras
import tensorflow as tf

from research.core import strategy as strategy_lib
from research.data import mixing
from research.data import pipeline
from research.data import preprocess

_SUM = tf.distribute.ReduceOp.SUM

# The names of what a training call returns, summed over its steps (make_train_fn). Inside the
# call they travel as one vector in this order: one all-reduce per step carries them all.
TOTALS = ('loss_sum', 'correct', 'count', 'stop', 'grad_norm_sum', 'grad_norms')
_STOP = TOTALS.index('stop')

# Evaluation reports top-k accuracy beside top-1 for this k (the ImageNet papers' top-5).
TOP_K = 5


def cross_entropy(labels, logits, label_smoothing=0.0, partner_labels=None, lam=None):
  """Per-example softmax cross-entropy on integer labels, optionally label-smoothed.

  With `partner_labels` and `lam` (mixup/cutmix, research/data/mixing.py) it is
  lam·CE(labels) + (1 - lam)·CE(partner_labels), each term smoothed: cross-entropy is linear in
  its targets, so one call on the lam-weighted targets is that sum.
  """
  num_classes = logits.shape[-1]
  targets = tf.one_hot(labels, num_classes)
  if partner_labels is not None:
    targets = lam[:, None] * targets + (1.0 - lam[:, None]) * tf.one_hot(partner_labels,
                                                                         num_classes)
  if label_smoothing:
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
  return tf.nn.softmax_cross_entropy_with_logits(targets, tf.cast(logits, tf.float32))


def augment_seed(seed, step):
  """The augmentation seed of one step: a pure function of (seed, step), so a resumed run
  augments exactly as the uninterrupted one would have. Each example's draws add its place in
  the global batch (preprocess.Draws), so they do not depend on the replica that holds it."""
  return tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])


def reduce_and_clip(grads, clip_norm=0.0, loss_scale=None, measure_norm=True):
  """(gradients summed across replicas, their global norm before clipping, 1.0 if that norm was
  taken else 0.0), the gradients clipped to global norm `clip_norm` when it is > 0. Called in a
  replica context, where it is the step's one all-reduce: the optimizer applies the result as it
  is (research/train/optim.py), so the norm is the global batch's on every replica, whatever
  their number. With loss scaling the grads
  come scaled by `loss_scale`; the norm returned and the clip are of the unscaled ones.

  Without clipping the norm is only reported, so it is taken only when `measure_norm` (a bool
  tensor) holds and is 0 otherwise: it is one more pass over every gradient (58M numbers for
  AlexNet), which a log sample need not pay each step. No collective depends on it."""
  grads = tf.distribute.get_replica_context().all_reduce(_SUM, grads)
  scale = 1.0 if loss_scale is None else tf.cast(loss_scale, tf.float32)
  if clip_norm > 0:
    norm = tf.linalg.global_norm(grads)
    grads, _ = tf.clip_by_global_norm(grads, clip_norm * scale, use_norm=norm)
    measured = tf.constant(1.0)
  else:
    norm = tf.cond(measure_norm, lambda: tf.linalg.global_norm(grads), lambda: 0.0)
    measured = tf.cast(measure_norm, tf.float32)
  return grads, norm / scale, measured


def make_train_fn(strategy, model, optimizer, config, step, stop_flag):
  """Returns train(iterator, num_steps) → {name: numpy float32} of the TOTALS over the steps it
  ran, in one compiled call and one copy to the host (sums of them round as on the device):
  loss_sum, correct, count (of the weights when batches carry them: a skipped bad example weighs
  0), stop (> 0 when it ended early), grad_norm_sum and grad_norms (the sum and number of the
  gradient norms taken: every step's with clipping on, else the call's first; reduce_and_clip).

  `step` (an int64 variable made under the strategy) counts the steps taken; it keys the
  augmentation and is saved in checkpoints. The call ends early, after the current step, once
  `stop_flag` (a float variable set by the preemption watcher) is non-zero on any worker. Each
  step is one optimizer update, its gradient summed over config.accumulate_steps micro-batches
  of each replica's batch, then clipped to config.clip_global_norm."""
  global_batch = config.batch_size
  augment = config.augment if config.augment.enabled else None
  num_pipelines = strategy_lib.num_workers(strategy)  # one input pipeline per worker
  loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
  forward = _forward(model, config)

  def replica_step(images, labels, weights=None, measure_norm=True):
    # `weights`: 0 for a bad example the pipeline skipped (research/data/pipeline.py), else 1.
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    seed = augment_seed(config.seed, step)
    positions = pipeline.replica_positions(replica, global_batch, strategy.num_replicas_in_sync,
                                           num_pipelines)
    x = preprocess.preprocess(images, input_size=config.model.input_size, training=True,
                              augment=augment, seed=seed, positions=positions,
                              global_batch=global_batch)
    x, partners, lam = mixing.mix(x, labels, weights, augment, seed, positions, global_batch)
    per_example, logits, grads = _gradients(model, forward, optimizer, config,
                                            (x, labels, weights, partners, lam))
    grads, norm, measured = reduce_and_clip(grads, config.clip_global_norm,
                                            optimizer.dynamic_scale if loss_scaling else None,
                                            measure_norm)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    hits = tf.cast(tf.argmax(logits, -1, output_type=tf.int32)
                   == mixing.dominant(labels, partners, lam), tf.float32)
    return _step_totals(replica, per_example, hits, labels, weights, norm, measured, stop_flag)

  @tf.function
  def train_steps(iterator, num_steps):
    # Many steps per call: the Python loop and the host-device round trip are paid once per call.
    totals = tf.zeros([len(TOTALS)])
    for i in tf.range(num_steps):
      # The first step, not the last: a call that a stop ends early still has a norm to report.
      sums = strategy.reduce(_SUM, strategy.run(replica_step, args=next(iterator),
                                                kwargs={'measure_norm': i == 0}), axis=None)
      # The counter moves once this step's batch is in, and the next batch is fetched after it
      # moved: when a batch fails to arrive (a corrupt example) it holds the steps done.
      with tf.control_dependencies([sums]):
        counted = step.assign_add(1, read_value=False)
      with tf.control_dependencies([counted]):
        sums = tf.identity(sums)
      totals += sums
      # The stop flags ride along in the metrics' all-reduce: every worker sees the same sum
      # after the same step, so all of them stop there, and no collective is left waiting.
      if sums[_STOP] > 0:
        break
    return totals

  return lambda iterator, num_steps: dict(zip(TOTALS, train_steps(iterator, num_steps).numpy()))


def _forward(model, config):
  """The model's training forward pass. XLA compiles the model alone (config.jit_compile): the
  augmentation's image transform has no XLA CPU kernel, and a compiled step would read the step
  counter from the wrong replica's device."""
  forward = lambda x: model(x, training=True)  # noqa: E731
  return tf.function(forward, jit_compile=True) if config.jit_compile else forward


def _gradients(model, forward, optimizer, config, batch):
  """(per-example losses, logits, this replica's gradient of the global mean loss) of `batch`
  (inputs, labels, weights, partners, lam; see mixing.mix), summed over config.accumulate_steps
  micro-batches. A Python loop: their number is a small constant, and each micro-batch starts
  once the previous one's gradient is summed (the control dependency), so only one
  micro-batch's activations are alive at a time. Mixing happened before the split, on the
  replica's whole batch, so it is the same for any accumulate_steps."""
  micro_batches = config.accumulate_steps
  parts = [tf.split(t, micro_batches) if t is not None else [None] * micro_batches
           for t in batch]
  per_example, logits, grads = [], [], None
  for x_i, labels_i, weights_i, partners_i, lam_i in zip(*parts):
    with tf.control_dependencies(grads or []):
      x_i = tf.identity(x_i)
    with tf.GradientTape() as tape:
      logits_i = forward(x_i)
      loss_i = cross_entropy(labels_i, logits_i, config.label_smoothing, partners_i, lam_i)
      if weights_i is not None:
        loss_i *= weights_i
      # Divide by the global batch, not the replica's or the micro-batch's: summed over
      # micro-batches and replicas, the gradient is then the global batch's mean for any
      # replica count and any accumulate_steps.
      loss = tf.nn.compute_average_loss(loss_i, global_batch_size=config.batch_size)
      if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        loss = optimizer.scale_loss(loss)  # float16 gradients underflow unless scaled up first
    g = tape.gradient(loss, model.trainable_variables)
    grads = g if grads is None else [a + b for a, b in zip(grads, g)]
    per_example.append(loss_i)
    logits.append(logits_i)
  return tf.concat(per_example, 0), tf.concat(logits, 0), grads


def _step_totals(replica, per_example, hits, labels, weights, norm, measured, stop_flag):
  """One replica's TOTALS of a step, stacked in their order for the one all-reduce."""
  if weights is None:
    correct, count = tf.reduce_sum(hits), tf.cast(tf.shape(labels)[0], tf.float32)
  else:  # count: the examples trained on; the trainer counts the rest as skipped
    correct, count = tf.reduce_sum(hits * weights), tf.reduce_sum(weights)
  # The norm is the same on every replica: summed, it is counted once.
  norm, measured = (tf.where(replica == 0, v, 0.0) for v in (norm, measured))
  totals = dict(loss_sum=tf.reduce_sum(per_example), correct=correct, count=count,
                stop=stop_flag.read_value(), grad_norm_sum=norm, grad_norms=measured)
  return tf.stack([totals[name] for name in TOTALS])


def make_eval_fn(strategy, model, config, num_classes):
  """Returns evaluate(batch) → ([loss sum, count, top-5 correct], confusion matrix) for one
  padded batch; padding (mask 0) adds nothing to any of them."""
  # With five classes or fewer every label is in the top 5 (accuracy 1.0, still reported): cap k
  # at the class count so that does not rest on how each device's kernel treats a larger k.
  k = min(TOP_K, num_classes)

  def replica_step(images, labels, mask):
    x = preprocess.preprocess(images, input_size=config.model.input_size, training=False)
    logits = model(x, training=False)
    loss = tf.reduce_sum(cross_entropy(labels, logits) * mask)
    predictions = tf.argmax(logits, -1, output_type=tf.int32)
    confusion = tf.math.confusion_matrix(labels, predictions, num_classes, weights=mask,
                                         dtype=tf.float32)
    in_top_k = tf.math.in_top_k(labels, tf.cast(logits, tf.float32), k)
    top_k = tf.reduce_sum(tf.cast(in_top_k, tf.float32) * mask)
    return tf.stack([loss, tf.reduce_sum(mask), top_k]), confusion

  @tf.function
  def evaluate(batch):
    per_replica = strategy.run(replica_step, args=batch)
    # One reduce per output: a multi-worker reduce of the (sums, matrix) pair fails on ranks.
    return tf.nest.map_structure(lambda v: strategy.reduce(_SUM, v, axis=None), per_replica)

  return evaluate


def evaluate_split(strategy, eval_fn, dataset):
  """Runs `eval_fn` over a distributed eval dataset; every example counted exactly once.

  Returns loss, accuracy (top-1), top5_accuracy, num_examples, per_class_accuracy and the
  confusion matrix (rows true, columns predicted).
  """
  sums, confusion = None, None
  for batch in dataset:
    s, c = eval_fn(batch)
    sums = s if sums is None else sums + s
    confusion = c if confusion is None else confusion + c
  loss_sum, count, top_k = sums.numpy()
  confusion = confusion.numpy().astype('int64')
  per_class = confusion.diagonal() / confusion.sum(axis=1).clip(min=1)
  return {'loss': float(loss_sum / count), 'accuracy': float(confusion.trace() / count),
          'top5_accuracy': float(top_k / count), 'num_examples': int(count),
          'per_class_accuracy': [float(a) for a in per_class], 'confusion': confusion}
