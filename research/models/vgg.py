"""The VGG family: stacks of VGG blocks (n 3×3 convs, then a 2×2 max-pool) and two dropout FCs.

`conv_arch` lists (number of convs, filters) per block; the presets VGG11/13/16/19
(research/core/presets.py) are the paper's configurations A, B, D and E. At 224×224 five blocks
leave a 7×7 map; VGG16 with one input channel and 10 classes has 134,300,362 parameters.
"""

import keras

from research.core.presets import VGG16
from research.models import blocks
from research.models.sizing import divided


@keras.saving.register_keras_serializable(package='research')
class VGGBlock(keras.layers.Layer):
  """`num_convs` 3×3 `same` ReLU conv blocks, then a 2×2 stride-2 max-pool.

  The convs keep height and width, so the block halves them (rounding down) and ends with
  `filters` channels.
  """

  def __init__(self, num_convs, filters, batch_norm=False, **kwargs):
    super().__init__(**kwargs)
    if num_convs < 1:
      raise ValueError(f'a VGG block needs at least one conv, not {num_convs}')
    self.num_convs = num_convs
    self.filters = filters
    self.batch_norm = batch_norm
    # A tuple, not a list: Keras 3's list wrapper hides these weights from tf.train.Checkpoint.
    self.convs = tuple(
        blocks.ConvBlock(filters, 3, padding='same', batch_norm=batch_norm, name=f'conv{i + 1}')
        for i in range(num_convs))
    self.pool = keras.layers.MaxPooling2D(2, strides=2, name='pool')

  def build(self, input_shape):
    # Built here from the shapes, so the weights exist before the first call (as in ConvBlock).
    shape = input_shape
    for conv in self.convs:
      conv.build(shape)
      shape = conv.compute_output_shape(shape)

  def call(self, x, training=None):
    for conv in self.convs:
      x = conv(x, training=training)
    return self.pool(x)

  def compute_output_shape(self, input_shape):
    shape = input_shape
    for conv in self.convs:
      shape = conv.compute_output_shape(shape)
    return self.pool.compute_output_shape(shape)

  def get_config(self):
    return {**super().get_config(), 'num_convs': self.num_convs, 'filters': self.filters,
            'batch_norm': self.batch_norm}


def vgg_block(num_convs, filters, **kwargs):
  """The d2l `vgg_block(num_convs, out_channels)`, as a layer (kwargs: batch_norm, name, ...)."""
  return VGGBlock(num_convs, filters, **kwargs)


@keras.saving.register_keras_serializable(package='research')
class VGG(blocks.LayerStack):
  """VGG blocks `block1..blockN` from `conv_arch`, then flatten, fc1, fc2 and the logits.

  `width_divisor` divides every conv and dense width (the d2l "small VGG" divides only the
  convs: pass its `conv_arch` directly for that). `preprocessing` 'caffe' puts the input in the
  form Keras Applications' VGG16/VGG19 weights expect (blocks.Preprocess).
  """

  def __init__(self, num_classes=10, conv_arch=VGG16, dense_units=4096, dropout=0.5,
               width_divisor=1, batch_norm=False, preprocessing='', name='vgg', **kwargs):
    super().__init__(name=name, **kwargs)
    self.num_classes = num_classes
    # A config read back from JSON holds lists of lists: normalise so get_config round-trips.
    self.conv_arch = tuple((int(n), int(f)) for n, f in conv_arch)
    self.dense_units = dense_units
    self.dropout = dropout
    self.width_divisor = width_divisor
    self.batch_norm = batch_norm
    self.preprocessing = preprocessing
    stack = blocks.preprocessing_layers(preprocessing)
    stack += [vgg_block(n, divided(f, width_divisor), batch_norm=batch_norm, name=f'block{i + 1}')
              for i, (n, f) in enumerate(self.conv_arch)]
    stack.append(keras.layers.Flatten(name='flatten'))
    stack += [blocks.DenseBlock(divided(dense_units, width_divisor), dropout=dropout,
                                batch_norm=batch_norm, name=f'fc{i + 1}') for i in range(2)]
    stack.append(blocks.Logits(num_classes, name='logits'))
    self.stack = tuple(stack)  # see LayerStack: a list would drop out of checkpoints

  def get_config(self):
    return {'num_classes': self.num_classes, 'conv_arch': self.conv_arch,
            'dense_units': self.dense_units, 'dropout': self.dropout,
            'width_divisor': self.width_divisor, 'batch_norm': self.batch_norm,
            'preprocessing': self.preprocessing, 'name': self.name}
