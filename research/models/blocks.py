"""Building blocks shared by every model: each is a Keras layer with a round-tripping config."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package='research')
class BatchNorm(keras.layers.BatchNormalization):
  """Batch norm over the global batch, in one fused kernel where a replica holds all of it.

  With several replicas the statistics are all-reduced (Keras' synchronized batch norm), so a
  run means the same on any replica count and every worker's moving statistics stay equal. With
  one replica the same arithmetic runs as TensorFlow's fused kernel instead: Keras 3 composes
  batch norm from a dozen elementwise ops, which took about half of the small CNN's training
  step on a CPU. The fused kernel keeps the statistics in float32 under mixed precision.
  Momentum 0.9: Keras' 0.99 left the moving variance far off after a few hundred steps.
  """

  def __init__(self, momentum=0.9, synchronized=True, name='bn', **kwargs):
    super().__init__(momentum=momentum, synchronized=synchronized, name=name, **kwargs)

  def call(self, inputs, training=None, mask=None):
    fusable = (mask is None and not self.renorm and self.axis in (-1, len(inputs.shape) - 1)
               and len(inputs.shape) in (2, 4) and self.scale and self.center)
    replicas = tf.distribute.get_replica_context()
    replicas = replicas.num_replicas_in_sync if replicas is not None else 1
    training = bool(training) and self.trainable
    if not fusable or (training and replicas > 1):
      return super().call(inputs, training=training, mask=mask)
    x = inputs if len(inputs.shape) == 4 else inputs[:, None, None, :]
    if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
      x = tf.cast(x, tf.float32)
    if training:
      y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
          x, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
      # The kernel returns the unbiased batch variance; the synchronized path (and Keras)
      # average the biased one, which the one-replica run must match.
      n = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
      variance = variance * (n - 1) / tf.maximum(n, 1)
      self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
      self.moving_variance.assign(
          self.moving_variance * self.momentum + variance * (1 - self.momentum))
    else:
      y, _, _ = tf.compat.v1.nn.fused_batch_norm(
          x, self.gamma, self.beta, mean=self.moving_mean, variance=self.moving_variance,
          epsilon=self.epsilon, is_training=False)
    y = y if len(inputs.shape) == 4 else y[:, 0, 0, :]
    return tf.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package='research')
class Standardize(keras.layers.Layer):
  """Each image shifted to mean 0 and scaled to standard deviation 1 (over pixels and channels).

  A net that sees absolute ink levels fails once the contrast drops (docs/robustness.md); after
  this layer only the image's relative levels remain. The deviation is floored at `min_std`, one
  grey level of a uint8 image in the model's [-1, 1] input, so a flat image maps to 0, not NaN.
  (tf.image.per_image_standardization's floor, 1/sqrt(pixels), is 0.036 for a 28×28 image:
  larger than a faint digit's deviation, whose contrast it would then not undo.)
  Computed in float32: a bfloat16 mean over a 224×224×3 image loses most of its digits.
  """

  def __init__(self, min_std=2.0 / 255.0, **kwargs):
    kwargs.setdefault('dtype', 'float32')
    super().__init__(**kwargs)
    self.min_std = min_std

  def call(self, x, training=None):
    x = keras.ops.cast(x, 'float32')
    mean = keras.ops.mean(x, axis=(1, 2, 3), keepdims=True)
    std = keras.ops.std(x, axis=(1, 2, 3), keepdims=True)
    return (x - mean) / keras.ops.maximum(std, self.min_std)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), 'min_std': self.min_std}


# The per-channel means Caffe-trained weights (VGG, ResNet50 in Keras Applications) subtract from
# 0-255 BGR pixels; a grey image subtracts their average, as its kernels are summed over colour.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
PREPROCESSING = ('', 'caffe')


@keras.saving.register_keras_serializable(package='research')
class Preprocess(keras.layers.Layer):
  """The project's [-1, 1] RGB (or grey) input in the form pretrained weights were trained on.

  `mode` 'caffe' is Keras' `preprocess_input` for VGG and ResNet50: 0-255 pixels, channels
  flipped to BGR, the ImageNet mean subtracted. In the model, not the input pipeline, so that
  evaluation, prediction and the exported SavedModel apply it as training did. Computed in
  float32: pixel values near 255 lose their units digit in bfloat16.
  """

  def __init__(self, mode='caffe', **kwargs):
    kwargs.setdefault('dtype', 'float32')
    super().__init__(**kwargs)
    if mode not in PREPROCESSING[1:]:
      raise ValueError(f'preprocessing {mode!r} is none of {PREPROCESSING[1:]}')
    self.mode = mode

  def build(self, input_shape):
    self.compute_output_shape(input_shape)

  def call(self, x, training=None):
    x = (keras.ops.cast(x, 'float32') + 1.0) * 127.5
    if x.shape[-1] == 1:
      return x - sum(CAFFE_MEAN_BGR) / 3
    return x[..., ::-1] - keras.ops.convert_to_tensor(CAFFE_MEAN_BGR, 'float32')

  def compute_output_shape(self, input_shape):
    if input_shape[-1] not in (1, 3):
      raise ValueError(f'{self.mode} preprocessing takes grey or RGB images, not '
                       f'{input_shape[-1]} channels')
    return input_shape

  def get_config(self):
    return {**super().get_config(), 'mode': self.mode}


def preprocessing_layers(mode):
  """The stack's first layers for config.model.preprocessing ('' = the input as it comes)."""
  if mode not in PREPROCESSING:
    raise ValueError(f'preprocessing={mode!r} is none of {", ".join(map(repr, PREPROCESSING))}')
  return [Preprocess(mode, name='preprocess')] if mode else []


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
    self.norm = BatchNorm() if batch_norm else None
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
    self.norm = BatchNorm() if batch_norm else None
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
