"""Learning-rate schedules and optimizer construction."""

from absl.testing import parameterized
import keras
import ml_collections
import numpy as np
import tensorflow as tf

from research import models
from research.core import config as config_lib
from research.core.errors import UserError
from research.train import optim


def _schedule(**kw):
  cfg = ml_collections.ConfigDict(config_lib.base().schedule.to_dict())
  cfg.update(kw)
  return cfg


class DecayKernelsOnlyTest(tf.test.TestCase, parameterized.TestCase):
  """Which variables weight decay shrinks: a step with zero gradients moves only those."""

  @parameterized.product(name=('sgd', 'adamw', 'lamb', 'lion'), kernels_only=(False, True))
  def test_a_zero_gradient_step_decays_the_chosen_variables(self, name, kernels_only):
    cfg = config_lib.base().optimizer
    cfg.update(dict(name=name, weight_decay=0.1, decay_kernels_only=kernels_only))
    model = _cnn_with_batch_norm()
    variables = model.trainable_variables
    opt = optim.optimizer(cfg, 1.0, variables=variables)
    opt.build(variables)
    for v in variables:  # biases and beta start at zero, which decay leaves as it is
      v.assign(tf.fill(v.shape, 0.5))
    before = [v.numpy() for v in variables]
    opt.apply([tf.zeros_like(v) for v in variables], variables)
    shrunk = {v.path for v, b in zip(variables, before) if not np.array_equal(v.numpy(), b)}
    kernels = {v.path for v in variables if v.path.endswith('kernel')}
    self.assertNotEmpty(kernels)
    self.assertLess(len(kernels), len(variables))  # biases, gamma and beta too
    self.assertEqual(shrunk, kernels if kernels_only else {v.path for v in variables})


def _cnn_with_batch_norm():
  config = config_lib.base('cnn').model
  config.batch_norm = True
  model, _ = models.build_model(config, 10, (28, 28, 1))
  return model


class ScheduleTest(tf.test.TestCase, parameterized.TestCase):

  def test_warmup_is_linear_then_cosine_reaches_the_floor(self):
    lr = optim.schedule(_schedule(learning_rate=0.1, warmup_epochs=1.0, final_fraction=0.0),
                        total_steps=110, steps_per_epoch=10)
    self.assertAllClose(float(lr(0)), 0.0)
    self.assertAllClose(float(lr(5)), 0.05)
    self.assertAllClose(float(lr(10)), 0.1)
    self.assertAllClose(float(lr(60)), 0.05, atol=1e-6)  # half way through the cosine
    self.assertAllClose(float(lr(110)), 0.0, atol=1e-7)

  def test_step_decay_at_epoch_boundaries(self):
    lr = optim.schedule(_schedule(name='step', learning_rate=1.0, warmup_epochs=0.0,
                                  boundaries_epochs=(2.0, 4.0), decay_factor=0.1),
                        total_steps=60, steps_per_epoch=10)
    self.assertAllClose([float(lr(s)) for s in (0, 19, 21, 39, 41)],
                        [1.0, 1.0, 0.1, 0.1, 0.01])

  def test_constant(self):
    lr = optim.schedule(_schedule(name='constant', learning_rate=0.3, warmup_epochs=0.0),
                        total_steps=100, steps_per_epoch=10)
    self.assertAllClose([float(lr(s)) for s in (0, 50, 99)], [0.3] * 3)

  def test_unknown_schedule(self):
    with self.assertRaisesRegex(UserError, "unknown schedule 'linear'"):
      optim.schedule(_schedule(name='linear'), 10, 10)


class OptimizerTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(('sgd', keras.optimizers.SGD), ('adam', keras.optimizers.Adam),
                            ('adamw', keras.optimizers.AdamW), ('lamb', keras.optimizers.Lamb),
                            ('lion', keras.optimizers.Lion))
  def test_by_name(self, name, cls):
    cfg = config_lib.base().optimizer
    cfg.name = name
    self.assertIsInstance(optim.optimizer(cfg, 0.1), cls)

  def test_sgd_has_momentum(self):
    cfg = config_lib.base().optimizer
    cfg.name, cfg.momentum, cfg.nesterov = 'sgd', 0.8, True
    opt = optim.optimizer(cfg, 0.1)
    self.assertEqual((opt.momentum, opt.nesterov), (0.8, True))

  def test_unknown_optimizer(self):
    cfg = config_lib.base().optimizer
    cfg.name = 'rmsprop'
    with self.assertRaisesRegex(UserError, "unknown optimizer 'rmsprop': use one of sgd, adam, "
                                "adamw, lamb, lion"):
      optim.optimizer(cfg, 0.1)
