"""What a training run shows in TensorBoard: its writers, scalars, hyperparameters, the first
batch as an image, and the profile trace of chosen steps."""

import contextlib

from absl import logging
import tensorflow as tf

from research.core import config as config_lib
from research.core import layout
from research.core import outputs
from research.core import plots
from research.data import pipeline
from research.data import preprocess
from research.train import steps


def writer(workdir, split, chief):
  """TensorBoard's writer of `split` in `workdir`: the chief's; the other workers write
  nothing."""
  if chief:
    return tf.summary.create_file_writer(layout.summary_dir(workdir, split))
  return tf.summary.create_noop_writer()


@contextlib.contextmanager
def writes(saver):
  """A TensorBoard write that fails (disk full: raised by the op that flushes) ends the run in
  one line; events files are append-only, and TensorBoard reads up to their last whole record."""
  try:
    yield
  except tf.errors.OpError as e:
    raise outputs.write_error('TensorBoard events file', None, e, saver.kept()) from None


def scalars(to, step, values, saver):
  """Writes {tag: value} at `step` with writer `to`."""
  with writes(saver), to.as_default():
    for name, value in values.items():
      tf.summary.scalar(name, value, step=step)


def flush(writers, saver):
  with writes(saver):
    for w in writers:
      w.flush()


def train_tags(config):
  """TensorBoard tag -> results key of the training scalars. train/, validation/ and test/
  share the tags accuracy and loss, except that a training loss with label smoothing is not the
  cross-entropy the others report and says so in its tag."""
  loss = 'loss_with_label_smoothing' if config.label_smoothing else 'loss'
  return {loss: 'train_loss', 'accuracy': 'train_accuracy', 'learning_rate': 'learning_rate',
          'images_per_sec': 'images_per_sec', 'bad_examples': 'bad_examples',
          'grad_norm': 'grad_norm'}


def write_hparams(config, to, saver):
  """The run's config as TensorBoard hyperparameters (HParams tab): every field, flattened."""
  from tensorboard.plugins.hparams import api as hparams  # pylint: disable=import-outside-toplevel
  values = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
            for k, v in config_lib.flatten(config).items()}
  with writes(saver), to.as_default():
    hparams.hparams(values)


def write_input_grid(config, data, step, to, workdir, saver):
  """The first training batch as the model sees it (augmented, resized) with its labels."""
  n = min(config.image_grid_size, config.batch_size)
  batches = pipeline.train_dataset(data.train, config.batch_size, config.seed, start_step=step)
  try:
    images, labels = next(iter(batches))[:2]
  except tf.errors.OpError:
    return  # a bad example: training reads this batch next and names it (or skips it)
  x = preprocess.preprocess(images[:n], input_size=config.model.input_size, training=True,
                            augment=config.augment if config.augment.enabled else None,
                            seed=steps.augment_seed(config.seed, step),
                            positions=tf.range(n), global_batch=config.batch_size)
  grid = plots.input_grid(x.numpy(), labels[:n].numpy(), data.class_names,
                          layout.input_grid_path(workdir))
  with writes(saver), to.as_default():
    tf.summary.image('inputs', grid[None], step=step)


class Profiler:
  """The TensorBoard profile trace of config.profile_steps, on the chief, into train/."""

  def __init__(self, config, workdir, chief):
    self.start, self.stop = (int(v) for v in config.profile_steps)
    self.logdir, self.on = layout.summary_dir(workdir, 'train'), False
    self.marks = (self.start, self.stop) if chief and self.stop else ()

  def at(self, step):
    """Called before each chunk and after the last: starts or stops the trace at `step`."""
    if self.marks and step == self.start and not self.on:
      tf.profiler.experimental.start(self.logdir)
      self.on = True
    elif self.on and step >= self.stop:
      self.end()
      logging.info('Profile of steps %d-%d written to %s (TensorBoard: Profile).',
                   self.start + 1, self.stop, self.logdir)

  def end(self):
    if self.on:
      tf.profiler.experimental.stop()
      self.on = False
