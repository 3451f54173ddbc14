"""The preset config of any registered model on any tfds dataset.

Command: python -m launch.train --model=MODEL --dataset=DATASET --workdir=DIR
  (launch.train uses this file when there is no configs/<model>_<dataset>.py.)
  An image folder of digits or documents: --config=configs/default.py:MODEL,folder:DIR,digits
  (the style's preset: whole images letterboxed, grey, no flips; research/core/config.py STYLES).
Reproduces: nothing in particular; the presets are sensible starting points, not tuned results.
"""

from research.core import config as config_lib


def get_config(arg='cnn,mnist'):
  """`model,dataset`, or `model,dataset,style` with a style of config_lib.STYLES (photos, digits)
  for an image folder: configs/default.py:cnn,folder:/data/digits,digits."""
  model, dataset, *style = arg.split(',')
  config = config_lib.base(model, dataset)
  return config_lib.apply_style(config, style[0]) if style else config
