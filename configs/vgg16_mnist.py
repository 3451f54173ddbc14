"""VGG16 on MNIST: the d2l tutorial's 224×224 run, and a CPU-sized VGG16 that trains here.

Command: python -m launch.train --config=configs/vgg16_mnist.py:cpu --workdir=runs/vgg16_cpu
Reproduces: 99.36% test accuracy (validation 99.04%) for the CPU-sized VGG16 (:cpu), 4 epochs,
  269 s of training at ~860 img/s on 2 CPU cores, 278 s in all (seed 0, one run; float32, i.e.
  --mixed_precision=float32, not re-run under auto's bfloat16).

Variants, chosen with the config argument (configs/vgg16_mnist.py:VARIANT):
  (none) VGG16 at 224×224, full width: about 1–2 img/s on 2 CPU cores, a GPU job.
  demo   the same on the tutorial's 256-image demo subset, one epoch (16 steps of 16): trained at
         1.3 img/s here (203 s of training, 289 s in all); at chance afterwards (9.0% on
         test[:256]), as one pass over 256 images leaves it.
  cpu    VGG16's 13 convs at 32×32 with all widths ÷ 4 (16…128 channels, 1024-unit FCs).
  tiny   two one-conv blocks of 8 and 16 channels at 32×32: for tests.
"""

from research.core import config as config_lib


def get_config(variant=''):
  c = config_lib.base('vgg16', 'mnist')
  c.batch_size = 64
  c.num_epochs = 1.0
  c.optimizer.name = 'adamw'
  c.schedule.learning_rate = 2e-4
  c.schedule.warmup_epochs = 0.05
  c.eval_batch_size = 200
  c.log_every_steps = 20
  c.steps_per_loop = 10
  c.checkpoint_every_steps = 200
  if variant == 'demo':
    c.dataset.train_split = 'train[:256]'
    c.dataset.test_split = 'test[:256]'  # the full test set alone would take an hour here
    c.dataset.validation_size = 0
    c.batch_size = 16
    c.log_every_steps = 4
    c.steps_per_loop = 4
    c.image_grid_size = 16
  elif variant == 'cpu':
    c.model.input_size = 32
    c.model.width_divisor = 4
    c.batch_size = 128
    c.num_epochs = 4.0
    c.schedule.learning_rate = 1e-3
    c.model.batch_norm = True
  elif variant == 'tiny':
    c.model.input_size = 32
    c.model.conv_arch = ((1, 8), (1, 16))
    c.model.dense_units = 32
  elif variant:
    raise ValueError(f'unknown variant {variant!r}: use demo, cpu or tiny (or none)')
  return c
