"""Model tests: the registry, per-layer shapes and parameter counts, config round trips."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from research import models
from research.core import outputs
from research.models.cnn import SmallCNN


class SmallCNNTest(tf.test.TestCase, parameterized.TestCase):

  def test_two_conv_tutorial_net(self):
    model, _ = models.build_model(models.default_config('cnn'), 10, (28, 28, 1))
    rows = model.layer_table((28, 28, 1))
    self.assertEqual([shape for _, shape, _ in rows], [
        (26, 26, 64), (13, 13, 64), (11, 11, 64), (5, 5, 64), (1600,), (128,), (10,)])
    self.assertEqual([p for _, _, p in rows], [640, 0, 36928, 0, 0, 204928, 1290])
    self.assertEqual(model.count_params(), 243786)

  def test_one_conv_dropout_variant(self):
    model, _ = models.build_model(models.default_config('cnn_dropout'), 10, (28, 28, 1))
    rows = model.layer_table((28, 28, 1))
    self.assertEqual([shape for _, shape, _ in rows],
                     [(26, 26, 28), (13, 13, 28), (4732,), (128,), (10,)])
    self.assertEqual(model.count_params(), 280 + 4732 * 128 + 128 + 1290)
    self.assertEqual(model.stack[3].dropout, 0.2)

  @parameterized.parameters(((28, 28, 1), 10), ((32, 32, 3), 100), ((40, 24, 1), 7))
  def test_logits_shape(self, input_shape, classes):
    model = SmallCNN(num_classes=classes, batch_norm=True, name='cnn')
    y = model(tf.zeros((3, *input_shape)), training=False)
    self.assertEqual(tuple(y.shape), (3, classes))
    self.assertEqual(y.dtype, tf.float32)

  def test_config_round_trip(self):
    model = SmallCNN(num_classes=5, filters=(8, 16), dense_units=(32, 16), dropout=0.1,
                     batch_norm=True, padding='same', name='cnn')
    clone = SmallCNN.from_config(model.get_config())
    self.assertEqual(clone.get_config(), model.get_config())
    x = tf.zeros((1, 28, 28, 1))
    self.assertEqual(clone(x).shape, model(x).shape)
    self.assertEqual(clone.count_params(), model.count_params())

  def test_standardize_comes_first_and_adds_no_parameters(self):
    cfg = models.default_config('cnn')
    plain, _ = models.build_model(cfg, 10, (28, 28, 1))
    cfg.standardize = True
    model, _ = models.build_model(cfg, 10, (28, 28, 1))
    self.assertEqual(model.layer_table((28, 28, 1))[0], ('standardize', (28, 28, 1), 0))
    self.assertEqual(model.count_params(), plain.count_params())
    x = np.random.default_rng(0).uniform(-1, 1, (2, 28, 28, 1)).astype(np.float32)
    # Lower contrast, same logits: the net sees only relative levels.
    self.assertAllClose(model(x * 0.2 - 0.5), model(x), atol=1e-4)
    self.assertTrue(SmallCNN.from_config(model.get_config()).standardize)

  def test_table_text_lists_every_layer_and_total(self):
    model, table = models.build_model(models.default_config('cnn'), 10, (28, 28, 1))
    for name, _, _ in model.layer_table((28, 28, 1)):
      self.assertIn(name, table)
    self.assertIn('243,786', table)
    self.assertEqual(table, outputs.layer_table(model, (28, 28, 1)))


class RegistryTest(tf.test.TestCase):

  def test_unknown_model_names_the_choices(self):
    with self.assertRaisesRegex(ValueError, r"unknown model 'resnet'.*cnn"):
      models.default_config('resnet')

  def test_field_of_another_model_is_rejected(self):
    cfg = models.default_config('cnn')
    with cfg.unlocked():
      cfg.conv_arch = ((1, 8),)
    with self.assertRaisesRegex(ValueError, 'takes no field'):
      models.build(cfg, 10)

  def test_preset_is_what_the_name_means(self):
    self.assertEqual(models.default_config('cnn').filters, (64, 64))
    self.assertEqual(models.default_config('cnn_dropout').filters, (28,))
    self.assertEqual(models.default_config('cnn_dropout').dropout, 0.2)
