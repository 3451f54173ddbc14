"""Classifies images: python -m launch.predict --workdir=DIR IMAGE [IMAGE ...].

Prints each file's top classes with probabilities. A bad file is reported and the others go on;
the exit status is then non-zero.
"""

import sys

from absl import flags

from launch import common
from research import checkpoints
from research import predict
from research.errors import UserError

_WORKDIR = flags.DEFINE_string('workdir', None, 'The training run whose model to use.',
                               required=True)
_TOP_K = flags.DEFINE_integer('top_k', 3, 'How many classes to print per image.', lower_bound=1)
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', checkpoints.CHECKPOINT_HELP)


def main(paths):
  if not paths:
    raise UserError('no image given: pass one or more image files after the flags')
  failed = 0
  for r in predict.predict(_WORKDIR.value, paths, _TOP_K.value, _CHECKPOINT.value):
    if r.error:
      failed += 1
      print(f'{r.path}: error: {r.error}', file=sys.stderr)
    else:
      print(f'{r.path}: ' + ', '.join(f'{name}: {p:.1%}' for name, p in r.top))
  if failed:
    sys.exit(f'error: {failed} of {len(paths)} file(s) could not be classified (see above)')


if __name__ == '__main__':
  common.run(main, takes_paths=True)
