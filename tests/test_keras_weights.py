"""Importing Keras Applications weights: equal logits, grey input, a new head, refusals, a run.

Nothing is downloaded: each Keras model is built with weights=None and its random weights are
saved in the HDF5 layout keras.applications caches (one file per model, shared by the tests).
The inputs are 32×32 (Keras accepts any size without pretrained weights; VGG's fc1 then has
512 inputs instead of 25,088, the same code path) and two images per comparison.
"""

import os
import shutil
import tempfile
from unittest import mock

from absl.testing import parameterized
import h5py
import keras
import ml_collections
from keras.src.legacy.saving import legacy_h5_format
import numpy as np
import tensorflow as tf

from research import models
from research.apps import export
from research.core import checkpoints
from research.core import outputs
from research.core.errors import UserError
from research.data import preprocess
from research.models import blocks
from research.train import init_from
from research.train import keras_weights
from research.train import trainer
from tests import helpers

_APPS = {'vgg16': keras.applications.VGG16, 'vgg19': keras.applications.VGG19,
         'resnet50': keras.applications.ResNet50}
_SIZE = 32


def _model_config(kind, **fields):
  config = models.default_config(kind)
  config.update({'input_size': _SIZE, 'preprocessing': 'caffe', **fields})
  return config


def _images(channels=3, seed=0):
  """Two noise images, the second darker: a net tells them apart even with random weights."""
  images = np.random.default_rng(seed).integers(0, 256, (2, _SIZE, _SIZE, channels), np.uint8)
  images[1] //= 4
  return images


def _ours(kind, num_classes=1000, channels=3, path=None, **fields):
  """Our model of `kind`, built, with the file of `kind` (or `path`) imported."""
  model, _ = models.build_model(_model_config(kind, **fields), num_classes,
                                (_SIZE, _SIZE, channels))
  source = keras_weights.resolve(path or KerasWeightsTest.files[kind])
  keras_weights.load(source, model, tf.distribute.get_strategy())
  return model


def _logits(model, images):
  return model(preprocess.preprocess(images, input_size=_SIZE), training=False).numpy()


