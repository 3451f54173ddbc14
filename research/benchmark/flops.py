"""Analytic FLOP count of a model's training step, to turn images/s into GFLOP/s.

Walks a LayerStack's layers in order, counting the multiply-adds of its convs and dense layers
from the shapes alone; research.benchmark.models sets the rate this gives against the ceilings
measured by research.benchmark.probes.
"""

import math

import keras

from research.models import blocks
from research.models import resnet
from research.models import vgg

# Leaves that do no multiply-adds (pooling compares or averages, the rest is elementwise or
# reshaping). A whitelist, not "has no weights": an unbuilt conv has no weights yet either.
_NO_MACS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
            keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D,
            keras.layers.Flatten, keras.layers.Reshape, keras.layers.ZeroPadding2D,
            keras.layers.Activation, keras.layers.ReLU, keras.layers.Dropout,
            keras.layers.BatchNormalization, blocks.Standardize, blocks.Preprocess)


def _parts(layer):
  """The sublayers of a composite layer in the order they are applied, or None for a leaf.

  Batch norm and activations are left out: they keep the shape and their elementwise work is
  small next to the convs' and dense layers' multiply-adds.
  """
  if isinstance(layer, blocks.LayerStack):
    return tuple(layer.stack)
  if isinstance(layer, blocks.ConvBlock):
    return (layer.conv,)
  if isinstance(layer, (blocks.DenseBlock, blocks.Logits)):
    return (layer.dense,)
  if isinstance(layer, vgg.VGGBlock):
    return (*layer.convs, layer.pool)
  if isinstance(layer, resnet.Stem):
    return (layer.pads[0], layer.conv, layer.pads[1], layer.pool) if layer.pool else (layer.conv,)
  if isinstance(layer, resnet.Stage):
    return layer.blocks
  return None


def layer_macs(layer, shape):
  """(multiply-adds per image, output shape) of `layer` on an input of `shape` (batch first).

  Convs cost (output positions × output channels) × (kernel area × input channels / groups);
  dense layers cost (positions × input features × units). Layers without weights cost nothing.
  """
  shape = tuple(shape)
  if isinstance(layer, keras.layers.Conv2D):
    out = tuple(layer.compute_output_shape(shape))
    kh, kw = layer.kernel_size
    return math.prod(out[1:]) * kh * kw * shape[-1] // layer.groups, out
  if isinstance(layer, keras.layers.Dense):
    return math.prod(shape[1:]) * layer.units, tuple(layer.compute_output_shape(shape))
  if isinstance(layer, (resnet.BasicBlock, resnet.BottleneckBlock)):
    # The projection works on the block's input, beside the main path.
    side = layer_macs(layer.shortcut[0], shape)[0] if layer.shortcut else 0
    main, out = _chain_macs(layer.convs, shape)
    return main + side, out
  parts = _parts(layer)
  if parts is not None:
    return _chain_macs(parts, shape)
  if not isinstance(layer, _NO_MACS):
    raise ValueError(f'cannot count the multiply-adds of layer {layer.name!r} '
                     f'({type(layer).__name__}): teach research.benchmark.flops._parts or '
                     '_NO_MACS about it')
  return 0, tuple(layer.compute_output_shape(shape))


def _chain_macs(parts, shape):
  """(multiply-adds, output shape) of `parts` applied one after the other."""
  total = 0
  for part in parts:
    macs, shape = layer_macs(part, shape)
    total += macs
  return total, shape


def forward_macs(model, input_shape):
  """Rows of (stack layer name, multiply-adds per image) of one forward pass of a LayerStack."""
  shape = (1, *input_shape)
  rows = []
  for layer in model.stack:
    macs, shape = layer_macs(layer, shape)
    rows.append((layer.name, macs))
  return rows


def train_flops_per_image(forward_mac_count):
  """Forward FLOPs are 2 per multiply-add; backward costs about twice the forward (the input
  and the weight gradients), so a training step is ≈ 3× the forward."""
  return 3 * 2 * forward_mac_count
