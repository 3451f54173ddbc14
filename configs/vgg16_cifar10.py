"""VGG16 with batch norm on CIFAR-10, with a current recipe: RandAugment, cutmix and mixup, label
smoothing and an average of the weights.

Command: python -m launch.train --config=configs/vgg16_cifar10.py --workdir=runs/vgg16_cifar10
Reproduces: not reproduced: CIFAR-10 is not on the 2-core CPU machine that runs this project's
  tests, and 200 epochs of VGG16 are a GPU job there. No figure is claimed for this recipe;
  VGG16 with batch norm and crop-and-flip alone is commonly reported at 92–94% test accuracy.
  Tests train the :tiny variant on tfds mock data (tests/test_recipes.py).

The CIFAR form of VGG16: its 13 convs (64…512 channels) with batch norm at 32×32, where the five
pools leave 1×1×512, then two 512-unit FC layers with dropout 0.5 (15,260,874 parameters at 10
classes). SGD with Nesterov momentum 0.9 at learning rate 0.1 for batch 128, five warmup epochs
then cosine decay over 200 epochs; weight decay 5e-3 in Keras' decoupled form, which is the usual
5e-4 L2 term at momentum 0.9 (configs/alexnet_imagenet.py says why). Augmentation: the colour
preset's crop (translation by up to 1/8 of the side) and flip, RandAugment with 2 ops at
magnitude 5, and half the examples mixed (cutmix or mixup, equally often); label smoothing 0.1.
Evaluation, the best checkpoint and export use the weights' moving average (decay 0.999: about
2.5 epochs of steps).

Variants, chosen with the config argument (configs/vgg16_cifar10.py:VARIANT):
  tiny  two one-conv blocks of 8 and 16 channels, batch 8, 4 steps: for tests.
"""

from configs import alexnet_imagenet
from research.core import config as config_lib


def get_config(variant=''):
  c = config_lib.base('vgg16', 'cifar10')
  c.model.input_size = 32
  c.model.batch_norm = True
  c.model.dense_units = 512
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.num_epochs = 200.0
  c.optimizer.update(dict(name='sgd', momentum=0.9, nesterov=True, weight_decay=5e-3))
  c.schedule.update(dict(name='cosine', learning_rate=0.1, warmup_epochs=5.0))
  c.label_smoothing = 0.1
  c.augment.update(dict(randaugment=(2, 5), mixup_alpha=0.2, cutmix_alpha=1.0, mix_prob=0.5,
                        switch_prob=0.5))
  c.ema_decay = 0.999
  c.checkpoint_every_steps = 2000
  if variant == 'tiny':
    alexnet_imagenet.tiny(c)
    c.model.conv_arch = ((1, 8), (1, 16))
    c.model.dense_units = 32
  elif variant:
    raise ValueError(f'unknown variant {variant!r}: use tiny (or none)')
  return c