class KerasWeightsTest(tf.test.TestCase, parameterized.TestCase):
  files = {}
  keras_models = {}

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix='keras-weights-')
    keras.utils.set_random_seed(1)
    for kind, app in _APPS.items():
      model = app(weights=None, input_shape=(_SIZE, _SIZE, 3), classifier_activation=None)
      _randomise(model)
      cls.files[kind] = os.path.join(cls.root, f'{kind}.h5')
      with h5py.File(cls.files[kind], 'w') as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
      cls.keras_models[kind] = model

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    cls.keras_models.clear()
    super().tearDownClass()

  def _theirs(self, kind, images):
    x = keras.applications.imagenet_utils.preprocess_input(images.astype(np.float32),
                                                           mode='caffe')
    return self.keras_models[kind](x, training=False).numpy()

  @parameterized.parameters('vgg16', 'vgg19', 'resnet50')
  def test_logits_equal_keras_applications(self, kind):
    images = _images()
    theirs = self._theirs(kind, images)
    ours = _logits(_ours(kind), images)
    scale = np.abs(theirs).max()
    print(kind, 'max |difference| / max |logit|:', np.abs(ours - theirs).max() / scale, scale)
    # Logits that tell the images apart, far beyond the tolerance.
    self.assertGreater(np.abs(theirs[0] - theirs[1]).max(), 1e-2 * scale)
    self.assertAllClose(ours, theirs, rtol=1e-5, atol=1e-5 * scale)

  @parameterized.parameters('vgg16', 'resnet50')
  def test_grey_input_sums_the_first_kernels_over_colour(self, kind):
    images = _images(channels=1)
    ours = _ours(kind, channels=1)
    # Keras' model fed the grey image in all three channels, less the means' average (what our
    # grey input subtracts), is the summed kernel's convolution exactly, borders included.
    grey = images.astype(np.float32) - sum(blocks.CAFFE_MEAN_BGR) / 3
    theirs = self.keras_models[kind](np.repeat(grey, 3, axis=-1), training=False).numpy()
    self.assertAllClose(_logits(ours, images), theirs, rtol=1e-5,
                        atol=1e-5 * np.abs(theirs).max())
    first = self.keras_models[kind].get_layer('conv1_conv' if kind == 'resnet50'
                                              else 'block1_conv1').kernel.numpy()
    kernel = (ours.stack[1].conv if kind == 'resnet50' else ours.stack[1].convs[0].conv).kernel
    self.assertAllClose(kernel, first.sum(axis=2, keepdims=True))

  def test_another_class_count_gets_a_new_head(self):
    fresh = _ours('resnet50', num_classes=10)
    loaded = _ours('resnet50')
    self.assertEqual(tuple(fresh.stack[-1].dense.kernel.shape), (2048, 10))
    stage4 = [{layer.name: layer for layer in m.stack}['stage4'] for m in (fresh, loaded)]
    for a, b in zip(stage4[0].weights, stage4[1].weights):
      self.assertAllEqual(a, b)
    with self.assertLogs(level='INFO') as logs:
      _ours('vgg16', num_classes=10)
    self.assertIn('fc1, fc2 from', '\n'.join(logs.output))
    self.assertIn('; re-initialised logits.', '\n'.join(logs.output))

  def test_vgg_at_another_input_size_starts_fc1_fresh(self):
    model, _ = models.build_model(_model_config('vgg16', input_size=64), 1000, (64, 64, 3))
    fc2 = model.stack[-2].dense.kernel.numpy()
    with self.assertLogs(level='INFO') as logs:
      keras_weights.load(keras_weights.resolve(self.files['vgg16']), model,
                         tf.distribute.get_strategy())
    self.assertRegex('\n'.join(logs.output), r'Loaded block1, block2, block3, block4, block5, '
                     r'fc2, logits from .*vgg16.h5; re-initialised fc1\.')
    self.assertNotAllClose(model.stack[-2].dense.kernel, fc2)  # fc2 and the head loaded
    self.assertAllEqual(model.stack[-2].dense.kernel,
                        self.keras_models['vgg16'].get_layer('fc2').kernel)

  def test_file_without_the_top(self):
    path = os.path.join(self.create_tempdir().full_path, 'resnet50_notop.h5')
    shutil.copy(self.files['resnet50'], path)
    with h5py.File(path, 'a') as f:
      del f['predictions']
      names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs['layer_names']]
      f.attrs['layer_names'] = [n.encode() for n in names if n != 'predictions']
    source = keras_weights.resolve(path)
    self.assertEqual((source.kind, source.top), ('resnet50', False))
    images = _images()
    ours = _ours('resnet50', path=path)
    reference = _ours('resnet50')
    features = []
    for m in (ours, reference):
      x = preprocess.preprocess(images, input_size=_SIZE)
      for layer in m.stack[:-1]:  # all but the head
        x = layer(x, training=False)
      features.append(x)
    self.assertAllEqual(*features)
    self.assertNotAllClose(_logits(ours, images), _logits(reference, images))

  def test_keras_2_names(self):
    # The cached files were written by Keras 2: names as bytes, weights named 'kernel:0'.
    path = os.path.join(self.create_tempdir().full_path, 'vgg16_keras2.h5')
    shutil.copy(self.files['vgg16'], path)
    with h5py.File(path, 'a') as f:
      names = list(f.attrs['layer_names'])
      f.attrs['layer_names'] = np.array([n.encode() for n in names], dtype='S')
      for name in names:
        group = f[name]
        weights = list(group.attrs['weight_names'])
        for w in weights:
          group.move(w, w + ':0')
        group.attrs['weight_names'] = np.array([(w + ':0').encode() for w in weights], dtype='S')
      self.assertIsInstance(f.attrs['layer_names'][0], bytes)
    images = _images()
    self.assertAllEqual(_logits(_ours('vgg16', path=path), images),
                        _logits(_ours('vgg16'), images))

  @parameterized.parameters('vgg16', 'vgg19', 'resnet50')
  def test_kind_is_read_from_the_file(self, kind):
    source = keras_weights.resolve(self.files[kind])
    self.assertEqual((source.kind, source.top), (kind, True))
    self.assertEqual(source.name, f'keras:{kind}:{self.files[kind]}')
    self.assertEqual(keras_weights.resolve(f'keras:{kind}:{self.files[kind]}'), source)

  def test_cached_file_is_found_in_keras_home(self):
    home = self.create_tempdir().full_path
    os.makedirs(os.path.join(home, 'models'))
    cached = os.path.join(home, 'models', 'vgg19_weights_tf_dim_ordering_tf_kernels.h5')
    os.symlink(self.files['vgg19'], cached)
    with mock.patch.dict(os.environ, {'KERAS_HOME': home}):
      self.assertEqual(keras_weights.resolve('keras:vgg19').path, os.path.abspath(cached))
      with self.assertRaisesRegex(UserError, (
          r"init_from keras:resnet50: no resnet50_weights_tf_dim_ordering_tf_kernels.h5 \(nor "
          r"its _notop\) in .*/models; nothing is downloaded here: run keras.applications."
          r"ResNet50\(weights='imagenet'\) where there is internet")):
        keras_weights.resolve('keras:resnet50')

  def test_is_keras(self):
    self.assertTrue(keras_weights.is_keras('keras:vgg16'))
    self.assertTrue(keras_weights.is_keras('/x/vgg16_weights_tf_dim_ordering_tf_kernels.h5'))
    self.assertFalse(keras_weights.is_keras('/runs/w/checkpoints/ckpt-300'))

  def test_refusals(self):
    vgg16 = self.files['vgg16']
    plain = os.path.join(self.create_tempdir().full_path, 'notes.h5')
    with open(plain, 'w') as f:
      f.write('not hdf5')
    modern = os.path.join(self.create_tempdir().full_path, 'm.weights.h5')
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save_weights(modern)
    for init, message in (
        ('keras:alexnet', r"names no Keras Applications model we import: use keras:vgg16\|"),
        (f'keras:vgg19:{vgg16}', r'holds vgg16 Keras Applications weights: pass another file '
                                 r'or keras:vgg16:PATH'),
        ('/nowhere/vgg16.h5', r"no file '/nowhere/vgg16.h5'"),
        (plain, r'is not an HDF5 file'),
        (modern, r"Keras 3's .weights.h5 names no layers")):
      with self.assertRaisesRegex(UserError, message):
        keras_weights.resolve(init)

  @parameterized.parameters(
      (dict(name='vgg19'), r'holds vgg16 weights, this run trains vgg19: pass --model=vgg16'),
      (dict(preprocessing=''), r'caffe-style input .* add --config.model.preprocessing=caffe'),
      (dict(width_divisor=2), r'another architecture \(model.width_divisor=2 here, 1 there\)'),
      (dict(batch_norm=True), r'model.batch_norm=True here, False there'))
  def test_config_refusals(self, fields, message):
    config = helpers.tiny_config('vgg16')
    config.model.update(preprocessing='caffe', input_size=_SIZE)
    config.model.update(fields)
    source = keras_weights.resolve(self.files['vgg16'])
    with self.assertRaisesRegex(UserError, message):
      keras_weights.check_config(source, config)

  def test_refused_through_init_from_before_anything_is_written(self):
    config = helpers.tiny_config('resnet50')
    config.init_from = self.files['resnet50']
    workdir = os.path.join(self.create_tempdir().full_path, 'w')
    with self.assertRaisesRegex(UserError, 'preprocessing=caffe'):
      init_from.prepare(config, workdir)
    self.assertFalse(os.path.exists(workdir))


