"""Everything a training run does before its first step: refuse a bad config or workdir, take the
workdir's lock, load the data and check it is the run's, choose the precision, build the model
and optimizer under the strategy, restore the run's checkpoint or load the weights it fine-tunes
from, record the config and the data, and open TensorBoard. Nothing is written before every
check has passed. The loop that follows is research/train/trainer.py's.
"""

import dataclasses
import json
import os
import time

from absl import logging
import keras
import tensorflow as tf

from research import models
from research.core import checkpoints
from research.core import config as config_lib
from research.core import layout
from research.core import strategy as strategy_lib
from research.core.errors import UserError
from research.data import datasets
from research.data import pipeline
from research.infra import workdir_lock
from research.train import init_from
from research.train import optim
from research.train import precision
from research.train import saving
from research.train import summaries


@dataclasses.dataclass(kw_only=True)
class Run:
  """What the loop works with, built once by setup."""
  strategy: tf.distribute.Strategy
  chief: bool  # writes the workdir; other workers compute alongside and write nothing there
  data: datasets.Data
  model: object
  optimizer: object
  lr: object
  step: tf.Variable  # steps taken: the data position and the augmentation seeds follow from it
  saver: saving.Saver
  steps_per_epoch: int
  total_steps: int
  eval_every: int  # steps between evaluations on the validation split
  precision_reason: str  # why config.mixed_precision is what it is (auto's choice, or given)
  init_from: str = ''  # the checkpoint this run's weights started from, if it started now
  lock: workdir_lock.WorkdirLock = None  # the chief's hold on the workdir
  writers: dict = None  # TensorBoard's writers of 'train' and 'validation'
  profiler: summaries.Profiler = None


def setup(config, workdir, start_over=False, accept=()):
  """Everything before the first step: checks, takes the workdir, loads data, builds model and
  optimizer under the strategy, restores if it can. Returns the run the loop trains; its
  caller releases run.lock."""
  check_workdir(config, workdir, start_over, accept)
  source = init_from.prepare(config, None if start_over else workdir)
  strategy = strategy_lib.build(config)  # first: a multi-worker strategy must precede any op
  config_lib.validate(config, strategy.num_replicas_in_sync)  # now with the replica count
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.utils.set_random_seed(config.seed)
  chief = strategy_lib.is_chief(strategy)
  reason = _resolve_precision(config, strategy, workdir, start_over)
  # The barriers and the restore are collectives too: a worker lost here is lost as in the loop.
  with strategy_lib.lost_worker_errors(strategy):
    lock = _take_lock(strategy, chief, workdir, start_over)
    try:
      return _build_run(config, workdir, start_over, strategy, chief, reason, source, lock)
    except BaseException:
      if lock is not None:
        lock.release()
      raise


def check_workdir(config, workdir, start_over, accept=()):
  """Refuses a bad config, a workdir that is no run's or holds another experiment, and a resume
  that changes the experiment's settings without `accept` naming them, before any write.
  Returns the changes the resume makes (config_lib.differences), {} for a new run."""
  config_lib.validate(config)
  if not workdir:
    raise UserError('--workdir is empty: give the directory of the run (new or to resume)')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f'workdir {workdir!r} is a file: pass a directory')
  entries = os.listdir(workdir) if os.path.isdir(workdir) else []
  if entries and not any(layout.is_run_file(e) for e in entries):
    shown = ', '.join(sorted(entries)[:3]) + (', ...' if len(entries) > 3 else '')
    raise UserError(f'workdir {workdir!r} is a directory of other files ({shown}), not a run: '
                    'pass a new or empty --workdir (nothing was changed)')
  if start_over:
    return {}
  trained = checkpoints.trained(workdir)
  if os.path.exists(layout.config_path(workdir)):
    saved = config_lib.load(workdir)
    if trained:
      diff = config_lib.check_resume(saved, config, workdir, accept)  # another experiment first
      if config.num_train_steps is not None:  # num_epochs needs the data: _build_run checks it
        _check_total(config.num_train_steps, workdir, start_over)
      return diff
    config_lib.check_compatible(saved, config, workdir)  # nothing trained yet: a new start
  elif trained:
    raise UserError(f'workdir {workdir!r} holds checkpoints but no config.json: pass a new '
                    '--workdir')
  return {}


def _check_total(total, workdir, start_over):
  """A run asked to end before the step it has reached says so, before it writes anything."""
  trained = [] if start_over else checkpoints.trained(workdir)
  reached = layout.checkpoint_step(trained[-1]) if trained else 0
  if total < reached:
    raise UserError(f'the run in {workdir!r} has reached step {reached}, past the {total} steps '
                    f'asked for: give config.num_train_steps >= {reached} ({reached} only '
                    're-evaluates it), or --start_over (nothing was changed)')


