"""VGG tests: the block's shapes and counts, the VGG16 numbers, presets, configs, checkpoints."""

import json

from absl.testing import parameterized
import ml_collections
import tensorflow as tf

from research import models
from research.core import presets
from research.models import sizing
from research.models import vgg
from tests.test_alexnet import checkpointed_model_variables


def conv_params(c_in, c_out, batch_norm=False):
  """A 3×3 conv (bias only without batch norm) plus the norm's gamma, beta, mean and variance."""
  return 9 * c_in * c_out + (4 * c_out if batch_norm else c_out)


class VGGBlockTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      ((224, 224, 1), 2, 64, False, (112, 112, 64)),
      ((56, 56, 128), 3, 256, False, (28, 28, 256)),
      ((14, 14, 512), 3, 512, False, (7, 7, 512)),
      ((7, 7, 3), 1, 8, False, (3, 3, 8)),  # odd sizes round down
      ((9, 6, 4), 2, 5, False, (4, 3, 5)),
      ((8, 8, 2), 4, 4, True, (4, 4, 4)),
  )
  def test_halves_height_and_width(self, in_shape, num_convs, filters, bn, out_shape):
    block = vgg.vgg_block(num_convs, filters, batch_norm=bn, name='b')
    y = block(tf.zeros((2, *in_shape)), training=False)
    self.assertEqual(tuple(y.shape), (2, *out_shape))
    self.assertEqual(block.compute_output_shape((2, *in_shape)), (2, *out_shape))
    self.assertLen(block.convs, num_convs)
    self.assertEqual([c.filters for c in block.convs], [filters] * num_convs)
    self.assertEqual([c.kernel_size for c in block.convs], [3] * num_convs)
    expected = conv_params(in_shape[-1], filters, bn)
    expected += (num_convs - 1) * conv_params(filters, filters, bn)
    self.assertEqual(block.count_params(), expected)

  @parameterized.parameters((1, 2, 64, 37568), (64, 2, 128, 221440), (128, 3, 256, 1475328),
                            (256, 3, 512, 5899776), (512, 3, 512, 7079424))
  def test_vgg16_block_params(self, c_in, num_convs, filters, params):
    block = vgg.vgg_block(num_convs, filters, name='b')
    block.build((None, 8, 8, c_in))  # weights from shapes alone: no need for 224×224 inputs
    self.assertEqual(block.count_params(), params)
    self.assertLen(block.weights, 2 * num_convs)  # a kernel and a bias per conv

  def test_helper_returns_the_layer(self):
    block = vgg.vgg_block(2, 16, name='block3')
    self.assertIsInstance(block, vgg.VGGBlock)
    self.assertEqual(block.name, 'block3')
    self.assertEqual([c.name for c in block.convs], ['conv1', 'conv2'])

  def test_needs_a_conv(self):
    with self.assertRaisesRegex(ValueError, 'at least one conv'):
      vgg.vgg_block(0, 16)

  def test_config_round_trip(self):
    block = vgg.vgg_block(3, 32, batch_norm=True, name='block4')
    clone = vgg.VGGBlock.from_config(block.get_config())
    self.assertEqual(clone.get_config(), block.get_config())
    self.assertEqual(clone.name, 'block4')
    x = tf.zeros((1, 8, 8, 3))
    self.assertEqual(clone(x).shape, block(x).shape)
    self.assertEqual(clone.count_params(), block.count_params())


