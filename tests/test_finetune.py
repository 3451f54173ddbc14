"""Fine-tuning: a 5-class run starts from a 10-class run's weights, with frozen blocks.

The source trains a few steps on mock MNIST; the fine-tune runs read an image folder of 5
classes at MNIST's shape, so every layer but the classifier head carries over.
"""

import os
import shutil
import tempfile
from unittest import mock

from absl.testing import parameterized
import tensorflow as tf

from research import models
from research.core import checkpoints
from research.core import config as config_lib
from research.core import layout
from research.core.errors import UserError
from research.train import init_from
from research.train import setup as setup_lib
from research.train import trainer
from tests import helpers

_CLASSES = ('a', 'b', 'c', 'd', 'e')


def _small(config):
  # Batch norm: a frozen block's moving statistics must stay put too.
  config.model.filters = (8, 8)
  config.model.dense_units = (16,)
  config.model.batch_norm = True
  return config


def _weights(model):
  """Top-level layer name -> its weights as arrays (trainable and not)."""
  return {layer.name: [v.numpy() for v in layer.weights] for layer in model.stack}


class FineTuneTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    helpers.command_server()  # the refusals fork from it; its imports while the source trains
    cls.root = tempfile.mkdtemp(prefix='finetune-')
    cls.source = os.path.join(cls.root, 'source')
    with helpers.mock_tfds(64):
      trainer.train_and_evaluate(_small(helpers.tiny_config()), cls.source)
    cls.best = checkpoints.checkpoint_paths(
        layout.best_dir(layout.checkpoint_dir(cls.source)))[-1]
    model, _ = models.build_model(config_lib.load(cls.source).model, 10, (28, 28, 1))
    tf.train.Checkpoint(model=model).read(cls.best).expect_partial()
    cls.source_weights = _weights(model)
    cls.images = helpers.write_image_folder(os.path.join(cls.root, 'images'), _CLASSES,
                                            per_class=4)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def config(self, **overrides):
    """A 5-class fine-tune of the source at the source's input shape (28×28 grey)."""
    c = _small(helpers.tiny_config(dataset=f'folder:{self.images}'))
    c.dataset.channels = 1
    c.dataset.validation_size = 0
    c.model.input_size = 28
    c.init_from = self.source
    c.update(overrides)
    return c

  def test_loaded_layers_equal_the_source_before_the_first_step(self):
    workdir = self.create_tempdir().full_path
    run = setup_lib.setup(self.config(), workdir)
    self.addCleanup(run.lock.release)
    self.addCleanup(run.saver.close)
    self.assertEqual(int(run.step.numpy()), 0)
    self.assertEqual(int(run.optimizer.iterations.numpy()), 0)
    self.assertEqual(run.init_from, self.best)  # the source's best checkpoint
    new = _weights(run.model)
    for name, values in self.source_weights.items():
      if name == 'logits':
        continue
      for got, want in zip(new[name], values, strict=True):
        self.assertAllEqual(got, want, msg=name)
    self.assertEqual(new['logits'][0].shape, (16, 5))
    self.assertEqual(self.source_weights['logits'][0].shape, (16, 10))

  def test_trains_records_init_from_and_freezes(self):
    workdir = self.create_tempdir().full_path
    results = trainer.train_and_evaluate(self.config(freeze=('conv1',)), workdir)
    self.assertEqual(results['step'], 2)
    self.assertEqual(layout.read_results(workdir)['init_from'], self.best)
    self.assertEqual(config_lib.load(workdir).init_from, self.source)
    trained = checkpoints.load_for_inference(workdir)[2]
    after = _weights(trained)
    for got, want in zip(after['conv1'], self.source_weights['conv1'], strict=True):
      self.assertAllEqual(got, want)  # kernel, gamma, beta and the moving statistics
    for name in ('conv2', 'fc1'):
      self.assertNotAllEqual(after[name][0], self.source_weights[name][0], msg=name)

  def test_resume_does_not_load_init_from_again_and_keeps_freeze(self):
    workdir = self.create_tempdir().full_path
    trainer.train_and_evaluate(self.config(), workdir)
    with self.assertRaisesRegex(UserError, r"trained with freeze=\(\), not \('conv1',\): resume "
                                r'with --config.freeze="\(\)"'):
      trainer.train_and_evaluate(self.config(freeze=('conv1',), num_train_steps=3), workdir)
    with mock.patch.object(init_from, 'load', side_effect=AssertionError('loaded again')):
      results = trainer.train_and_evaluate(self.config(num_train_steps=3), workdir)
    self.assertEqual(results['step'], 3)
    self.assertEqual(results['init_from'], self.best)  # kept from the run that started

  def test_mirrored_over_two_cpu_devices(self):
    # Logical devices must be set before TensorFlow starts: a process of its own.
    workdir = self.create_tempdir().full_path
    proc = helpers.run_cli(
        'launch.train', '--config=configs/cnn_mnist.py', f'--workdir={workdir}',
        '--strategy=mirrored', '--num_cpu_devices=2', '--mixed_precision=float32',
        f'--config.dataset.name=folder:{self.images}', '--config.dataset.channels=1',
        '--config.dataset.validation_size=0', '--config.model.input_size=28',
        '--config.model.filters=(8, 8)', '--config.model.dense_units=(16,)',
        '--config.batch_size=8', '--config.num_train_steps=2', '--config.image_grid_size=0',
        '--config.model.standardize=False',
        f'--config.init_from={self.best}', "--config.freeze=('conv1',)")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn('Strategy mirrored with 2 replica(s)', proc.stderr)
    after = _weights(checkpoints.load_for_inference(workdir)[2])
    for got, want in zip(after['conv1'], self.source_weights['conv1'], strict=True):
      self.assertAllEqual(got, want)
    self.assertNotAllEqual(after['conv2'][0], self.source_weights['conv2'][0])

  def test_checkpoint_prefix(self):
    source = init_from.resolve(self.best)
    self.assertEqual((source.checkpoint, source.workdir, source.which),
                     (self.best, self.source, 'given'))

  def test_other_input_shape_refused_before_writing(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    with self.assertRaisesRegex(UserError, r'trained on \[28, 28, 1\] inputs, this run feeds '
                                r'\[28, 28, 3\]'):
      trainer.train_and_evaluate(self.config(dataset=dict(channels=3)), workdir)
    self.assertFalse(os.path.exists(workdir))

  def test_unknown_freeze_block_refused(self):
    with self.assertRaisesRegex(UserError, r"freeze names 'conv9', .*choose among conv1, "
                                r'pool1, conv2'):
      init_from.prepare(self.config(freeze=('conv9',)), None)

  @parameterized.named_parameters(
      ('architecture', 'SOURCE', 'is another architecture (model.dense_units=[16] there, [256] '
       'here, model.filters=[8, 8] there, [32, 64] here, model.standardize=false there, true '
       'here)'),
      ('missing', 'MISSING', 'is neither a directory nor a checkpoint'),
      ('not_a_run', 'EMPTY', 'holds no checkpoint of a training run'),
  )
  def test_refused_in_one_line(self, source, message):
    workdir = self.create_tempdir().full_path
    source = {'SOURCE': self.source, 'MISSING': os.path.join(self.root, 'nothing'),
              'EMPTY': self.create_tempdir().full_path}[source]
    proc = helpers.run_forked('launch.train', '--config=configs/cnn_mnist.py',
                              f'--workdir={workdir}', f'--config.init_from={source}')
    self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
    self.assertStartsWith(helpers.error_line(proc), 'error: ')
    self.assertIn(message, helpers.error_line(proc))
    self.assertNotIn('Traceback', proc.stderr)
    self.assertEqual(os.listdir(workdir), [])
