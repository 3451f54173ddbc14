"""A researcher's own images: `ROOT/<split>/<class>/*.{jpg,jpeg,png,gif,bmp}` (tfds' ImageFolder
layout), listed into (paths, labels) per split once, then read from an index.

Class names are the folder names, sorted, over all splits. Files are ordered by a hash of their
path within the root, so the order, the held-out test split (when there is no test folder) and
the validation tail do not depend on the listing order of the filesystem, mix the classes, and
stay put when other files are added. Files that are not images, or whose header or end says they
are cut short, are skipped with a warning naming them: a truncated JPEG would otherwise stop
training in the middle of an epoch.

Listing opens every file (its head and its end): minutes for ImageNet's 1.28M files. So the
first listing is written to an index file, and every later start, resume, evaluation and worker
reads that instead. The index sits in `dataset.index_dir`, by default a per-user cache
(`$XDG_CACHE_HOME/tf-convnet-research/image-folders`, else `~/.cache/...`): writable whatever
the image folder's permissions (it may be read-only or shared), and reached by every worker of a
cluster job wherever home directories are shared. It holds the classes, the relative paths and
labels in hash order, the skipped files, and the modification time of the root, split and class
folders. A start checks those times (about 2,000 stats for ImageNet, against 2.56M file
operations to list it): adding, removing or renaming a file changes its folder's time, and the
folder is then listed again. A folder modified within _RACY_SECONDS before the listing ended
could change again without its time showing it (coarse timestamps), so its names are compared
instead. A file rewritten in place changes no folder's time: it is caught when it is decoded.
"""

import array
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import time

from absl import logging
import numpy as np

from research.core import config as config_lib
from research.core import outputs
from research.core.errors import UserError

EXTENSIONS = ('.jpg', '.jpeg', '.png', '.gif', '.bmp')
_TEST_FOLDERS = ('test', 'validation', 'val')  # taken as the test split, first found
_WARN_AT_MOST = 10
_INDEX_FORMAT = 1  # an index of another format is listed again and replaced
# The widest filesystem timestamp step that still shows a later change (FAT: 2 s; NFS and most
# others: 1 s or finer), plus slack for a file server's clock.
_RACY_SECONDS = 3.0
_PROGRESS_SECONDS = 5.0  # a long listing logs a count this often
_CHUNK = 500  # files checked per task
THREADS = 16


def is_folder(name):
  return name.startswith(config_lib.FOLDER_PREFIX)


@dataclasses.dataclass(frozen=True)
class Listing:
  classes: list
  splits: dict  # split -> (paths, labels)
  digest: str  # of every (split, path, label): the folder's identity in a data fingerprint
  skipped: list  # (path, why)
  bytes: dict = dataclasses.field(default_factory=dict)  # split -> its files' total size
  index: str = ''  # the index file read or written ('' when none could be written)
  from_index: bool = False  # read from the index, without listing the folder


def root_of(dataset_config):
  return os.path.abspath(os.path.expanduser(dataset_config.name[len(config_lib.FOLDER_PREFIX):]))


def index_dir(dataset_config):
  """Where folder indexes go: config.dataset.index_dir, else the user's cache."""
  configured = dataset_config.get('index_dir', '')
  if configured:
    return os.path.abspath(os.path.expanduser(configured))
  cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(cache, 'tf-convnet-research', 'image-folders')


def _asked(dataset_config):
  """The split folders the config asks for, which the index was listed for."""
  return {'train': dataset_config.train_split, 'test': dataset_config.test_split}


def index_path(dataset_config):
  """The index of the config's folder and split names: one file per folder and split names."""
  root = root_of(dataset_config)
  key = hashlib.sha256(json.dumps([root, _asked(dataset_config)], sort_keys=True).encode()
                       ).hexdigest()
  return os.path.join(index_dir(dataset_config),
                      f'{os.path.basename(root) or "root"}-{key[:16]}.index')


def file_problem(path):
  """(why `path` cannot be trained on, or '' when its header and end look like an image; its
  size in bytes)."""
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError as e:
    return f'unreadable ({e.strerror})', 0
  try:  # unbuffered reads: a buffered file object costs more than the two reads themselves
    head = os.pread(fd, 16, 0)
    size = os.lseek(fd, 0, os.SEEK_END)
    tail = os.pread(fd, 64, max(size - 64, 0))
  except OSError as e:
    return f'unreadable ({e.strerror})', 0
  finally:
    os.close(fd)
  return _format_problem(head, tail, size), size