class VGG16FullSizeTest(tf.test.TestCase):
  """VGG16 at 224×224×1 and 10 classes, built once (~540 MB of weights)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model, cls.table = models.build_model(models.default_config('vgg16'), 10,
                                              (28, 28, 1))
    cls.rows = cls.model.layer_table((224, 224, 1))

  @classmethod
  def tearDownClass(cls):
    del cls.model
    super().tearDownClass()

  def test_layer_names(self):
    self.assertEqual([name for name, _, _ in self.rows],
                     ['block1', 'block2', 'block3', 'block4', 'block5', 'flatten', 'fc1', 'fc2',
                      'logits'])

  def test_block_outputs(self):
    self.assertEqual([shape for _, shape, _ in self.rows[:6]], [
        (112, 112, 64), (56, 56, 128), (28, 28, 256), (14, 14, 512), (7, 7, 512), (25088,)])

  def test_parameter_counts(self):
    params = [p for _, _, p in self.rows]
    self.assertEqual(params[:5], [37568, 221440, 1475328, 5899776, 7079424])
    self.assertEqual(sum(params[5:]), 119586826)  # flatten, fc1, fc2 and logits
    self.assertEqual(self.model.count_params(), 134300362)
    self.assertIn('134,300,362', self.table)


class VGGTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(('vgg11', 11), ('vgg13', 13), ('vgg16', 16), ('vgg19', 19))
  def test_presets_have_their_depth(self, name, depth):
    config = models.default_config(name)
    self.assertEqual(config.input_size, 224)
    self.assertEqual(config.conv_arch, getattr(presets, name.upper()))
    # The depth counts weight layers: the 3×3 convs plus fc1, fc2 and the logits.
    config.width_divisor = 32
    model = models.build(config, 10)
    model(tf.zeros((1, 32, 32, 1)), training=False)
    kernels = [w for w in model.weights if w.name == 'kernel']
    self.assertLen(kernels, depth)
    self.assertLen(model.stack, 5 + 4)

  @parameterized.parameters(2, 4, 8)
  def test_width_divisor_divides_every_width(self, r):
    model = vgg.VGG(num_classes=10, width_divisor=r, name='vgg16')
    convs = [(len(b.convs), b.filters) for b in model.stack[:5]]
    self.assertEqual(convs, [(n, f // r) for n, f in presets.VGG16])
    self.assertEqual([model.stack[6].units, model.stack[7].units], [4096 // r, 4096 // r])

  @parameterized.parameters(((32, 32, 3), 100, (1, 1)), ((64, 48, 1), 7, (2, 1)),
                            ((40, 40, 1), 2, (1, 1)))
  def test_logits_and_final_map(self, input_shape, classes, final_map):
    model = vgg.VGG(num_classes=classes, width_divisor=32, dense_units=256, batch_norm=True,
                    name='vgg')
    rows = model.layer_table(input_shape)
    self.assertEqual(rows[4][1], (*final_map, 512 // 32))  # five halvings, rounding down
    y = model(tf.zeros((2, *input_shape)), training=False)
    self.assertEqual(tuple(y.shape), (2, classes))
    self.assertEqual(y.dtype, tf.float32)

  @parameterized.parameters((31, False), (32, True))
  def test_smallest_input(self, size, fits):
    model = vgg.VGG(width_divisor=32, name='vgg16')
    if fits:
      sizing.check_fits(model, (size, size, 1))
    else:
      with self.assertRaisesRegex(ValueError, r'block5 cannot shrink \(1, 1, 16\)'):
        sizing.check_fits(model, (size, size, 1))

  def test_config_round_trip(self):
    model = vgg.VGG(num_classes=5, conv_arch=((1, 8), (2, 16)), dense_units=32, dropout=0.2,
                    width_divisor=2, batch_norm=True, name='tiny_vgg')
    clone = vgg.VGG.from_config(model.get_config())
    self.assertEqual(clone.get_config(), model.get_config())
    self.assertEqual(clone.name, 'tiny_vgg')
    x = tf.zeros((1, 16, 16, 1))
    self.assertEqual(clone(x).shape, model(x).shape)
    self.assertEqual(clone.count_params(), model.count_params())

  def test_conv_arch_from_json_lists(self):
    model = vgg.VGG(conv_arch=[[1, 8], [2, 16]], name='vgg')
    self.assertEqual(model.get_config()['conv_arch'], ((1, 8), (2, 16)))
    config = models.default_config('vgg11')
    config.width_divisor = 16
    # A run's saved config comes back from JSON with lists of lists where tuples were.
    saved = ml_collections.ConfigDict(json.loads(config.to_json_best_effort()))
    self.assertIsInstance(saved.conv_arch, list)
    self.assertEqual(models.build(saved, 10).get_config(),
                     models.build(config, 10).get_config())

  @parameterized.parameters(False, True)
  def test_checkpoint_holds_every_weight(self, batch_norm):
    model = vgg.VGG(num_classes=10, conv_arch=((1, 8), (2, 16), (3, 16)), dense_units=32,
                    batch_norm=batch_norm, name='vgg')
    model(tf.zeros((1, 32, 32, 1)), training=False)
    entries = checkpointed_model_variables(model, self.create_tempdir().full_path)
    self.assertLen(entries, len(model.weights))
    # With batch norm a conv or dense block holds a kernel and the norm's four, else kernel + bias.
    self.assertLen(model.weights, (6 + 2) * (5 if batch_norm else 2) + 2)


if __name__ == '__main__':
  tf.test.main()
