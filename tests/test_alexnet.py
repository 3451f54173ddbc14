"""AlexNet tests: the d2l layer shapes and parameter counts, width_divisor, configs, checkpoints."""

import json
import os

from absl.testing import parameterized
import ml_collections
import tensorflow as tf

from research import models
from research.models import sizing
from research.models.alexnet import AlexNet

_NAMES = ['conv1', 'pool1', 'conv2', 'pool2', 'conv3', 'conv4', 'conv5', 'pool3', 'flatten',
          'fc1', 'fc2', 'logits']


def checkpointed_model_variables(model, directory):
  """The `model/...` variable entries that tf.train.Checkpoint(model=model) writes."""
  path = tf.train.Checkpoint(model=model).write(os.path.join(directory, 'ckpt'))
  keys = tf.train.load_checkpoint(path).get_variable_to_shape_map()
  return [k for k in keys if k.startswith('model/')]


class AlexNetFullSizeTest(tf.test.TestCase):
  """The tutorial's net at 227×227×1 and 10 classes, built once (~230 MB of weights)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model, cls.table = models.build_model(models.default_config('alexnet'), 10,
                                              (28, 28, 1))
    cls.rows = cls.model.layer_table((227, 227, 1))

  @classmethod
  def tearDownClass(cls):
    del cls.model  # the weights are a quarter of a GB: free them for the next test class
    super().tearDownClass()

  def test_layer_names(self):
    self.assertEqual([name for name, _, _ in self.rows], _NAMES)

  def test_output_shapes(self):
    self.assertEqual([shape for _, shape, _ in self.rows], [
        (55, 55, 96), (27, 27, 96), (27, 27, 256), (13, 13, 256), (13, 13, 384),
        (13, 13, 384), (13, 13, 256), (6, 6, 256), (9216,), (4096,), (4096,), (10,)])

  def test_parameter_counts(self):
    self.assertEqual([p for _, _, p in self.rows], [
        11712, 0, 614656, 0, 885120, 1327488, 884992, 0, 0, 37752832, 16781312, 40970])
    self.assertEqual(self.model.count_params(), 58299082)
    self.assertIn('58,299,082', self.table)

  def test_dropout_only_in_the_fully_connected_blocks(self):
    by_name = {layer.name: layer for layer in self.model.stack}
    self.assertEqual(by_name['fc1'].dropout, 0.5)
    self.assertEqual(by_name['fc2'].dropout, 0.5)


class AlexNetTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      # conv1 is 11×11 stride 4 `valid`; every pool is 3×3 stride 2; the other convs keep size.
      ((227, 227, 1), (55, 27, 13, 6)),
      ((224, 224, 3), (54, 26, 12, 5)),
      ((255, 255, 1), (62, 30, 14, 6)),
  )
  def test_stage_sizes(self, input_shape, sizes):
    model = AlexNet(num_classes=10, width_divisor=32, name='alexnet')
    shapes = {name: shape for name, shape, _ in model.layer_table(input_shape)}
    self.assertEqual([shapes[n][0] for n in ('conv1', 'pool1', 'pool2', 'pool3')], list(sizes))
    self.assertEqual([shapes[n][1] for n in ('conv1', 'pool1', 'pool2', 'pool3')], list(sizes))
    self.assertEqual(shapes['conv2'], (sizes[1], sizes[1], 256 // 32))
    self.assertEqual(shapes['flatten'], (sizes[3] * sizes[3] * 256 // 32,))

  @parameterized.parameters(2, 4, 16, 32)
  def test_width_divisor_divides_every_width(self, r):
    model = AlexNet(num_classes=10, width_divisor=r, name='alexnet')
    by_name = {layer.name: layer for layer in model.stack}
    self.assertEqual([by_name[f'conv{i}'].filters for i in range(1, 6)],
                     [96 // r, 256 // r, 384 // r, 384 // r, 256 // r])
    self.assertEqual([by_name['fc1'].units, by_name['fc2'].units], [4096 // r, 4096 // r])
    self.assertEqual(by_name['logits'].num_classes, 10)

  @parameterized.parameters((66, None), (67, 1), (227, 6))
  def test_smallest_input(self, size, pool3_side):
    # 67 = 11 + 4·14: conv1 must leave 15 so that pool3 still gets a 3×3 map.
    model = AlexNet(width_divisor=32, name='alexnet')
    if pool3_side is None:
      with self.assertRaisesRegex(ValueError, r'pool3 cannot shrink \(2, 2, 8\)'):
        sizing.check_fits(model, (size, size, 1))
    else:
      sizing.check_fits(model, (size, size, 1))
      self.assertEqual(model.layer_table((size, size, 1))[7][1], (pool3_side, pool3_side, 8))

  def test_width_divisor_must_be_a_positive_integer(self):
    with self.assertRaisesRegex(ValueError, 'width_divisor'):
      AlexNet(width_divisor=0)

  @parameterized.parameters(((227, 227, 1), 10), ((227, 227, 3), 100))
  def test_logits(self, input_shape, classes):
    model = AlexNet(num_classes=classes, width_divisor=32, batch_norm=True, name='alexnet')
    y = model(tf.zeros((2, *input_shape)), training=False)
    self.assertEqual(tuple(y.shape), (2, classes))
    self.assertEqual(y.dtype, tf.float32)

  def test_batch_norm_reaches_every_block(self):
    model = AlexNet(width_divisor=32, batch_norm=True, name='alexnet')
    self.assertTrue(all(layer.batch_norm for layer in model.stack if hasattr(layer, 'norm')))

  def test_config_round_trip(self):
    model = AlexNet(num_classes=7, width_divisor=16, dropout=0.3, batch_norm=True, name='anet')
    clone = AlexNet.from_config(model.get_config())
    self.assertEqual(clone.get_config(), model.get_config())
    self.assertEqual(clone.name, 'anet')
    x = tf.zeros((1, 227, 227, 1))
    self.assertEqual(clone(x).shape, model(x).shape)
    self.assertEqual(clone.count_params(), model.count_params())

  def test_registry_preset_and_saved_config(self):
    config = models.default_config('alexnet')
    self.assertEqual(config.input_size, 227)
    self.assertEqual((config.width_divisor, config.dropout, config.batch_norm), (1, 0.5, False))
    config.width_divisor = 16
    # A run's saved config comes back from JSON: the model must build the same from it.
    saved = ml_collections.ConfigDict(json.loads(config.to_json_best_effort()))
    self.assertEqual(models.build(saved, 10).get_config(),
                     models.build(config, 10).get_config())

  @parameterized.parameters(False, True)
  def test_checkpoint_holds_every_weight(self, batch_norm):
    model = AlexNet(num_classes=10, width_divisor=32, batch_norm=batch_norm, name='alexnet')
    model(tf.zeros((1, 227, 227, 1)), training=False)
    entries = checkpointed_model_variables(model, self.create_tempdir().full_path)
    self.assertLen(entries, len(model.weights))


if __name__ == '__main__':
  tf.test.main()
