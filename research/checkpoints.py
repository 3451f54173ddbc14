"""Saving a run's checkpoints in its workdir and restoring a model from them."""

import hashlib
import os
import shutil
import tempfile

from absl import logging
import tensorflow as tf

from research import config as config_lib
from research import models
from research import outputs
from research.errors import UserError
from research.train import optim

CHECKPOINT_DIR = 'checkpoints'
BEST_DIR = 'best'  # under CHECKPOINT_DIR
DATA_INFO = 'data_info.json'


def training_checkpoint(model, optimizer, step):
  """Everything a run needs to continue exactly: weights, optimizer slots, iterations and loss
  scale, the step (which fixes the data position and the augmentation seeds), and the states of
  Keras' random generators (Dropout's), which tf.train.Checkpoint(model=...) does not reach.

  With config.ema_decay the moving averages (optimizer variables, saved once) are also listed
  under `ema`, in the order of model.trainable_variables: inference finds them there without
  rebuilding the optimizer."""
  rng = [v for v in model.variables if 'seed_generator' in v.path]
  ema = optim.ema_variables(optimizer)
  return tf.train.Checkpoint(model=model, optimizer=optimizer, step=step, rng=rng,
                             **({'ema': ema} if ema else {}))


# What a truncated, corrupt or half-deleted checkpoint raises on restore (a truncated data file
# gives IndexError "Read less bytes than requested"); a checkpoint of another model gives
# AssertionError or ValueError instead, and is not a reason to fall back.
_UNREADABLE = (tf.errors.OpError, IndexError)


def restore_newest_readable(checkpoint, paths, strict=True):
  """Restores the newest of `paths` that can be read; returns its path or None if `paths` is
  empty. Unreadable ones are skipped with a warning; one that belongs to another model is an
  error. `strict`: every object of the checkpoint must match (training); else only the
  objects that exist here (inference, without the optimizer)."""
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
      raise UserError(f'checkpoint {path} does not match this model and optimizer '
                      f'({str(e).splitlines()[0][:120]}): use a new --workdir') from None
  if paths:
    raise UserError(f'no readable checkpoint among {len(paths)} in '
                    f'{os.path.dirname(paths[-1])!r}: pass a new --workdir')
  return None


def checkpoint_paths(directory):
  """The checkpoints the directory's state file lists, oldest first (complete ones only: the
  state file is rewritten atomically after a checkpoint's files are in place)."""
  state = tf.train.get_checkpoint_state(directory)
  return list(state.all_model_checkpoint_paths) if state else []


class Saver:
  """Keeps the `keep` latest checkpoints and the best by validation accuracy.

  Under a multi-worker strategy every worker must take part in a save (variables may need a
  collective to be read), so every worker calls `save`; only the chief's land in the workdir,
  the others write to a temporary directory that `close` removes.
  """

  def __init__(self, checkpoint, workdir, keep, chief=True, worker=0, lock=None):
    self.checkpoint = checkpoint
    self.chief = chief
    self.lock = lock  # the workdir's (research.workdir_lock), checked before every save
    self.shared = os.path.join(workdir, CHECKPOINT_DIR)  # what every worker restores from
    if chief:
      root = self.shared
    else:
      # A fixed name per (workdir, worker): a killed worker's leftovers go at its next start.
      key = hashlib.sha1(os.path.abspath(workdir).encode()).hexdigest()[:12]
      root = os.path.join(tempfile.gettempdir(), f'worker-checkpoints-{key}-{worker}')
      shutil.rmtree(root, ignore_errors=True)
    self.root = root
    self.latest = tf.train.CheckpointManager(checkpoint, root, max_to_keep=keep)
    self.best = tf.train.CheckpointManager(checkpoint, os.path.join(root, BEST_DIR),
                                           max_to_keep=1)
    best_json = os.path.join(self.shared, BEST_DIR, 'best.json')
    self.best_accuracy = (outputs.read_json(best_json)['validation_accuracy']
                          if os.path.exists(best_json) else -1.0)
    if chief:
      # Leftovers of a save that was killed midway: never listed in the state file, so unused.
      for partial in tf.io.gfile.glob(os.path.join(root, '*_temp*')):
        tf.io.gfile.rmtree(partial)

  def restore(self):
    """The newest readable of the latest checkpoints (see restore_newest_readable), or None."""
    return restore_newest_readable(self.checkpoint, checkpoint_paths(self.shared))

  def save(self, step):
    return self._write(self.latest, step)

  def _write(self, manager, step):
    """manager.save, or on a failed write (disk full, quota) a one-line UserError that names
    the file and the errno, with the partial files removed and the earlier checkpoints kept."""
    if self.lock is not None:
      self.lock.check()  # another run took the workdir over: write nothing more
    try:
      return manager.save(checkpoint_number=step)
    except (tf.errors.OpError, OSError) as e:
      prefix = os.path.join(manager.directory, f'ckpt-{step}')
      if prefix not in checkpoint_paths(manager.directory):
        for partial in tf.io.gfile.glob(prefix + '_temp*') + tf.io.gfile.glob(prefix + '.*'):
          _remove(partial)
      raise outputs.write_error('checkpoint', prefix, e, self.kept()) from None

  def kept(self):
    """What a run that fails now leaves to resume from, in words (for its last line)."""
    listed = checkpoint_paths(self.shared)
    if not listed:
      return 'no checkpoint was saved yet: make room (or fix the cause), then re-run'
    return (f'the latest checkpoint, {listed[-1]}, is complete: make room (or fix the cause), '
            'then re-run to resume from it')

  def save_if_best(self, step, accuracy):
    """Saves into best/ when `accuracy` beats every earlier one; returns whether it did."""
    if accuracy <= self.best_accuracy:
      return False
    self.best_accuracy = accuracy
    self._write(self.best, step)
    outputs.write_json(os.path.join(self.root, BEST_DIR, 'best.json'),
                       {'step': step, 'validation_accuracy': accuracy})
    return True

  def close(self):
    if not self.chief:
      shutil.rmtree(self.root, ignore_errors=True)


