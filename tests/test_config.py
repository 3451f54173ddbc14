"""Config tests: presets, type checks, workdir compatibility, config files load."""

import os

from absl.testing import parameterized
import tensorflow as tf

from research import checkpoints
from research import config as config_lib
from research.errors import UserError
from tests import helpers


class ConfigTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters('cnn_mnist', 'cnn_dropout_mnist', 'cnn_fashion_mnist',
                            'alexnet_mnist', 'vgg16_mnist')
  def test_config_files_load_and_type_check(self, name):
    config = helpers.load_config(name)
    config_lib.check_types(config)
    with open(os.path.join(helpers.ROOT, 'configs', name + '.py')) as f:
      head = f.read(600)
    self.assertIn('Command: python -m launch.', head)  # big_vision style: command first
    self.assertIn('Reproduces:', head)

  def test_fashion_config_uses_fashion_and_flips(self):
    config = helpers.load_config('cnn_fashion_mnist')
    self.assertEqual(config.dataset.name, 'fashion_mnist')
    self.assertTrue(config.augment.flip)

  def test_digits_never_flip(self):
    self.assertFalse(config_lib.augment_preset('mnist')['flip'])
    self.assertTrue(config_lib.augment_preset('cifar10')['flip'])

  @parameterized.parameters(('batch_size', 'many'), ('model.filters', 7),
                            ('augment.flip', 1))
  def test_wrong_types_are_rejected(self, field, value):
    config = config_lib.base()
    section, _, key = field.rpartition('.')
    target = config[section] if section else config
    with target.ignore_type():
      target[key] = value
    with self.assertRaisesRegex(UserError, field):
      config_lib.check_types(config)

  def test_ints_pass_for_floats_and_lists_for_tuples(self):
    config = config_lib.base()
    config.num_epochs = 3
    with config.model.ignore_type():
      config.model.filters = [8, 16]
    config_lib.check_types(config)

  def test_saved_config_round_trips(self):
    workdir = self.create_tempdir().full_path
    config = config_lib.base()
    config_lib.save(config, workdir)
    loaded = config_lib.load(workdir)
    self.assertEqual(loaded.model.name, 'cnn')
    self.assertEqual(tuple(loaded.model.filters), (64, 64))
    config_lib.check_compatible(loaded, config, workdir)

  @parameterized.parameters(('model.name', 'cnn_dropout'), ('dataset.name', 'fashion_mnist'),
                            ('batch_size', 64))
  def test_other_experiment_is_incompatible(self, field, value):
    saved = config_lib.base()
    new = config_lib.base()
    section, _, key = field.rpartition('.')
    (new[section] if section else new)[key] = value
    with self.assertRaisesRegex(UserError, 'pass a new --workdir'):
      config_lib.check_compatible(saved, new, '/w')


class VariantTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(('alexnet_mnist', 'cpu'), ('alexnet_mnist', 'tiny'),
                            ('vgg16_mnist', 'cpu'), ('vgg16_mnist', 'tiny'),
                            ('vgg16_mnist', 'demo'))
  def test_variants_type_check_and_their_models_fit(self, name, variant):
    config = helpers.load_config(name, variant)
    config_lib.check_types(config)
    if variant != 'demo':  # demo is the full-size VGG16, built in test_vgg
      model, _ = checkpoints.build_model(config.model, 10, (28, 28, 1))
      self.assertEqual(model.stack[-1].num_classes, 10)

  def test_cpu_variants_are_smaller_than_the_tutorial_nets(self):
    for name in ('alexnet_mnist', 'vgg16_mnist'):
      full = helpers.load_config(name)
      cpu = helpers.load_config(name, 'cpu')
      self.assertGreater(cpu.model.width_divisor, full.model.width_divisor)
      self.assertLess(cpu.model.input_size, full.model.input_size)

  def test_unknown_variant(self):
    with self.assertRaisesRegex(ValueError, "unknown variant 'huge'"):
      helpers.load_config('alexnet_mnist', 'huge')
