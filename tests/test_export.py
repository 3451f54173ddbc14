"""The serving export and the choice of checkpoint: one tiny mock-data run, exported once and
loaded by plain TensorFlow in a fresh process that cannot import this package."""

import json
import logging as std_logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from unittest import mock

from absl import logging
from absl.testing import parameterized
import numpy as np
from PIL import Image
import tensorflow as tf

from research import models
from research.apps import export
from research.apps import predict
from research.core import checkpoints
from research.core import config as config_lib
from research.core import outputs
from research.core.errors import UserError
from research.train import trainer
from tests import helpers

# Loads the export as a server would: a fresh interpreter, cwd and PYTHONPATH outside the repo,
# and an import hook that makes this package unimportable even through its editable install.
_SERVE = r'''
import json, sys
import numpy as np
class _Blocked:
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('research', 'launch', 'configs', 'tests'):
      raise ImportError('blocked ' + name)
sys.meta_path.insert(0, _Blocked())
import tensorflow as tf
out, files, uint8 = sys.argv[1], json.loads(sys.argv[2]), np.load(sys.argv[3])
try:
  import research  # noqa
  importable = True
except ImportError:
  importable = False
loaded = tf.saved_model.load(out)
data = [open(f, 'rb').read() for f in files]
by_bytes = loaded.signatures['serving_default'](images=tf.constant(data))
by_uint8 = loaded.signatures['serve_uint8'](images=tf.constant(uint8))
print(json.dumps({
    'importable': importable, 'type': type(loaded).__module__ + '.' + type(loaded).__name__,
    'signatures': sorted(loaded.signatures),
    'dtypes': {k: v.dtype.name for k, v in by_bytes.items()},
    'bytes': {k: v.numpy().tolist() for k, v in by_bytes.items() if k != 'class_name'},
    'names': [n.decode() for n in by_bytes['class_name'].numpy()],
    'uint8': {k: v.numpy().tolist() for k, v in by_uint8.items() if k != 'class_name'},
    'uint8_names': [n.decode() for n in by_uint8['class_name'].numpy()]}))
'''

_VARIANTS = ('png16', 'rgba', 'jpeg', 'big')


def _tree(root):
  """Every path under `root` (links not followed) with its size: what a refused or failed export
  must leave as it was."""
  found = []
  for directory, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(directory, name)
      found.append((os.path.relpath(path, root), os.lstat(path).st_size))
  return sorted(found)


def _write_images(directory):
  """One smooth 28×28 grey image (a blob, so JPEG barely changes it), its variants, and a
  colour image of another aspect (padded and resampled on its way to 28×28)."""
  y, x = np.mgrid[:28, :28]
  grey = (255 * np.exp(-((y - 12) ** 2 + (x - 15) ** 2) / 60.0)).astype(np.uint8)
  files = {name: os.path.join(directory, name + ext) for name, ext in (
      ('grey', '.png'), ('png16', '.png'), ('rgba', '.png'), ('jpeg', '.jpg'), ('big', '.png'),
      ('wide', '.png'))}
  Image.fromarray(grey).save(files['grey'])
  Image.fromarray(grey.astype(np.uint16) * 257).save(files['png16'])  # 16-bit grey PNG
  rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
  Image.fromarray(rgba, 'RGBA').save(files['rgba'])
  Image.fromarray(np.dstack([grey] * 3)).save(files['jpeg'], quality=95)
  Image.fromarray(grey).resize((3000, 3000), Image.NEAREST).save(files['big'], compress_level=1)
  wide = np.random.default_rng(0).integers(0, 256, (41, 97, 3)).astype(np.uint8)
  Image.fromarray(wide).save(files['wide'])
  return files


class ExportTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix='test-export-')
    cls.workdir = os.path.join(cls.tmp, 'run')
    # A checkpoint every step: ckpt-1..3 to choose from; best/ holds step 3 (the only eval).
    config = helpers.tiny_config(num_train_steps=3, checkpoint_every_steps=1)
    with helpers.mock_tfds():
      trainer.train_and_evaluate(config, cls.workdir)
    cls.files = _write_images(cls.tmp)
    cls.out = os.path.join(cls.tmp, 'export')
    cls.info = export.export(cls.workdir, cls.out)
    cls.names = cls.info['class_names']
    order = list(cls.files)
    cls.expected = dict(zip(order, (
        helpers.class_probabilities(r, cls.names)
        for r in predict.predict(cls.workdir, [cls.files[k] for k in order], top_k=10))))
    cls.uint8 = predict.decode_bytes(predict.read_bytes(cls.files['grey']),
                                     [28, 28, 1]).numpy()[None]
    np.save(os.path.join(cls.tmp, 'uint8.npy'), cls.uint8)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['TF_CPP_MIN_LOG_LEVEL'] = '2'
    proc = subprocess.run(
        [sys.executable, '-c', _SERVE, cls.out, json.dumps([cls.files[k] for k in order]),
         os.path.join(cls.tmp, 'uint8.npy')],
        cwd=tempfile.gettempdir(), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cls.served = json.loads(proc.stdout.strip().splitlines()[-1])
    cls.served_by_file = {k: i for i, k in enumerate(order)}

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _served(self, name):
    i = self.served_by_file[name]
    return (np.array(self.served['bytes']['probabilities'][i]),
            self.served['bytes']['class_index'][i], self.served['names'][i])

  def test_loads_with_plain_tensorflow_without_this_package_or_keras_objects(self):
    self.assertFalse(self.served['importable'])
    self.assertNotIn('keras', self.served['type'].lower())
    self.assertEqual(self.served['signatures'], ['serve_uint8', 'serving_default'])
    self.assertEqual(self.served['dtypes'], {'probabilities': 'float32', 'class_index': 'int32',
                                             'class_name': 'string'})

  @parameterized.parameters(*(('grey', 'wide') + _VARIANTS))
  def test_serving_default_equals_predict(self, name):
    probabilities, index, class_name = self._served(name)
    self.assertAllClose(probabilities, self.expected[name], rtol=0, atol=1e-5)
    self.assertEqual(index, int(np.argmax(probabilities)))
    self.assertEqual(class_name, self.names[index])

  @parameterized.parameters(*_VARIANTS)
  def test_variant_gives_the_grey_images_class(self, name):
    self.assertEqual(self._served(name)[1], self._served('grey')[1])

  def test_serve_uint8_equals_predict(self):
    self.assertAllClose(self.served['uint8']['probabilities'][0], self.expected['grey'], rtol=0,
                        atol=1e-5)
    self.assertEqual(self.served['uint8_names'][0], self._served('grey')[2])

  def test_export_records_config_class_names_and_checkpoint(self):
    extra = os.path.join(self.out, export.EXTRA_DIR)
    info = outputs.read_json(os.path.join(extra, export.INFO_FILE))
    self.assertEqual(info['checkpoint'],
                     os.path.join(self.workdir, 'checkpoints', 'best', 'ckpt-3'))
    self.assertEqual(info['class_names'], [str(i) for i in range(10)])
    self.assertEqual(outputs.read_json(os.path.join(extra, 'config.json')),
                     outputs.read_json(os.path.join(self.workdir, 'config.json')))

  @parameterized.parameters(('best', 'checkpoints/best/ckpt-3'), ('latest', 'checkpoints/ckpt-3'),
                            ('PATH', 'checkpoints/ckpt-1'), ('DIR', 'checkpoints/best/ckpt-3'))
  def test_checkpoint_choice(self, choice, expected):
    arg = {'PATH': os.path.join(self.workdir, 'checkpoints', 'ckpt-1'),
           'DIR': os.path.join(self.workdir, 'checkpoints', 'best')}.get(choice, choice)
    with self.assertLogs('absl', 'INFO') as logs:
      *_, model, path = checkpoints.load_for_inference(self.workdir, arg)
    self.assertEqual(path, os.path.join(self.workdir, expected))
    self.assertIn(path, '\n'.join(logs.output))
    # The weights are that checkpoint's: step 1's differ from step 3's.
    reader = tf.train.load_checkpoint(os.path.join(self.workdir, expected))
    # Keras saves each weight once, under the optimizer's references to it.
    saved = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map()]
    for v in model.trainable_variables:
      self.assertTrue(any(np.array_equal(v.numpy(), t) for t in saved), v.path)
    if choice == 'PATH':
      _, _, latest, _ = checkpoints.load_for_inference(self.workdir, 'latest')
      self.assertNotAllEqual(outputs.weights_digest(latest), outputs.weights_digest(model))

  def test_export_leaves_the_log_level_as_it_was(self):
    absl_logger = logging.get_absl_logger()
    level = absl_logger.level
    absl_logger.setLevel(std_logging.NOTSET)  # a process where nobody chose a level
    try:
      export.export(self.workdir, os.path.join(self.create_tempdir().full_path, 'out'))
      self.assertEqual(absl_logger.level, std_logging.NOTSET)
    finally:
      absl_logger.setLevel(level)

  def test_best_falls_back_to_latest_and_says_so(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    shutil.copytree(self.workdir, workdir)
    shutil.rmtree(os.path.join(workdir, 'checkpoints', 'best'))
    with self.assertLogs('absl', 'WARNING') as logs:
      path = checkpoints.load_for_inference(workdir)[3]
    self.assertEqual(path, os.path.join(workdir, 'checkpoints', 'ckpt-3'))
    self.assertIn('no best checkpoint', '\n'.join(logs.output))

  @parameterized.parameters('missing', 'empty_dir', 'other_model', 'no_checkpoint_yet')
  def test_bad_checkpoint_is_one_plain_line(self, case):
    workdir, arg = self.workdir, None
    if case == 'missing':
      arg = os.path.join(self.workdir, 'checkpoints', 'ckpt-99')
    elif case == 'empty_dir':
      arg = self.create_tempdir().full_path
    elif case == 'other_model':
      config = helpers.tiny_config()
      config.model.dense_units = (7,)
      other, _ = models.build_model(config.model, 10, [28, 28, 1])
      arg = tf.train.Checkpoint(model=other).write(
          os.path.join(self.create_tempdir().full_path, 'ckpt-1'))
    else:
      workdir = os.path.join(self.create_tempdir().full_path, 'run')
      shutil.copytree(self.workdir, workdir, ignore=shutil.ignore_patterns('checkpoints'))
    with self.assertRaises(UserError) as raised:
      checkpoints.load_for_inference(workdir, arg or 'best')
    message = str(raised.exception)
    self.assertNotIn('\n', message)
    self.assertRegex(message, {'missing': r'does not exist: pass', 'empty_dir': r'holds no ch',
                               'other_model': r'belongs to another model.*: pass',
                               'no_checkpoint_yet': r'no checkpoint yet: train'}[case])
    for internal in ('Unresolved', '(root)', 'VARIABLE_VALUE', 'Op:'):
      self.assertNotIn(internal, message)

  def test_failed_overwrite_loses_nothing(self):
    parent = self.create_tempdir().full_path
    out = os.path.join(parent, 'out')
    shutil.copytree(self.out, out)
    before = _tree(out)
    with mock.patch.object(tf.saved_model, 'save', side_effect=OSError('disk full')):
      with self.assertRaises(OSError):
        export.export(self.workdir, out, overwrite=True)
    self.assertEqual(_tree(out), before)
    self.assertEqual(os.listdir(parent), ['out'])  # no staging directory left behind

  @parameterized.named_parameters(
      ('the_workdir', 'run', r'is the workdir of the run being exported'),
      ('its_parent', '.', r"holds '.*/run', the workdir of the run being exported"),
      ('its_checkpoints', 'run/checkpoints', r"lies inside the training workdir '.*/run'"),
      ('a_new_folder_inside_it', 'run/export', r"lies inside the training workdir '.*/run'"),
      ('inside_another_run', 'other/new', r"lies inside the training workdir '.*/other'"),
      ('a_folder_of_other_files', 'mine', r'holds files that are not an export'),
      ('an_export_beside_other_files', 'mixed', r'holds files that are not an export'),
      ('a_file', 'mine/keep.txt', r'is a file'),
      ('a_link', 'link', r'is a symbolic link'))
  def test_out_that_could_lose_more_than_an_export_is_refused(self, out, message):
    tmp = self.create_tempdir().full_path
    workdir = os.path.join(tmp, 'run')
    shutil.copytree(self.workdir, workdir)
    shutil.copytree(self.workdir, os.path.join(tmp, 'other'))
    os.makedirs(os.path.join(tmp, 'mine'))
    with open(os.path.join(tmp, 'mine', 'keep.txt'), 'w') as f:
      f.write('mine')
    shutil.copytree(self.out, os.path.join(tmp, 'mixed'))
    with open(os.path.join(tmp, 'mixed', 'notes.txt'), 'w') as f:
      f.write('mine too')
    os.symlink(self.out, os.path.join(tmp, 'link'))
    before = _tree(tmp)
    with self.assertRaisesRegex(UserError, '^--out .*' + message) as raised:
      export.export(workdir, os.path.join(tmp, out), overwrite=True)
    self.assertNotIn('\n', str(raised.exception))
    self.assertEqual(_tree(tmp), before)

  def test_previous_export_is_replaced_only_with_overwrite(self):
    out = os.path.join(self.create_tempdir().full_path, 'out')
    shutil.copytree(self.out, out)
    with self.assertRaisesRegex(UserError, r'already holds an export: pass another --out, or '
                                '--overwrite to replace it'):
      export.export(self.workdir, out, checkpoint='latest')
    export.export(self.workdir, out, checkpoint='latest', overwrite=True)
    info = outputs.read_json(os.path.join(out, export.EXTRA_DIR, export.INFO_FILE))
    self.assertEqual(info['checkpoint'], os.path.join(self.workdir, 'checkpoints', 'ckpt-3'))
    self.assertTrue(export.is_export(out))

  @parameterized.parameters(0o022, 0o027)
  def test_export_folder_follows_the_umask(self, mask):
    out = os.path.join(self.create_tempdir().full_path, 'out')
    previous = os.umask(mask)
    try:
      export.export(self.workdir, out)
    finally:
      os.umask(previous)
    self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o777 & ~mask)


