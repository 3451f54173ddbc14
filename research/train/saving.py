"""Saving a training run's checkpoints: what one holds, and the Saver that keeps the latest and
the best in the workdir (research/core/checkpoints.py reads them back)."""

import hashlib
import os
import shutil
import tempfile

import tensorflow as tf

from research.core import checkpoints
from research.core import layout
from research.core import outputs
from research.train import optim


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


class Saver:
  """Keeps the `keep` latest checkpoints and the best by validation accuracy.

  Under a multi-worker strategy every worker must take part in a save (variables may need a
  collective to be read), so every worker calls `save`; only the chief's land in the workdir,
  the others write to a temporary directory that `close` removes.
  """

  def __init__(self, checkpoint, workdir, keep, chief=True, worker=0, lock=None):
    self.checkpoint = checkpoint
    self.chief = chief
    self.lock = lock  # the workdir's (research.infra.workdir_lock), checked before every save
    # What every worker restores from.
    self.shared = layout.checkpoint_dir(workdir)
    if chief:
      root = self.shared
    else:
      # A fixed name per (workdir, worker): a killed worker's leftovers go at its next start.
      key = hashlib.sha1(os.path.abspath(workdir).encode()).hexdigest()[:12]
      root = os.path.join(tempfile.gettempdir(), f'worker-checkpoints-{key}-{worker}')
      shutil.rmtree(root, ignore_errors=True)
    self.root = root
    self.latest = tf.train.CheckpointManager(checkpoint, root, max_to_keep=keep)
    self.best = tf.train.CheckpointManager(checkpoint, layout.best_dir(root), max_to_keep=1)
    best = layout.read_best(self.shared)
    self.best_accuracy = best['validation_accuracy'] if best else -1.0
    if chief:
      # Leftovers of a save that was killed midway: never listed in the state file, so unused.
      for partial in tf.io.gfile.glob(os.path.join(root, '*_temp*')):
        tf.io.gfile.rmtree(partial)

  def restore(self):
    """The newest readable of the latest checkpoints (checkpoints.restore_newest_readable), or
    None."""
    return checkpoints.restore_newest_readable(self.checkpoint,
                                               checkpoints.checkpoint_paths(self.shared))

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
      if prefix not in checkpoints.checkpoint_paths(manager.directory):
        for partial in tf.io.gfile.glob(prefix + '_temp*') + tf.io.gfile.glob(prefix + '.*'):
          _remove(partial)
      raise outputs.write_error('checkpoint', prefix, e, self.kept()) from None

  def kept(self):
    """What a run that fails now leaves to resume from, in words (for its last line)."""
    listed = checkpoints.checkpoint_paths(self.shared)
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
    layout.write_best(self.root, step, accuracy)
    return True

  def close(self):
    if not self.chief:
      shutil.rmtree(self.root, ignore_errors=True)


def _remove(path):
  if tf.io.gfile.isdir(path):
    tf.io.gfile.rmtree(path)
  else:
    tf.io.gfile.remove(path)
