"""Learning-rate schedules and optimizer construction."""

from absl.testing import parameterized
import keras
import ml_collections
import tensorflow as tf

from research import config as config_lib
from research.errors import UserError
from research.train import optim


def _schedule(**kw):
  cfg = ml_collections.ConfigDict(config_lib.base().schedule.to_dict())
  cfg.update(kw)
  return cfg


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
                            ('adamw', keras.optimizers.AdamW))
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
    cfg.name = 'lamb'
    with self.assertRaisesRegex(UserError, "unknown optimizer 'lamb'"):
      optim.optimizer(cfg, 0.1)
