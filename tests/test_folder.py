"""Image folders listed once into an index that every later start reads: reused without opening
a file, listed again when the folder changes, never taken half-written, and the same listing
(and data fingerprint) as a listing of the folder itself."""

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from research.core import config as config_lib
from research.core import layout
from research.core import outputs
from research.core.errors import UserError
from research.data import datasets
from research.data import folder
from research.data import pack
from research.data import pipeline
from research.data import prepare
from research.data import sources
from tests import helpers


def _config(root, index_dir, **dataset):
  c = config_lib.base('cnn', f'{config_lib.FOLDER_PREFIX}{root}')
  c.dataset.update(index_dir=index_dir, **dataset)
  return c.dataset


def _age(root, seconds=60):
  """Sets every folder's modification time `seconds` back: a folder written long before it is
  listed, whose times show any later change."""
  past = time.time() - seconds
  for directory, _, _ in os.walk(root):
    os.utime(directory, (past, past))


@contextlib.contextmanager
def _folder_reads(root):
  """Counts the folder reads (os.scandir) and file opens (os.open, open) under `root`."""
  counts = {'scandir': 0, 'open': 0}
  real_scandir, real_open, real_builtin_open = os.scandir, os.open, open

  def under(path):
    return os.fspath(path).startswith(root)

  def scandir(path='.'):
    counts['scandir'] += under(path)
    return real_scandir(path)

  def os_open(path, *args, **kwargs):
    counts['open'] += under(path)
    return real_open(path, *args, **kwargs)

  def builtin_open(path, *args, **kwargs):
    counts['open'] += isinstance(path, (str, os.PathLike)) and under(path)
    return real_builtin_open(path, *args, **kwargs)

  with mock.patch('os.scandir', scandir), mock.patch('os.open', os_open), mock.patch(
      'builtins.open', builtin_open):
    yield counts


def _same(test, a, b):
  test.assertEqual(a.classes, b.classes)
  test.assertEqual(a.splits, b.splits)
  test.assertEqual(a.digest, b.digest)
  test.assertEqual(a.skipped, b.skipped)
  test.assertEqual(a.bytes, b.bytes)


def _index_warnings(logs):
  return [line for line in logs.output if 'index' in line and line.startswith('WARNING')]


class IndexTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.root = helpers.write_image_folder(self.create_tempdir().full_path, per_class=6)
    self.index_dir = self.create_tempdir().full_path
    self.config = _config(self.root, self.index_dir)

  def _list(self, **kwargs):
    return folder.list_images(self.config, **kwargs)

  def test_a_second_start_reads_the_index_without_reading_the_folder(self):
    _age(self.root)
    first = self._list()
    self.assertFalse(first.from_index)
    self.assertTrue(os.path.isfile(first.index))
    self.assertEqual(os.path.dirname(first.index), self.index_dir)
    with _folder_reads(self.root) as reads:
      second = self._list()
    self.assertTrue(second.from_index)
    self.assertEqual(reads, {'scandir': 0, 'open': 0})
    _same(self, first, second)

  def test_the_listing_opens_every_file_once(self):
    with _folder_reads(self.root) as reads:
      listing = self._list()
    self.assertEqual(reads['open'], sum(len(p) for p, _ in listing.splits.values()))

  def test_without_write_nothing_is_written_and_the_next_start_lists_again(self):
    self.assertFalse(self._list(write=False).from_index)
    self.assertEqual(os.listdir(self.index_dir), [])
    self.assertFalse(self._list().from_index)
    self.assertTrue(self._list(write=False).from_index)

  @parameterized.named_parameters(
      ('gains_a_file', lambda root: shutil.copy(os.path.join(root, 'train', 'dog', '0.jpg'),
                                                os.path.join(root, 'train', 'dog', 'new.jpg'))),
      ('loses_a_file', lambda root: os.remove(os.path.join(root, 'train', 'dog', '0.jpg'))),
      ('renames_a_file', lambda root: os.rename(os.path.join(root, 'train', 'dog', '0.jpg'),
                                                os.path.join(root, 'train', 'dog', 'x.jpg'))),
      ('gains_a_class', lambda root: shutil.copytree(os.path.join(root, 'train', 'dog'),
                                                     os.path.join(root, 'train', 'fox'))),
      ('gains_a_test_folder', lambda root: shutil.copytree(os.path.join(root, 'train'),
                                                           os.path.join(root, 'test'))))
  def test_a_changed_folder_is_listed_again_in_one_line(self, change):
    _age(self.root)
    before = self._list()
    change(self.root)
    with self.assertLogs(level='WARNING') as logs:
      after = self._list()
    self.assertFalse(after.from_index)
    warned = _index_warnings(logs)
    self.assertLen(warned, 1)
    self.assertRegex(warned[0], r'Not using the index .* of image folder .*: the folder changed '
                                r'since it was indexed \(.* gained or lost files.*\); listing '
                                r'the folder again\.$')
    self.assertNotEqual(after.digest, before.digest)
    # The index now holds the new listing.
    again = self._list()
    self.assertTrue(again.from_index)
    _same(self, after, again)

  def test_a_folder_changed_just_after_listing_is_checked_by_its_names(self):
    # Within a coarse timestamp's step of the listing a change may leave a folder's time as it
    # was: added here, with the time put back.
    self._list()
    dog = os.path.join(self.root, 'train', 'dog')
    stat = os.stat(dog)
    shutil.copy(os.path.join(dog, '0.jpg'), os.path.join(dog, 'new.jpg'))
    os.utime(dog, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with self.assertLogs(level='WARNING') as logs:
      after = self._list()
    self.assertFalse(after.from_index)
    self.assertRegex(_index_warnings(logs)[0], r'\(train/dog gained or lost files\)')
    self.assertIn(os.path.join(dog, 'new.jpg'),
                  after.splits['train'][0] + after.splits['test'][0])

  def test_a_recently_listed_folder_that_did_not_change_reads_its_index(self):
    first = self._list()  # not aged: its folders were written just now
    with _folder_reads(self.root) as reads:
      second = self._list()
    self.assertTrue(second.from_index)
    self.assertEqual(reads['open'], 0)  # its names are compared; no file is opened
    _same(self, first, second)

  @parameterized.named_parameters(
      ('truncated', lambda data: data[:len(data) // 2], r'it is truncated or corrupt'),
      ('a_byte_changed', lambda data: data[:-7] + bytes([data[-7] ^ 1]) + data[-6:],
       r'it is truncated or corrupt: its checksum does not match'),
      ('empty', lambda data: b'', r'it is truncated or corrupt'),
      ('not_an_index', lambda data: b'\x89PNG\r\n\x1a\n' + data, r'it is truncated or corrupt'),
      ('another_format', lambda data: data.replace(b'"format": 1', b'"format": 99', 1),
       r'it is of format 99, not 1'))
  def test_a_bad_index_is_one_line_and_the_folder_is_listed_again(self, damage, why):
    _age(self.root)
    first = self._list()
    with open(first.index, 'rb') as f:
      data = f.read()
    with open(first.index, 'wb') as f:
      f.write(damage(data))
    with self.assertLogs(level='WARNING') as logs:
      second = self._list()
    warned = _index_warnings(logs)
    self.assertLen(warned, 1)
    self.assertRegex(warned[0], rf'Not using the index {re.escape(first.index)} of image folder '
                                rf'{re.escape(self.root)}: {why}.*; listing the folder again\.$')
    self.assertFalse(second.from_index)
    _same(self, first, second)
    self.assertTrue(self._list().from_index)  # written whole again

  def test_an_index_of_another_folder_is_one_line_and_not_used(self):
    other = helpers.write_image_folder(self.create_tempdir().full_path,
                                       classes=('ant', 'bee'), per_class=4)
    theirs = folder.list_images(_config(other, self.index_dir)).index
    ours = folder.index_path(self.config)
    shutil.copy(theirs, ours)
    with self.assertLogs(level='WARNING') as logs:
      listing = self._list()
    warned = _index_warnings(logs)
    self.assertLen(warned, 1)
    self.assertRegex(warned[0], rf'it indexes {re.escape(other)} .*, not {re.escape(self.root)}')
    self.assertEqual(listing.classes, ['cat', 'dog', 'emu'])

  def test_an_index_is_per_split_names(self):
    val = helpers.write_image_folder(self.create_tempdir().full_path, per_class=4,
                                     splits=('train', 'val', 'extra'))
    default = folder.list_images(_config(val, self.index_dir))
    other = folder.list_images(_config(val, self.index_dir, test_split='extra'))
    self.assertNotEqual(default.index, other.index)
    self.assertTrue(all('/val/' in p for p in default.splits['test'][0]))
    self.assertTrue(all('/extra/' in p for p in other.splits['test'][0]))
    self.assertTrue(folder.list_images(_config(val, self.index_dir)).from_index)

  def test_test_fraction_is_applied_to_the_index(self):
    self._list()
    tenth = self._list()
    fifth = folder.list_images(_config(self.root, self.index_dir, test_fraction=0.2))
    self.assertTrue(fifth.from_index)
    self.assertLen(fifth.splits['test'][0], 4)  # of 18
    self.assertEqual(fifth.splits['train'][0], tenth.splits['train'][0][:14])
    self.assertNotEqual(fifth.digest, tenth.digest)

  def test_an_unwritable_index_dir_is_a_warning_and_the_listing_stands(self):
    blocker = os.path.join(self.create_tempdir().full_path, 'a_file')
    with open(blocker, 'w') as f:
      f.write('not a directory')
    config = _config(self.root, os.path.join(blocker, 'indexes'))
    with self.assertLogs(level='WARNING') as logs:
      listing = folder.list_images(config)
    self.assertEqual(listing.index, '')
    self.assertRegex('\n'.join(logs.output), r'Could not write the index of image folder .*'
                                             r'set --config.dataset.index_dir to a writable')
    self.assertEqual(listing.classes, ['cat', 'dog', 'emu'])

  def test_the_default_index_dir_is_the_users_cache(self):
    config = config_lib.base('cnn', f'{config_lib.FOLDER_PREFIX}{self.root}').dataset
    with mock.patch.dict(os.environ, {'XDG_CACHE_HOME': '/cache/me'}):
      self.assertEqual(folder.index_dir(config), '/cache/me/tf-convnet-research/image-folders')
    with mock.patch.dict(os.environ, {'HOME': '/home/me'}):
      os.environ.pop('XDG_CACHE_HOME')
      self.assertEqual(folder.index_dir(config),
                       '/home/me/.cache/tf-convnet-research/image-folders')

  def test_a_folder_changed_while_it_is_listed_is_one_line_and_nothing_is_written(self):
    real = folder.file_problem
    dog = os.path.join(self.root, 'train', 'dog')

    def problem_then_add_a_file(path):
      if not os.path.exists(os.path.join(dog, 'late.jpg')):
        shutil.copy(os.path.join(dog, '0.jpg'), os.path.join(dog, 'late.jpg'))
      return real(path)

    _age(self.root)
    with mock.patch.object(folder, 'file_problem', problem_then_add_a_file):
      with self.assertRaisesRegex(UserError, r'^image folder .* changed while it was being listed '
                                             r'\(train/dog gained or lost files\): run again once '
                                             r'it is complete \(nothing was written\)$'):
        self._list()
    self.assertEqual(os.listdir(self.index_dir), [])


class ListingTest(tf.test.TestCase, parameterized.TestCase):

  def test_the_digest_of_a_folder_is_what_earlier_versions_listed(self):
    # Pinned from the listing before the index existed: a workdir trained on this folder then
    # still resumes (its data fingerprint holds the digest).
    root = helpers.write_image_folder(self.create_tempdir().full_path, per_class=7)
    with open(os.path.join(root, 'train', 'cat', 'notes.txt'), 'w') as f:
      f.write('x')
    with open(os.path.join(root, 'train', 'dog', '0.jpg'), 'rb') as f:
      jpeg = f.read()
    with open(os.path.join(root, 'train', 'dog', 'cut.jpg'), 'wb') as f:
      f.write(jpeg[:100])
    config = _config(root, self.create_tempdir().full_path)
    listed, read = folder.list_images(config), folder.list_images(config)
    self.assertTrue(read.from_index)
    for listing in (listed, read):
      self.assertEqual(listing.digest, 'b3290341a4dbb247')
      self.assertLen(listing.skipped, 2)

  def test_threads_and_a_plain_loop_find_the_same(self):
    root = helpers.write_image_folder(self.create_tempdir().full_path, per_class=400)
    cat = os.path.join(root, 'train', 'cat')
    for name in ('50.jpg', '1000.jpg'):
      shutil.copy(os.path.join(cat, '0.jpg'), os.path.join(cat, f'x{name}'))
    with open(os.path.join(cat, 'x50.jpg'), 'r+b') as f:
      f.truncate(60)
    with open(os.path.join(cat, 'x1.png'), 'wb') as f:
      f.write(b'not a png')
    rels = sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, _, names in os.walk(root) for n in names)
    results = []
    for threads in (False, True):
      sizes = np.zeros(len(rels), np.int64)
      results.append((folder.file_problems(root, rels, sizes, threads=threads), sizes))
    (loop, loop_sizes), (threaded, threaded_sizes) = results
    self.assertEqual(loop, threaded)
    self.assertAllEqual(loop_sizes, threaded_sizes)
    self.assertEqual({rels[i] for i in loop}, {'train/cat/x1.png', 'train/cat/x50.jpg'})
    self.assertAllEqual(loop_sizes, [os.path.getsize(os.path.join(root, r)) for r in rels])

  def test_a_long_listing_logs_its_progress(self):
    root = helpers.write_image_folder(self.create_tempdir().full_path, per_class=400)
    with mock.patch.object(folder, '_PROGRESS_SECONDS', 0.0), self.assertLogs(
        level='INFO') as logs:
      folder.list_images(_config(root, self.create_tempdir().full_path))
    log = '\n'.join(logs.output)
    self.assertRegex(log, r'Checking the image files of .*: 1000 of 1200 \(\d+/s\)\.')
    self.assertRegex(log, r'Listed image folder .*: 1200 files in 3 classes, 0 skipped, in ')

  def test_file_sizes_are_counted(self):
    root = helpers.write_image_folder(self.create_tempdir().full_path, per_class=5)
    listing = folder.list_images(_config(root, self.create_tempdir().full_path))
    for split, (paths, _) in listing.splits.items():
      self.assertEqual(listing.bytes[split], sum(os.path.getsize(p) for p in paths))


class WorkerTest(tf.test.TestCase):
  """The chief of a run writes the index (datasets.load with prepare); the other workers read it
  (without prepare) and never list the folder."""

  def test_a_worker_reads_the_chiefs_index(self):
    root = helpers.write_image_folder(self.create_tempdir().full_path, per_class=6)
    _age(root)
    config = _config(root, self.create_tempdir().full_path)
    chief = datasets.load(config, input_size=16, prepare=True)
    with _folder_reads(root) as reads, self.assertLogs(level='INFO') as logs:
      worker = datasets.load(config, input_size=16, prepare=False)
    self.assertEqual(reads, {'scandir': 0, 'open': 0})
    self.assertRegex('\n'.join(logs.output), 'Read the index of image folder')
    self.assertEqual(worker.fingerprint, chief.fingerprint)
    self.assertAllEqual(worker.train.paths, chief.train.paths)

  def test_two_local_workers_list_the_folder_once(self):
    root = helpers.write_image_folder(self.create_tempdir().full_path, per_class=6)
    index_dir = self.create_tempdir().full_path
    proc = helpers.run_cli(
        'launch.train', f'--dataset=folder:{root}', '--model=cnn', '--config.model.input_size=16',
        '--config.batch_size=8', '--config.num_train_steps=2', '--config.steps_per_loop=1',
        '--config.eval_batch_size=8', '--config.image_grid_size=0',
        f'--config.dataset.index_dir={index_dir}', '--strategy=multi_worker_mirrored',
        '--local_workers=2', f'--workdir={os.path.join(self.create_tempdir().full_path, "w")}')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    lines = proc.stderr.splitlines()
    listed = [line for line in lines if 'Listing image folder' in line]
    self.assertLen(listed, 1)
    self.assertTrue(listed[0].startswith('[worker 0]'), listed[0])
    self.assertTrue(any(line.startswith('[worker 1]') and 'Read the index of image folder' in line
                        for line in lines), proc.stderr[-3000:])

  def test_a_worker_without_an_index_lists_and_writes_nothing(self):
    root = helpers.write_image_folder(self.create_tempdir().full_path, per_class=6)
    index_dir = self.create_tempdir().full_path
    datasets.load(_config(root, index_dir), input_size=16, prepare=False)
    self.assertEqual(os.listdir(index_dir), [])


_KILL_AT = {
    # os.open of the 5th image: in the middle of the listing
    'listing': 'real = folder.file_problem\n'
               'calls = []\n'
               'def hook(path):\n'
               '  calls.append(path)\n'
               '  if len(calls) == 5:\n'
               '    os.kill(os.getpid(), signal.SIGKILL)\n'
               '  return real(path)\n'
               'folder.file_problem = hook\n',
    # the index's bytes are written, not yet synced or renamed
    'writing': 'real = os.fsync\n'
               'def hook(fd):\n'
               '  os.kill(os.getpid(), signal.SIGKILL)\n'
               'os.fsync = hook\n',
    # synced under its temporary name, not yet renamed
    'renaming': 'def hook(src, dst):\n'
                '  os.kill(os.getpid(), signal.SIGKILL)\n'
                'os.replace = hook\n',
}


class KillTest(tf.test.TestCase, parameterized.TestCase):
  """kill -9 of a process while it lists a folder or writes its index."""

  @parameterized.parameters(*_KILL_AT)
  def test_a_kill_leaves_no_index_and_the_next_start_lists_cleanly(self, where):
    root = helpers.write_image_folder(self.create_tempdir().full_path, per_class=6)
    index_dir = self.create_tempdir().full_path
    script = ('import os, signal, sys\n'
              'from research.core import config as config_lib\n'
              'from research.data import folder\n'
              f'{_KILL_AT[where]}'
              f'c = config_lib.base("cnn", "folder:{root}").dataset\n'
              f'c.index_dir = "{index_dir}"\n'
              'folder.list_images(c)\n')
    proc = subprocess.run([sys.executable, '-c', script], cwd=helpers.ROOT, capture_output=True,
                          text=True, timeout=120)
    self.assertEqual(proc.returncode, -9, proc.stderr[-2000:])
    config = _config(root, index_dir)
    path = folder.index_path(config)
    self.assertFalse(os.path.exists(path))
    with self.assertLogs(level='INFO') as logs:
      listing = folder.list_images(config)
    self.assertEmpty(_index_warnings(logs))
    self.assertEqual(listing.index, path)
    self.assertEqual(os.listdir(index_dir), [os.path.basename(path)])  # leftovers removed
    self.assertTrue(folder.list_images(config).from_index)


class PrepareTest(tf.test.TestCase):

  def test_prepare_writes_the_index_and_then_finds_it_up_to_date(self):
    root = helpers.write_image_folder(self.create_tempdir().full_path, per_class=6)
    index_dir = self.create_tempdir().full_path
    config = _config(root, index_dir)
    lines = prepare.prepare(config)
    path = folder.index_path(config)
    self.assertEqual(lines[-1], f'  index: {path} (written)')
    self.assertRegex('\n'.join(lines), r'train: 16 images, [\d.]+ KiB')
    self.assertEqual(prepare.prepare(config)[-1], f'  index: {path} (up to date)')

  def test_launch_prepare_takes_an_index_dir_and_a_run_reads_its_index(self):
    root = helpers.write_image_folder(self.create_tempdir().full_path, per_class=6)
    index_dir = self.create_tempdir().full_path
    proc = helpers.run_cli('launch.prepare', f'--dataset=folder:{root}',
                           f'--index_dir={index_dir}')
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertRegex(proc.stdout, rf'index: {re.escape(index_dir)}/.*\.index \(written\)')
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    run = ('--model=cnn', '--config.model.input_size=16', '--config.batch_size=8',
           '--config.num_train_steps=2', '--config.steps_per_loop=1',
           '--config.eval_batch_size=8', '--config.image_grid_size=0',
           f'--config.dataset.index_dir={index_dir}', f'--dataset=folder:{root}',
           f'--workdir={workdir}')
    trained = helpers.run_forked('launch.train', *run)
    self.assertEqual(trained.returncode, 0, trained.stderr[-2000:])
    self.assertIn('Read the index of image folder', trained.stderr)
    self.assertNotIn('Listing image folder', trained.stderr)
    # A file added: the resume lists the folder again (one line) and refuses the new data.
    dog = os.path.join(root, 'train', 'dog')
    shutil.copy(os.path.join(dog, '0.jpg'), os.path.join(dog, 'new.jpg'))
    config_before = outputs.read_json(os.path.join(workdir, 'config.json'))
    checkpoints_before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
    resumed = helpers.run_forked('launch.train', *run, '--config.num_train_steps=4')
    self.assertEqual(resumed.returncode, 2, resumed.stderr[-2000:])
    self.assertRegex(resumed.stderr, r'Not using the index .*\(train/dog gained or lost files')
    self.assertRegex(helpers.error_line(resumed),
                     r'^error: workdir .* holds a run on other data \(splits, version differ')
    self.assertEqual(outputs.read_json(os.path.join(workdir, 'config.json')), config_before)
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'checkpoints'))),
                     checkpoints_before)


