"""An image folder packed into ArrayRecord shards: a few hundred large files in place of a
million small ones, for filesystems where each file open is a round trip (NFS, Lustre, buckets
mounted through FUSE).

`launch.prepare --dataset=folder:DIR --pack` writes the shards into the tfds data dir
(`--data_dir`, else TFDS_DATA_DIR, else tfds' default ~/tensorflow_datasets), under
`image_folders/<folder name>-<listing digest>/`. Record i of split s holds the i-th file of the
folder's listing of s (a serialized tf.Example of the file's bytes and its label, as tfds stores
an image), so the pack gives the same examples at the same indices as the files, the same crops
and the same data fingerprint: the random-access source of a tfds dataset, and a run can switch
between files and pack and still resume exactly. A start looks the pack up by the listing's
digest (one stat); a folder that changed has another digest, and is read from its files until
it is packed again.

Shards are written under temporary names and renamed when complete and synced, and the manifest
comes last: a kill leaves no pack that is read, and packing again keeps the shards already
complete.
"""

import math
import os
import time

from absl import logging
from array_record.python import array_record_data_source
import tensorflow as tf

from research.core import outputs
from research.core.errors import UserError
from research.data import arrayrecord
from research.data import folder

MANIFEST = 'pack.json'
_TARGET_SHARD_BYTES = 256 * 2**20  # tfds aims at shards of about this size too
# One record per chunk, as tfds writes (a random read reads one record), but not compressed:
# image files are compressed already, and zstd made packing 4-6x slower for 4% less disk.
_WRITER_OPTIONS = 'group_size:1,uncompressed'


def pack_dir(dataset_config, listing):
  """Where the pack of this listing of the folder goes."""
  data_dir = (dataset_config.data_dir or os.environ.get('TFDS_DATA_DIR')
              or os.path.join(os.path.expanduser('~'), 'tensorflow_datasets'))
  root = folder.root_of(dataset_config)
  return os.path.join(data_dir, 'image_folders',
                      f'{os.path.basename(root) or "root"}-{listing.digest}')


def _plan(listing):
  """{split: [(start, stop), ...]}: consecutive runs of whole files of about
  _TARGET_SHARD_BYTES each."""
  plan = {}
  for split, (paths, _) in sorted(listing.splits.items()):
    n = len(paths)
    count = max(1, min(n, math.ceil(listing.bytes[split] / _TARGET_SHARD_BYTES)))
    plan[split] = [(k * n // count, (k + 1) * n // count) for k in range(count)]
  return plan


def _shard_name(split, k, count):
  return f'{split}.array_record-{k:05d}-of-{count:05d}'


def _records(paths, labels, start, stop, done):
  for i in range(start, stop):
    with open(paths[i], 'rb') as f:
      data = f.read()
    done[0] += len(data)
    yield tf.train.Example(features=tf.train.Features(feature={
        'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
        'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[i])])),
    })).SerializeToString()


def pack(dataset_config):
  """Packs the folder as listed now (its index); returns lines saying what was done."""
  listing = folder.list_images(dataset_config)
  directory = pack_dir(dataset_config, listing)
  if os.path.exists(os.path.join(directory, MANIFEST)):
    return [f'  pack: {directory} (up to date)']
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise outputs.write_error('pack directory', directory, e) from None
  root, plan = folder.root_of(dataset_config), _plan(listing)
  start, done, kept, written = time.monotonic(), [0], 0, 0
  for split, ranges in plan.items():
    paths, labels = listing.splits[split]
    for k, (a, b) in enumerate(ranges):
      path = os.path.join(directory, _shard_name(split, k, len(ranges)))
      if os.path.isfile(path):
        kept += 1
        continue
      outputs.remove_incomplete(path)  # what a killed packer left
      arrayrecord.write_shard(path, _records(paths, labels, a, b, done), b - a,
                              f'image folder {root}', 'its listing has', 'pack again',
                              _WRITER_OPTIONS)
      written += 1
      logging.info('Wrote %s (%d files; %.0f MiB packed so far).', path, b - a,
                   done[0] / 2**20)
  outputs.write_json(os.path.join(directory, MANIFEST), {
      'digest': listing.digest, 'root': root,
      'splits': {split: {'count': len(listing.splits[split][0]),
                         'shards': [_shard_name(split, k, len(r)) for k in range(len(r))]}
                 for split, r in plan.items()}})
  seconds = time.monotonic() - start
  return [f'  pack: {directory} ({written} shards written, {kept} kept; {done[0] / 2**20:.1f} '
          f'MiB of files in {seconds:.1f}s, {done[0] / 2**20 / max(seconds, 1e-9):.0f} MiB/s)']


class _Split:
  """A packed split as RecordSource reads a tfds data source: records by index, a batch at a
  time, and the split's name and reader, which name a record's shard."""

  def __init__(self, paths, split):
    self.data_source = array_record_data_source.ArrayRecordDataSource(paths)
    self.split = split

  def __len__(self):
    return len(self.data_source)

  def __getitems__(self, keys):
    return self.data_source.__getitems__(keys)


def open_pack(dataset_config, listing):
  """{split: data source} of the folder's pack of this listing; None when it has none."""
  directory = pack_dir(dataset_config, listing)
  path = os.path.join(directory, MANIFEST)
  try:
    manifest = outputs.read_json(path)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    logging.warning('Not reading image folder %s from its pack: %s is unreadable (%s); packing '
                    'it again replaces it.', listing.digest, path, e)
    return None
  splits = manifest.get('splits', {})
  if manifest.get('digest') != listing.digest or sorted(splits) != sorted(listing.splits) or any(
      splits[s]['count'] != len(listing.splits[s][0]) for s in splits):
    logging.warning('Not reading the image folder from the pack %s: it holds another listing; '
                    'packing it again replaces it.', directory)
    return None
  try:
    return {split: _Split([os.path.join(directory, n) for n in s['shards']], split)
            for split, s in splits.items()}
  except (OSError, ValueError, RuntimeError) as e:
    raise UserError(f'the pack {directory} of image folder {manifest.get("root")} cannot be '
                    f'read ({e}): delete it and pack again, or delete it to read the files')
