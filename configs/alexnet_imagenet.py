"""AlexNet on ImageNet (ILSVRC-2012) with the recipe of Krizhevsky et al. (2012).

Command: python -m launch.train --config=configs/alexnet_imagenet.py --workdir=runs/alexnet_in1k
Reproduces: not reproduced: a multi-GPU job on a copy of ImageNet, neither of which the 2-core CPU
  machine that runs this project's tests has. It aims at the paper's single net, 40.7% top-1 and
  18.2% top-5 error on the ILSVRC-2012 validation set (Table 2, "1 CNN", predictions averaged over
  ten 224×224 patches).

The paper's recipe: SGD with momentum 0.9 and weight decay 5e-4 (see `imagenet_sgd` below for what
that is in Keras), batch 128, learning rate 0.01 divided by 10 three times, about 90 epochs,
dropout 0.5 in the two hidden FC layers, 227×227 RGB input. The paper divided the rate when the
validation error stopped improving; here it is divided at fixed epochs 30, 60 and 80. The net is
the d2l AlexNet: one tower, no local response normalisation, Keras' Glorot initialisation; at
1000 classes it has 62,378,344 parameters (the paper's two-GPU net: about 60 million).

Data: imagenet2012 is a manual download (--config.dataset.manual_dir=DIR holding its tars, or a
TFDS_DATA_DIR where it is prepared). Its labelled validation set serves as the test split (the
test split has no labels); a 10,000-image minival from the tail of train picks the best
checkpoint, as big_vision holds out 1% of train.

Variants, chosen with the config argument (configs/alexnet_imagenet.py:VARIANT):
  modern  the same net with batch norm and a current recipe (`modern` below: RandAugment, cutmix
          and mixup, label smoothing, clipping, cosine decay, an average of the weights), also
          not reproduced, with no figure claimed. Tests train it with the tiny sizes on an image
          folder (tests/test_recipes.py). --config.accumulate_steps=K fits batch 128 into less
          accelerator memory; batch norm then sees micro-batches (docs/recipes.md).
  tiny    width ÷ 16 at 67×67 (the smallest input the three 3/2 pools take), batch 8, 4 steps:
          for tests.
"""

from research.core import config as config_lib


def imagenet_sgd(model, input_size, batch_size, num_epochs, boundaries_epochs):
  """The recipe AlexNet's paper set and VGG's followed, on imagenet2012 streamed from disk."""
  c = config_lib.base(model, 'imagenet2012')
  c.dataset.test_split = 'validation'
  c.dataset.validation_size = 10000
  c.dataset.pipeline = 'stream'  # 1.28M images of varying size do not fit in host memory
  c.dataset.channels = 3  # RGB, stated: the first conv's weights are shaped by it
  # The host's random-resized crop does the scale and translation jitter (the papers' crops);
  # on-device: flips, and brightness and contrast jitter standing in for their colour noise.
  c.augment.update(dict(rotate=0.0, scale=0.0, translate=0.0, flip=True))
  c.model.input_size = input_size
  c.model.dropout = 0.5
  c.batch_size = batch_size
  c.num_epochs = num_epochs
  c.optimizer.name = 'sgd'
  c.optimizer.momentum = 0.9
  # The papers' 5e-4 is an L2 term added to the gradient, inside the momentum: at momentum 0.9
  # it shrinks the weights by lr·5e-4/(1 - 0.9) = lr·5e-3 per step. Keras' SGD decays decoupled,
  # outside the momentum (w -= lr·weight_decay·w each step, biases included), so 5e-3 here is
  # the papers' strength; 5e-4 would be a tenth of it.
  c.optimizer.weight_decay = 5e-3
  c.schedule.name = 'step'
  c.schedule.learning_rate = 0.01
  c.schedule.warmup_epochs = 0.0
  c.schedule.boundaries_epochs = boundaries_epochs
  c.schedule.decay_factor = 0.1
  return c


def modern(c):
  """The papers' nets with a current recipe (the :modern variants): batch norm, Nesterov SGD at
  0.1 per 256 examples with 5 warmup epochs then cosine decay, weight decay on kernels only,
  label smoothing 0.1, RandAugment (2 ops at magnitude 9), cutmix or mixup on every example,
  gradients clipped to global norm 1, and evaluation, the best checkpoint and export on the
  weights' moving average."""
  c.model.batch_norm = True
  c.optimizer.nesterov = True
  c.optimizer.decay_kernels_only = True  # batch norm's scale and the biases are not shrunk
  c.schedule.update(dict(name='cosine', learning_rate=0.1 * c.batch_size / 256,
                         warmup_epochs=5.0))
  c.label_smoothing = 0.1
  c.augment.update(dict(randaugment=(2, 9), mixup_alpha=0.2, cutmix_alpha=1.0, mix_prob=1.0,
                        switch_prob=0.5))
  c.clip_global_norm = 1.0
  # ~5,000 steps an epoch at batch 256: the average spans about one epoch.
  c.ema_decay = 0.9998
  return c


def tiny(c):
  """A few steps of small batches, for tests; the caller shrinks the model."""
  c.batch_size = 8
  c.eval_batch_size = 16
  c.num_train_steps = 4
  c.steps_per_loop = 2
  c.log_every_steps = 2
  c.dataset.validation_size = 16
  c.image_grid_size = 8
  return c


def get_config(variant=''):
  c = imagenet_sgd('alexnet', 227, batch_size=128, num_epochs=90.0,
                   boundaries_epochs=(30.0, 60.0, 80.0))
  c.eval_batch_size = 500
  c.checkpoint_every_steps = 5000  # ~0.5 GB per checkpoint (weights and momentum)
  if variant == 'modern':
    modern(c)
  elif variant == 'tiny':
    tiny(c)
    c.model.width_divisor = 16
    c.model.input_size = 67
  elif variant:
    raise ValueError(f'unknown variant {variant!r}: use modern or tiny (or none)')
  return c
