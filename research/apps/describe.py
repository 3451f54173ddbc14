"""A model's per-layer table without training: what `launch.describe` prints.

Needs no dataset: the input is the model's own square size (config.model.input_size) or, for
models that take the data's own size, a 28×28 image like MNIST's.
"""

from research import models
from research.core import config as config_lib
from research.core.errors import UserError

# The side of the stand-in image for models without an input size: MNIST's, the default data.
DEFAULT_SIZE = 28


def describe_model(config, num_classes=10, channels=1):
  """A header line, then research.core.outputs.layer_table of config.model (total included)."""
  if num_classes < 1 or channels < 1:
    raise UserError(f'--num_classes ({num_classes}) and --channels ({channels}) must be >= 1')
  size = config.model.input_size or DEFAULT_SIZE
  shape = (size, size, channels)
  try:
    config_lib.check_types(config)  # also rejects an unknown config.model.name
  except ValueError as e:
    raise UserError(str(e)) from None
  _, table = models.build_model(config.model, num_classes, shape)
  return f'model {config.model.name}: input {shape}, {num_classes} classes\n{table}'
