"""Unit tests of the building blocks: shapes, parameter counts, config round trips."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from research.models import blocks


class BatchNormTest(tf.test.TestCase, parameterized.TestCase):
  """The fused one-replica path computes what Keras' composed batch norm does."""

  @parameterized.product(shape=[(16, 6, 6, 5), (32, 5)], training=[True, False],
                         policy=['float32', 'mixed_bfloat16'])
  def test_matches_keras_batch_norm(self, shape, training, policy):
    keras.config.set_dtype_policy(policy)
    try:
      fused = blocks.BatchNorm(name='bn')
      composed = keras.layers.BatchNormalization(momentum=0.9, name='bn')
    finally:
      keras.config.set_dtype_policy('float32')
    x = tf.random.stateless_normal(shape, (1, 2)) * 3 + 2
    weights = tf.random.stateless_normal(shape, (3, 4))  # a loss whose x-gradient is not ~0
    results = []
    for layer in (fused, composed):
      layer.build(shape)
      layer.gamma.assign(tf.linspace(0.5, 1.5, shape[-1]))
      layer.beta.assign(tf.linspace(-1.0, 1.0, shape[-1]))
      for _ in range(2):  # twice: the second step starts from updated moving statistics
        with tf.GradientTape() as tape:
          tape.watch(x)
          y = layer(tf.cast(x, layer.compute_dtype), training=training)
          loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
      results.append((y, *tape.gradient(loss, [x, layer.gamma, layer.beta]),
                      layer.moving_mean, layer.moving_variance))
    self.assertEqual(results[0][0].dtype, policy.replace('mixed_', ''))
    tolerance = 1e-5 if policy == 'float32' else 2e-2  # bfloat16 keeps 8 bits of mantissa
    for a, b in zip(*results):
      a, b = tf.cast(a, tf.float32), tf.cast(b, tf.float32)
      self.assertAllClose(a, b, rtol=tolerance, atol=tolerance * float(tf.reduce_max(tf.abs(b))))

  def test_one_replica_runs_the_fused_kernel(self):
    layer = blocks.BatchNorm(name='bn')
    layer.build((4, 3, 3, 2))
    for training in (True, False):
      graph = tf.function(lambda x, t=training: layer(x, training=t)).get_concrete_function(
          tf.TensorSpec((4, 3, 3, 2))).graph
      self.assertIn('FusedBatchNormV3', [op.type for op in graph.get_operations()])

  def test_config_round_trip(self):
    layer = blocks.BatchNorm(momentum=0.8, epsilon=1e-4, name='bn2')
    clone = blocks.BatchNorm.from_config(layer.get_config())
    self.assertEqual(clone.get_config(), layer.get_config())
    self.assertEqual((clone.momentum, clone.synchronized, clone.name), (0.8, True, 'bn2'))


class ConvBlockTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      ((28, 28, 1), 64, 3, 1, 'valid', False, (26, 26, 64), 640),
      ((28, 28, 1), 64, 3, 1, 'valid', True, (26, 26, 64), 576 + 256),
      ((227, 227, 1), 96, 11, 4, 'valid', False, (55, 55, 96), 11712),
      ((27, 27, 96), 256, 5, 1, 'same', False, (27, 27, 256), 614656),
  )
  def test_shape_and_params(self, in_shape, filters, kernel, strides, padding, bn, out_shape,
                            params):
    block = blocks.ConvBlock(filters, kernel, strides=strides, padding=padding, batch_norm=bn,
                             name='c')
    y = block(tf.zeros((2, *in_shape)))
    self.assertEqual(tuple(y.shape), (2, *out_shape))
    self.assertEqual(block.count_params(), params)

  def test_relu_output_is_nonnegative(self):
    y = blocks.ConvBlock(8, name='c')(tf.random.normal((2, 9, 9, 3)))
    self.assertGreaterEqual(float(tf.reduce_min(y)), 0.0)

  def test_batch_norm_uses_batch_statistics_only_in_training(self):
    block = blocks.ConvBlock(4, batch_norm=True, name='c')
    x = tf.random.normal((16, 8, 8, 2)) * 5 + 3
    train = block(x, training=True)
    infer = block(x, training=False)
    self.assertNotAllClose(train, infer)

  def test_config_round_trip(self):
    block = blocks.ConvBlock(32, 5, strides=2, padding='same', batch_norm=True, name='c7')
    clone = blocks.ConvBlock.from_config(block.get_config())
    self.assertEqual(clone.get_config(), block.get_config())
    self.assertEqual(clone.name, 'c7')


class DenseBlockTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((1600, 128, 0.0, False, 204928), (9216, 4096, 0.5, False, 37752832),
                            (64, 32, 0.0, True, 64 * 32 + 4 * 32))
  def test_shape_and_params(self, fan_in, units, dropout, bn, params):
    block = blocks.DenseBlock(units, dropout=dropout, batch_norm=bn, name='d')
    y = block(tf.zeros((3, fan_in)))
    self.assertEqual(tuple(y.shape), (3, units))
    self.assertEqual(block.count_params(), params)

  def test_dropout_only_in_training(self):
    keras.utils.set_random_seed(0)
    block = blocks.DenseBlock(256, dropout=0.5, name='d')
    x = tf.ones((4, 16))
    self.assertAllEqual(block(x, training=False), block(x, training=False))
    zeros_train = float(tf.reduce_mean(tf.cast(block(x, training=True) == 0, tf.float32)))
    zeros_eval = float(tf.reduce_mean(tf.cast(block(x, training=False) == 0, tf.float32)))
    self.assertGreater(zeros_train, zeros_eval + 0.2)

  def test_config_round_trip(self):
    block = blocks.DenseBlock(10, activation='tanh', dropout=0.2, batch_norm=True, name='fc')
    self.assertEqual(blocks.DenseBlock.from_config(block.get_config()).get_config(),
                     block.get_config())


