"""Prepares a dataset: python -m launch.prepare --dataset=NAME|folder:DIR [--data_dir=DIR] [--pack].

A tfds name is downloaded and prepared as ArrayRecord (random access, for the streaming
pipeline), or an existing tfrecord preparation is converted in place; `folder:PATH` checks and
counts an image folder and writes its index, which every later start reads instead of listing
the folder, and with --pack packs it into ArrayRecord shards. Prints what it did and the sizes.
"""

from absl import flags

from launch import common
from research.core import config as config_lib
from research.data import prepare

_DATASET = flags.DEFINE_string('dataset', None, 'tfds dataset name, or folder:PATH.',
                               required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'tfds data dir; default: $TFDS_DATA_DIR, '
                                'else tfds\' own default.')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Where the files of a dataset that must '
                                  'be downloaded by hand (imagenet2012) are.')
_INDEX_DIR = flags.DEFINE_string('index_dir', None, 'folder:PATH: where its index goes (as '
                                 '--config.dataset.index_dir); default: the user\'s cache.')
_PACK = flags.DEFINE_bool('pack', False, 'folder:PATH: also pack it into ArrayRecord shards in '
                          'the data dir, which runs then read instead of its files.')


def main():
  config = config_lib.base(dataset=_DATASET.value)
  config.dataset.data_dir = _DATA_DIR.value or ''
  config.dataset.manual_dir = _MANUAL_DIR.value or ''
  config.dataset.index_dir = _INDEX_DIR.value or ''
  for line in prepare.prepare(config.dataset, _PACK.value):
    print(line)


if __name__ == '__main__':
  common.run(main)
