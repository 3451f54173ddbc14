"""A run's checkpoints in its workdir: where they are, restoring the newest readable one, and
loading a trained model from them for inference (evaluate, predict, export). Writing them is the
training loop's (research/train/saving.py)."""

import os

from absl import logging
import tensorflow as tf

from research import models
from research.core import config as config_lib
from research.core import layout
from research.core.errors import UserError

# The name research/submit/slurm.py knows the checkpoint directory by (research/core/layout.py's).


# What a truncated, corrupt or half-deleted checkpoint raises on restore (a truncated data file
# gives IndexError "Read less bytes than requested"); a checkpoint of another model gives
# AssertionError or ValueError instead, and is not a reason to fall back.
_UNREADABLE = (tf.errors.OpError, IndexError)


def restore_newest_readable(checkpoint, paths, strict=True, mismatch=None, unreadable=None):
  """Restores the newest of `paths` that can be read into `checkpoint`; returns its path, or
  None if `paths` is empty. Unreadable ones are skipped with a warning. One that belongs to
  another model raises mismatch(path, the first line of TF's complaint), and when none can be
  read, unreadable(paths) is raised: UserErrors, by default in a training run's words.
  `strict`: every object of the checkpoint must match (training); else only the objects that
  exist here (inference and fine-tuning, without the optimizer)."""
  for path in reversed(paths):
    try:
      status = checkpoint.restore(path)
      if strict:
        status.assert_consumed()
      else:
        status.expect_partial().assert_existing_objects_matched()
      return path
    except _UNREADABLE as e:
      logging.warning('Checkpoint %s is unreadable (%s): trying the one before it.', path,
                      str(e).splitlines()[0][:160])
    except (AssertionError, ValueError) as e:
      raise (mismatch or _mismatch)(path, brief(str(e))) from None
  if paths:
    raise (unreadable or _unreadable)(paths)
  return None


def brief(text, limit=120):
  """An error's first line for a one-line message: at most about `limit` characters, cut at
  a word, with the brackets it opened closed."""
  text = text.strip().splitlines()[0] if text.strip() else ''
  if len(text) > limit:
    text = text[:limit].rsplit(' ', 1)[0] + ' ...'
  return text + ')' * max(text.count('(') - text.count(')'), 0)


def _mismatch(path, detail):
  return UserError(f'checkpoint {path} does not match this model and optimizer ({detail}): '
                   'use a new --workdir')


def _unreadable(paths):
  return UserError(f'no readable checkpoint among {len(paths)} in '
                   f'{os.path.dirname(paths[-1])!r}: pass a new --workdir')


def checkpoint_paths(directory):
  """The checkpoints the directory's state file lists, oldest first (complete ones only: the
  state file is rewritten atomically after a checkpoint's files are in place)."""
  state = tf.train.get_checkpoint_state(directory)
  return list(state.all_model_checkpoint_paths) if state else []


def trained(workdir):
  """The latest checkpoints of the run in `workdir`, oldest first ([] before its first)."""
  return checkpoint_paths(layout.checkpoint_dir(workdir))


def _candidates(workdir, checkpoint):
  """(paths to try, oldest first; what they are, for messages) for --checkpoint=`checkpoint`."""
  root = layout.checkpoint_dir(workdir)
  if checkpoint == 'best':
    paths = checkpoint_paths(layout.best_dir(root))
    if paths:
      return paths, 'the best checkpoint'
    # Runs without a validation split (or stopped before their first evaluation) have no best/.
    logging.warning('%s has no best checkpoint (no validation yet, or no validation split): '
                    'using the latest.', workdir)
    checkpoint = 'latest'
  if checkpoint == 'latest':
    return checkpoint_paths(root), 'the latest checkpoint'
  if tf.io.gfile.isdir(checkpoint):
    paths = checkpoint_paths(checkpoint)
    if not paths:
      raise UserError(f'{checkpoint!r} holds no checkpoint: pass a checkpoint prefix like '
                      f'{os.path.join(root, "ckpt-100")!r}, a checkpoints directory, best or '
                      'latest')
    return paths, f'the newest checkpoint in {checkpoint!r}'
  if not tf.io.gfile.exists(checkpoint + '.index'):
    raise UserError(f'checkpoint {checkpoint!r} does not exist: pass a prefix such as '
                    f'{os.path.join(root, "ckpt-100")!r} (without .index), a checkpoints '
                    'directory, best or latest')
  return [checkpoint], f'checkpoint {checkpoint!r}'


def _restore_for_inference(model, paths, what, ema=None):
  """The newest readable of `paths` restored into `model` (and the moving averages into `ema`,
  if given); its path, or None if none given. The optimizer's slots are in the files but not
  needed here; every model variable must be."""

  def mismatch(path, detail):
    # TF's message names internal graph objects; the detail goes to the log, the user gets the
    # cause in words.
    logging.info('Restoring %s failed: %s', path, detail[:300])
    return UserError(f'{what} ({path}) belongs to another model (its variables are missing or '
                     'of other shapes): pass a checkpoint of this --workdir\'s run')

  def unreadable(paths):
    return UserError(f'{what} is unreadable ({len(paths)} tried in '
                     f'{os.path.dirname(paths[-1])!r}): pass another --checkpoint')

  checkpoint = tf.train.Checkpoint(model=model, **({'ema': ema} if ema else {}))
  return restore_newest_readable(checkpoint, paths, strict=False, mismatch=mismatch,
                                 unreadable=unreadable)


def load_for_inference(workdir, checkpoint='best'):
  """(config, data info dict, model with restored weights, the checkpoint path used) of a
  training run's workdir. `checkpoint`: 'best' (best/ if the run has one, else the latest),
  'latest', or a path (a checkpoint prefix such as W/checkpoints/ckpt-350, or a directory of
  checkpoints). A run with config.ema_decay and config.ema_eval gives the moving average of
  its weights."""
  config = config_lib.load(workdir)
  info = layout.read_data_info(workdir)
  if info is None:
    raise UserError(f'{workdir!r} holds no {layout.DATA_INFO}: pass the --workdir of a training '
                    'run')
  model, _ = models.build_model(config.model, info['num_classes'], info['image_shape'])
  paths, what = _candidates(workdir, checkpoint)
  ema = _averages_like(config, model)
  path = _restore_for_inference(model, paths, what, ema)
  if path is None:
    raise UserError(f'{workdir!r} holds no checkpoint yet: train first, or wait for the first '
                    'checkpoint')
  for v, average in zip(model.trainable_variables, ema or []):
    v.assign(average)
  logging.info('Restored %s (%s%s).', path, what, ', its EMA weights' if ema else '')
  return config, info, model, path


def _averages_like(config, model):
  """Variables to restore the moving averages of the run's trained weights into, when it
  is judged by them (config.ema_eval); else None. Trained: the blocks config.freeze left
  trainable, as the training run built its optimizer."""
  if not (config.get('ema_decay') and config.get('ema_eval', True)):
    return None  # a run saved before these fields existed had no average
  models.freeze(model, config.freeze)
  return [tf.Variable(tf.zeros_like(v)) for v in model.trainable_variables]
