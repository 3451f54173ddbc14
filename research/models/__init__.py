"""Model registry: every model is built by name from a config section.

`config.model.name` picks the class; the other fields of `config.model` are its constructor
arguments. `default_config(name)` gives the preset that makes a name mean what the papers and
tutorials mean by it. `build_model` makes one with its variables for an input shape, and its
per-layer table; `freeze` stops chosen blocks from training.
"""

import inspect

import ml_collections

from research.core import outputs
from research.core.errors import UserError
from research.models import sizing
from research.models.cnn import SmallCNN

# name -> (class, preset constructor arguments, default input size or None for the data's own).
_REGISTRY = {
    'cnn': (SmallCNN, dict(filters=(64, 64), dense_units=(128,), dropout=0.0, standardize=False),
            None),
    'cnn_dropout': (SmallCNN, dict(filters=(28,), dense_units=(128,), dropout=0.2,
                                   standardize=False), None),
}


def register(name, cls, preset, input_size=None):
  """Adds a model; `input_size` is the square side it is meant for (None: the data's own)."""
  _REGISTRY[name] = (cls, dict(preset), input_size)


def names():
  return sorted(_REGISTRY)


def _entry(name):
  if name not in _REGISTRY:
    raise ValueError(f'unknown model {name!r}: choose one of {", ".join(names())}')
  return _REGISTRY[name]


def default_config(name):
  """The model section of a config: name, input size (0 = the data's own) and the preset."""
  cls, preset, input_size = _entry(name)
  return ml_collections.ConfigDict({'name': name, 'input_size': input_size or 0, **preset})


def build(model_config, num_classes):
  """Instantiates `model_config.name` with the other fields as arguments (not yet built)."""
  cls, _, _ = _entry(model_config.name)
  kwargs = {k: v for k, v in model_config.items() if k not in ('name', 'input_size')}
  accepted = inspect.signature(cls.__init__).parameters
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise ValueError(f'model {model_config.name!r} takes no field(s) {", ".join(unknown)}: '
                     f'remove them from config.model or pick a config for this model')
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  return cls(num_classes=num_classes, name=model_config.name, **kwargs)


def input_shape(model_config, image_shape):
  """The model's input: the data's own size unless the model asks for another square size."""
  size = model_config.input_size
  return (size, size, image_shape[-1]) if size else tuple(image_shape)


def build_model(model_config, num_classes, image_shape):
  """Creates the model and its variables (a subclassed model has none until it is called).

  Returns (model, per-layer table text). The input size is checked against the model's
  downsampling first, on static shapes: too small an input otherwise aborts inside oneDNN or
  silently yields empty feature maps.
  """
  shape = input_shape(model_config, image_shape)
  try:
    model = build(model_config, num_classes)
    sizing.check_fits(model, shape)
  except (TypeError, ValueError) as e:
    raise UserError(f'config.model does not fit model {model_config.name!r}: {e}') from None
  return model, outputs.layer_table(model, shape)


# Further families join through register(), as an outside model would: one line per name.
from research.models import resnet  # noqa: E402
from research.models import vgg  # noqa: E402
from research.models.alexnet import AlexNet  # noqa: E402

register('alexnet', AlexNet, dict(width_divisor=1, dropout=0.5, batch_norm=False), input_size=227)
for _name, _arch in (('vgg11', vgg.VGG11), ('vgg13', vgg.VGG13), ('vgg16', vgg.VGG16),
                     ('vgg19', vgg.VGG19)):
  register(_name, vgg.VGG, dict(conv_arch=_arch, dense_units=4096, dropout=0.5, width_divisor=1,
                                batch_norm=False, preprocessing=''), input_size=224)
for _name, (_block, _sizes), _bias in (('resnet18', resnet.RESNET18, False),
                                       ('resnet34', resnet.RESNET34, False),
                                       ('resnet50', resnet.RESNET50, True)):
  # resnet50 has conv biases as Keras Applications' does, so that its weights import.
  register(_name, resnet.ResNet, dict(block=_block, stage_sizes=_sizes, width_divisor=1,
                                      stem='imagenet', conv_bias=_bias, preprocessing=''),
           input_size=224)


def freeze(model, names):
  """Makes the top-level blocks `names` of `model`'s stack untrainable (their batch norm then
  runs in inference mode); returns how many parameters they hold. Before an optimizer is built
  it has no slots for them, and model.trainable_variables (the order of the moving averages in
  a checkpoint) leaves them out."""
  stack = {layer.name: layer for layer in model.stack}
  for name in names:
    stack[name].trainable = False
  return sum(stack[name].count_params() for name in names if stack[name].weights)
