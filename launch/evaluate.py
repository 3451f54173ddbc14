"""Evaluates a run: python -m launch.evaluate --workdir=DIR [--split=test] [--checkpoint=best].

Prints top-1 and top-5 accuracy and loss; writes eval_<split>.json and confusion_<split>.png into
the workdir, or --out (a read-only workdir is only read: the metrics are printed). With
--corruptions=all (or a list such as gaussian_blur,shift) it scores the split's corrupted copies
instead: eval_<split>_corrupt.json and the chart corrupt_<split>.png.
"""

from absl import flags

from launch import common
from research.apps import corruptions
from research.apps import evaluate

_WORKDIR = flags.DEFINE_string('workdir', None, 'The training run to evaluate.', required=True)
_SPLIT = flags.DEFINE_enum('split', 'test', evaluate.SPLITS, 'Which split to evaluate.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'tfds data dir (default: the run\'s own, '
                                'else $TFDS_DATA_DIR).')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', common.CHECKPOINT_HELP)
_OUT = flags.DEFINE_string('out', None, 'Directory for the evaluation\'s files (default: the '
                           'workdir; one on read-only storage is only read).')
_NAMES = ', '.join(corruptions.CORRUPTIONS)
_CORRUPTIONS = flags.DEFINE_string(
    'corruptions', '', f'all, or corruptions separated by commas ({_NAMES}): accuracy at each '
    'severity instead of the plain evaluation.')


def main():
  if _CORRUPTIONS.value:
    names = corruptions.parse(_CORRUPTIONS.value)  # a bad name fails before anything loads
    record = evaluate.evaluate_corrupted(_WORKDIR.value, names, _SPLIT.value, _DATA_DIR.value,
                                         _CHECKPOINT.value, _OUT.value)
    print(f'{_SPLIT.value}: clean accuracy {record["clean_accuracy"]:.4f}, mean under '
          f'corruption {record["mean_accuracy"]:.4f}')
    for name, levels in record['accuracy'].items():
      print(f'  {name:<15}' + ' '.join(f'{a:.4f}' for a in levels.values()))
    return
  m = evaluate.evaluate(_WORKDIR.value, _SPLIT.value, _DATA_DIR.value, _CHECKPOINT.value,
                        _OUT.value)
  print(f'{_SPLIT.value}: accuracy {m["accuracy"]:.4f} top-5 {m["top5_accuracy"]:.4f} '
        f'loss {m["loss"]:.4f} ({m["num_examples"]} examples)')


if __name__ == '__main__':
  common.run(main)
