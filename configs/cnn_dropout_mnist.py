"""The one-conv + dropout tutorial CNN on MNIST (Conv28-Pool-Dense128-Dropout0.2-Dense10).

Command: python -m launch.train --model=cnn_dropout --workdir=runs/cnn_dropout_mnist
Reproduces: (not yet measured)
"""

from research import config as config_lib


def get_config():
  c = config_lib.base('cnn_dropout', 'mnist')
  c.num_epochs = 5.0
  return c
