"""ResNet v1 (He et al. 2015): a stem, four stages of residual blocks, global pooling, logits.

`BasicBlock` (two 3×3 convs; ResNet18/34) and `BottleneckBlock` (1×1, 3×3, 1×1 with 4× the
width out; ResNet50) each add their input, through a projection (1×1 conv and batch norm) where
the shape changes, to their output. The presets follow Keras Applications' ResNet50 exactly, so
its weights import (research/train/keras_weights.py): the stride on the bottleneck's first 1×1
conv, biases on every conv, batch norm epsilon 1.001e-5, zero padding before the 7×7 stem conv
and before its max-pool. At 224×224×3 and 1,000 classes: 25,636,712 parameters for resnet50,
44,707,176 for resnet101 and 60,419,944 for resnet152 (Keras Applications' counts), and (without
conv biases, as in the paper) 11,689,512 for resnet18 and 21,797,672 for resnet34.

Stochastic depth (Huang et al. 2016; `drop_path`): in training, each block's residual branch is
dropped for a random subset of the examples, with a rate rising linearly over the blocks to
`drop_path` at the last, and scaled by 1/(1 - rate) where kept, so inference runs every block
unscaled. The draws come from a Keras Dropout's seed generator, whose state the training
checkpoint holds (research/train/saving.py): a resumed run draws what it would have drawn.
"""

import keras

from research.core.presets import RESNET50
from research.models import blocks
from research.models.sizing import divided

# Keras Applications' batch norm epsilon: its weights were trained with it.
EPSILON = 1.001e-5

# The stages' filters; blocks per stage are research/core/presets.py's RESNET18...RESNET152.
STAGE_FILTERS = (64, 128, 256, 512)
STEMS = ('imagenet', 'small')


def _norm(name):
  return blocks.BatchNorm(epsilon=EPSILON, name=name)


def _chain(layers, shape):
  for layer in layers:
    shape = layer.compute_output_shape(shape)
  return shape


class _Residual(keras.layers.Layer):
  """relu(main(x) + shortcut(x)): `self.convs` with a batch norm after each and a ReLU between,
  and a 1×1 conv and batch norm on the shortcut with `projection`; with `drop_rate`, main(x) is
  dropped for that fraction of the examples in training (stochastic depth). Subclasses make the
  convs."""

  expansion = 1

  def __init__(self, filters, strides=1, projection=False, conv_bias=False, drop_rate=0.0,
               **kwargs):
    super().__init__(**kwargs)
    if not 0 <= drop_rate < 1:
      raise ValueError(f'drop_rate={drop_rate} should be in [0, 1)')
    self.filters = filters
    self.strides = strides
    self.projection = projection
    self.conv_bias = conv_bias
    self.drop_rate = drop_rate
    # One draw per example for the whole branch: the noise is broadcast over H, W and C.
    self.drop = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1),
                                     name='drop_path') if drop_rate else None
    self.convs = tuple(self._convs())  # a tuple: a list hides weights from tf.train.Checkpoint
    self.norms = tuple(_norm(f'bn{i + 1}') for i in range(len(self.convs)))
    self.shortcut = None
    if projection:
      self.shortcut = (keras.layers.Conv2D(filters * self.expansion, 1, strides=strides,
                                           use_bias=conv_bias, name='shortcut_conv'),
                       _norm('shortcut_bn'))

  def _conv(self, filters, kernel, strides, name):
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding='same',
                               use_bias=self.conv_bias, name=name)

  def build(self, input_shape):
    out = self.filters * self.expansion
    if not self.projection and (self.strides != 1 or input_shape[-1] != out):
      raise ValueError(f'{self.name} maps {input_shape[-1]} channels to {out} at stride '
                       f'{self.strides}: its shortcut needs projection=True')
    shape = input_shape
    for conv, norm in zip(self.convs, self.norms):
      conv.build(shape)
      shape = conv.compute_output_shape(shape)
      norm.build(shape)
    if self.shortcut:
      self.shortcut[0].build(input_shape)
      self.shortcut[1].build(self.shortcut[0].compute_output_shape(input_shape))

  def call(self, x, training=None):
    y = x
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      y = norm(conv(y), training=training)
      if i < len(self.convs) - 1:
        y = keras.ops.relu(y)
    if self.drop:
      y = self.drop(y, training=training)
    if self.shortcut:
      x = self.shortcut[1](self.shortcut[0](x), training=training)
    return keras.ops.relu(y + x)

  def compute_output_shape(self, input_shape):
    return _chain(self.convs, input_shape)

  def get_config(self):
    return {**super().get_config(), 'filters': self.filters, 'strides': self.strides,
            'projection': self.projection, 'conv_bias': self.conv_bias,
            'drop_rate': self.drop_rate}


