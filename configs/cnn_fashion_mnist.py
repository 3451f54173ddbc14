"""The small CNN on Fashion-MNIST: the MNIST recipe with the dataset swapped.

Command: python -m launch.train --config=configs/cnn_fashion_mnist.py --workdir=runs/cnn_fmnist
Reproduces: nothing yet: there is no copy of Fashion-MNIST where this project's tests run, so it
has been trained on mock data only. Flips are on: clothes, unlike digits, are mirror-symmetric.
"""

from configs import cnn_mnist
from research.core import config as config_lib


def get_config():
  c = cnn_mnist.get_config()
  c.dataset.name = 'fashion_mnist'
  c.augment.update(config_lib.augment_preset('fashion_mnist'))
  return c