def _format_problem(head, tail, size):
  if head.startswith(b'\xff\xd8\xff'):
    return '' if b'\xff\xd9' in tail else 'truncated JPEG (no end-of-image marker)'
  if head.startswith(b'\x89PNG\r\n\x1a\n'):
    return '' if b'IEND' in tail else 'truncated PNG (no IEND chunk)'
  if head.startswith(b'GIF8'):
    return '' if tail.endswith(b';') else 'truncated GIF'
  if head.startswith(b'BM'):
    declared = int.from_bytes(head[2:6], 'little')
    return '' if declared <= size else 'truncated BMP'
  return 'not a PNG, JPEG, GIF or BMP file'


def _prefix(root):
  """What a path within `root` is appended to (os.path.join's result, at a tenth of its cost)."""
  return root.rstrip('/') + '/'


def _subdirs(path):
  return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith('.'))


def _mtime(path):
  """A folder's modification time in ns, None when it is absent."""
  try:
    return os.stat(path).st_mtime_ns
  except (FileNotFoundError, NotADirectoryError):
    return None


def _scan(class_dir):
  """(image file names, other file names), each sorted; hidden non-images are not named."""
  try:
    entries = list(os.scandir(class_dir))
  except (FileNotFoundError, NotADirectoryError):
    return [], []
  images, others = [], []
  for e in entries:
    if not e.is_file():
      continue
    if os.path.splitext(e.name)[1].lower() in EXTENSIONS:
      images.append(e.name)
    elif not e.name.startswith('.'):
      others.append(e.name)
  return sorted(images), sorted(others)


class _Progress:
  """Logs `done` of `total` every _PROGRESS_SECONDS, so a long listing shows it is moving."""

  def __init__(self, what, total):
    self.what, self.total = what, total
    self.start = self.last = time.monotonic()

  def __call__(self, done):
    now = time.monotonic()
    if now - self.last >= _PROGRESS_SECONDS:
      self.last = now
      logging.info('%s: %d of %d (%.0f/s).', self.what, done, self.total,
                   done / max(now - self.start, 1e-9))


def _split_dirs(root, dataset_config):
  """{'train': folder name, 'test': folder name}; no 'test' when it is held out from train."""
  if not os.path.isdir(root):
    raise UserError(f'image folder {root!r} does not exist: pass --dataset=folder:PATH with '
                    'PATH/train/<class>/*.jpg')
  found = _subdirs(root)
  train_name = dataset_config.train_split
  if train_name not in found:
    raise UserError(f'image folder {root!r} has no {train_name}/ folder (it has: '
                    f'{", ".join(found) or "nothing"}): lay images out as '
                    f'{root}/{train_name}/<class>/*.jpg')
  test_name = dataset_config.test_split
  if test_name not in found:
    # test, validation and val name one idea here: any that exists, else held out from train.
    if test_name not in _TEST_FOLDERS:
      raise UserError(f'image folder {root!r} has no split {test_name!r}: use one of '
                      f'{", ".join(found)}, or test (held out from train when absent)')
    test_name = next((n for n in _TEST_FOLDERS if n in found), None)
  return {'train': train_name, **({'test': test_name} if test_name else {})}


@dataclasses.dataclass
class _Walk:
  """A folder's names, before any file is opened."""
  classes: list
  rels: dict  # split -> [path within the root of each image file]
  labels: dict  # split -> array of int labels
  ignored: list  # paths within the root of files without an image extension
  dirs: dict  # folder within the root ('.' for the root) -> modification time (ns) or None