class LogitsTest(tf.test.TestCase):

  def test_float32_output_under_mixed_precision_inputs(self):
    head = blocks.Logits(10, name='logits')
    y = head(tf.zeros((2, 7), tf.float16))
    self.assertEqual(y.dtype, tf.float32)
    self.assertEqual(tuple(y.shape), (2, 10))
    self.assertEqual(head.count_params(), 80)

  def test_config_round_trip(self):
    head = blocks.Logits(1000, name='logits')
    self.assertEqual(blocks.Logits.from_config(head.get_config()).get_config(),
                     head.get_config())
    np.testing.assert_equal(head.get_config()['num_classes'], 1000)


class StandardizeTest(tf.test.TestCase, parameterized.TestCase):

  def test_each_image_has_mean_zero_and_deviation_one(self):
    x = np.random.default_rng(0).uniform(-1, 1, (4, 9, 7, 3)).astype(np.float32)
    y = blocks.Standardize(name='standardize')(x).numpy()
    self.assertAllClose(y.mean(axis=(1, 2, 3)), np.zeros(4), atol=1e-6)
    self.assertAllClose(y.std(axis=(1, 2, 3)), np.ones(4), atol=1e-5)

  @parameterized.parameters((0.05, 0.0), (0.4, 0.3), (3.0, -0.5))
  def test_contrast_and_brightness_leave_the_output_unchanged(self, contrast, brightness):
    x = np.random.default_rng(1).uniform(-1, 1, (2, 8, 8, 1)).astype(np.float32)
    layer = blocks.Standardize(name='standardize')
    self.assertAllClose(layer(x * contrast + brightness), layer(x), atol=1e-4)

  def test_a_flat_image_maps_to_zero(self):
    y = blocks.Standardize(name='standardize')(tf.fill((1, 5, 5, 1), 0.7))
    self.assertAllEqual(y, tf.zeros((1, 5, 5, 1)))

  def test_float32_under_mixed_precision(self):
    layer = blocks.Standardize(name='standardize', dtype='mixed_bfloat16')
    self.assertEqual(layer(tf.ones((1, 4, 4, 1), tf.bfloat16)).dtype, tf.float32)
    self.assertEqual(blocks.Standardize().compute_dtype, 'float32')

  def test_config_round_trip(self):
    layer = blocks.Standardize(min_std=0.5, name='standardize')
    self.assertEqual(blocks.Standardize.from_config(layer.get_config()).get_config(),
                     layer.get_config())
    self.assertEqual(layer.get_config()['min_std'], 0.5)


class PreprocessTest(tf.test.TestCase, parameterized.TestCase):
  """The caffe mode gives what Keras Applications' preprocess_input gives VGG and ResNet50."""

  def test_caffe_matches_keras_preprocess_input(self):
    pixels = tf.random.stateless_uniform((2, 5, 4, 3), (1, 2), maxval=256, dtype=tf.int32)
    pixels = tf.cast(pixels, tf.float32)
    ours = blocks.Preprocess('caffe', name='p')(pixels / 255.0 * 2.0 - 1.0)  # the model's input
    theirs = keras.applications.vgg16.preprocess_input(pixels.numpy())
    self.assertAllClose(ours, theirs, atol=1e-4, rtol=0)
    self.assertAllClose(theirs, keras.applications.resnet50.preprocess_input(pixels.numpy()))

  def test_grey_subtracts_the_average_mean(self):
    y = blocks.Preprocess('caffe', name='p')(tf.fill((1, 2, 2, 1), -1.0))
    self.assertAllClose(y, tf.fill((1, 2, 2, 1), -(103.939 + 116.779 + 123.68) / 3))

  def test_float32_under_mixed_precision(self):
    keras.config.set_dtype_policy('mixed_bfloat16')
    try:
      layer = blocks.Preprocess('caffe', name='p')
    finally:
      keras.config.set_dtype_policy('float32')
    y = layer(tf.constant([[[[0.99215686, 1.0, -1.0]]]], tf.bfloat16))  # RGB 254, 255, 0
    self.assertEqual(y.dtype, tf.float32)
    self.assertAllClose(y, [[[[-103.939, 255 - 116.779, 254 - 123.68]]]], atol=0.5)

  @parameterized.parameters(('tf', 'none of'), ('', 'none of'))
  def test_refuses_unknown_modes(self, mode, message):
    with self.assertRaisesRegex(ValueError, message):
      blocks.Preprocess(mode)

  def test_refuses_other_channel_counts(self):
    with self.assertRaisesRegex(ValueError, 'grey or RGB images, not 2 channels'):
      blocks.Preprocess('caffe', name='p')(tf.zeros((1, 3, 3, 2)))

  def test_layers_for_a_config_field(self):
    self.assertEqual(blocks.preprocessing_layers(''), [])
    self.assertEqual([layer.mode for layer in blocks.preprocessing_layers('caffe')], ['caffe'])
    with self.assertRaisesRegex(ValueError, "preprocessing='torch' is none of '', 'caffe'"):
      blocks.preprocessing_layers('torch')

  def test_config_round_trip(self):
    layer = blocks.Preprocess('caffe', name='preprocess')
    self.assertEqual(blocks.Preprocess.from_config(layer.get_config()).get_config(),
                     layer.get_config())
