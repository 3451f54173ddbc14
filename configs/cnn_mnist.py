"""Small CNN on MNIST: ≥ 99.4% test accuracy in under a minute of 2-core CPU training.

Command: python -m launch.train --config=configs/cnn_mnist.py --workdir=runs/cnn_mnist
Reproduces: test accuracy 99.54 / 99.48 / 99.45 / 99.43 / 99.40% for --config.seed=0..4 (median
  99.45%) with 53 / 50 / 53 / 56 / 58 s of training (train_seconds; median 53 s) on 2 CPU cores;
  the whole command took 58–66 s. Runs are not bitwise repeatable (oneDNN's threaded kernels):
  seed 0 also gave 99.52% and 99.41%; add --deterministic for bitwise-repeatable runs.

The tutorials' two-conv net (conv-pool-conv-pool-dense) with 32/64 filters instead of 64/64 (the
first conv's 64 filters cost time and bought no accuracy here), batch norm, a 256-unit dense
layer, light digit augmentation, label smoothing, AdamW with a short warmup and cosine decay,
3.25 epochs at batch 256. Without augmentation and label smoothing the same budget gave 99.25%.
"""

from research import config as config_lib


def get_config():
  c = config_lib.base('cnn', 'mnist')
  c.model.filters = (32, 64)
  c.model.dense_units = (256,)
  c.model.batch_norm = True
  c.augment.update(dict(rotate=8.0, scale=0.08, translate=0.08))
  c.label_smoothing = 0.1
  c.batch_size = 256
  c.num_epochs = 3.25
  c.schedule.learning_rate = 1e-2
  c.schedule.warmup_epochs = 0.5
  return c
