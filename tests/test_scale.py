"""The ImageNet-shape rehearsal's parts (research/benchmark/scale.py): the folder it builds and
reuses, the training commands it watches, and its extrapolation."""

import os

import tensorflow as tf

from research.benchmark import scale
from research.core.errors import UserError
from research.data import folder


class BuildFolderTest(tf.test.TestCase):

  def test_layout_reuse_and_refusals(self):
    root = os.path.join(self.create_tempdir().full_path, 'r')
    total, seconds = scale.build_folder(root, 1200, classes=4, sides=(8, 12))
    self.assertGreater(seconds, 0)
    train = os.path.join(root, 'train')
    self.assertLen(os.listdir(train), 4)
    self.assertEqual(sum(len(os.listdir(os.path.join(train, c))) for c in os.listdir(train)),
                     1200)
    self.assertEqual(sum(len(files) for _, _, files in os.walk(os.path.join(root, 'val'))),
                     1200 // scale.VAL_EVERY)
    self.assertEqual(scale.build_folder(root, 1200, classes=4, sides=(8, 12)), (total, 0.0))
    with self.assertRaisesRegex(UserError, 'not a rehearsal folder of 2,400 images'):
      scale.build_folder(root, 2400, classes=4, sides=(8, 12))  # never written over
    self.assertEqual(scale.build_folder(root, 1200, classes=4, sides=(8, 12))[1], 0.0)
    foreign = self.create_tempdir()
    foreign.create_file('notes.txt')
    with self.assertRaisesRegex(UserError, 'holds files that are not a rehearsal folder'):
      scale.build_folder(foreign.full_path, 1200, classes=4)
    self.assertEqual(os.listdir(foreign.full_path), ['notes.txt'])
    a_file = foreign.create_file('not-a-folder', content='kept').full_path
    with self.assertRaisesRegex(UserError, 'is a file: give a new or empty folder'):
      scale.build_folder(a_file, 1200, classes=4)
    with open(a_file) as f:
      self.assertEqual(f.read(), 'kept')
    with self.assertRaisesRegex(UserError, 'cannot build the rehearsal folder in .*Not a '
                                'directory'):
      scale.build_folder(os.path.join(a_file, 'r'), 1200, classes=4)  # under a file


class CommandTest(tf.test.TestCase):

  def test_watches_a_real_run_to_its_first_step_evaluation_and_memory(self):
    root = os.path.join(self.create_tempdir().full_path, 'r')
    scale.build_folder(root, 1000, classes=4, sides=(16, 24))
    scratch = self.create_tempdir().full_path
    args = scale.train_args(f'folder:{root}', os.path.join(scratch, 'w'), 3,
                            os.path.join(scratch, 'index'), ['--config.batch_size=8'])
    result = scale.run_command(args, sample_seconds=0.2)
    self.assertEqual(result.status, 0, '\n'.join(result.tail))
    self.assertEqual(result.first_step, 1)
    self.assertBetween(result.to_first_step, 0.1, result.wall)
    self.assertEqual(result.eval_examples, 1000 // scale.VAL_EVERY)
    self.assertGreater(result.eval_seconds, 0)
    self.assertGreater(result.peak_rss_mb, 100)  # TensorFlow alone holds more
    self.assertNotEmpty(result.samples)
    self.assertEqual(max(step for step, _ in result.samples), 3)


class ExtrapolationTest(tf.test.TestCase):

  def test_the_stated_model(self):
    ext = scale.extrapolate(listing_seconds=10.0, files=400_000, threads=16, latency=1e-3)
    per_file = 10.0 / 400_000
    self.assertAllClose(ext['local_seconds'], per_file * scale.IMAGENET_FILES)
    self.assertAllClose(ext['network_seconds'] - ext['local_seconds'],
                        scale.IMAGENET_FILES * scale.REQUESTS_PER_FILE * 1e-3 / 16)
    self.assertAllClose(ext['index_check_network_seconds'], (2 * scale.CLASSES + 3) * 1e-3)
    self.assertEqual(folder.THREADS, 16)


if __name__ == '__main__':
  tf.test.main()
