"""The tutorials' small CNNs: conv-pool-conv-pool-dense, and the one-conv + dropout variant."""

import keras

from research.models import blocks


@keras.saving.register_keras_serializable(package='research')
class SmallCNN(blocks.LayerStack):
  """`filters` conv blocks, each followed by a 2×2 max-pool, then dense blocks and logits.

  With the defaults it is the two-conv tutorial net (Conv64-Pool-Conv64-Pool-Dense128-Dense10);
  `filters=(28,), dropout=0.2` is the one-conv + dropout variant. `standardize` puts a per-image
  standardisation first, so the net sees relative ink levels only (blocks.Standardize).
  """

  def __init__(self, num_classes=10, filters=(64, 64), kernel_size=3, padding='valid',
               dense_units=(128,), dropout=0.0, batch_norm=False, standardize=False, name='cnn',
               **kwargs):
    super().__init__(name=name, **kwargs)
    self.num_classes = num_classes
    self.filters = tuple(filters)
    self.kernel_size = kernel_size
    self.padding = padding
    self.dense_units = tuple(dense_units)
    self.dropout = dropout
    self.batch_norm = batch_norm
    self.standardize = standardize
    stack = [blocks.Standardize(name='standardize')] if standardize else []
    for i, f in enumerate(self.filters):
      stack += [
          blocks.ConvBlock(f, kernel_size, padding=padding, batch_norm=batch_norm,
                           name=f'conv{i + 1}'),
          keras.layers.MaxPooling2D(2, name=f'pool{i + 1}'),
      ]
    stack.append(keras.layers.Flatten(name='flatten'))
    for i, units in enumerate(self.dense_units):
      stack.append(blocks.DenseBlock(units, dropout=dropout, batch_norm=batch_norm,
                                     name=f'fc{i + 1}'))
    stack.append(blocks.Logits(num_classes, name='logits'))
    self.stack = tuple(stack)

  def get_config(self):
    return {'num_classes': self.num_classes, 'filters': self.filters,
            'kernel_size': self.kernel_size, 'padding': self.padding,
            'dense_units': self.dense_units, 'dropout': self.dropout,
            'batch_norm': self.batch_norm, 'standardize': self.standardize, 'name': self.name}