def _walk(root, split_dirs):
  """The class folders' names and modification times, each taken before its folder is read."""
  dirs = {'.': _mtime(root)}
  dirs.update((d, _mtime(os.path.join(root, d))) for d in split_dirs.values())
  classes = sorted({c for d in split_dirs.values() for c in _subdirs(os.path.join(root, d))})
  if not classes:
    raise UserError(f'image folder {root}/{split_dirs["train"]} has no class folders: put each '
                    f'class\'s images in {root}/{split_dirs["train"]}/<class name>/')
  walk = _Walk(classes, {}, {}, [], dirs)
  progress = _Progress(f'Scanning the class folders of {root}', len(classes) * len(split_dirs))
  for split, d in split_dirs.items():
    rels, labels = walk.rels.setdefault(split, []), walk.labels.setdefault(split, array.array('i'))
    for label, name in enumerate(classes):
      progress(len(dirs))
      rel_dir = f'{d}/{name}'
      dirs[rel_dir] = _mtime(os.path.join(root, d, name))
      images, others = _scan(os.path.join(root, d, name))
      if not images and split == 'train':
        raise UserError(f'class folder {os.path.join(root, d, name)} has no images (.jpg, .jpeg, '
                        '.png, .gif, .bmp): add some or remove the folder')
      rels.extend(f'{rel_dir}/{n}' for n in images)
      labels.extend([label] * len(images))
      walk.ignored.extend(f'{rel_dir}/{n}' for n in others)
  return walk


def file_problems(root, rels, sizes, threads=None):
  """{index in `rels`: why} for the files that cannot be trained on; each file's size goes into
  `sizes` (an int64 array as long as `rels`).

  A plain loop where checking is CPU-bound (a local disk, or files in the page cache: threads
  only contend for the interpreter there), 16 threads where it waits on the disk or a network
  filesystem (they overlap the waits). `threads` None: the first chunk, checked in the loop,
  decides, by how much of its time was spent waiting rather than computing. Work goes in chunks
  of files, so memory does not grow with a task per file.
  """
  prefix = _prefix(root)

  def check(start):
    bad = {}
    for i in range(start, min(start + _CHUNK, len(rels))):
      why, sizes[i] = file_problem(prefix + rels[i])
      if why:
        bad[i] = why
    return bad

  starts = iter(range(0, len(rels), _CHUNK))
  progress = _Progress(f'Checking the image files of {root}', len(rels))
  bad, done = {}, 0
  if threads is None:
    first = next(starts, None)
    if first is None:
      return bad
    wall, cpu = time.perf_counter(), time.thread_time()
    bad.update(check(first))
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    threads = wall > 3 * cpu
    done = min(_CHUNK, len(rels))
  if threads:
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
      for part in pool.map(check, starts):
        bad.update(part)
        done = min(done + _CHUNK, len(rels))
        progress(done)
  else:
    for start in starts:
      bad.update(check(start))
      done = min(done + _CHUNK, len(rels))
      progress(done)
  return bad


def _hash_order(rels):
  """The indices of `rels` sorted by the SHA-1 of each path (as bytes: the order of the hex)."""
  digests = b''.join(hashlib.sha1(r.encode('utf-8', 'surrogateescape')).digest() for r in rels)
  keys = np.frombuffer(digests, dtype=[('a', '>u8'), ('b', '>u8'), ('c', '>u4')])
  return np.lexsort((keys['c'], keys['b'], keys['a']))


def _refuse_unreadable_classes(root, train_name, classes, labels, skipped):
  """A train class folder none of whose files is a readable image is refused as an empty one
  is: kept, it would make a class the model never sees an example of."""
  readable = set(np.unique(labels).tolist())
  for label, name in enumerate(classes):
    if label not in readable:
      rel_dir = f'{train_name}/{name}/'
      mine = [(p, why) for p, why in skipped
              if p.startswith(rel_dir) and '/' not in p[len(rel_dir):]]
      raise UserError(f'class folder {os.path.join(root, train_name, name)} has no readable '
                      f'images ({len(mine)} files skipped, e.g. {os.path.basename(mine[0][0])}: '
                      f'{mine[0][1]}): add some or remove the folder')


