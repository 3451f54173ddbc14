"""Optimizers and learning-rate schedules from the config (linear warmup, then cosine or steps),
and the exponential moving average of the weights that the optimizers keep."""

import contextlib

import keras
import tensorflow as tf

from research.core.errors import UserError


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


# The optimizers by config name. LAMB (You et al., 2019) and Lion (Chen et al., 2023) are the
# large-batch ones; SGD takes momentum and nesterov.
NAMES = ('sgd', 'adam', 'adamw', 'lamb', 'lion')


def optimizer(cfg, learning_rate, loss_scaling=False, ema_decay=0.0, variables=None):
  """`cfg` is config.optimizer: name (one of NAMES), momentum, nesterov, weight_decay,
  decay_kernels_only (biases and batch-norm scales and offsets of `variables`, the model's
  trainable ones, are then not decayed).

  The optimizer takes gradients already summed across replicas (see apply_as_reduced).
  `loss_scaling` wraps it in dynamic loss scaling, which float16 training needs: the scale
  halves on a step with non-finite gradients (the step is skipped) and doubles after 2000
  finite ones; it is an optimizer variable, so checkpoints keep it. `ema_decay` > 0 keeps an
  exponential moving average of the trainable weights (Keras' use_ema, see ema_variables).
  """
  ema = dict(use_ema=True, ema_momentum=ema_decay) if ema_decay else {}
  if cfg.name == 'sgd':
    opt = keras.optimizers.SGD(learning_rate, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay or None, **ema)
  elif cfg.name == 'adam':
    opt = keras.optimizers.Adam(learning_rate, **ema)
  elif cfg.name == 'adamw':
    opt = keras.optimizers.AdamW(learning_rate, weight_decay=cfg.weight_decay, **ema)
  elif cfg.name == 'lamb':
    opt = keras.optimizers.Lamb(learning_rate, weight_decay=cfg.weight_decay or None, **ema)
  elif cfg.name == 'lion':
    opt = keras.optimizers.Lion(learning_rate, weight_decay=cfg.weight_decay or None, **ema)
  else:
    raise UserError(f'unknown optimizer {cfg.name!r}: use one of {", ".join(NAMES)}')
  if cfg.get('decay_kernels_only') and variables is not None:
    opt.exclude_from_weight_decay(var_list=[v for v in variables if not _is_kernel(v)])
  apply_as_reduced(opt)
  return keras.optimizers.LossScaleOptimizer(opt) if loss_scaling else opt


def _is_kernel(variable):
  """A convolution's or dense layer's weights (Keras names them kernel, depthwise_kernel, ...),
  as opposed to biases and batch norm's gamma and beta."""
  return variable.name.endswith('kernel')


def apply_as_reduced(opt):
  """Makes `opt` apply the gradients it is given without summing them across replicas first.

  The train step sums them itself (one all-reduce) to clip by the norm of the global gradient;
  Keras' own clipping (global_clipnorm) would see each replica's local gradient instead. Keras
  3 has no public switch for this: its TensorFlow optimizers sum in the private
  `_all_reduce_sum_gradients` (keras/src/backend/tensorflow/optimizer.py), called once per
  apply in a replica context. It becomes the identity here; tests/test_distribute.py checks
  that a mirrored step still equals a one-device step, which fails if the gradients are summed
  twice or not at all.
  """
  if not callable(getattr(opt, '_all_reduce_sum_gradients', None)):
    raise RuntimeError(f'Keras {keras.__version__} no longer sums gradients in '
                       '_all_reduce_sum_gradients: research/train/optim.py must follow it')
  opt._all_reduce_sum_gradients = list  # pylint: disable=protected-access


def ema_variables(opt):
  """The moving averages of `opt`'s trainable variables, in their order; [] without EMA."""
  inner = getattr(opt, 'inner_optimizer', opt)  # a LossScaleOptimizer's averages are inside
  if not inner.use_ema:
    return []
  # Keras keeps them in a private list; they are optimizer variables, so checkpoints hold them.
  return list(inner._model_variables_moving_average)  # pylint: disable=protected-access


@contextlib.contextmanager
def ema_weights(model, opt):
  """The model's trainable weights replaced by their moving averages for the duration, then
  restored bitwise (under any strategy: the swap runs in the cross-replica context)."""
  if not ema_variables(opt):
    yield
    return
  variables = model.trainable_variables
  raw = [tf.identity(v) for v in variables]  # copies: the variables are overwritten next
  opt.finalize_variable_values(variables)  # Keras: each device's copy from its own average
  try:
    yield
  finally:
    for v, value in zip(variables, raw):
      v.assign(value)
