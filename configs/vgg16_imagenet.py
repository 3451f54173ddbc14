"""VGG16 on ImageNet (ILSVRC-2012) with the recipe of Simonyan & Zisserman (2014).

Command: python -m launch.train --config=configs/vgg16_imagenet.py --workdir=runs/vgg16_in1k
Reproduces: not reproduced: a multi-GPU job on a copy of ImageNet, neither of which the 2-core CPU
  machine that runs this project's tests has. It aims at the paper's configuration D trained and
  tested at scale 256: 27.0% top-1 and 8.8% top-5 error on the ILSVRC-2012 validation set (Table 3,
  single test scale, the whole image evaluated densely).

The paper's recipe follows AlexNet's (`imagenet_sgd` in configs/alexnet_imagenet.py, which says
what its weight decay 5e-4 is in Keras): SGD with momentum 0.9, batch 256, learning rate 0.01
divided by 10 three times, 370K iterations (74 epochs), dropout 0.5 in the two hidden FC layers,
224×224 RGB crops. The paper divided the rate when the validation accuracy stopped improving; here
it is divided at fixed epochs 30, 50 and 65. The paper started D from the weights of the shallower
net A; it also reports that Glorot initialisation, which Keras uses, trains without that. At 1000
classes the net has 138,357,544 parameters.

Data: imagenet2012 is a manual download (--config.dataset.manual_dir=DIR holding its tars, or a
TFDS_DATA_DIR where it is prepared). Its labelled validation set serves as the test split (the
test split has no labels); a 10,000-image minival from the tail of train picks the best
checkpoint, as big_vision holds out 1% of train.

Variants, chosen with the config argument (configs/vgg16_imagenet.py:VARIANT):
  modern  VGG16 with batch norm and a current recipe (alexnet_imagenet.modern: RandAugment,
          cutmix and mixup, label smoothing, clipping, cosine decay, an average of the weights),
          also not reproduced, with no figure claimed. --config.accumulate_steps=K fits batch
          256 into less accelerator memory; batch norm then sees micro-batches (docs/recipes.md).
  tiny    two one-conv blocks of 8 and 16 channels at 32×32, batch 8, 4 steps: for tests.
"""

from configs import alexnet_imagenet


def get_config(variant=''):
  c = alexnet_imagenet.imagenet_sgd('vgg16', 224, batch_size=256, num_epochs=74.0,
                                    boundaries_epochs=(30.0, 50.0, 65.0))
  c.eval_batch_size = 100  # 224×224×64 activations: 12.8 MB an image per conv of block 1
  c.checkpoint_every_steps = 2000  # ~1.1 GB per checkpoint (weights and momentum)
  if variant == 'modern':
    alexnet_imagenet.modern(c)
  elif variant == 'tiny':
    alexnet_imagenet.tiny(c)
    c.model.input_size = 32
    c.model.conv_arch = ((1, 8), (1, 16))
    c.model.dense_units = 32
  elif variant:
    raise ValueError(f'unknown variant {variant!r}: use modern or tiny (or none)')
  return c