def _list(root, split_dirs):
  """Lists the folder: the index's content (see _encode), with what changed under it refused."""
  start = time.monotonic()
  logging.info('Listing image folder %s.', root)
  walk = _walk(root, split_dirs)
  everything = [r for split in walk.rels for r in walk.rels[split]]
  sizes = np.zeros(len(everything), np.int64)
  bad = file_problems(root, everything, sizes)
  # A folder written to while it was listed gives a listing of no moment of it.
  changed = [d for d, m in walk.dirs.items() if _mtime(os.path.join(root, d)) != m]
  if changed:
    raise UserError(f'image folder {root} changed while it was being listed ({changed[0]} gained '
                    'or lost files): run again once it is complete (nothing was written)')
  listed_at = time.time_ns()
  skipped = [(p, 'no image file extension') for p in walk.ignored]
  skipped += [(everything[i], why) for i, why in sorted(bad.items())]
  splits, offset = {}, 0
  for split, rels in walk.rels.items():
    keep = np.array([i for i in range(len(rels)) if offset + i not in bad], np.int64)
    kept_rels = [rels[i] for i in keep]
    labels = np.frombuffer(walk.labels[split], np.int32)[keep] if len(keep) else np.zeros(
        0, np.int32)
    kept_sizes = sizes[offset:offset + len(rels)][keep]
    offset += len(rels)
    order = _hash_order(kept_rels)
    splits[split] = ([kept_rels[i] for i in order], labels[order], kept_sizes[order])
  _refuse_unreadable_classes(root, split_dirs['train'], walk.classes, splits['train'][1], skipped)
  logging.info('Listed image folder %s: %d files in %d classes, %d skipped, in %.1fs.', root,
               len(everything), len(walk.classes), len(skipped), time.monotonic() - start)
  return {'format': _INDEX_FORMAT, 'root': root, 'split_dirs': split_dirs,
          'classes': walk.classes, 'dirs': sorted(walk.dirs.items()), 'listed_at_ns': listed_at,
          'skipped': skipped, 'splits': splits}


def _encode(content):
  """The index file: a JSON header line, then per split its paths ('\\0'-separated, UTF-8),
  labels (int32) and file sizes (int64), checked by the header's SHA-256 of them."""
  body, sections = [], {}
  offset = 0
  for split, (rels, labels, sizes) in content['splits'].items():
    parts = {'paths': '\0'.join(rels).encode('utf-8', 'surrogateescape'),
             'labels': np.asarray(labels, '<i4').tobytes(),
             'sizes': np.asarray(sizes, '<i8').tobytes()}
    sections[split] = {'count': len(rels)}
    for name, part in parts.items():
      sections[split][name] = [offset, len(part)]
      body.append(part)
      offset += len(part)
  body = b''.join(body)
  header = {k: v for k, v in content.items() if k != 'splits'}
  header.update(sections=sections, body_sha256=hashlib.sha256(body).hexdigest())
  return json.dumps(header).encode() + b'\n' + body


class _UnusableIndex(Exception):
  """An index file that cannot stand for the folder; the message says why, for one log line."""


def _decode(data, root, asked):
  """The index content of file bytes `data`, for `root` listed for the split names `asked`."""
  head, _, body = data.partition(b'\n')
  try:
    header = json.loads(head)
    if header.get('format') != _INDEX_FORMAT:
      raise _UnusableIndex(f'it is of format {header.get("format")!r}, not {_INDEX_FORMAT}')
    if hashlib.sha256(body).hexdigest() != header['body_sha256']:
      raise _UnusableIndex('it is truncated or corrupt: its checksum does not match')
    if header['root'] != root or header['asked'] != asked:
      raise _UnusableIndex(f'it indexes {header["root"]} (splits {header["asked"]}), not {root} '
                           f'(splits {asked})')
    splits = {}
    for split, s in header.pop('sections').items():
      part = {name: body[s[name][0]:s[name][0] + s[name][1]]
              for name in ('paths', 'labels', 'sizes')}
      rels = part['paths'].decode('utf-8', 'surrogateescape').split('\0') if s['count'] else []
      labels = np.frombuffer(part['labels'], '<i4').astype(np.int32)
      sizes = np.frombuffer(part['sizes'], '<i8').astype(np.int64)
      if not len(rels) == len(labels) == len(sizes) == s['count']:
        raise _UnusableIndex('it is corrupt: its counts do not match')
      splits[split] = (rels, labels, sizes)
  except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSON and layout errors
    raise _UnusableIndex(f'it is truncated or corrupt ({type(e).__name__})') from None
  header['splits'] = splits
  header['dirs'] = [tuple(d) for d in header['dirs']]
  header['skipped'] = [tuple(s) for s in header['skipped']]
  return header