class OlderRunTest(tf.test.TestCase):
  """A run saved before model.preprocessing existed is still a source to fine-tune from."""

  def test_missing_field_takes_its_preset_value(self):
    config = helpers.tiny_config('vgg16')
    saved = config.model.to_dict()
    del saved['preprocessing']
    source = init_from.Source('ckpt', '/runs/old', 'given',
                              ml_collections.ConfigDict({'model': saved}), {})
    init_from.check_architecture(source, config)  # no refusal
    config.model.preprocessing = 'caffe'
    with self.assertRaisesRegex(UserError, r'model.preprocessing="" there, "caffe" here'):
      init_from.check_architecture(source, config)


def _randomise(model):
  """Biases, and batch norms' statistics and affine parameters, away from 0 and 1, so that a
  weight mapped to the wrong layer, or a batch norm in training mode, changes the logits."""
  rng = np.random.default_rng(2)
  for layer in model.layers:
    if getattr(layer, 'bias', None) is not None:
      layer.bias.assign(rng.normal(0, 0.05, layer.bias.shape[0]))
    if isinstance(layer, keras.layers.BatchNormalization):
      n = layer.gamma.shape[0]
      layer.gamma.assign(rng.uniform(0.5, 1.5, n))
      layer.beta.assign(rng.normal(0, 0.2, n))
      layer.moving_mean.assign(rng.normal(0, 0.2, n))
      layer.moving_variance.assign(rng.uniform(0.5, 1.5, n))


