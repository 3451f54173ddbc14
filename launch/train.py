"""Trains a model: python -m launch.train --model=cnn --dataset=mnist --workdir=DIR.

Flags pick the experiment; the config file (--config, or configs/<model>_<dataset>.py) holds
every setting, each overridable as --config.<field>=value. Re-run with the same --workdir to
resume from its latest checkpoint.
"""

from absl import flags

from launch import common
from research.train import trainer

_CONFIG = common.define_config_flag()
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and outputs.',
                               required=True)
_MODEL = flags.DEFINE_string('model', None, 'Model name (cnn, cnn_dropout, ...); must agree '
                             'with --config when both are given.')
_DATASET = flags.DEFINE_string('dataset', None, 'tfds dataset name (mnist, fashion_mnist, ...).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'tfds data dir; default: $TFDS_DATA_DIR, '
                                'else tfds\' own default (downloads on first use).')
_STRATEGY = flags.DEFINE_string('strategy', None, 'tf.distribute strategy: default, '
                                'one_device or mirrored.')


def _resolve():
  """Flag values folded into the config; a flag that contradicts the config file is an error."""
  config = common.resolved_config(_CONFIG, model=_MODEL.value, dataset=_DATASET.value)
  if _DATA_DIR.value is not None:
    config.dataset.data_dir = _DATA_DIR.value
  if _STRATEGY.value is not None:
    config.strategy = _STRATEGY.value
  return config


def main():
  summary = trainer.train_and_evaluate(_resolve(), _WORKDIR.value)
  if summary['preempted']:  # exit 0: a requeued job with the same command resumes
    print(f'stopped by {summary["preempted"]} at step {summary["step"]}, saved: re-run the same '
          'command to resume')
    return
  print(f'test accuracy {summary["test_accuracy"]:.4f} (loss {summary["test_loss"]:.4f}) '
        f'after {summary["step"]} steps, {summary["train_seconds"]:.0f}s of training')


if __name__ == '__main__':
  common.run(main)
