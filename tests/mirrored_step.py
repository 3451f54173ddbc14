"""Run as a script (2 logical CPU devices need a fresh process): one training step under the
default strategy and one under MirroredStrategy over 2 logical CPUs, from the same weights and
the same global batch, with every augmentation on (mixup, cutmix, RandAugment, random erasing);
prints the largest differences of loss and weights as JSON.

`recipe` runs two steps with gradient clipping (active), accumulation over 2 micro-batches and
an EMA of the weights, and also compares the averages, the gradient norms, and the EMA swap
of the mirrored run (both devices' copies, and their bitwise return).

`optimizers` instead runs one step of each optimizer of OPTIMIZERS (no augmentation), and prints
each one's largest weight difference and update.

Usage: python -m tests.mirrored_step [batch_norm] [recipe] | optimizers"""

import json
import sys

import keras
import numpy as np

import research  # noqa: F401  (oneDNN on before TensorFlow starts)
import tensorflow as tf  # noqa: E402

from research.core import strategy as strategy_lib  # noqa: E402
from research.train import optim  # noqa: E402
from research.train import setup as setup_lib  # noqa: E402
from research.train import steps  # noqa: E402
from tests import helpers  # noqa: E402


# The recipe's clip: below the tiny CNN's gradient norm at these weights, so it clips.
CLIP = 0.5


def one_step(config, strategy, images, labels, initial=None, num_steps=1):
  model, optimizer, _, step = setup_lib.build_state(config, strategy, 10, (28, 28, 1), 10, 10)
  if initial is not None:
    for v, value in zip(model.weights, initial):
      v.assign(value)
  before = [v.numpy() for v in model.weights]
  train = steps.make_train_fn(strategy, model, optimizer, config, step, tf.Variable(0.0))
  batches = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors((images, labels)).repeat())
  totals = train(iter(batches), tf.constant(num_steps))
  loss_sum, count, norm_sum, norms = (
      totals[k] for k in ('loss_sum', 'count', 'grad_norm_sum', 'grad_norms'))
  averages = [v.numpy() for v in optim.ema_variables(optimizer)]
  return (loss_sum / count, before, [v.numpy() for v in model.weights], _fused(model, strategy),
          averages, norm_sum / norms, _swap_ok(model, optimizer, averages))


def _swap_ok(model, optimizer, averages):
  """Whether every device's copy holds the average inside optim.ema_weights, and its raw value
  again, bitwise, after it."""
  def copies(v):
    return [c.numpy() for c in v.value.values] if hasattr(v.value, 'values') else [v.numpy()]

  raw = [copies(v) for v in model.trainable_variables]
  with optim.ema_weights(model, optimizer):
    inside = [copies(v) for v in model.trainable_variables]
  after = [copies(v) for v in model.trainable_variables]
  return (all(np.array_equal(c, a) for cs, a in zip(inside, averages) for c in cs)
          and all(np.array_equal(c, r) for cs, rs in zip(after, raw) for c, r in zip(cs, rs)))


def _fused(model, strategy):
  """Whether a training forward pass under `strategy` runs the fused batch-norm kernel."""

  @tf.function
  def forward(x):
    return strategy.run(lambda x: model(x, training=True), (x,))

  graph = forward.get_concrete_function(tf.TensorSpec((16, 28, 28, 1))).graph
  return any(op.type.startswith('FusedBatchNorm') for op in graph.get_operations())


# (name, nesterov): the optimizers beyond the SGD of main's step, each through the all-reduce
# hook (optim.apply_as_reduced).
OPTIMIZERS = (('sgd', True), ('adamw', False), ('lamb', False), ('lion', False))


def optimizers(mirrored, images, labels):
  """{name: (largest weight difference, largest update)} of one step of each of OPTIMIZERS."""
  out = {}
  for name, nesterov in OPTIMIZERS:
    config = helpers.tiny_config('cnn', batch_size=16)
    config.augment.enabled = False
    config.schedule.warmup_epochs = 0.0
    config.optimizer.update(dict(name=name, nesterov=nesterov, weight_decay=1e-2))
    config.schedule.learning_rate = 1e-3 if name == 'lion' else 0.1 if name == 'sgd' else 1e-2
    _, initial, after_1, *_ = one_step(config, tf.distribute.get_strategy(), images, labels)
    _, _, after_2, *_ = one_step(config, mirrored, images, labels, initial)
    out[name] = (max(float(np.abs(a - b).max()) for a, b in zip(after_1, after_2)),
                 max(float(np.abs(a - b).max()) for a, b in zip(after_1, initial)))
  return out


def main():
  config = helpers.tiny_config('cnn', batch_size=16)
  config.model.batch_norm = 'batch_norm' in sys.argv[1:]  # synchronized: global-batch statistics
  recipe = 'recipe' in sys.argv[1:]
  if recipe:
    config.update(dict(clip_global_norm=CLIP, accumulate_steps=2, ema_decay=0.5))
  # Every augmentation on: each example draws by its place in the global batch, and pairs mix
  # within a replica, so 2 replicas see exactly the one device's inputs.
  config.augment.update(dict(randaugment=(2, 9), color_ops=True, mixup_alpha=0.4,
                             cutmix_alpha=1.0, erase=0.5))
  config.schedule.warmup_epochs = 0.0  # a first step with learning rate 0 would prove nothing
  # SGD: the update is the gradient times the rate. Adam's first update is about lr·sign(g), which
  # turns rounding-level gradient differences of near-zero entries into lr-sized ones.
  config.optimizer.name = 'sgd'
  config.schedule.learning_rate = 0.1
  config.num_cpu_devices = 2
  config.strategy = 'mirrored'
  mirrored = strategy_lib.build(config)
  keras.utils.set_random_seed(0)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, 16, dtype=np.int32)
  if 'optimizers' in sys.argv[1:]:
    print(json.dumps({'replicas': mirrored.num_replicas_in_sync,
                      'optimizers': optimizers(mirrored, images, labels)}))
    return
  num_steps = 2 if recipe else 1  # the EMA's first step only copies the weights
  loss_1, initial, after_1, fused_1, ema_1, norm_1, _ = one_step(
      config, tf.distribute.get_strategy(), images, labels, num_steps=num_steps)
  loss_2, _, after_2, fused_2, ema_2, norm_2, swap_ok = one_step(
      config, mirrored, images, labels, initial, num_steps)
  print(json.dumps({
      'replicas': mirrored.num_replicas_in_sync,
      'fused_one_device': fused_1, 'fused_mirrored': fused_2,
      'loss_diff': abs(float(loss_1 - loss_2)),
      'weight_diff': max(float(np.abs(a - b).max()) for a, b in zip(after_1, after_2)),
      # float32 rounding grows with the value: batch norm's moving variance is not near 1
      'weight_rel_diff': max(float((np.abs(a - b) / (1 + np.abs(a))).max())
                             for a, b in zip(after_1, after_2)),
      'update_size': max(float(np.abs(a - b).max()) for a, b in zip(after_1, initial)),
      'ema_diff': max([float(np.abs(a - b).max()) for a, b in zip(ema_1, ema_2)], default=0.0),
      'ema_size': len(ema_2), 'grad_norm': float(norm_1),
      'grad_norm_diff': abs(float(norm_1 - norm_2)), 'swap_ok': swap_ok}))


if __name__ == '__main__':
  main()