def _changed(root, content):
  """'' when the folder is as indexed; else what changed."""
  dirs = content['dirs']
  for d, m in dirs:
    if _mtime(os.path.join(root, d)) != m:
      return f'{"the root" if d == "." else d} gained or lost files or folders'
  racy_after = content['listed_at_ns'] - int(_RACY_SECONDS * 1e9)
  if not any(m is not None and m > racy_after for _, m in dirs):
    return ''
  # Folders written to just before the listing ended: compare their names with the index's.
  walk = _walk(root, content['split_dirs'])
  if walk.classes != content['classes']:
    return 'a class folder came or went'
  now = {r for rels in walk.rels.values() for r in rels} | set(walk.ignored)
  then = {r for rels, _, _ in content['splits'].values() for r in rels}
  then |= {p for p, _ in content['skipped']}
  if now != then:
    return f'{os.path.dirname(min(now ^ then))} gained or lost files'
  return ''


def _read_index(path, root, asked):
  """The index content when `path` holds a current index of `root`; None when there is no
  index; raises _UnusableIndex naming why it cannot be used."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except FileNotFoundError:
    return None
  except OSError as e:
    raise _UnusableIndex(f'it cannot be read: {e.strerror}') from None
  content = _decode(data, root, asked)
  changed = _changed(root, content)
  if changed:
    raise _UnusableIndex(f'the folder changed since it was indexed ({changed})')
  return content


def _write_index(path, root, content):
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    outputs.remove_incomplete(path)  # what a killed writer left
    outputs.write_atomic(path, _encode(content), 'image folder index')
  except (OSError, UserError) as e:
    logging.warning('Could not write the index of image folder %s (%s): the next start lists '
                    'it again; set --config.dataset.index_dir to a writable directory.', root, e)
    return ''
  logging.info('Wrote the index of image folder %s to %s.', root, path)
  return path


def _digest(splits):
  h = hashlib.sha256()
  for split in sorted(splits):
    rels, labels = splits[split][:2]
    for start in range(0, len(rels), 100_000):  # in parts: one string of them all is large
      h.update(''.join(f'{split}\0{r}\0{y}\n' for r, y in zip(
          rels[start:start + 100_000], labels[start:start + 100_000].tolist())).encode(
              'utf-8', 'surrogateescape'))
  return h.hexdigest()[:16]


def list_images(dataset_config, write=True):
  """The folder's splits: train, and test from a test/validation/val folder or else the last
  `test_fraction` of train in hash order.

  Read from the folder's index when it is current; else the folder is listed, and the index
  written when `write` (the chief of a run, launch.prepare; other workers only read it).
  """
  root, asked = root_of(dataset_config), _asked(dataset_config)
  path = index_path(dataset_config)
  start = time.monotonic()
  try:
    content = _read_index(path, root, asked)
  except _UnusableIndex as e:
    logging.warning('Not using the index %s of image folder %s: %s; listing the folder again.',
                    path, root, e)
    content = None
  from_index = content is not None
  if from_index:
    logging.info('Read the index of image folder %s from %s in %.1fs.', root, path,
                 time.monotonic() - start)
  else:
    content = _list(root, _split_dirs(root, dataset_config))
    content['asked'] = asked
    path = _write_index(path, root, content) if write else ''
  splits = dict(content['splits'])
  if 'test' not in splits:
    train = splits['train']
    n_test = int(round(len(train[0]) * dataset_config.test_fraction))
    if not 0 < n_test < len(train[0]):
      raise UserError(f'image folder {root!r} has no test folder and test_fraction '
                      f'{dataset_config.test_fraction} of {len(train[0])} images holds out none '
                      'or all: add a test/ folder or change --config.dataset.test_fraction')
    splits['train'] = tuple(part[:-n_test] for part in train)
    splits['test'] = tuple(part[-n_test:] for part in train)
  prefix = _prefix(root)
  skipped = [(prefix + p, why) for p, why in content['skipped']]
  for p, why in skipped[:_WARN_AT_MOST]:
    logging.warning('Skipping %s: %s.', p, why)
  if len(skipped) > _WARN_AT_MOST:
    logging.warning('Skipping %d more files that are not readable images.',
                    len(skipped) - _WARN_AT_MOST)
  return Listing(classes=content['classes'],
                 splits={k: ([prefix + r for r in rels], labels.tolist())
                         for k, (rels, labels, _) in splits.items()},
                 digest=_digest(splits), skipped=skipped,
                 bytes={k: int(sizes.sum()) for k, (_, _, sizes) in splits.items()},
                 index=path, from_index=from_index)
