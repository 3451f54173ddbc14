"""launch.predict at scale: directories and patterns, batches, CSV output, plain-word errors and
the SavedModel, on one tiny mock-data run exported once."""

import csv
import os
import re
import shutil
import tempfile

from absl.testing import parameterized
import numpy as np
from PIL import Image
import tensorflow as tf

from research.apps import export
from research.apps import predict
from research.core.errors import UserError
from research.train import trainer
from tests import helpers


def _image(path, seed, size=(28, 28), colour=False):
  shape = size + (3,) if colour else size
  data = np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)
  Image.fromarray(data).save(path)
  return path


class PredictTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix='test-predict-')
    cls.workdir = os.path.join(cls.tmp, 'run')
    with helpers.mock_tfds():
      trainer.train_and_evaluate(helpers.tiny_config(num_train_steps=2), cls.workdir)
    cls.exported = os.path.join(cls.tmp, 'export')
    cls.names = export.export(cls.workdir, cls.exported)['class_names']
    # A tree: images at two depths, of several sizes and formats, beside files to ignore.
    cls.images = os.path.join(cls.tmp, 'images')
    os.makedirs(os.path.join(cls.images, 'sub', 'deeper'))
    cls.files = [
        _image(os.path.join(cls.images, 'a.png'), 0),
        _image(os.path.join(cls.images, 'b.JPG'), 1, (40, 31), colour=True),
        _image(os.path.join(cls.images, 'sub', 'c.bmp'), 2),
        _image(os.path.join(cls.images, 'sub', 'd.gif'), 3, (17, 50)),
        _image(os.path.join(cls.images, 'sub', 'deeper', 'e.jpeg'), 4, colour=True),
        _image(os.path.join(cls.images, 'sub', 'deeper', 'f.png'), 5, (60, 60)),
        _image(os.path.join(cls.images, 'sub', 'deeper', 'g.png'), 6),
    ]
    for name in ('notes.txt', os.path.join('sub', 'labels.csv'), os.path.join('sub', 'README')):
      with open(os.path.join(cls.images, name), 'w') as f:
        f.write('not an image')

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _bad_files(self):
    """name → (path, the plain-word error it must get)."""
    tmp = self.create_tempdir().full_path
    with open(self.files[0], 'rb') as f:
      data = f.read()
    bad = {'truncated': ('cut.png', data[:len(data) // 2], predict.NOT_AN_IMAGE),
           'text': ('notes.png', b'not an image', predict.NOT_AN_IMAGE),
           'empty': ('empty.png', b'', 'empty file'),
           'missing': ('missing.png', None, 'cannot read: no such file')}
    out = {}
    for key, (name, content, message) in bad.items():
      path = os.path.join(tmp, name)
      if content is not None:
        with open(path, 'wb') as f:
          f.write(content)
      out[key] = (path, message)
    return out

  def test_directory_is_searched_recursively_and_other_files_counted(self):
    paths, ignored = predict.expand_inputs([self.images])
    self.assertEqual(paths, sorted(self.files))
    self.assertEqual(ignored, 3)

  def _linked_tree(self):
    """images/{a.png, sub/b.png} and outside/c.png."""
    tmp = self.create_tempdir().full_path
    root, outside = os.path.join(tmp, 'images'), os.path.join(tmp, 'outside')
    os.makedirs(os.path.join(root, 'sub'))
    os.makedirs(outside)
    files = [_image(os.path.join(root, 'a.png'), 0), _image(os.path.join(root, 'sub', 'b.png'), 1)]
    return root, outside, files, _image(os.path.join(outside, 'c.png'), 2)

  def test_a_link_back_up_the_tree_is_not_followed_and_one_elsewhere_is(self):
    root, outside, files, linked = self._linked_tree()
    os.symlink('..', os.path.join(root, 'sub', 'loop'))  # back to images/: a loop
    os.symlink(outside, os.path.join(root, 'elsewhere'))
    paths, ignored = predict.expand_inputs([root])
    self.assertEqual(paths, sorted(files + [os.path.join(root, 'elsewhere', 'c.png')]))
    self.assertEqual(ignored, 0)
    self.assertTrue(os.path.samefile(paths[1], linked))

  def test_a_directory_reached_twice_is_listed_once_under_its_own_path(self):
    root, _, files, _ = self._linked_tree()
    os.symlink(os.path.join(root, 'sub'), os.path.join(root, 'again'))
    self.assertEqual(predict.expand_inputs([root]), (files, 0))

  def test_glob_pattern_is_expanded_to_its_images(self):
    pattern = os.path.join(self.images, 'sub', '*', '*.png')
    paths, ignored = predict.expand_inputs([pattern, self.files[0]])
    self.assertEqual(paths, [self.files[5], self.files[6], self.files[0]])
    self.assertEqual(ignored, 0)

  @parameterized.named_parameters(
      ('empty_directory', 'empty', 'directory holds no image file'),
      ('directory_without_images', 'text_only', 'directory holds no image file'),
      ('pattern_without_images', os.path.join('text_only', '*'), 'pattern matches no image file'))
  def test_input_without_images_is_refused(self, name, message):
    tmp = self.create_tempdir()
    tmp.mkdir('empty')
    tmp.mkdir('text_only').create_file('notes.txt', content='not an image')
    with self.assertRaisesRegex(UserError, message):
      predict.run([os.path.join(tmp.full_path, name)], workdir=self.workdir)

  def test_empty_directory_exits_2_with_one_line(self):
    empty = self.create_tempdir().full_path
    proc = helpers.run_forked('launch.predict', f'--workdir={self.workdir}', empty)
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
    self.assertIn('directory holds no image file', helpers.error_line(proc))

  @parameterized.named_parameters(
      ('neither', {}),
      ('both', {'workdir': 'run', 'saved_model': 'export'}))
  def test_exactly_one_model_source(self, kwargs):
    kwargs = {k: os.path.join(self.tmp, v) for k, v in kwargs.items()}
    with self.assertRaisesRegex(UserError, 'exactly one of --workdir'):
      predict.run([self.files[0]], **kwargs)

  @parameterized.parameters('truncated', 'text', 'empty', 'missing')
  def test_bad_file_gets_plain_words_and_the_rest_are_classified(self, kind):
    path, message = self._bad_files()[kind]
    results = predict.run([self.files[0], path, self.files[1]], workdir=self.workdir,
                          batch_size=2)
    self.assertEqual([r.path for r in results], [self.files[0], path, self.files[1]])
    self.assertEqual(results[1].error, message)
    self.assertEqual(results[1].top, [])
    for r in (results[0], results[2]):
      self.assertEqual(r.error, '')
      self.assertLen(r.top, 3)

  def test_csv_has_one_row_per_file_and_failures_exit_nonzero(self):
    bad = self._bad_files()
    out = os.path.join(self.create_tempdir().full_path, 'p.csv')
    pattern = os.path.join(self.images, 'sub', '*', '*.png')  # unexpanded: no shell here
    proc = helpers.run_forked(
        'launch.predict', f'--workdir={self.workdir}', f'--output={out}', '--top_k=2',
        '--batch_size=3', pattern, self.images, bad['text'][0], bad['missing'][0])
    self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
    self.assertEqual(proc.stdout, '')
    self.assertIn('2 of 11 file(s) could not be classified', helpers.error_line(proc))
    with open(out) as f:
      rows = list(csv.reader(f))
    self.assertEqual(rows[0], ['path', 'class_1', 'probability_1', 'class_2', 'probability_2',
                               'error'])
    expected = {r.path: r for r in predict.predict(self.workdir, self.files, top_k=2)}
    body = rows[1:]
    self.assertEqual([r[0] for r in body], [self.files[5], self.files[6]] + sorted(self.files)
                     + [bad['text'][0], bad['missing'][0]])
    for row in body[:-2]:
      want = expected[row[0]].top
      self.assertEqual([row[1], row[3]], [name for name, _ in want])
      self.assertAllClose([float(row[2]), float(row[4])], [p for _, p in want], atol=1e-6)
      self.assertEqual(row[5], '')
    self.assertEqual(body[-2][1:], ['', '', '', '', predict.NOT_AN_IMAGE])
    self.assertEqual(body[-1][1:], ['', '', '', '', 'cannot read: no such file'])

  def test_cmyk_jpeg_is_classified_by_the_grey_model_and_its_export(self):
    # libjpeg turns a four-component (CMYK) JPEG into colour but not into grey.
    path = os.path.join(self.create_tempdir().full_path, 'cmyk.jpg')
    Image.open(self.files[1]).convert('CMYK').save(path, 'JPEG')
    from_checkpoint = predict.predict(self.workdir, [path], top_k=10)[0]
    self.assertEqual(from_checkpoint.error, '')
    served = tf.saved_model.load(self.exported).signatures['serving_default'](
        images=tf.stack([tf.io.read_file(path)]))
    self.assertAllClose(served['probabilities'][0],
                        helpers.class_probabilities(from_checkpoint, self.names), rtol=0,
                        atol=1e-5)
    by_export = predict.run([path], saved_model=self.exported, top_k=10)[0]
    self.assertEqual(by_export.error, '')

  @parameterized.parameters('workdir', 'saved_model')
  def test_bad_files_print_one_line_each_and_nothing_from_tensorflow(self, source):
    tmp = self.create_tempdir()
    good = os.path.join(tmp.full_path, 'good.jpg')
    Image.open(self.files[1]).save(good)
    with open(good, 'rb') as f:
      jpeg = f.read()
    with open(self.files[0], 'rb') as f:
      png = f.read()
    garbled = bytearray(jpeg)
    garbled[200:260] = b'\xff' * 60
    bad = {'text.png': b'not an image', 'cut.png': png[:len(png) // 2],
           'cut.jpg': jpeg[:len(jpeg) // 2], 'garbled.jpg': bytes(garbled), 'head.jpg': jpeg[:30]}
    paths = [tmp.create_file(name, content=data).full_path for name, data in bad.items()]
    model = self.workdir if source == 'workdir' else self.exported
    # TF_CPP_MIN_LOG_LEVEL as a user has it: the package's default, 1 (warnings and errors).
    proc = helpers.run_cli('launch.predict', f'--{source}={model}', *paths, good,
                           env={'TF_CPP_MIN_LOG_LEVEL': '1'})
    self.assertEqual(proc.returncode, 1, proc.stderr[-3000:])
    self.assertRegex(proc.stdout, r'^\S+good\.jpg: ')
    python_log = re.compile(r'^I\d{4} [\d:.]+ +\d+ \w+\.py:\d+\] ')
    lines = [line for line in proc.stderr.splitlines() if not python_log.match(line)]
    self.assertEqual(lines, [f'{p}: error: {predict.NOT_AN_IMAGE}' for p in paths]
                     + [f'error: {len(paths)} of {len(paths) + 1} file(s) could not be '
                        'classified (see above)'])

  @parameterized.parameters(2, 3, 256)
  def test_batched_equals_one_at_a_time(self, batch_size):
    one = predict.predict(self.workdir, self.files, top_k=10, batch_size=1)
    batched = predict.predict(self.workdir, self.files, top_k=10, batch_size=batch_size)
    for a, b in zip(one, batched):
      self.assertEqual(a.path, b.path)
      self.assertAllClose(helpers.class_probabilities(a, self.names),
                          helpers.class_probabilities(b, self.names), rtol=0, atol=1e-6)

  def test_saved_model_equals_checkpoint(self):
    bad, _ = self._bad_files()['text']
    paths = self.files + [bad]
    from_checkpoint = predict.predict(self.workdir, paths, top_k=10, batch_size=4)
    served = predict.run(paths, saved_model=self.exported, top_k=10, batch_size=4)
    self.assertEqual(served[-1].error, predict.NOT_AN_IMAGE)
    for a, b in zip(from_checkpoint[:-1], served[:-1]):
      self.assertEqual(a.path, b.path)
      self.assertEqual(b.error, '')
      self.assertAllClose(helpers.class_probabilities(a, self.names),
                          helpers.class_probabilities(b, self.names), rtol=0, atol=1e-5)


if __name__ == '__main__':
  tf.test.main()
