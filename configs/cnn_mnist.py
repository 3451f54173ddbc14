"""Small CNN on MNIST: ≥ 99.4% test accuracy in about 25 s of 2-core CPU training, and it holds
up on corrupted digits.

Command: python -m launch.train --config=configs/cnn_mnist.py --workdir=runs/cnn_mnist
Reproduces: test accuracy 99.49 / 99.46 / 99.41% for --config.seed=0..2 (median 99.46%) with
  21 / 22 / 21 s of training (train_seconds; median 21 s), 31–33 s for the whole command, where
  --mixed_precision=auto picks mixed_bfloat16 (2026-12-01, 2-core Intel Xeon with amx_bf16).
  2026-12-01, 2-core AMD EPYC with avx512_bf16: 99.45 / 99.44 / 99.41% in 21 / 27 / 24 s
  (the same seed-0 run took 21 s and 27 s in two runs minutes apart: the machine drifts). Without
  `standardize` and `invert` the recipe gave 99.47 / 99.50 / 99.44% (2026-11-30).
  With --mixed_precision=float32 there: 99.46 / 99.44 / 99.42% in 43 / 38 / 39 s, on a
  slower stretch of the machine (seed 0 with auto took 31 s beside them; 2026-12-01).
Robustness (python -m launch.evaluate --workdir=runs/cnn_mnist --corruptions=all, seed 0, 99.44%
  clean; 2026-12-01, the AMD EPYC): severity 1 / 3 / 5 gives noise 98.48 / 65.14 / 9.76%, blur
  99.43 / 96.85 / 48.63%, pixelate 99.27 / 98.69 / 88.43%, thicken 98.99 / 88.76 / 46.89%, thin
  99.40 / 99.17 / 97.11%, shift 99.38 / 75.48 / 12.38%, contrast 99.44 / 99.44 / 99.42%; invert
  99.38%. Every corruption at severity 1 stays above 98.4%. The choices behind it, each measured
  on seed 0 with the same command:
  - the first layer standardises each image (model.standardize): contrast had left 25% at
    severity 1 and 13% at 5, as the net keyed on absolute ink; with it alone, blur at 3 went from
    78.52 to 97.31% and pixelate at 5 from 27.81 to 89.66%, at 99.52% clean;
  - a quarter of the training digits are inverted (augment.invert=0.25): inversion had left 28%
    with standardisation alone. It costs clean accuracy (99.52 → 99.45%) and noise robustness
    (severity 3: 76.55 → 65.14%); --config.augment.invert=0 trades inversion back for those.

The tutorials' two-conv net (conv-pool-conv-pool-dense) with 32/64 filters instead of 64/64 (the
first conv's 64 filters cost time and bought no accuracy here), batch norm, a 256-unit dense
layer, light digit augmentation, label smoothing, AdamW with a short warmup and cosine decay,
3.25 epochs at batch 256. Without augmentation and label smoothing the same budget gave 99.25%.
"""

from research.core import config as config_lib


def get_config():
  c = config_lib.base('cnn', 'mnist')
  c.model.filters = (32, 64)
  c.model.dense_units = (256,)
  c.model.batch_norm = True
  c.model.standardize = True
  c.augment.update(dict(rotate=8.0, scale=0.08, translate=0.08, invert=0.25))
  c.label_smoothing = 0.1
  c.batch_size = 256
  c.num_epochs = 3.25
  c.schedule.learning_rate = 1e-2
  c.schedule.warmup_epochs = 0.5
  return c
