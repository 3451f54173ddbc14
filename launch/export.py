"""Exports a run for serving: python -m launch.export --workdir=DIR --out=DIR [--checkpoint=best].

Writes a TF SavedModel whose signatures take encoded image files (serving_default) or uint8
batches at the run's source shape (serve_uint8) and return probabilities, class indices and
class names; see docs/handoff.md.
"""

from absl import flags

from launch import common
from research.apps import export

_WORKDIR = flags.DEFINE_string('workdir', None, 'The training run to export.', required=True)
_OUT = flags.DEFINE_string('out', None, 'Folder to write the SavedModel to: new, empty, or a '
                           'previous export; never in or around a workdir.', required=True)
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', common.CHECKPOINT_HELP)
_OVERWRITE = flags.DEFINE_boolean('overwrite', False,
                                  'Replace a previous export in --out (only once the new one is '
                                  'written); other files are never replaced.')


def main():
  info = export.export(_WORKDIR.value, _OUT.value, _CHECKPOINT.value, _OVERWRITE.value)
  print(f'exported {info["checkpoint"]} to {_OUT.value} '
        f'({len(info["class_names"])} classes; signatures serving_default, serve_uint8)')


if __name__ == '__main__':
  common.run(main)