def _pack_config(root, tmp, **dataset):
  return _config(root, os.path.join(tmp, 'index'), data_dir=os.path.join(tmp, 'data'), **dataset)


def _batches(data, steps=6):
  train = [tuple(t.numpy() for t in b) for b in pipeline.train_dataset(data.train, 8, 0).take(
      steps)]
  test = [tuple(t.numpy() for t in b) for b in pipeline.eval_dataset(data.test, 8)]
  return train + test


class PackTest(tf.test.TestCase):
  """A folder packed into ArrayRecord shards reads as the folder itself."""

  def setUp(self):
    super().setUp()
    self.root = helpers.write_image_folder(self.create_tempdir().full_path, per_class=12)
    self.tmp = self.create_tempdir().full_path
    os.makedirs(os.path.join(self.tmp, 'data'))
    self.config = _pack_config(self.root, self.tmp, validation_size=4)

  def _load(self):
    return datasets.load(self.config, input_size=24)

  def test_the_pack_gives_the_folders_batches_and_fingerprint(self):
    files = self._load()
    self.assertIsInstance(files.train, sources.FileSource)
    lines = prepare.prepare(self.config, packed=True)
    self.assertRegex(lines[-1], r'pack: .*/image_folders/\w+-[0-9a-f]{16} \(2 shards written, 0 '
                                r'kept; [\d.]+ MiB of files in [\d.]+s, \d+ MiB/s\)$')
    with self.assertLogs(level='INFO') as logs:
      packed = self._load()
    self.assertRegex('\n'.join(logs.output), 'Reading image folder .* from its ArrayRecord pack')
    self.assertIsInstance(packed.train, sources.RecordSource)
    self.assertEqual(packed.fingerprint, files.fingerprint)
    for a, b in zip(_batches(files), _batches(packed), strict=True):
      for x, y in zip(a, b):
        self.assertAllEqual(x, y)
    self.assertRegex(prepare.prepare(self.config, packed=True)[-1], r'\(up to date\)$')

  def test_a_changed_folder_is_read_from_its_files_until_packed_again(self):
    prepare.prepare(self.config, packed=True)
    dog = os.path.join(self.root, 'train', 'dog')
    shutil.copy(os.path.join(dog, '0.jpg'), os.path.join(dog, 'new.jpg'))
    self.assertIsInstance(self._load().train, sources.FileSource)
    prepare.prepare(self.config, packed=True)
    self.assertIsInstance(self._load().train, sources.RecordSource)

  def test_a_kill_while_packing_leaves_no_pack_and_packing_again_keeps_whole_shards(self):
    script = ('import os, signal\n'
              'from research.core import config as config_lib\n'
              'from research.data import arrayrecord, pack, prepare\n'
              'pack._TARGET_SHARD_BYTES = 4096  # a shard per few files\n'
              'real, calls = arrayrecord.write_shard, []\n'
              'def hook(path, records, *args):\n'
              '  calls.append(path)\n'
              '  def dying(records):  # the fourth shard: killed after its first record\n'
              '    yield next(records)\n'
              '    os.kill(os.getpid(), signal.SIGKILL)\n'
              '  return real(path, dying(records) if len(calls) == 4 else records, *args)\n'
              'arrayrecord.write_shard = hook\n'
              f'c = config_lib.base("cnn", "folder:{self.root}").dataset\n'
              f'c.update(index_dir="{self.config.index_dir}", data_dir="{self.config.data_dir}")\n'
              'prepare.prepare(c, packed=True)\n')
    proc = subprocess.run([sys.executable, '-c', script], cwd=helpers.ROOT, capture_output=True,
                          text=True, timeout=120)
    self.assertEqual(proc.returncode, -9, proc.stderr[-2000:])
    files = self._load()
    self.assertIsInstance(files.train, sources.FileSource)  # no manifest: no pack is read
    listing = folder.list_images(self.config)
    directory = pack.pack_dir(self.config, listing)
    names = os.listdir(directory)
    self.assertLen([n for n in names if not n.startswith('.')], 3)  # 3 whole shards
    self.assertLen([n for n in names if n.startswith('.')], 1)  # the fourth, never renamed
    with mock.patch.object(pack, '_TARGET_SHARD_BYTES', 4096):
      line = prepare.prepare(self.config, packed=True)[-1]
    self.assertRegex(line, r'\((\d+) shards written, 3 kept;')
    self.assertEqual(sorted(n for n in os.listdir(directory) if n.startswith('.')), [])
    packed = self._load()
    self.assertIsInstance(packed.train, sources.RecordSource)
    for a, b in zip(_batches(files), _batches(packed), strict=True):
      for x, y in zip(a, b):
        self.assertAllEqual(x, y)

  def test_a_tfds_dataset_is_not_packed(self):
    with self.assertRaisesRegex(UserError, r'^--pack packs an image folder'):
      prepare.prepare(config_lib.base('cnn', 'mnist').dataset, packed=True)

  def test_runs_on_the_pack_and_on_the_files_end_with_the_same_weights(self):
    run = ('--model=cnn', '--config.model.input_size=16', '--config.batch_size=8',
           '--config.num_train_steps=4', '--config.steps_per_loop=2',
           '--config.eval_batch_size=8', '--config.image_grid_size=0', '--deterministic',
           f'--config.dataset.index_dir={self.config.index_dir}', f'--dataset=folder:{self.root}')
    files = os.path.join(self.tmp, 'files')
    proc = helpers.run_cli('launch.train', *run, f'--workdir={files}')
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    # The runs after the first fork from the command server, without the imports' cost.
    prepared = helpers.run_forked(
        'launch.prepare', f'--dataset=folder:{self.root}', f'--index_dir={self.config.index_dir}',
        f'--data_dir={self.config.data_dir}', '--pack')
    self.assertEqual(prepared.returncode, 0, prepared.stderr[-2000:])
    self.assertIn('pack: ', prepared.stdout)
    packed = os.path.join(self.tmp, 'packed')
    proc = helpers.run_forked('launch.train', *run, f'--data_dir={self.config.data_dir}',
                              f'--workdir={packed}')
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertIn('from its ArrayRecord pack', proc.stderr)
    self.assertEqual(layout.read_results(packed)['weights_digest'],
                     layout.read_results(files)['weights_digest'])