class StreamedExportTest(tf.test.TestCase):

  def test_streamed_run_serves_predicts_centre_crop(self):
    # An image folder streams: files are centre-cropped (decode.eval_crop), not pad-resized.
    tmp = self.create_tempdir().full_path
    images = helpers.write_image_folder(os.path.join(tmp, 'pets'), per_class=4)
    config = config_lib.base('cnn', 'folder:' + images)
    config.update(dict(batch_size=4, eval_batch_size=4, num_train_steps=2, steps_per_loop=1,
                       log_every_steps=1, image_grid_size=0, mixed_precision='float32'))
    config.dataset.validation_size = 3
    config.model.input_size = 32
    trainer.train_and_evaluate(config, os.path.join(tmp, 'run'))
    info = export.export(os.path.join(tmp, 'run'), os.path.join(tmp, 'out'))
    self.assertEqual(info['pipeline'], 'stream')
    files = sorted(tf.io.gfile.glob(os.path.join(images, 'train', '*', '*')))
    served = tf.saved_model.load(os.path.join(tmp, 'out')).signatures['serving_default'](
        images=tf.stack([tf.io.read_file(f) for f in files]))
    expected = [helpers.class_probabilities(r, info['class_names'])
                for r in predict.predict(os.path.join(tmp, 'run'), files, top_k=10)]
    self.assertAllClose(served['probabilities'], expected, rtol=0, atol=1e-5)

  def test_grey_streamed_run_trains_on_and_serves_cmyk_jpegs(self):
    # libjpeg turns a four-component (CMYK) JPEG into colour but not into grey: each path
    # decodes it to colour first.
    tmp = self.create_tempdir().full_path
    images = helpers.write_image_folder(os.path.join(tmp, 'pets'), per_class=4)
    jpegs = sorted(tf.io.gfile.glob(os.path.join(images, 'train', '*', '*.jp*g')))
    for path in jpegs:
      Image.open(path).convert('CMYK').save(path, 'JPEG')
    config = config_lib.base('cnn', 'folder:' + images)
    config.update(dict(batch_size=4, eval_batch_size=4, num_train_steps=2, steps_per_loop=1,
                       log_every_steps=1, image_grid_size=0, mixed_precision='float32'))
    config.dataset.update(dict(validation_size=3, channels=1))
    config.model.input_size = 32
    run = os.path.join(tmp, 'run')
    trainer.train_and_evaluate(config, run)
    self.assertEqual(outputs.read_json(os.path.join(run, 'data_info.json'))['image_shape'],
                     [32, 32, 1])
    info = export.export(run, os.path.join(tmp, 'out'))
    served = tf.saved_model.load(os.path.join(tmp, 'out')).signatures['serving_default'](
        images=tf.stack([tf.io.read_file(f) for f in jpegs]))
    predicted = predict.predict(run, jpegs, top_k=10)
    self.assertEqual([r.error for r in predicted], [''] * len(jpegs))
    expected = [helpers.class_probabilities(r, info['class_names']) for r in predicted]
    self.assertAllClose(served['probabilities'], expected, rtol=0, atol=1e-5)


