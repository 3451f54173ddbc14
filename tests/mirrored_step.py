"""Run as a script (2 logical CPU devices need a fresh process): one training step under the
default strategy and one under MirroredStrategy over 2 logical CPUs, from the same weights and
the same global batch, with every augmentation on (mixup, cutmix, RandAugment); prints the
largest differences of loss and weights as JSON.

Usage: python -m tests.mirrored_step [batch_norm]"""

import json
import sys

import keras
import numpy as np

import research  # noqa: F401  (oneDNN on before TensorFlow starts)
import tensorflow as tf  # noqa: E402

from research import strategy as strategy_lib  # noqa: E402
from research.train import steps  # noqa: E402
from research.train import trainer  # noqa: E402
from tests import helpers  # noqa: E402


def one_step(config, strategy, images, labels, initial=None):
  model, optimizer, _, step = trainer.build_state(config, strategy, 10, (28, 28, 1), 10, 10)
  if initial is not None:
    for v, value in zip(model.weights, initial):
      v.assign(value)
  before = [v.numpy() for v in model.weights]
  train = steps.make_train_fn(strategy, model, optimizer, config, step, tf.Variable(0.0))
  batches = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors((images, labels)).repeat())
  loss_sum, _, count, _ = train(iter(batches), tf.constant(1)).numpy()
  return loss_sum / count, before, [v.numpy() for v in model.weights], _fused(model, strategy)


def _fused(model, strategy):
  """Whether a training forward pass under `strategy` runs the fused batch-norm kernel."""

  @tf.function
  def forward(x):
    return strategy.run(lambda x: model(x, training=True), (x,))

  graph = forward.get_concrete_function(tf.TensorSpec((16, 28, 28, 1))).graph
  return any(op.type.startswith('FusedBatchNorm') for op in graph.get_operations())


def main():
  config = helpers.tiny_config('cnn', batch_size=16)
  config.model.batch_norm = 'batch_norm' in sys.argv[1:]  # synchronized: global-batch statistics
  # Every augmentation on: each example draws by its place in the global batch, and pairs mix
  # within a replica, so 2 replicas see exactly the one device's inputs.
  config.augment.update(dict(randaugment=(2, 9), color_ops=True, mixup_alpha=0.4,
                             cutmix_alpha=1.0))
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
  loss_1, initial, after_1, fused_1 = one_step(config, tf.distribute.get_strategy(), images,
                                               labels)
  loss_2, _, after_2, fused_2 = one_step(config, mirrored, images, labels, initial)
  print(json.dumps({
      'replicas': mirrored.num_replicas_in_sync,
      'fused_one_device': fused_1, 'fused_mirrored': fused_2,
      'loss_diff': abs(float(loss_1 - loss_2)),
      'weight_diff': max(float(np.abs(a - b).max()) for a, b in zip(after_1, after_2)),
      # float32 rounding grows with the value: batch norm's moving variance is not near 1
      'weight_rel_diff': max(float((np.abs(a - b) / (1 + np.abs(a))).max())
                             for a, b in zip(after_1, after_2)),
      'update_size': max(float(np.abs(a - b).max()) for a, b in zip(after_1, initial))}))


if __name__ == '__main__':
  main()