class ImportedRunTest(tf.test.TestCase):
  """A run initialised from an imported VGG16 file (at 32×32: fc1 has 512 inputs) on grey 28×28
  mock digits: it trains, resumes bitwise and exports with the caffe input inside the
  SavedModel. VGG16 rather than ResNet50: the same import, traced in a fraction of the time."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix='keras-run-')
    model = keras.applications.VGG16(weights=None, input_shape=(_SIZE, _SIZE, 3))
    cls.path = os.path.join(cls.root, 'vgg16.h5')
    with h5py.File(cls.path, 'w') as f:
      legacy_h5_format.save_weights_to_hdf5_group(f, model)
    cls.grey_first = model.get_layer('block1_conv1').kernel.numpy().sum(axis=2, keepdims=True)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def _config(self, steps):
    config = helpers.tiny_config('vgg16', num_train_steps=steps, deterministic=True,
                                 init_from=f'keras:vgg16:{self.path}', freeze=('block1',))
    config.model.update(input_size=_SIZE, preprocessing='caffe')
    config.dataset.validation_size = 0
    config.augment.enabled = False
    return config

  def test_trains_resumes_bitwise_and_exports(self):
    straight, split = (os.path.join(self.root, name) for name in ('straight', 'split'))
    with helpers.mock_tfds(32):
      trainer.train_and_evaluate(self._config(4), straight)
      trainer.train_and_evaluate(self._config(2), split)
      trainer.train_and_evaluate(self._config(4), split)  # resumes at step 2
    results = [outputs.read_json(os.path.join(w, 'results.json')) for w in (straight, split)]
    self.assertEqual(results[0]['weights_digest'], results[1]['weights_digest'])
    self.assertEqual(results[1]['init_from'], f'keras:vgg16:{self.path}')
    self.assertEqual((results[0]['step'], results[1]['step']), (4, 4))
    _, _, model, _ = checkpoints.load_for_inference(split, 'latest')
    self.assertIsInstance(model.stack[0], blocks.Preprocess)
    self.assertAllEqual(model.stack[1].convs[0].conv.kernel, self.grey_first)  # frozen
    out = os.path.join(self.root, 'export')
    export.export(split, out, checkpoint='latest')
    served = tf.saved_model.load(out).signatures['serve_uint8']
    images = np.random.default_rng(3).integers(0, 256, (2, 28, 28, 1), np.uint8)
    expected = tf.nn.softmax(model(preprocess.preprocess(images, input_size=_SIZE),
                                   training=False))
    self.assertAllClose(served(images=tf.constant(images))['probabilities'], expected,
                        rtol=0, atol=1e-5)


if __name__ == '__main__':
  tf.test.main()
