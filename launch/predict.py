"""Classifies images: python -m launch.predict --workdir=DIR|--saved_model=DIR IMAGE|DIR|GLOB ...

Directories are searched recursively for PNG/JPEG/GIF/BMP files, patterns are expanded; files are
classified in batches. Prints each file's top classes with probabilities, or writes them to
--output as CSV. A bad file is reported and the others go on; the exit status is then non-zero.
"""

import sys

from absl import flags

from launch import common
from research.apps import predict

_WORKDIR = flags.DEFINE_string('workdir', None, 'The training run whose model to use.')
_SAVED_MODEL = flags.DEFINE_string('saved_model', None,
                                   'An export (launch.export) to use instead of --workdir.')
_TOP_K = flags.DEFINE_integer('top_k', 3, 'How many classes to give per image.', lower_bound=1)
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', common.CHECKPOINT_HELP)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 256, 'Images per model call.', lower_bound=1)
_OUTPUT = flags.DEFINE_string('output', None, 'Write a CSV here instead of printing.')


def main(paths):
  results = predict.run(paths, workdir=_WORKDIR.value, saved_model=_SAVED_MODEL.value,
                        checkpoint=_CHECKPOINT.value, top_k=_TOP_K.value,
                        batch_size=_BATCH_SIZE.value, output=_OUTPUT.value)
  failed = 0
  for r in results:
    if r.error:
      failed += 1
      print(f'{r.path}: error: {r.error}', file=sys.stderr)
    elif not _OUTPUT.value:
      print(f'{r.path}: ' + ', '.join(f'{name}: {p:.1%}' for name, p in r.top))
  if failed:
    sys.exit(f'error: {failed} of {len(results)} file(s) could not be classified (see above)')


if __name__ == '__main__':
  common.run(main, takes_paths=True)
