"""The outer training loop: train in compiled chunks, log, evaluate, checkpoint, summarise.

Re-running with the same workdir resumes from the latest checkpoint: the data order is a pure
function of (seed, step), so the optimizer's step counter is all the data position there is.
"""

import dataclasses
import os
import time

from absl import logging
import tensorflow as tf

from research import checkpoints
from research import config as config_lib
from research import outputs
from research import strategy as strategy_lib
from research.data import datasets
from research.data import pipeline
from research.data import preprocess
from research.errors import UserError
from research.train import optim
from research.train import steps


def _check_workdir(config, workdir):
  """Refuses a bad config or a workdir that holds another experiment, before any write."""
  config_lib.check_types(config)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f'workdir {workdir!r} is a file: pass a directory')
  saved = os.path.join(workdir, 'config.json')
  if os.path.exists(saved):
    config_lib.check_compatible(config_lib.load(workdir), config, workdir)
  elif tf.train.latest_checkpoint(os.path.join(workdir, checkpoints.CHECKPOINT_DIR)):
    raise UserError(f'workdir {workdir!r} holds checkpoints but no config.json: pass a new '
                    '--workdir')


def _next_stop(step, total, intervals):
  """The next step at which the loop must surface: a multiple of any interval, or the end."""
  return min([total] + [(step // k + 1) * k for k in intervals if k > 0])


def _write_input_grid(config, data, step, writer, workdir):
  """The first training batch as the model sees it (augmented, resized) with its labels."""
  n = min(config.image_grid_size, config.batch_size)
  batches = pipeline.train_dataset(data.train, config.batch_size, config.seed, start_step=step)
  images, labels = next(iter(batches))
  x = preprocess.preprocess(images[:n], input_size=config.model.input_size, training=True,
                            augment=config.augment if config.augment.enabled else None,
                            seed=steps.augment_seed(config.seed, step))
  grid = outputs.image_grid(x.numpy(), labels[:n].numpy(), data.class_names,
                            os.path.join(workdir, 'inputs.png'))
  with writer.as_default():
    tf.summary.image('inputs', grid[None], step=step)


def _scalars(writer, step, values):
  with writer.as_default():
    for name, value in values.items():
      tf.summary.scalar(name, value, step=step)


@dataclasses.dataclass
class _Run:
  """What the loop works with, built once by _setup."""
  strategy: tf.distribute.Strategy
  data: datasets.Data
  model: object
  optimizer: object
  lr: object
  manager: tf.train.CheckpointManager
  steps_per_epoch: int
  total_steps: int


def _setup(config, workdir):
  """Checks, loads data, builds model and optimizer under the strategy, restores if it can."""
  _check_workdir(config, workdir)
  strategy = strategy_lib.build(config)
  data = datasets.load(config.dataset)
  os.makedirs(workdir, exist_ok=True)
  config_lib.save(config, workdir)
  outputs.write_json(os.path.join(workdir, checkpoints.DATA_INFO), {
      'num_classes': data.num_classes, 'class_names': list(data.class_names),
      'image_shape': list(data.image_shape)})
  per_epoch = pipeline.steps_per_epoch(len(data.train), config.batch_size)
  total = (config.num_train_steps if config.num_train_steps > 0
           else int(round(config.num_epochs * per_epoch)))
  # Variables and optimizer slots must be created under the strategy to be mirrored.
  with strategy.scope():
    model, table = checkpoints.build_model(config.model, data.num_classes, data.image_shape)
    lr = optim.schedule(config.schedule, total, per_epoch)
    optimizer = optim.optimizer(config.optimizer, lr)
    optimizer.build(model.trainable_variables)
  logging.info('Model %s:\n%s', config.model.name, table)
  manager = tf.train.CheckpointManager(
      checkpoints.training_checkpoint(model, optimizer),
      os.path.join(workdir, checkpoints.CHECKPOINT_DIR), max_to_keep=config.keep_checkpoints)
  restored = checkpoints.restore_latest(manager.checkpoint, manager.directory)
  if restored:
    step = int(optimizer.iterations.numpy())
    logging.info('Resumed from %s at step %d of %d (epoch %.2f).', restored, step, total,
                 step / per_epoch)
  return _Run(strategy, data, model, optimizer, lr, manager, per_epoch, total)


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the summary."""
  wall_start = time.time()
  run = _setup(config, workdir)
  strategy, data, total = run.strategy, run.data, run.total_steps
  step = int(run.optimizer.iterations.numpy())
  train_iter = iter(strategy.distribute_datasets_from_function(
      lambda ctx: pipeline.train_dataset(data.train, config.batch_size, config.seed,
                                         start_step=step, input_context=ctx)))
  train_fn = steps.make_train_fn(strategy, run.model, run.optimizer, config)
  eval_fn = steps.make_eval_fn(strategy, run.model, config, data.num_classes)

  def evaluate(split):
    ds = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.eval_dataset(split, config.eval_batch_size, ctx))
    return steps.evaluate_split(strategy, eval_fn, ds)

  train_writer = tf.summary.create_file_writer(os.path.join(workdir, 'train'))
  val_writer = tf.summary.create_file_writer(os.path.join(workdir, 'validation'))
  if config.image_grid_size and step < total:
    _write_input_grid(config, data, step, train_writer, workdir)
  eval_every = max(int(round(config.eval_every_epochs * run.steps_per_epoch)), 1)
  sums, window_start, window_step = tf.zeros([3]), time.time(), step
  train_start, summary = time.time(), {}
  while step < total:
    n = _next_stop(step, total, (config.steps_per_loop, config.log_every_steps, eval_every,
                                 config.checkpoint_every_steps)) - step
    sums += train_fn(train_iter, tf.constant(n))
    step += n
    if step % config.log_every_steps == 0 or step == total:
      summary.update(_log_window(sums, time.time() - window_start, step, window_step, run))
      _scalars(train_writer, step, {tag: summary[k] for tag, k in _TRAIN_SCALARS.items()})
      sums, window_start, window_step = tf.zeros([3]), time.time(), step
    if data.validation is not None and (step % eval_every == 0 or step == total):
      val = evaluate(data.validation)
      summary['validation_accuracy'] = val['accuracy']
      logging.info('step %d validation: loss %.4f accuracy %.4f', step, val['loss'],
                   val['accuracy'])
      _scalars(val_writer, step, {'loss': val['loss'], 'accuracy': val['accuracy']})
    if step % config.checkpoint_every_steps == 0 or step == total:
      run.manager.save(checkpoint_number=step)
  train_seconds = time.time() - train_start

  test = evaluate(data.test)
  logging.info('Test: accuracy %.4f loss %.4f over %d examples.', test['accuracy'],
               test['loss'], test['num_examples'])
  for writer in (train_writer, val_writer):
    writer.flush()
  return _write_summary(workdir, summary, step=step, epoch=step / run.steps_per_epoch,
                        test_accuracy=test['accuracy'], test_loss=test['loss'],
                        train_seconds=train_seconds, wall_seconds=time.time() - wall_start,
                        weights_digest=outputs.weights_digest(run.model))


# TensorBoard tag -> summary key; train/ and validation/ share the tags loss and accuracy.
_TRAIN_SCALARS = {'loss': 'train_loss', 'accuracy': 'train_accuracy',
                  'learning_rate': 'learning_rate', 'images_per_sec': 'images_per_sec'}


def _log_window(sums, seconds, step, window_start_step, run):
  """Logs the metrics of the steps since the last log line; returns them."""
  loss_sum, correct, count = (float(v) for v in sums.numpy())
  m = {'train_loss': loss_sum / count, 'train_accuracy': correct / count,
       'images_per_sec': count / seconds, 'learning_rate': float(run.lr(step - 1))}
  eta = (run.total_steps - step) * seconds / (step - window_start_step)
  logging.info('step %d/%d epoch %.2f: loss %.4f accuracy %.4f lr %.2e %.0f img/s ETA %.0fs',
               step, run.total_steps, step / run.steps_per_epoch, m['train_loss'],
               m['train_accuracy'], m['learning_rate'], m['images_per_sec'], eta)
  return m


def _write_summary(workdir, latest, **final):
  """train_summary.json; over resumed sessions the seconds add up and the last train metrics
  seen are kept (a re-run of a finished run only re-evaluates)."""
  path = os.path.join(workdir, 'train_summary.json')
  previous = outputs.read_json(path) if os.path.exists(path) else {}
  for key in ('train_seconds', 'wall_seconds'):
    final[key] += previous.get(key, 0.0)
  summary = {**previous, **latest, **final}
  outputs.write_json(path, summary)
  return summary
