"""Evaluates a run: python -m launch.evaluate --workdir=DIR [--split=test] [--checkpoint=best].

Prints top-1 and top-5 accuracy and loss; writes eval_<split>.json and confusion_<split>.png into
the workdir.
"""

from absl import flags

from launch import common
from research import checkpoints
from research import evaluate

_WORKDIR = flags.DEFINE_string('workdir', None, 'The training run to evaluate.', required=True)
_SPLIT = flags.DEFINE_enum('split', 'test', evaluate.SPLITS, 'Which split to evaluate.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'tfds data dir (default: the run\'s own, '
                                'else $TFDS_DATA_DIR).')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', checkpoints.CHECKPOINT_HELP)


def main():
  m = evaluate.evaluate(_WORKDIR.value, _SPLIT.value, _DATA_DIR.value, _CHECKPOINT.value)
  print(f'{_SPLIT.value}: accuracy {m["accuracy"]:.4f} top-5 {m["top5_accuracy"]:.4f} '
        f'loss {m["loss"]:.4f} ({m["num_examples"]} examples)')


if __name__ == '__main__':
  common.run(main)
