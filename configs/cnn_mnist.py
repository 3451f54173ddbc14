"""Small CNN on MNIST: ≥ 99.4% test accuracy in about 20 s of 2-core CPU training.

Command: python -m launch.train --config=configs/cnn_mnist.py --workdir=runs/cnn_mnist
Reproduces: test accuracy 99.47 / 99.50 / 99.44% for --config.seed=0..2 (median 99.47%) with
  21 / 21 / 22 s of training (train_seconds; median 21 s), 29–30 s for the whole command, where
  --mixed_precision=auto picks mixed_bfloat16 (2026-11-30, 2-core AMD EPYC with avx512_bf16).
  With --mixed_precision=float32: 99.46 / 99.51 / 99.40% in 31 / 30 / 31 s. Five runs
  of seed 0 gave the same weights digest; add --deterministic to make that a guarantee.
Robustness (python -m launch.evaluate --workdir=runs/cnn_mnist --corruptions=all, seed 0, 99.47%
  clean; 2026-12-01, same machine): severity 1 / 3 / 5 gives noise 99.38 / 93.47 / 21.23%, blur
  99.55 / 78.52 / 9.77%, pixelate 99.34 / 97.87 / 27.81%, thicken 99.10 / 90.73 / 58.56%, thin
  99.48 / 98.98 / 90.27%, shift 99.49 / 82.51 / 13.19%, contrast 25.07 / 12.12 / 12.67%; invert
  22.65%. It fails on lower contrast and inversion: nothing in its augmentation varies ink levels.

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