@keras.saving.register_keras_serializable(package='research')
class BasicBlock(_Residual):
  """3×3 conv (with the stride) → BN → ReLU → 3×3 conv → BN, plus the shortcut, → ReLU."""

  def _convs(self):
    return (self._conv(self.filters, 3, self.strides, 'conv1'),
            self._conv(self.filters, 3, 1, 'conv2'))


@keras.saving.register_keras_serializable(package='research')
class BottleneckBlock(_Residual):
  """1×1 conv (with the stride, as Keras' ResNet50 v1) → 3×3 conv → 1×1 conv to 4× `filters`,
  each with BN (ReLU after the first two), plus the shortcut, → ReLU."""

  expansion = 4

  def _convs(self):
    return (self._conv(self.filters, 1, self.strides, 'conv1'),
            self._conv(self.filters, 3, 1, 'conv2'),
            self._conv(self.filters * 4, 1, 1, 'conv3'))


BLOCKS = {'basic': BasicBlock, 'bottleneck': BottleneckBlock}


@keras.saving.register_keras_serializable(package='research')
class Stem(keras.layers.Layer):
  """'imagenet': 7×7 stride-2 conv, BN, ReLU, 3×3 stride-2 max-pool (÷4, each zero-padded as
  Keras pads it); 'small': one 3×3 stride-1 conv, BN, ReLU, for 32×32 inputs that a ÷4 stem
  would leave too little of."""

  def __init__(self, filters=64, kind='imagenet', conv_bias=False, **kwargs):
    super().__init__(**kwargs)
    if kind not in STEMS:
      raise ValueError(f'stem={kind!r} is none of {", ".join(STEMS)}')
    self.filters, self.kind, self.conv_bias = filters, kind, conv_bias
    big = kind == 'imagenet'
    self.conv = keras.layers.Conv2D(filters, 7 if big else 3, strides=2 if big else 1,
                                    padding='valid' if big else 'same', use_bias=conv_bias,
                                    name='conv')
    self.norm = _norm('bn')
    # After the ReLU, zero padding before the max-pool is the same as padding with -inf.
    self.pads = (keras.layers.ZeroPadding2D(3, name='conv_pad'),
                 keras.layers.ZeroPadding2D(1, name='pool_pad')) if big else ()
    self.pool = keras.layers.MaxPooling2D(3, strides=2, name='pool') if big else None

  def _before_norm(self):
    return (self.pads[0], self.conv) if self.pads else (self.conv,)

  def build(self, input_shape):
    shape = input_shape
    for layer in self._before_norm():
      layer.build(shape)
      shape = layer.compute_output_shape(shape)
    self.norm.build(shape)

  def call(self, x, training=None):
    for layer in self._before_norm():
      x = layer(x)
    x = keras.ops.relu(self.norm(x, training=training))
    return self.pool(self.pads[1](x)) if self.pool else x

  def compute_output_shape(self, input_shape):
    rest = (self.pads[1], self.pool) if self.pool else ()
    return _chain(self._before_norm() + rest, input_shape)

  def get_config(self):
    return {**super().get_config(), 'filters': self.filters, 'kind': self.kind,
            'conv_bias': self.conv_bias}