def _check_profile_steps(config, total):
  """config.profile_steps must lie inside the run: one line before anything is written."""
  start, stop = (int(v) for v in config.profile_steps)
  if (start, stop) != (0, 0) and not 0 <= start < stop <= total:
    raise UserError(f'config.profile_steps=({start}, {stop}) is outside the run: give (start, '
                    f'stop) with 0 <= start < stop <= {total} (its steps), or (0, 0) for none')


def _take_lock(strategy, chief, workdir, start_over):
  """The chief takes the workdir's lock (and moves an old run aside when starting over) before
  anything is written; every worker learns whether it could. Returns the lock (None elsewhere)."""
  lock, refusal = None, None
  if chief:
    try:
      lock = workdir_lock.WorkdirLock(workdir).acquire()
      if start_over:
        _set_aside(workdir, lock)
    except UserError as e:
      refusal = e
  # The other workers wait for the chief at its first collective: they must hear of a refusal.
  if _barrier(strategy, int(refusal is not None)):
    if lock is not None:
      lock.release()
    raise refusal or UserError(f'the chief could not take the lock of workdir {workdir!r}: see '
                               'its error')
  return lock


def _set_aside(workdir, lock):
  """Start over without losing anything: the old run moves to a sibling directory, and `lock`
  (held on `workdir`, so no run is using it) to the new, empty workdir."""
  if os.listdir(workdir) == [layout.LOCK]:
    return
  aside = f'{workdir.rstrip(os.sep)}.replaced-{time.strftime("%Y%m%d-%H%M%S")}'
  os.rename(workdir, aside)
  os.makedirs(workdir)
  lock.follow(aside)
  logging.warning('Starting over: the previous run in %s moved to %s.', workdir, aside)


def _barrier(strategy, value):
  """All workers meet here (a one-number all-reduce): the chief has prepared the workdir.
  Returns the chief's `value` (a small integer) on every worker."""

  def chief_value():
    first = tf.distribute.get_replica_context().replica_id_in_sync_group == 0
    return tf.where(first, tf.constant(value, tf.float32), 0.0)

  return int(strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(chief_value), axis=None))


def _resolve_precision(config, strategy, workdir, start_over):
  """Replaces config.mixed_precision `auto` by this run's precision; returns the reason."""
  resuming = not start_over and os.path.exists(layout.config_path(workdir))
  saved = config_lib.load(workdir).get('mixed_precision') if resuming else None
  config.mixed_precision, reason = precision.resolve(
      config.mixed_precision, precision.detect(strategy), saved)
  return reason


def _build_run(config, workdir, start_over, strategy, chief, reason, source, lock):
  data, reason = _agreed_data(config, workdir, start_over, strategy, chief, reason)
  per_epoch = pipeline.steps_per_epoch(len(data.train), config.batch_size)
  total = (config.num_train_steps if config.num_train_steps is not None
           else max(int(round(config.num_epochs * per_epoch)), 1))
  _check_total(total, workdir, start_over)
  _check_profile_steps(config, total)
  model, optimizer, lr, step = build_state(config, strategy, data.num_classes,
                                           data.image_shape, total, per_epoch)
  saver = saving.Saver(saving.training_checkpoint(model, optimizer, step), workdir,
                       config.keep_checkpoints, chief, strategy_lib.worker_index(strategy), lock)
  restored = saver.restore()
  # The one point where fine-tuning starts: the weights of init_from, when not resuming.
  start = init_from.load(source, config, data, model, strategy) if source and not restored else ''
  if restored:
    epoch, position = divmod(int(step.numpy()), per_epoch)
    logging.info('Resumed from %s: step %d of %d, epoch %d at batch %d of %d in its order%s.',
                 restored, step.numpy(), total, epoch, position, per_epoch,
                 _loss_scale_text(optimizer))
  if chief:
    # Only now: a run that cannot resume (a checkpoint of another model) changes nothing.
    _record_config(config, workdir, restored)
    layout.write_data_info(workdir, {
        'num_classes': data.num_classes, 'class_names': list(data.class_names),
        'image_shape': list(data.image_shape), 'pipeline': data.pipeline,
        'fingerprint': data.fingerprint})
  run = Run(strategy=strategy, chief=chief, data=data, model=model, optimizer=optimizer, lr=lr,
            step=step, saver=saver, steps_per_epoch=per_epoch, total_steps=total,
            eval_every=max(int(round(config.eval_every_epochs * per_epoch)), 1),
            precision_reason=reason, init_from=start, lock=lock,
            writers={split: summaries.writer(workdir, split, chief)
                     for split in ('train', 'validation')},
            profiler=summaries.Profiler(config, workdir, chief))
  _open_summaries(config, workdir, run)
  return run


