"""VGG16 on ImageNet (ILSVRC-2012) with the recipe of Simonyan & Zisserman (2014).

Command: python -m launch.train --config=configs/vgg16_imagenet.py --workdir=runs/vgg16_in1k
Reproduces: not reproduced: a multi-GPU job on a copy of ImageNet, neither of which the 2-core CPU
  machine that runs this project's tests has. It aims at the paper's configuration D trained and
  tested at scale 256: 27.0% top-1 and 8.8% top-5 error on the ILSVRC-2012 validation set (Table 3,
  single test scale, the whole image evaluated densely).

The paper's recipe: SGD with momentum 0.9 and weight decay 5e-4 (see the optimizer below for what
that is in Keras), batch 256, learning rate 0.01 divided by 10 three times, 370K iterations (74
epochs), dropout 0.5 in the two hidden FC layers, 224×224 RGB crops. The paper divided the rate
when the validation accuracy stopped improving; here it is divided at fixed epochs 30, 50 and 65.
The paper started D from the weights of the shallower net A; it also reports that Glorot
initialisation, which Keras uses, trains without that. At 1000 classes the net has 138,357,544
parameters.

Data: imagenet2012 is a manual download (--config.dataset.manual_dir=DIR holding its tars, or a
TFDS_DATA_DIR where it is prepared). Its labelled validation set serves as the test split (the
test split has no labels); a 10,000-image minival from the tail of train picks the best
checkpoint, as big_vision holds out 1% of train.

Variants, chosen with the config argument (configs/vgg16_imagenet.py:VARIANT):
  tiny  two one-conv blocks of 8 and 16 channels at 32×32, batch 8, 4 steps: for tests.
"""

from research import config as config_lib


def get_config(variant=''):
  c = config_lib.base('vgg16', 'imagenet2012')
  c.dataset.test_split = 'validation'
  c.dataset.validation_size = 10000
  c.dataset.pipeline = 'stream'  # 1.28M images of varying size do not fit in host memory
  c.dataset.channels = 3  # RGB, stated: the first conv's weights are shaped by it
  # The host's random-resized crop does the scale and translation jitter (the paper's crops of
  # the rescaled image); on-device: flips and colour jitter (for the paper's RGB colour shift).
  c.augment.update(dict(rotate=0.0, scale=0.0, translate=0.0, flip=True))
  c.model.input_size = 224
  c.model.dropout = 0.5
  c.batch_size = 256
  c.num_epochs = 74.0
  c.optimizer.name = 'sgd'
  c.optimizer.momentum = 0.9
  # The paper's 5e-4 is an L2 term added to the gradient, inside the momentum: at momentum 0.9 it
  # shrinks the weights by lr·5e-4/(1 - 0.9) = lr·5e-3 per step. Keras' SGD decays decoupled,
  # outside the momentum (w -= lr·weight_decay·w each step, biases included), so 5e-3 here is the
  # paper's strength; 5e-4 would be a tenth of it.
  c.optimizer.weight_decay = 5e-3
  c.schedule.name = 'step'
  c.schedule.learning_rate = 0.01
  c.schedule.warmup_epochs = 0.0
  c.schedule.boundaries_epochs = (30.0, 50.0, 65.0)
  c.schedule.decay_factor = 0.1
  c.eval_batch_size = 100  # 224×224×64 activations: 12.8 MB an image per conv of block 1
  c.checkpoint_every_steps = 2000  # ~1.1 GB per checkpoint (weights and momentum)
  if variant == 'tiny':
    c.model.input_size = 32
    c.model.conv_arch = ((1, 8), (1, 16))
    c.model.dense_units = 32
    c.batch_size = 8
    c.eval_batch_size = 16
    c.num_train_steps = 4
    c.steps_per_loop = 2
    c.log_every_steps = 2
    c.dataset.validation_size = 16
    c.image_grid_size = 8
  elif variant:
    raise ValueError(f'unknown variant {variant!r}: use tiny (or none)')
  return c