class ExportCliTest(tf.test.TestCase):
  """The entry points, run as processes: the refusals forked from a server that imports TF
  once, the export and the prediction fresh, as a user's, two at a time."""

  def test_refuses_bad_input_and_overwrites_only_when_asked(self):
    helpers.command_server()  # its imports meanwhile
    tmp = self.create_tempdir().full_path
    workdir = os.path.join(tmp, 'run')
    with helpers.mock_tfds():
      trainer.train_and_evaluate(
          helpers.tiny_config(num_train_steps=2, checkpoint_every_steps=1), workdir)
    empty_run = os.path.join(tmp, 'empty')
    shutil.copytree(workdir, empty_run, ignore=shutil.ignore_patterns('checkpoints'))
    out = os.path.join(tmp, 'out')
    export.export(workdir, out)  # a previous export, replaced below with --overwrite
    mine = os.path.join(tmp, 'mine')
    os.makedirs(mine)
    with open(os.path.join(mine, 'keep.txt'), 'w') as f:
      f.write('mine')
    image = os.path.join(workdir, 'inputs.png')

    def start(module, *args):
      return subprocess.Popen([sys.executable, '-m', module, *args], cwd=helpers.ROOT,
                              env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(proc):
      stdout, stderr = proc.communicate(timeout=300)
      return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    before = _tree(tmp)
    cases = [
        ([f'--workdir={workdir}', f'--out={out}'], r'already holds an export.*--overwrite'),
        ([f'--workdir={workdir}', f'--out={out}', '--overwrite',
          f'--checkpoint={workdir}/checkpoints/ckpt-99'], r'ckpt-99.* does not exist: pass'),
        ([f'--workdir={empty_run}', f'--out={tmp}/new'], r'holds no checkpoint yet'),
        ([f'--workdir={workdir}', f'--out={mine}', '--overwrite'], r'not an export'),
        ([f'--workdir={workdir}', f'--out={workdir}', '--overwrite'],
         r'is the workdir of the run being exported: pass a new folder outside it')]
    for args, pattern in cases:
      proc = helpers.run_forked('launch.export', *args)
      self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
      self.assertRegex(helpers.error_line(proc), '^error: .*' + pattern)
      self.assertNotIn('Traceback', proc.stderr)
    self.assertEqual(_tree(tmp), before)  # nothing written, no staging left over

    done = [start('launch.export', f'--workdir={workdir}', f'--out={out}', '--overwrite',
                  '--checkpoint=latest'),
            start('launch.predict', f'--workdir={workdir}', '--top_k=10',
                  f'--checkpoint={workdir}/checkpoints/ckpt-1', image)]
    exported, predicted = [finish(p) for p in done]
    self.assertEqual(exported.returncode, 0, exported.stderr[-2000:])
    info = outputs.read_json(os.path.join(out, export.EXTRA_DIR, export.INFO_FILE))
    self.assertEqual(info['checkpoint'], os.path.join(workdir, 'checkpoints', 'ckpt-2'))
    self.assertEqual(predicted.returncode, 0, predicted.stderr[-2000:])
    self.assertIn('checkpoints/ckpt-1', predicted.stderr)
    step1 = predict.predict(workdir, [image], top_k=10,
                            checkpoint=os.path.join(workdir, 'checkpoints', 'ckpt-1'))[0]
    self.assertIn(', '.join(f'{n}: {p:.1%}' for n, p in step1.top), predicted.stdout)


if __name__ == '__main__':
  tf.test.main()
