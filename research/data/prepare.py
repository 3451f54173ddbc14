"""Makes a dataset ready for training: a tfds dataset in the random-access format, or an image
folder checked, counted and listed into its index (folder.py). Run once before training
(launch.prepare); under several workers the chief of a run does the same before the others
load."""

import os

import tensorflow_datasets as tfds

from research.core.errors import UserError
from research.data import arrayrecord
from research.data import datasets
from research.data import folder
from research.data import pack


def _size(paths):
  return sum(os.path.getsize(p) for p in paths)


def _human(n):
  for unit, scale in (('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
    if n >= scale:
      return f'{n / scale:.1f} {unit}'
  return f'{n} bytes'


def _prepare_folder(dataset_config, packed):
  """Lists the folder into its index (or finds the index current), packs it when `packed`;
  says what it holds and what was done."""
  listing = folder.list_images(dataset_config)
  lines = [f'{dataset_config.name}: {len(listing.classes)} classes '
           f'({", ".join(listing.classes[:10])}{", ..." if len(listing.classes) > 10 else ""})']
  for split, (paths, _) in sorted(listing.splits.items()):
    lines.append(f'  {split}: {len(paths)} images, {_human(listing.bytes[split])}')
  if listing.skipped:
    lines.append(f'  skipped {len(listing.skipped)} files that are not readable images '
                 f'(first: {listing.skipped[0][0]}: {listing.skipped[0][1]})')
  if listing.index:
    lines.append(f'  index: {listing.index} ('
                 f'{"up to date" if listing.from_index else "written"})')
  else:
    lines.append('  index: not written (see the warning above); every start lists the folder')
  if packed:
    lines += pack.pack(dataset_config)
  return lines


def prepare(dataset_config, packed=False):
  """Prepares `dataset_config.name`; returns the lines that say what was done and the sizes.
  `packed`: an image folder is also packed into ArrayRecord shards (pack.py)."""
  if folder.is_folder(dataset_config.name):
    return _prepare_folder(dataset_config, packed)
  if packed:
    raise UserError('--pack packs an image folder: pass --dataset=folder:DIR, or drop --pack (a '
                    'tfds dataset is prepared as ArrayRecord already)')
  b = datasets.builder(dataset_config, random_access=True)
  version_dir = arrayrecord.version_dir(b)
  lines = []
  if arrayrecord.has_array_record(version_dir):
    lines.append(f'{b.name} {b.version}: prepared for random access in {version_dir}')
  else:
    written = arrayrecord.convert_to_array_record(version_dir)
    lines.append(f'{b.name} {b.version}: converted {len(written)} tfrecord shards to '
                 f'ArrayRecord in {version_dir} ({_human(_size(written))} added)')
  for name, split in sorted(tfds.builder_from_directory(version_dir).info.splits.items()):
    lines.append(f'  {name}: {split.num_examples} examples')
  return lines
