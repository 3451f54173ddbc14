"""tf.distribute strategies by name; the training loop is the same under every one of them."""

from absl import logging
import tensorflow as tf

from research.errors import UserError

NAMES = ('default', 'one_device', 'mirrored')


def split_cpu(num_devices):
  """Splits the host CPU into N logical devices: a mirrored run on a machine without GPUs.

  Must run before TensorFlow initialises its devices, i.e. before the first op.
  """
  cpus = tf.config.list_physical_devices('CPU')
  try:
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices)
  except RuntimeError:
    existing = len(tf.config.list_logical_devices('CPU'))
    if existing != num_devices:
      raise UserError(f'num_cpu_devices={num_devices} asked after TensorFlow started with '
                      f'{existing} CPU device(s): set it before any TensorFlow op runs') from None


def build(config):
  """The strategy named by config.strategy, over the devices the config allows."""
  if config.num_cpu_devices > 0:
    split_cpu(config.num_cpu_devices)
  gpus = tf.config.list_logical_devices('GPU')
  devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices('CPU')]
  if config.strategy == 'default':
    strategy = tf.distribute.get_strategy()
  elif config.strategy == 'one_device':
    strategy = tf.distribute.OneDeviceStrategy(devices[0])
  elif config.strategy == 'mirrored':
    strategy = tf.distribute.MirroredStrategy(devices)
  else:
    raise UserError(f'unknown strategy {config.strategy!r}: use one of {", ".join(NAMES)}')
  logging.info('Strategy %s with %d replica(s) over %s.', config.strategy,
               strategy.num_replicas_in_sync, devices)
  if config.batch_size % strategy.num_replicas_in_sync:
    raise UserError(f'batch_size {config.batch_size} does not divide over '
                    f'{strategy.num_replicas_in_sync} replicas: make it a multiple of '
                    f'{strategy.num_replicas_in_sync}')
  return strategy
