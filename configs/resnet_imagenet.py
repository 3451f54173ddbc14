"""ResNet50 on ImageNet (ILSVRC-2012) with the recipe of He et al. (2015).

Command: python -m launch.train --config=configs/resnet_imagenet.py --workdir=runs/resnet50_in1k
Reproduces: not reproduced: a multi-GPU job on a copy of ImageNet, neither of which the 2-core CPU
  machine that runs this project's tests has. It aims at the paper's ResNet-50, 22.85% top-1 and
  6.71% top-5 error on the ILSVRC-2012 validation set (Table 3, 10-crop testing); evaluated here
  on one centre crop, expect about 24–25% (Keras Applications lists 74.9% top-1 accuracy, 92.1%
  top-5, for its ResNet50 weights on one crop).

The paper's recipe: SGD with momentum 0.9 and weight decay 1e-4 (an L2 term inside the momentum:
Keras' decoupled decay is 1e-3 for the same strength, see `imagenet_sgd` in
configs/alexnet_imagenet.py), batch 256, learning rate 0.1 divided by 10 when the error
plateaus, up to 600K iterations; batch norm after every conv, no dropout; 224×224 crops of the
image rescaled to a random shorter side in [256, 480], flipped. Here, as in the torchvision
reference recipe that follows it: 90 epochs with the rate divided at epochs 30 and 60, and the
streaming pipeline's random-resized crop for the scale augmentation. The net is Keras
Applications' ResNet50 layout (research/models/resnet.py): 25,636,712 parameters at 1,000
classes (25,583,592 trained; the rest are batch norms' moving statistics). The run normalises
its input to [-1, 1]; Keras' weights for it are imported with --config.model.preprocessing=caffe
and --config.init_from=keras:resnet50 (docs/finetune.md).

Data: imagenet2012 is a manual download (--config.dataset.manual_dir=DIR holding its tars, or a
TFDS_DATA_DIR where it is prepared). Its labelled validation set serves as the test split; a
10,000-image minival from the tail of train picks the best checkpoint.

Variants, chosen with the config argument (configs/resnet_imagenet.py:VARIANT):
  tiny    ResNet18 widths ÷ 16, one block per stage, at 32×32, batch 8, 4 steps: for tests.
"""

from configs import alexnet_imagenet


def get_config(variant=''):
  c = alexnet_imagenet.imagenet_sgd('resnet50', 224, batch_size=256, num_epochs=90.0,
                                    boundaries_epochs=(30.0, 60.0))
  del c.model['dropout']  # alexnet_imagenet's recipe sets it; ResNet has none
  c.optimizer.weight_decay = 1e-4 / (1 - 0.9)  # the paper's 1e-4 inside momentum 0.9
  c.schedule.learning_rate = 0.1
  c.eval_batch_size = 250
  c.checkpoint_every_steps = 2000  # ~300 MB per checkpoint (weights and momentum)
  if variant == 'tiny':
    alexnet_imagenet.tiny(c)
    c.model.update(block='basic', stage_sizes=(1, 1, 1, 1), width_divisor=16, conv_bias=False,
                   input_size=32)
  elif variant:
    raise ValueError(f'unknown variant {variant!r}: use tiny (or none)')
  return c
