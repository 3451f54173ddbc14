"""Prints a model's layers: python -m launch.describe --model=NAME [--config.<field>=v].

One row per layer (output shape, parameters) and the total, e.g. 58,299,082 for alexnet
(--config.model.batch_norm=False: configs/alexnet_mnist.py adds batch norm) and 134,300,362 for
vgg16 at one channel and 10 classes, and 25,636,712 for resnet50 with --channels=3
--num_classes=1000 (Keras Applications' ResNet50). Builds the model only: no training, no data.
"""

from absl import flags

from launch import common
from research.apps import describe

_CONFIG = common.define_config_flag()
_MODEL = flags.DEFINE_string('model', None, 'Model name (cnn, alexnet, vgg16, ...); must agree '
                             'with --config when both are given.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 10, 'Number of classes of the logits layer.')
_CHANNELS = flags.DEFINE_integer('channels', 1, 'Input channels (1: greyscale, 3: colour).')


def main():
  config = common.resolved_config(_CONFIG, model=_MODEL.value)
  print(describe.describe_model(config, _NUM_CLASSES.value, _CHANNELS.value))


if __name__ == '__main__':
  common.run(main)
