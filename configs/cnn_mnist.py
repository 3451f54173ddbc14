"""Small CNN on MNIST (tuned for accuracy within a minute of CPU training).

Command: python -m launch.train --config=configs/cnn_mnist.py --workdir=runs/cnn_mnist
Reproduces: (to be measured)
"""

from research import config as config_lib


def get_config():
  c = config_lib.base('cnn', 'mnist')
  c.model.batch_norm = True
  c.num_epochs = 4.0
  c.batch_size = 128
  c.schedule.learning_rate = 3e-3
  return c
