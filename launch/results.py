"""Compares runs: python -m launch.results DIR... [--sort=-test_accuracy] [--format=text].

One row per workdir (each DIR is a workdir, a folder holding workdirs at any depth, or a quoted
glob): the config fields that differ between the runs, then state (running, preempted, done,
stopped, new), step/total, best validation accuracy with its top-5, test accuracy with top-5,
training seconds, images/s and precision. --group=seed folds runs that differ only in that field
into one row with the mean ± spread of each number. --curves=PNG draws their validation curves.
Runs in progress are read as they stand; nothing is written into any workdir.
"""

import sys

from absl import flags

from launch import common
from research.apps import runs
from research.core import outputs
from research.core.errors import UserError

_SORT = flags.DEFINE_string('sort', '', 'Column to sort by; a leading - sorts descending '
                            '(e.g. -test_accuracy). Default: the order found.')
_FORMAT = flags.DEFINE_enum('format', 'text', list(runs.FORMATS), 'Output format.')
_GROUP = flags.DEFINE_string('group', '', 'A config field (e.g. seed) whose runs are folded '
                             'together: the mean ± spread of every number.')
_OUTPUT = flags.DEFINE_string('output', '', 'Write the table to this file instead of stdout.')
_CURVES = flags.DEFINE_string('curves', '', 'Write the runs\' validation accuracy and loss '
                              'curves to this PNG.')


def main(paths):
  if not paths:
    raise UserError('no run given: pass workdirs, a folder holding them, or a glob')
  found = [runs.read(w) for w in runs.find(paths)]
  columns, table = runs.rows(found, sort=_SORT.value, group=_GROUP.value)
  text = runs.FORMATS[_FORMAT.value](columns, table)
  if _OUTPUT.value:
    try:
      with open(_OUTPUT.value, 'w') as f:
        f.write(text)
    except OSError as e:
      raise outputs.write_error('table', _OUTPUT.value, e) from None
  else:
    sys.stdout.write(text)
  if _CURVES.value:
    runs.curves(found, _CURVES.value)


if __name__ == '__main__':
  common.run(main, takes_paths=True)
