"""Model registry: every model is built by name from a config section.

`config.model.name` picks the class; the other fields of `config.model` are its constructor
arguments. `default_config(name)` gives the preset that makes a name mean what the papers and
tutorials mean by it. `build_model` makes one with its variables for an input shape, and its
per-layer table; `freeze` stops chosen blocks from training.
"""

import importlib
import inspect

from research.core import outputs
from research.core import presets
from research.core.errors import UserError
from research.models import sizing


def register(name, cls, preset, input_size=None):
  """Adds a model: `cls` its class (or 'module:Class'), `preset` its constructor arguments,
  `input_size` the square side it is meant for (None: the data's own). The names, classes and
  presets are research.core.presets' table."""
  presets.add(name, cls, preset, input_size)


def names():
  return presets.names()


default_config = presets.default_config


def model_class(name):
  """The class of model `name`, imported now if the table names it 'module:Class'."""
  cls, _, _ = presets.entry(name)
  if isinstance(cls, str):
    module, _, attr = cls.partition(':')
    cls = getattr(importlib.import_module(module), attr)
  return cls


def build(model_config, num_classes):
  """Instantiates `model_config.name` with the other fields as arguments (not yet built)."""
  cls = model_class(model_config.name)
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


def freeze(model, names):
  """Makes the top-level blocks `names` of `model`'s stack untrainable (their batch norm then
  runs in inference mode); returns how many parameters they hold. Before an optimizer is built
  it has no slots for them, and model.trainable_variables (the order of the moving averages in
  a checkpoint) leaves them out."""
  stack = {layer.name: layer for layer in model.stack}
  for name in names:
    stack[name].trainable = False
  return sum(stack[name].count_params() for name in names if stack[name].weights)