class DigitsFolderTest(tf.test.TestCase):
  """Real MNIST digits saved at varied sizes on non-square canvases: the digits style
  (letterboxed whole images) learns them as digits, where photographs' crops cut them."""

  def test_400_steps_of_the_digits_style_reach_95_percent(self):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    data_dir = helpers.require_real_data()
    root = self.create_tempdir().full_path
    for split, source, count, seed in (('train', 'train', 6000, 0), ('test', 'test', 2000, 1)):
      examples = tfds.as_numpy(tfds.load('mnist', split=f'{source}[:{count}]',
                                         data_dir=data_dir, batch_size=-1))
      helpers.write_digit_folder(root, examples['image'][..., 0], examples['label'], split,
                                 seed=seed, centred=True)
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    proc = helpers.run_cli('launch.train', f'--config=configs/default.py:cnn,folder:{root},digits',
                           '--config.model.standardize=True', '--config.model.input_size=32',
                           '--config.num_train_steps=400', f'--workdir={workdir}', timeout=900)
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    info = outputs.read_json(os.path.join(workdir, 'data_info.json'))
    self.assertEqual(info['fingerprint']['crop']['fit'], 'letterbox')
    self.assertEqual(info['image_shape'], [32, 32, 1])
    self.assertGreaterEqual(layout.read_results(workdir)['test_accuracy'], 0.95)


if __name__ == '__main__':
  tf.test.main()
