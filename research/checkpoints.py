"""Building a model for a run and restoring it from a workdir's checkpoints."""

import os

from absl import logging
import tensorflow as tf

from research import config as config_lib
from research import models
from research import outputs
from research.models import sizing
from research.errors import UserError

CHECKPOINT_DIR = 'checkpoints'
DATA_INFO = 'data_info.json'


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
    model = models.build(model_config, num_classes)
    sizing.check_fits(model, shape)
  except (TypeError, ValueError) as e:
    raise UserError(f'config.model does not fit model {model_config.name!r}: {e}') from None
  return model, outputs.layer_table(model, shape)


def training_checkpoint(model, optimizer):
  """Everything a run needs to continue: weights, optimizer slots and step, and the states of
  Keras' random generators (Dropout's), which tf.train.Checkpoint(model=...) does not reach."""
  rng = [v for v in model.variables if 'seed_generator' in v.path]
  return tf.train.Checkpoint(model=model, optimizer=optimizer, rng=rng)


def restore_latest(checkpoint, directory):
  """Restores the newest checkpoint under `directory`, strictly; returns its path or None."""
  path = tf.train.latest_checkpoint(directory)
  if path is None:
    return None
  try:
    checkpoint.restore(path).assert_consumed()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise UserError(f'checkpoint {path} does not match this model and optimizer '
                    f'({str(e).splitlines()[0][:120]}): use a new --workdir') from None
  return path


def load_for_inference(workdir):
  """(config, data info dict, model with the latest weights) of a training run's workdir."""
  config = config_lib.load(workdir)
  info_path = os.path.join(workdir, DATA_INFO)
  if not os.path.exists(info_path):
    raise UserError(f'{workdir!r} holds no {DATA_INFO}: pass the --workdir of a training run')
  info = outputs.read_json(info_path)
  model, _ = build_model(config.model, info['num_classes'], info['image_shape'])
  path = tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_DIR))
  if path is None:
    raise UserError(f'{workdir!r} holds no checkpoint yet: train first, or wait for the first '
                    'checkpoint')
  status = tf.train.Checkpoint(model=model).restore(path)
  # The optimizer's slots are in the file but not needed here; every model variable must be.
  status.expect_partial().assert_existing_objects_matched()
  logging.info('Restored %s.', path)
  return config, info, model
