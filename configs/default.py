"""The preset config of any registered model on any tfds dataset.

Command: python -m launch.train --model=MODEL --dataset=DATASET --workdir=DIR
  (launch.train uses this file when there is no configs/<model>_<dataset>.py.)
Reproduces: nothing in particular; the presets are sensible starting points, not tuned results.
"""

from research import config as config_lib


def get_config(arg='cnn,mnist'):
  model, dataset = arg.split(',')
  return config_lib.base(model, dataset)