def _remove(path):
  if tf.io.gfile.isdir(path):
    tf.io.gfile.rmtree(path)
  else:
    tf.io.gfile.remove(path)


# The entry points' --checkpoint help: one text for evaluate, predict and export.
CHECKPOINT_HELP = ('Which checkpoint: best (the run\'s best by validation accuracy, else its '
                   'latest), latest, or a path (a checkpoint prefix like W/checkpoints/ckpt-350, '
                   'or a checkpoints directory).')


def _candidates(workdir, checkpoint):
  """(paths to try, oldest first; what they are, for messages) for --checkpoint=`checkpoint`."""
  root = os.path.join(workdir, CHECKPOINT_DIR)
  if checkpoint == 'best':
    paths = checkpoint_paths(os.path.join(root, BEST_DIR))
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
  if given); its path, or None if none given."""
  for path in reversed(paths):
    try:
      # The optimizer's slots are in the file but not needed here; every model variable must be.
      tf.train.Checkpoint(model=model, **({'ema': ema} if ema else {})).restore(path) \
          .expect_partial().assert_existing_objects_matched()
      return path
    except _UNREADABLE as e:
      logging.warning('Checkpoint %s is unreadable (%s): trying the one before it.', path,
                      str(e).splitlines()[0][:160])
    except (AssertionError, ValueError) as e:
      # TF's message names internal graph objects; the detail goes to the log, the user gets
      # the cause in words.
      logging.info('Restoring %s failed: %s', path, str(e).splitlines()[0][:300])
      raise UserError(f'{what} ({path}) belongs to another model (its variables are missing or '
                      'of other shapes): pass a checkpoint of this --workdir\'s run') from None
  if paths:
    raise UserError(f'{what} is unreadable ({len(paths)} tried in {os.path.dirname(paths[-1])!r}'
                    '): pass another --checkpoint')
  return None


def load_for_inference(workdir, checkpoint='best'):
  """(config, data info dict, model with restored weights, the checkpoint path used) of a
  training run's workdir. `checkpoint`: 'best' (best/ if the run has one, else the latest),
  'latest', or a path (a checkpoint prefix such as W/checkpoints/ckpt-350, or a directory of
  checkpoints). A run with config.ema_decay and config.ema_eval gives the moving average of
  its weights."""
  config = config_lib.load(workdir)
  info_path = os.path.join(workdir, DATA_INFO)
  if not os.path.exists(info_path):
    raise UserError(f'{workdir!r} holds no {DATA_INFO}: pass the --workdir of a training run')
  info = outputs.read_json(info_path)
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
  from research.train import init_from  # pylint: disable=import-outside-toplevel  # imports us
  init_from.freeze(config, model)
  return [tf.Variable(tf.zeros_like(v)) for v in model.trainable_variables]
