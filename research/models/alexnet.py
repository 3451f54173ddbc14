"""AlexNet as the d2l tutorial builds it: five conv blocks, three max-pools, two dropout FCs.

At 227×227 the stages are 55 → 27 → 13 → 6; with one input channel and 10 classes the net has
58,299,082 parameters. `width_divisor` shrinks every conv and dense width so that the same
topology trains on a CPU.
"""

import keras

from research.models import blocks
from research.models.sizing import divided


@keras.saving.register_keras_serializable(package='research')
class AlexNet(blocks.LayerStack):
  """Conv96/11/4 - pool - Conv256/5 - pool - Conv384 - Conv384 - Conv256 - pool - FC4096 ×2.

  Every max-pool is 3×3 with stride 2 (overlapping, as in the paper); the first conv is `valid`
  and the others `same`, so only the pools and the stride-4 stem shrink the image.
  """

  def __init__(self, num_classes=10, width_divisor=1, dropout=0.5, batch_norm=False,
               name='alexnet', **kwargs):
    super().__init__(name=name, **kwargs)
    self.num_classes = num_classes
    self.width_divisor = width_divisor
    self.dropout = dropout
    self.batch_norm = batch_norm

    def conv(n, filters, kernel, strides=1, padding='same'):
      return blocks.ConvBlock(divided(filters, width_divisor), kernel, strides=strides,
                              padding=padding, batch_norm=batch_norm, name=f'conv{n}')

    def pool(n):
      return keras.layers.MaxPooling2D(3, strides=2, name=f'pool{n}')

    def fc(n):
      return blocks.DenseBlock(divided(4096, width_divisor), dropout=dropout,
                               batch_norm=batch_norm, name=f'fc{n}')

    # A tuple, not a list: see LayerStack (a list hides the weights from tf.train.Checkpoint).
    self.stack = (
        conv(1, 96, 11, strides=4, padding='valid'), pool(1),
        conv(2, 256, 5), pool(2),
        conv(3, 384, 3), conv(4, 384, 3), conv(5, 256, 3), pool(3),
        keras.layers.Flatten(name='flatten'),
        fc(1), fc(2),
        blocks.Logits(num_classes, name='logits'),
    )

  def get_config(self):
    return {'num_classes': self.num_classes, 'width_divisor': self.width_divisor,
            'dropout': self.dropout, 'batch_norm': self.batch_norm, 'name': self.name}