@keras.saving.register_keras_serializable(package='research')
class Stage(keras.layers.Layer):
  """`num_blocks` residual blocks `block1..N` of one width; the first has the stride and, with
  `projection`, the projection shortcut (Keras' `stack1`); `drop_rates`, if given, has each
  block's stochastic-depth rate."""

  def __init__(self, block, filters, num_blocks, strides=1, projection=True, conv_bias=False,
               drop_rates=(), **kwargs):
    super().__init__(**kwargs)
    if block not in BLOCKS:
      raise ValueError(f'block={block!r} is none of {", ".join(BLOCKS)}')
    if num_blocks < 1:
      raise ValueError(f'a stage needs at least one block, not {num_blocks}')
    drop_rates = tuple(float(r) for r in drop_rates) or (0.0,) * num_blocks
    if len(drop_rates) != num_blocks:
      raise ValueError(f'drop_rates={drop_rates} should give the rates of {num_blocks} blocks')
    self.block, self.filters, self.num_blocks = block, filters, num_blocks
    self.strides, self.projection, self.conv_bias = strides, projection, conv_bias
    self.drop_rates = drop_rates
    cls = BLOCKS[block]
    self.blocks = tuple(
        cls(filters, strides=strides if i == 0 else 1, projection=projection and i == 0,
            conv_bias=conv_bias, drop_rate=drop_rates[i], name=f'block{i + 1}')
        for i in range(num_blocks))

  def build(self, input_shape):
    shape = input_shape
    for block in self.blocks:
      block.build(shape)
      shape = block.compute_output_shape(shape)

  def call(self, x, training=None):
    for block in self.blocks:
      x = block(x, training=training)
    return x

  def compute_output_shape(self, input_shape):
    return _chain(self.blocks, input_shape)

  def get_config(self):
    return {**super().get_config(), 'block': self.block, 'filters': self.filters,
            'num_blocks': self.num_blocks, 'strides': self.strides,
            'projection': self.projection, 'conv_bias': self.conv_bias,
            'drop_rates': self.drop_rates}


@keras.saving.register_keras_serializable(package='research')
class ResNet(blocks.LayerStack):
  """[preprocess], stem, stage1..stage4, global average pooling, logits.

  `stage_sizes` gives the blocks per stage; stage 1 keeps the stem's resolution and each later
  one halves it. `width_divisor` divides every width; `stem` 'small' keeps a 32×32 input's
  resolution; `conv_bias` puts biases on the convs (Keras' layout: its weights have them);
  `preprocessing` 'caffe' makes the model take the form Keras Applications' weights expect;
  `drop_path` is the last block's stochastic-depth rate (0: none).
  """

  def __init__(self, num_classes=10, block='bottleneck', stage_sizes=RESNET50[1],
               width_divisor=1, stem='imagenet', conv_bias=True, preprocessing='',
               drop_path=0.0, name='resnet', **kwargs):
    super().__init__(name=name, **kwargs)
    self.num_classes, self.block = num_classes, block
    self.stage_sizes = tuple(int(n) for n in stage_sizes)  # JSON gives a list: round-trip it
    self.width_divisor, self.stem, self.conv_bias = width_divisor, stem, conv_bias
    self.preprocessing, self.drop_path = preprocessing, drop_path
    if not 0 <= drop_path < 1:
      raise ValueError(f'drop_path={drop_path} should be in [0, 1)')
    if len(self.stage_sizes) != len(STAGE_FILTERS):
      raise ValueError(f'stage_sizes={self.stage_sizes} should give the blocks of '
                       f'{len(STAGE_FILTERS)} stages, e.g. (3, 4, 6, 3)')
    stack = blocks.preprocessing_layers(preprocessing)
    stem_width = divided(STAGE_FILTERS[0], width_divisor)
    stack.append(Stem(stem_width, stem, conv_bias, name='stem'))
    channels = stem_width
    total, before = sum(self.stage_sizes), 0
    for i, (n, f) in enumerate(zip(self.stage_sizes, STAGE_FILTERS)):
      width = divided(f, width_divisor)
      strides = 1 if i == 0 else 2
      out = width * BLOCKS.get(block, BasicBlock).expansion
      # Huang et al.'s linear rule: block b of `total` drops with drop_path * b / total.
      rates = tuple(drop_path * (before + b + 1) / total for b in range(n)) if drop_path else ()
      stack.append(Stage(block, width, n, strides=strides,
                         projection=strides != 1 or out != channels, conv_bias=conv_bias,
                         drop_rates=rates, name=f'stage{i + 1}'))
      channels, before = out, before + n
    stack.append(keras.layers.GlobalAveragePooling2D(name='pool'))
    stack.append(blocks.Logits(num_classes, name='logits'))
    self.stack = tuple(stack)  # see LayerStack: a list would drop out of checkpoints

  def get_config(self):
    return {'num_classes': self.num_classes, 'block': self.block,
            'stage_sizes': self.stage_sizes, 'width_divisor': self.width_divisor,
            'stem': self.stem, 'conv_bias': self.conv_bias,
            'preprocessing': self.preprocessing, 'drop_path': self.drop_path,
            'name': self.name}
