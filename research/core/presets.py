"""What each model name means: its class, constructor arguments and input size, as plain data.

No model code is imported here (a class is named 'module:Class', which `research.models` imports
when it first builds one), so a config can name a model, and be checked, before TensorFlow
loads. The architectures are the papers' own numbers: VGG's configurations A, B, D and E,
ResNet's blocks per stage.
"""

import ml_collections

# (convs, filters) per VGG block.
VGG11 = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
VGG13 = ((2, 64), (2, 128), (2, 256), (2, 512), (2, 512))
VGG16 = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
VGG19 = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))

# (block kind, blocks per stage) of each ResNet depth; the stages have 64, 128, 256, 512 filters.
RESNET18 = ('basic', (2, 2, 2, 2))
RESNET34 = ('basic', (3, 4, 6, 3))
RESNET50 = ('bottleneck', (3, 4, 6, 3))
RESNET101 = ('bottleneck', (3, 4, 23, 3))
RESNET152 = ('bottleneck', (3, 8, 36, 3))

_CNN = 'research.models.cnn:SmallCNN'
# name -> (class, constructor arguments, the square input side it is meant for or None for the
# data's own).
_PRESETS = {
    'cnn': (_CNN, dict(filters=(64, 64), dense_units=(128,), dropout=0.0, standardize=False),
            None),
    'cnn_dropout': (_CNN, dict(filters=(28,), dense_units=(128,), dropout=0.2,
                               standardize=False), None),
    'alexnet': ('research.models.alexnet:AlexNet',
                dict(width_divisor=1, dropout=0.5, batch_norm=False), 227),
}
for _name, _arch in (('vgg11', VGG11), ('vgg13', VGG13), ('vgg16', VGG16), ('vgg19', VGG19)):
  _PRESETS[_name] = ('research.models.vgg:VGG',
                     dict(conv_arch=_arch, dense_units=4096, dropout=0.5, width_divisor=1,
                          batch_norm=False, preprocessing=''), 224)
for _name, (_block, _sizes), _bias in (('resnet18', RESNET18, False),
                                       ('resnet34', RESNET34, False),
                                       ('resnet50', RESNET50, True),
                                       ('resnet101', RESNET101, True),
                                       ('resnet152', RESNET152, True)):
  # The bottleneck ResNets have conv biases as Keras Applications' do, so that weights import.
  _PRESETS[_name] = ('research.models.resnet:ResNet',
                     dict(block=_block, stage_sizes=_sizes, width_divisor=1, stem='imagenet',
                          conv_bias=_bias, preprocessing='', drop_path=0.0), 224)


def add(name, cls, preset, input_size=None):
  """Adds model `name`: its class (or 'module:Class'), constructor arguments and input side."""
  _PRESETS[name] = (cls, dict(preset), input_size)


def names():
  return sorted(_PRESETS)


def entry(name):
  """(class or 'module:Class', constructor arguments, input side or None) of model `name`."""
  if name not in _PRESETS:
    raise ValueError(f'unknown model {name!r}: choose one of {", ".join(names())}')
  return _PRESETS[name]


def default_config(name):
  """The model section of a config: name, input size (0 = the data's own) and the preset."""
  _, preset, input_size = entry(name)
  return ml_collections.ConfigDict({'name': name, 'input_size': input_size or 0, **preset})
