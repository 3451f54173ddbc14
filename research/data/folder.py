"""A researcher's own images: `ROOT/<split>/<class>/*.{jpg,jpeg,png,gif,bmp}` (tfds' ImageFolder
layout), listed into (paths, labels) per split.

Class names are the folder names, sorted, over all splits. Files are ordered by a hash of their
path within the root, so the order, the held-out test split (when there is no test folder) and
the validation tail do not depend on the listing order of the filesystem, mix the classes, and
stay put when other files are added. Files that are not images, or whose header or end says they
are cut short, are skipped with a warning naming them: a truncated JPEG would otherwise stop
training in the middle of an epoch.
"""

import concurrent.futures
import dataclasses
import hashlib
import os

from absl import logging

from research.errors import UserError

PREFIX = 'folder:'
EXTENSIONS = ('.jpg', '.jpeg', '.png', '.gif', '.bmp')
_TEST_FOLDERS = ('test', 'validation', 'val')  # taken as the test split, first found
_WARN_AT_MOST = 10


def is_folder(name):
  return name.startswith(PREFIX)


@dataclasses.dataclass(frozen=True)
class Listing:
  classes: list
  splits: dict  # split -> (paths, labels)
  digest: str  # of every (split, path, label): the folder's identity in a data fingerprint
  skipped: list  # (path, why)


def _problem(path):
  """Why `path` cannot be trained on, or '' when its header and end look like an image."""
  try:
    with open(path, 'rb') as f:
      head = f.read(16)
      f.seek(0, os.SEEK_END)
      size = f.tell()
      f.seek(max(size - 64, 0))
      tail = f.read()
  except OSError as e:
    return f'unreadable ({e.strerror})'
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


def _subdirs(path):
  return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith('.'))


def _order_key(root, path):
  return hashlib.sha1(os.path.relpath(path, root).encode()).hexdigest()


def _refuse_unreadable_classes(root, train_name, classes, pairs, skipped):
  """A train class folder none of whose files is a readable image is refused as an empty one
  is: kept, it would make a class the model never sees an example of."""
  bad = {p for p, _ in skipped}
  readable = {label for path, label in pairs if path not in bad}
  for label, name in enumerate(classes):
    if label not in readable:
      class_dir = os.path.join(root, train_name, name)
      mine = [(p, why) for p, why in skipped if os.path.dirname(p) == class_dir]
      raise UserError(f'class folder {class_dir} has no readable images ({len(mine)} files '
                      f'skipped, e.g. {os.path.basename(mine[0][0])}: {mine[0][1]}): add some or '
                      'remove the folder')


def list_images(dataset_config):
  """The folder's splits: train, and test from a test/validation/val folder or else the last
  `test_fraction` of train in hash order."""
  root = os.path.abspath(os.path.expanduser(dataset_config.name[len(PREFIX):]))
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
  split_dirs = {'train': train_name, **({'test': test_name} if test_name else {})}
  classes = sorted({c for d in split_dirs.values() for c in _subdirs(os.path.join(root, d))})
  if not classes:
    raise UserError(f'image folder {root}/{train_name} has no class folders: put each class\'s '
                    f'images in {root}/{train_name}/<class name>/')
  files, ignored = {}, []
  for split, d in split_dirs.items():
    for label, name in enumerate(classes):
      class_dir = os.path.join(root, d, name)
      entries = sorted(os.scandir(class_dir), key=lambda e: e.name) if os.path.isdir(
          class_dir) else []
      images = [e.path for e in entries
                if e.is_file() and os.path.splitext(e.name)[1].lower() in EXTENSIONS]
      ignored += [e.path for e in entries if e.is_file() and e.path not in images
                  and not e.name.startswith('.')]
      if not images and split == 'train':
        raise UserError(f'class folder {class_dir} has no images (.jpg, .jpeg, .png, .gif, '
                        '.bmp): add some or remove the folder')
      files.setdefault(split, []).extend((p, label) for p in images)
  everything = [p for pairs in files.values() for p, _ in pairs]
  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    problems = dict(zip(everything, pool.map(_problem, everything)))
  skipped = [(p, 'no image file extension') for p in ignored]
  skipped += [(p, why) for p, why in problems.items() if why]
  _refuse_unreadable_classes(root, split_dirs['train'], classes, files['train'], skipped)
  for path, why in skipped[:_WARN_AT_MOST]:
    logging.warning('Skipping %s: %s.', path, why)
  if len(skipped) > _WARN_AT_MOST:
    logging.warning('Skipping %d more files that are not readable images.',
                    len(skipped) - _WARN_AT_MOST)
  splits = {}
  for split, pairs in files.items():
    pairs = sorted(((p, y) for p, y in pairs if not problems[p]),
                   key=lambda pair: _order_key(root, pair[0]))
    splits[split] = pairs
  if 'test' not in splits:
    n_test = int(round(len(splits['train']) * dataset_config.test_fraction))
    if not 0 < n_test < len(splits['train']):
      raise UserError(f'image folder {root!r} has no test folder and test_fraction '
                      f'{dataset_config.test_fraction} of {len(splits["train"])} images holds '
                      'out none or all: add a test/ folder or change '
                      '--config.dataset.test_fraction')
    splits['train'], splits['test'] = splits['train'][:-n_test], splits['train'][-n_test:]
  digest = hashlib.sha256()
  for split in sorted(splits):
    for path, label in splits[split]:
      digest.update(f'{split}\0{os.path.relpath(path, root)}\0{label}\n'.encode())
  return Listing(classes=classes,
                 splits={k: ([p for p, _ in v], [y for _, y in v]) for k, v in splits.items()},
                 digest=digest.hexdigest()[:16], skipped=skipped)
