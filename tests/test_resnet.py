"""ResNet tests: the residual blocks, stem and stages, the presets' counts, configs, checkpoints."""

import json

from absl.testing import parameterized
import keras
import ml_collections
import numpy as np
import tensorflow as tf

from research import models
from research.benchmark import flops
from research.core.errors import UserError
from research.models import blocks
from research.models import resnet
from research.models import sizing
from research.train import trainer
from tests import helpers
from tests.test_alexnet import checkpointed_model_variables


def conv_norm(k, c_in, c_out, bias):
  """A k×k conv (and its bias) plus its batch norm's gamma, beta, mean and variance."""
  return k * k * c_in * c_out + (c_out if bias else 0) + 4 * c_out


class BlockTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      # kind, input, filters, strides, projection, bias, output
      ('basic', (8, 8, 16), 16, 1, False, False, (8, 8, 16)),
      ('basic', (8, 8, 16), 32, 2, True, False, (4, 4, 32)),
      ('basic', (7, 7, 4), 8, 2, True, True, (4, 4, 8)),  # odd sizes round up, as Keras'
      ('bottleneck', (8, 8, 16), 4, 1, True, True, (8, 8, 16)),
      ('bottleneck', (8, 8, 16), 4, 1, False, False, (8, 8, 16)),
      ('bottleneck', (8, 8, 16), 8, 2, True, True, (4, 4, 32)),
  )
  def test_shape_and_params(self, kind, in_shape, filters, strides, projection, bias, out_shape):
    block = resnet.BLOCKS[kind](filters, strides=strides, projection=projection, conv_bias=bias,
                                name='b')
    y = block(tf.random.normal((2, *in_shape)), training=False)
    self.assertEqual(tuple(y.shape), (2, *out_shape))
    self.assertEqual(tuple(block.compute_output_shape((2, *in_shape))), (2, *out_shape))
    self.assertGreaterEqual(float(tf.reduce_min(y)), 0.0)  # the ReLU after the sum
    c = in_shape[-1]
    if kind == 'basic':
      params = conv_norm(3, c, filters, bias) + conv_norm(3, filters, filters, bias)
    else:
      params = (conv_norm(1, c, filters, bias) + conv_norm(3, filters, filters, bias)
                + conv_norm(1, filters, 4 * filters, bias))
    if projection:
      params += conv_norm(1, c, out_shape[-1], bias)
    self.assertEqual(block.count_params(), params)

  def test_keras_resnet50_block_count(self):
    # conv2_block1 of Keras' ResNet50: 64 → 256 channels with a projection, biases included.
    block = resnet.BottleneckBlock(64, projection=True, conv_bias=True, name='b')
    block.build((None, 56, 56, 64))
    self.assertEqual(block.count_params(), 76928)

  def test_identity_shortcut_adds_the_input(self):
    block = resnet.BasicBlock(4, name='b')
    x = tf.random.normal((2, 5, 5, 4))
    block(x, training=False)
    for norm in block.norms:  # the main path then gives 0: only the shortcut remains
      norm.gamma.assign(tf.zeros_like(norm.gamma))
    self.assertAllClose(block(x, training=False), tf.nn.relu(x))

  def test_projection_shortcut_is_used(self):
    block = resnet.BottleneckBlock(2, strides=2, projection=True, name='b')
    x = tf.random.normal((2, 6, 6, 3))
    before = block(x, training=False)
    block.shortcut[0].kernel.assign(tf.zeros_like(block.shortcut[0].kernel))
    block.shortcut[1].beta.assign(tf.zeros_like(block.shortcut[1].beta))
    self.assertNotAllClose(block(x, training=False), before)

  @parameterized.parameters(('basic', 8, 1), ('basic', 4, 2), ('bottleneck', 4, 1))
  def test_shape_change_needs_a_projection(self, kind, filters, strides):
    block = resnet.BLOCKS[kind](filters, strides=strides, name='b3')
    with self.assertRaisesRegex(ValueError, 'b3 maps 4 channels .* needs projection=True'):
      block(tf.zeros((1, 8, 8, 4)))

  @parameterized.parameters('basic', 'bottleneck')
  def test_gradients_reach_every_weight(self, kind):
    block = resnet.BLOCKS[kind](4, strides=2, projection=True, conv_bias=True, name='b')
    x = tf.random.stateless_normal((4, 8, 8, 3), (1, 2))
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = block(x, training=True)
      loss = tf.reduce_sum(y * tf.random.stateless_normal(y.shape, (3, 4)))
    variables = block.trainable_variables
    grads = tape.gradient(loss, [x, *variables])
    # A kernel, a bias, gamma and beta per conv, the projection's included.
    self.assertLen(variables, 4 * (len(block.convs) + 1))
    names = ['input'] + [v.path for v in variables]
    for name, g in zip(names, grads):
      self.assertIsNotNone(g, name)
      if not name.endswith('bias'):  # a bias before batch norm in training has gradient 0
        self.assertGreater(float(tf.reduce_max(tf.abs(g))), 0.0, name)

  @parameterized.parameters('basic', 'bottleneck')
  def test_config_round_trip(self, kind):
    cls = resnet.BLOCKS[kind]
    block = cls(8, strides=2, projection=True, conv_bias=True, drop_rate=0.25, name='block7')
    clone = cls.from_config(block.get_config())
    self.assertEqual(clone.get_config(), block.get_config())
    self.assertEqual(clone.name, 'block7')
    x = tf.zeros((1, 8, 8, 3))
    self.assertEqual(clone(x).shape, block(x).shape)
    self.assertEqual(clone.count_params(), block.count_params())

  def test_drop_path_drops_whole_branches_per_example_in_training_only(self):
    rate = 0.5
    block = resnet.BasicBlock(4, drop_rate=rate, name='b')
    plain = resnet.BasicBlock(4, name='p')
    x = tf.random.normal((64, 6, 6, 4), seed=1)
    block(x), plain(x)
    plain.set_weights(block.get_weights())
    self.assertAllEqual(block(x, training=False), plain(x, training=False))
    # The branch alone, as the block computes it in training (batch statistics):
    y = x
    for i, (conv, norm) in enumerate(zip(block.convs, block.norms)):
      y = norm(conv(y), training=True)
      y = keras.ops.relu(y) if i == 0 else y
    branch = y
    out = block(x, training=True)
    dropped = np.all(np.isclose(out, tf.nn.relu(x), atol=1e-6), axis=(1, 2, 3))
    kept = np.all(np.isclose(out, tf.nn.relu(branch / (1 - rate) + x), atol=1e-5),
                  axis=(1, 2, 3))
    self.assertTrue(np.all(dropped | kept))  # each example: its whole branch, or none of it
    self.assertBetween(int(dropped.sum()), 16, 48)  # ~rate of 64

  def test_drop_rates_rise_linearly_to_drop_path(self):
    model = resnet.ResNet(block='basic', stage_sizes=(1, 2, 1, 1), width_divisor=16,
                          drop_path=0.2, name='r')
    rates = [b.drop_rate for layer in model.stack if layer.name.startswith('stage')
             for b in layer.blocks]
    self.assertAllClose(rates, [0.04, 0.08, 0.12, 0.16, 0.2])
    self.assertEqual([b.drop for s in resnet.ResNet(block='basic', stage_sizes=(1, 1, 1, 1),
                                                    name='q').stack[1:5] for b in s.blocks],
                     [None] * 4)  # 0: no dropout layer, and checkpoints as before

  @parameterized.parameters(({'drop_rate': 1.0}, 'drop_rate'), ({'drop_rate': -0.1}, 'drop_rate'))
  def test_bad_drop_rate(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      resnet.BasicBlock(4, name='b', **kwargs)

  def test_batch_norm_epsilon_is_keras_applications(self):
    block = resnet.BottleneckBlock(2, projection=True, name='b')
    self.assertEqual({n.epsilon for n in block.norms + block.shortcut[1:]}, {1.001e-5})


class StemAndStageTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(('imagenet', 224, 56, 9408 + 64 + 256),
                            ('imagenet', 32, 8, 9408 + 64 + 256),
                            ('small', 32, 32, 1728 + 64 + 256))
  def test_stem(self, kind, size, out, params):
    stem = resnet.Stem(64, kind, conv_bias=True, name='stem')
    y = stem(tf.zeros((1, size, size, 3)), training=False)
    self.assertEqual(tuple(y.shape), (1, out, out, 64))
    self.assertEqual(tuple(stem.compute_output_shape((1, size, size, 3))), (1, out, out, 64))
    self.assertEqual(stem.count_params(), params)

  def test_stage_first_block_strides_and_projects(self):
    stage = resnet.Stage('bottleneck', 8, 3, strides=2, name='stage2')
    y = stage(tf.zeros((1, 8, 8, 16)), training=False)
    self.assertEqual(tuple(y.shape), (1, 4, 4, 32))
    self.assertEqual([b.name for b in stage.blocks], ['block1', 'block2', 'block3'])
    self.assertEqual([(b.strides, b.projection) for b in stage.blocks],
                     [(2, True), (1, False), (1, False)])

  @parameterized.parameters(
      (resnet.Stem, dict(kind='tiny'), 'stem=.tiny. is none of'),
      (resnet.Stage, dict(block='dense', filters=4, num_blocks=1), 'block=.dense. is none of'),
      (resnet.Stage, dict(block='basic', filters=4, num_blocks=0), 'at least one block'))
  def test_refuses_bad_arguments(self, cls, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      cls(**kwargs)

  @parameterized.parameters(resnet.Stem, resnet.Stage)
  def test_config_round_trip(self, cls):
    layer = (resnet.Stem(16, 'small', True, name='s') if cls is resnet.Stem else
             resnet.Stage('basic', 8, 2, strides=2, conv_bias=True, name='s'))
    self.assertEqual(cls.from_config(layer.get_config()).get_config(), layer.get_config())


class ResNetTest(tf.test.TestCase, parameterized.TestCase):

  def test_resnet50_is_keras_applications_size(self):
    config = models.default_config('resnet50')
    self.assertEqual((config.input_size, config.conv_bias), (224, True))
    model, table = models.build_model(config, 1000, (224, 224, 3))
    self.assertEqual(model.count_params(), 25636712)  # keras.applications.ResNet50's
    self.assertIn('25,636,712', table)
    rows = model.layer_table((224, 224, 3))
    self.assertEqual([(name, shape) for name, shape, _ in rows], [
        ('stem', (56, 56, 64)), ('stage1', (56, 56, 256)), ('stage2', (28, 28, 512)),
        ('stage3', (14, 14, 1024)), ('stage4', (7, 7, 2048)), ('pool', (2048,)),
        ('logits', (1000,))])

  @parameterized.parameters(('resnet101', 44707176), ('resnet152', 60419944))
  def test_deeper_presets_are_keras_applications_size(self, name, count):
    model, _ = models.build_model(models.default_config(name), 1000, (224, 224, 3))
    self.assertEqual(model.count_params(), count)  # keras.applications.ResNet101's / 152's

  @parameterized.parameters(('resnet18', 11689512, 9600), ('resnet34', 21797672, 17024))
  def test_basic_presets_have_the_papers_counts(self, name, trainable, moving):
    # The paper's (and torchvision's) counts are the trainable ones; Keras also counts the
    # batch norms' moving means and variances. Global pooling: the count is size-independent.
    model, _ = models.build_model(models.default_config(name), 1000, (32, 32, 3))
    count = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    self.assertEqual(count, trainable)
    self.assertEqual(model.count_params(), trainable + moving)

  @parameterized.parameters(('resnet18', 2 * 8 + 3 + 2), ('resnet34', 2 * 16 + 3 + 2),
                            ('resnet50', 3 * 16 + 4 + 2))
  def test_presets_have_their_depth(self, name, kernels):
    # The depth counts the main path's convs and the head; projections add one conv per stage
    # that changes the shape (three for the basic nets, four for the bottleneck one).
    config = models.default_config(name)
    config.width_divisor = 16
    model = models.build(config, 10)
    model(tf.zeros((1, 32, 32, 1)), training=False)
    self.assertLen([w for w in model.weights if w.name == 'kernel'], kernels)

  @parameterized.parameters(('small', 32, (32, 32)), ('imagenet', 32, (8, 8)),
                            ('imagenet', 64, (16, 16)))
  def test_stage_resolutions(self, stem, size, first):
    model = resnet.ResNet(num_classes=7, block='basic', stage_sizes=(1, 1, 1, 1),
                          width_divisor=8, stem=stem, name='r')
    rows = model.layer_table((size, size, 1))
    shapes = [shape for name, shape, _ in rows if name.startswith('stage')]
    self.assertEqual(shapes[0][:2], first)
    self.assertEqual([s[0] for s in shapes], [first[0] // 2 ** i for i in range(4)])
    self.assertEqual(rows[-1][1], (7,))

  def test_smallest_input(self):
    model = resnet.ResNet(block='basic', stage_sizes=(1, 1, 1, 1), width_divisor=16, name='r')
    sizing.check_fits(model, (1, 1, 1))  # padding and 'same' convs never shrink below 1×1

  @parameterized.parameters('stage_sizes', 'stem', 'block', 'preprocessing')
  def test_bad_fields_are_user_errors(self, field):
    config = models.default_config('resnet18')
    config[field] = {'stage_sizes': (2, 2), 'stem': 'cifar', 'block': 'dense',
                     'preprocessing': 'torch'}[field]
    with self.assertRaisesRegex(UserError, f'config.model does not fit .*{field}'):
      models.build_model(config, 10, (32, 32, 1))

  def test_config_round_trip_from_json(self):
    config = models.default_config('resnet18')
    config.update(width_divisor=8, stem='small', preprocessing='caffe', drop_path=0.1)
    saved = ml_collections.ConfigDict(json.loads(config.to_json_best_effort()))
    self.assertIsInstance(saved.stage_sizes, list)
    model = models.build(saved, 10)
    self.assertEqual(model.get_config(), models.build(config, 10).get_config())
    clone = resnet.ResNet.from_config(model.get_config())
    self.assertEqual(clone.get_config(), model.get_config())
    self.assertIsInstance(clone.stack[0], blocks.Preprocess)

  def test_checkpoint_holds_every_weight(self):
    model = resnet.ResNet(num_classes=10, block='bottleneck', stage_sizes=(1, 2, 1, 1),
                          width_divisor=16, name='r')
    model(tf.zeros((1, 32, 32, 3)), training=False)
    entries = checkpointed_model_variables(model, self.create_tempdir().full_path)
    self.assertLen(entries, len(model.weights))
    # Per conv a kernel, a bias and four norm variables; 16 main convs + 4 projections + stem.
    self.assertLen(model.weights, 6 * (3 * 5 + 4 + 1) + 2)

  def test_trains_under_mixed_precision(self):
    keras.config.set_dtype_policy('mixed_bfloat16')
    try:
      model = resnet.ResNet(num_classes=3, block='basic', stage_sizes=(1, 1, 1, 1),
                            width_divisor=16, stem='small', name='r')
      y = model(tf.zeros((2, 16, 16, 1)), training=True)
    finally:
      keras.config.set_dtype_policy('float32')
    self.assertEqual(y.dtype, tf.float32)


class StochasticDepthRunTest(tf.test.TestCase):

  def test_a_stopped_and_resumed_run_draws_what_the_whole_run_drew(self):
    def config(drop_path):
      c = helpers.tiny_config('resnet18', num_train_steps=4, checkpoint_every_steps=4,
                              deterministic=True)
      c.model.update(width_divisor=16, stem='small', input_size=0, stage_sizes=(1, 1, 1, 1),
                     drop_path=drop_path)
      return c

    def stop_at_step_2(step, totals):  # as a preemption signal there would
      return {**totals, 'stop': np.float32(1.0)} if step == 2 else totals

    with helpers.mock_tfds():
      whole = trainer.train_and_evaluate(config(0.5), self.create_tempdir().full_path)
      without = trainer.train_and_evaluate(config(0.0), self.create_tempdir().full_path)
      workdir = self.create_tempdir().full_path
      with helpers.after_each_train_call(stop_at_step_2):
        trainer.train_and_evaluate(config(0.5), workdir)
      resumed = trainer.train_and_evaluate(config(0.5), workdir)
    self.assertNotEqual(whole['weights_digest'], without['weights_digest'])  # it drops
    self.assertEqual(resumed['weights_digest'], whole['weights_digest'])


class FlopsTest(tf.test.TestCase):

  def test_resnet50_multiply_adds_equal_keras_layer_by_layer(self):
    keras_model = keras.applications.ResNet50(weights=None)
    expected = 0
    for layer in keras_model.layers:
      if isinstance(layer, keras.layers.Conv2D):
        _, h, w, c = layer.output.shape
        kh, kw, c_in, _ = layer.kernel.shape
        expected += h * w * c * kh * kw * c_in
      elif isinstance(layer, keras.layers.Dense):
        expected += int(np.prod(layer.kernel.shape))
    config = models.default_config('resnet50')
    config.preprocessing = 'caffe'  # no multiply-adds of its own
    rows = flops.forward_macs(models.build(config, 1000), (224, 224, 3))
    self.assertEqual(sum(macs for _, macs in rows), expected)
    self.assertAlmostEqual(expected / 1e9, 3.86, delta=0.01)  # the paper: 3.8e9 "FLOPs"


if __name__ == '__main__':
  tf.test.main()
