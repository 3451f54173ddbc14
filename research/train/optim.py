"""Optimizers and learning-rate schedules from the config (linear warmup, then cosine or steps)."""

import keras
import tensorflow as tf

from research.errors import UserError


class Warmup(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0 to `after(0)` over `warmup_steps`, then `after(step - warmup_steps)`."""

  def __init__(self, after, warmup_steps):
    self.after = after
    self.warmup_steps = warmup_steps

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    if not self.warmup_steps:
      return self.after(step)
    warm = self.after(0) * step / self.warmup_steps
    return tf.where(step < self.warmup_steps, warm, self.after(step - self.warmup_steps))

  def get_config(self):
    return {'after': keras.optimizers.schedules.serialize(self.after),
            'warmup_steps': self.warmup_steps}


def schedule(cfg, total_steps, steps_per_epoch):
  """`cfg` is config.schedule: name (cosine|step|constant), warmup_epochs, and for `step`
  boundaries_epochs with decay_factor."""
  warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
  lr = cfg.learning_rate
  if cfg.name == 'cosine':
    after = keras.optimizers.schedules.CosineDecay(lr, max(total_steps - warmup, 1),
                                                   alpha=cfg.final_fraction)
  elif cfg.name == 'step':
    boundaries = [int(e * steps_per_epoch) - warmup for e in cfg.boundaries_epochs]
    values = [lr * cfg.decay_factor ** i for i in range(len(boundaries) + 1)]
    after = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
  elif cfg.name == 'constant':
    after = keras.optimizers.schedules.CosineDecay(lr, 1, alpha=1.0)  # alpha=1: never decays
  else:
    raise UserError(f'unknown schedule {cfg.name!r}: use cosine, step or constant')
  return Warmup(after, warmup)


def optimizer(cfg, learning_rate, loss_scaling=False):
  """`cfg` is config.optimizer: name (sgd|adam|adamw), momentum, nesterov, weight_decay.

  `loss_scaling` wraps it in dynamic loss scaling, which float16 training needs: the scale
  halves on a step with non-finite gradients (the step is skipped) and doubles after 2000
  finite ones; it is an optimizer variable, so checkpoints keep it.
  """
  if cfg.name == 'sgd':
    opt = keras.optimizers.SGD(learning_rate, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay or None)
  elif cfg.name == 'adam':
    opt = keras.optimizers.Adam(learning_rate)
  elif cfg.name == 'adamw':
    opt = keras.optimizers.AdamW(learning_rate, weight_decay=cfg.weight_decay)
  else:
    raise UserError(f'unknown optimizer {cfg.name!r}: use sgd, adam or adamw')
  return keras.optimizers.LossScaleOptimizer(opt) if loss_scaling else opt