def _agreed_data(config, workdir, start_over, strategy, chief, reason):
  """The run's data, loaded by the chief first (it alone downloads or prepares a dataset; the
  others load it after the barrier), with config.mixed_precision set to the chief's."""
  data = _load_data(config, workdir, start_over, prepare=True) if chief else None
  # Every worker computes in the chief's precision, whatever its own hardware would pick.
  chosen = config_lib.PRECISIONS[_barrier(strategy, config_lib.PRECISIONS.index(
      config.mixed_precision))]
  if chosen != config.mixed_precision:
    reason = f'the chief\'s choice (this worker alone: {config.mixed_precision}, {reason})'
    config.mixed_precision = chosen
  logging.info('Precision %s (%s).', config.mixed_precision, reason)
  if data is None:
    data = _load_data(config, workdir, start_over, prepare=False)
  return data, reason


def _open_summaries(config, workdir, run):
  """Says what the run trains; the chief writes its hyperparameters and first batch to
  TensorBoard."""
  _log_plan(config, workdir, run)
  if not run.chief:
    return
  step = int(run.step.numpy())
  if config.image_grid_size and step < run.total_steps:
    summaries.write_input_grid(config, run.data, step, run.writers['train'], workdir, run.saver)
  summaries.write_hparams(config, run.writers['train'], run.saver)


def _load_data(config, workdir, start_over, prepare):
  """The run's data; a workdir whose run read other data (another dataset version, format,
  split or crop: another order of examples) is refused before anything is written."""
  data = datasets.load(config.dataset, input_size=config.model.input_size, prepare=prepare)
  info = None if start_over else layout.read_data_info(workdir)
  if info is not None:
    saved = info.get('fingerprint')
    now = json.loads(json.dumps(data.fingerprint))  # as saved: tuples become lists
    if saved is not None and saved != now:
      changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
      raise UserError(f'workdir {workdir!r} holds a run on other data ({", ".join(changed)} '
                      f'differ: {_brief(saved, changed)} then, {_brief(now, changed)} now), so '
                      'it cannot resume exactly: pass a new --workdir, or --start_over (nothing '
                      'was changed)')
  return data


def _brief(fingerprint, keys):
  return ', '.join(f'{k}={json.dumps(fingerprint.get(k))}' for k in keys)


def build_state(config, strategy, num_classes, image_shape, total_steps, steps_per_epoch):
  """(model, optimizer, learning-rate schedule, step counter) as the loop trains them."""
  # Variables and optimizer slots must be created under the strategy to be mirrored, and the
  # optimizer built before the first distributed step (a lazy build inside it fails).
  with strategy.scope(), precision.scope(config.mixed_precision):
    model, table = models.build_model(config.model, num_classes, image_shape)
    init_from.freeze(config, model)
    lr = optim.schedule(config.schedule, total_steps, steps_per_epoch)
    optimizer = optim.optimizer(config.optimizer, lr,
                                loss_scaling=config.mixed_precision == 'mixed_float16',
                                ema_decay=config.ema_decay, variables=model.trainable_variables)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step',
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
  logging.info('Model %s:\n%s', config.model.name, table)
  return model, optimizer, lr, step


def _record_config(config, workdir, restored):
  """config.json as the run starts; on a resume it stays as it is and the changes this run makes
  are appended, with the step they take effect at, to config_changes.json."""
  if not restored:
    config_lib.save(config, workdir)
    return
  step = layout.checkpoint_step(restored)
  diff = config_lib.differences(config_lib.load(workdir), config)
  for field, (old, new) in diff.items():
    logging.warning('Resuming at step %d with %s=%s (was %s).', step, field, json.dumps(new),
                    json.dumps(old))
  config_lib.record_changes(workdir, step, diff)


def _loss_scale_text(optimizer):
  scale = getattr(optimizer, 'dynamic_scale', None)
  return '' if scale is None else f', loss scale {float(scale.numpy()):g}'


def _log_plan(config, workdir, run):
  """One line that says what this run trains, on what, how, for how long, where and from where;
  the lines before it are the details."""
  splits = ', '.join(f'{len(split):,} {name}' for name, split in (
      ('train', run.data.train), ('validation', run.data.validation), ('test', run.data.test))
                     if split is not None)
  replicas = run.strategy.num_replicas_in_sync
  workers = strategy_lib.num_workers(run.strategy)
  step = int(run.step.numpy())
  logging.info(
      'Training %s (%s parameters) on %s (%s; %s pipeline), strategy %s with %d replica%s%s, '
      '%s: %d steps (%.2f epochs) at batch %d in %s, %s.', config.model.name,
      f'{run.model.count_params():,}', config.dataset.name, splits, run.data.pipeline,
      config.strategy, replicas, '' if replicas == 1 else 's',
      f' on {workers} workers' if workers > 1 else '', config.mixed_precision, run.total_steps,
      run.total_steps / run.steps_per_epoch, config.batch_size, workdir,
      f'resuming at step {step}' if step else
      f'from {run.init_from}' if run.init_from else 'from scratch')
