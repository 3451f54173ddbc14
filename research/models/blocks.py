"""Building blocks shared by every model: each is a Keras layer with a round-tripping config."""

import keras


def _batch_norm():
  """Momentum 0.9: Keras' 0.99 left the moving variance far off after a few hundred steps.

  Synchronized: statistics over the global batch, all-reduced across replicas, so a run means the
  same on any replica count, and every worker's moving statistics (kept per device, not
  aggregated) stay equal. On one device it is a plain batch norm.
  """
  return keras.layers.BatchNormalization(momentum=0.9, synchronized=True, name='bn')


@keras.saving.register_keras_serializable(package='research')
class ConvBlock(keras.layers.Layer):
  """Conv2D → optional BatchNorm → activation.

  With batch norm the convolution drops its bias: the norm's beta makes it redundant.
  """

  def __init__(self, filters, kernel_size=3, strides=1, padding='valid', batch_norm=False,
               activation='relu', **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.kernel_size = kernel_size
    self.strides = strides
    self.padding = padding
    self.batch_norm = batch_norm
    self.activation = activation
    self.conv = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                                    use_bias=not batch_norm, name='conv')
    self.norm = _batch_norm() if batch_norm else None
    self.act = keras.layers.Activation(activation, name='act')

  def build(self, input_shape):
    self.conv.build(input_shape)
    if self.norm is not None:
      self.norm.build(self.conv.compute_output_shape(input_shape))

  def call(self, x, training=None):
    x = self.conv(x)
    if self.norm is not None:
      x = self.norm(x, training=training)
    return self.act(x)

  def compute_output_shape(self, input_shape):
    return self.conv.compute_output_shape(input_shape)

  def get_config(self):
    return {**super().get_config(), 'filters': self.filters, 'kernel_size': self.kernel_size,
            'strides': self.strides, 'padding': self.padding, 'batch_norm': self.batch_norm,
            'activation': self.activation}


@keras.saving.register_keras_serializable(package='research')
class DenseBlock(keras.layers.Layer):
  """Dense → optional BatchNorm → activation → optional Dropout."""

  def __init__(self, units, activation='relu', dropout=0.0, batch_norm=False, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.activation = activation
    self.dropout = dropout
    self.batch_norm = batch_norm
    self.dense = keras.layers.Dense(units, use_bias=not batch_norm, name='dense')
    self.norm = _batch_norm() if batch_norm else None
    self.act = keras.layers.Activation(activation, name='act')
    self.drop = keras.layers.Dropout(dropout, name='dropout') if dropout else None

  def build(self, input_shape):
    self.dense.build(input_shape)
    if self.norm is not None:
      self.norm.build(self.dense.compute_output_shape(input_shape))

  def call(self, x, training=None):
    x = self.dense(x)
    if self.norm is not None:
      x = self.norm(x, training=training)
    x = self.act(x)
    if self.drop is not None:
      x = self.drop(x, training=training)
    return x

  def compute_output_shape(self, input_shape):
    return self.dense.compute_output_shape(input_shape)

  def get_config(self):
    return {**super().get_config(), 'units': self.units, 'activation': self.activation,
            'dropout': self.dropout, 'batch_norm': self.batch_norm}


@keras.saving.register_keras_serializable(package='research')
class Logits(keras.layers.Layer):
  """The classifier head: a Dense layer kept in float32 so the loss never sees half precision."""

  def __init__(self, num_classes, **kwargs):
    kwargs.setdefault('dtype', 'float32')
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.dense = keras.layers.Dense(num_classes, dtype='float32', name='dense')

  def build(self, input_shape):
    self.dense.build(input_shape)

  def call(self, x, training=None):
    return self.dense(keras.ops.cast(x, 'float32'))

  def compute_output_shape(self, input_shape):
    return self.dense.compute_output_shape(input_shape)

  def get_config(self):
    return {**super().get_config(), 'num_classes': self.num_classes}


class LayerStack(keras.Model):
  """A subclassed model that applies the layers of `self.stack` in order.

  Keeping the layers in one ordered sequence gives every model the same per-layer table
  (output shape and parameter count per row) without Keras' functional graph. `self.stack` must
  be a tuple: Keras 3 wraps a list attribute in a way tf.train.Checkpoint does not follow, and
  the model's weights were then silently missing from its checkpoints.
  """

  def call(self, x, training=None):
    for layer in self.stack:
      x = layer(x, training=training)
    return x

  def layer_table(self, input_shape):
    """Rows of (layer name, output shape without batch, parameter count); builds the model."""
    x = keras.ops.zeros((1, *input_shape))
    self(x, training=False)  # builds the model as a whole, not only its layers
    rows = []
    for layer in self.stack:
      x = layer(x, training=False)
      rows.append((layer.name, tuple(x.shape[1:]), layer.count_params()))
    return rows
