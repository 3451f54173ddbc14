"""The outer training loop: train in compiled chunks, log, evaluate, checkpoint, record results.

Re-running with the same workdir resumes from the latest checkpoint, exactly: the data order
and the augmentation are pure functions of (seed, step), so a step counter in the checkpoint is
all the data position there is, and Dropout's generator states are saved with the weights.
A preemption signal stops the loop after the current step; it saves and returns.
"""

import contextlib
import dataclasses
import json
import math
import os
import time

from absl import logging
import keras
import tensorflow as tf

from research import checkpoints
from research import config as config_lib
from research import layout
from research import models
from research import outputs
from research import plots
from research import preemption
from research import strategy as strategy_lib
from research import workdir_lock
from research.data import datasets
from research.data import pipeline
from research.data import preprocess
from research.errors import UserError
from research.train import init_from
from research.train import optim
from research.train import precision
from research.train import saving
from research.train import steps


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


def _precision_record(workdir, step):
  """results.json's precision: the one the run trained in, or each with its steps."""
  spans = []
  for start, value in config_lib.history(workdir, 'mixed_precision'):
    if spans and spans[-1][1] == value:
      continue
    spans.append((start, value))
  if len(spans) == 1:
    return spans[0][1]
  ends = [s for s, _ in spans[1:]] + [step]
  return ', '.join(f'{value} (steps {start + 1}-{end})'
                   for (start, value), end in zip(spans, ends))


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


def _next_stop(step, total, intervals, marks=()):
  """The next step at which the loop must surface: a multiple of any interval, a mark after
  `step`, or the end."""
  return min([total] + [(step // k + 1) * k for k in intervals if k > 0]
             + [m for m in marks if m > step])


def check_profile_steps(config, total):
  """config.profile_steps must lie inside the run: one line before anything is written."""
  start, stop = (int(v) for v in config.profile_steps)
  if (start, stop) != (0, 0) and not 0 <= start < stop <= total:
    raise UserError(f'config.profile_steps=({start}, {stop}) is outside the run: give (start, '
                    f'stop) with 0 <= start < stop <= {total} (its steps), or (0, 0) for none')


class _Profiler:
  """The TensorBoard profile trace of config.profile_steps, on the chief, into train/."""

  def __init__(self, config, logdir, chief):
    self.start, self.stop = (int(v) for v in config.profile_steps)
    self.logdir, self.on = logdir, False
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


def _write_input_grid(config, data, step, writer, workdir, saver):
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
  with _summary_writes(saver), writer.as_default():
    tf.summary.image('inputs', grid[None], step=step)


@contextlib.contextmanager
def _summary_writes(saver):
  """A TensorBoard write that fails (disk full: raised by the op that flushes) ends the run in
  one line; events files are append-only, and TensorBoard reads up to their last whole record."""
  try:
    yield
  except tf.errors.OpError as e:
    raise outputs.write_error('TensorBoard events file', None, e, saver.kept()) from None


def _scalars(writer, step, values, saver):
  with _summary_writes(saver), writer.as_default():
    for name, value in values.items():
      tf.summary.scalar(name, value, step=step)


@dataclasses.dataclass
class _Run:
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
  precision_reason: str  # why config.mixed_precision is what it is (auto's choice, or given)
  init_from: str = ''  # the checkpoint this run's weights started from, if it started now
  lock: workdir_lock.WorkdirLock = None  # the chief's hold on the workdir


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


def _build_run(config, workdir, start_over, strategy, chief, reason, source, lock):
  # The chief alone downloads or prepares a dataset; the others load it after the barrier.
  data = _load_data(config, workdir, start_over, prepare=True) if chief else None
  init_from.check_input(source, config, data)
  # Every worker computes in the chief's precision, whatever its own hardware would pick.
  chosen = precision.PRECISIONS[_barrier(strategy, precision.PRECISIONS.index(
      config.mixed_precision))]
  if chosen != config.mixed_precision:
    reason = f'the chief\'s choice (this worker alone: {config.mixed_precision}, {reason})'
    config.mixed_precision = chosen
  logging.info('Precision %s (%s).', config.mixed_precision, reason)
  if data is None:
    data = _load_data(config, workdir, start_over, prepare=False)
  per_epoch = pipeline.steps_per_epoch(len(data.train), config.batch_size)
  total = (config.num_train_steps if config.num_train_steps is not None
           else max(int(round(config.num_epochs * per_epoch)), 1))
  _check_total(total, workdir, start_over)
  check_profile_steps(config, total)
  model, optimizer, lr, step = build_state(config, strategy, data.num_classes,
                                           data.image_shape, total, per_epoch)
  saver = saving.Saver(saving.training_checkpoint(model, optimizer, step), workdir,
                       config.keep_checkpoints, chief, strategy_lib.worker_index(strategy), lock)
  restored = saver.restore()
  start = init_from.load(source, model, strategy) if source and not restored else ''
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
  return _Run(strategy, chief, data, model, optimizer, lr, step, saver, per_epoch, total,
              reason, start, lock)


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


def _loss_scale_text(optimizer):
  scale = getattr(optimizer, 'dynamic_scale', None)
  return '' if scale is None else f', loss scale {float(scale.numpy()):g}'


def train_and_evaluate(config, workdir, start_over=False, accept=()):
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the results.

  The results (what results.json holds) are a dict: step, metrics, seconds, weights digest.
  `start_over` moves an existing run in `workdir` aside instead of resuming or refusing it;
  `accept` names the experiment's fields a resume may change (config_lib.check_resume).
  SIGTERM, SIGINT or SIGUSR1 end training after the current step, saved: the results then have
  `preempted` set and re-running the same call resumes. Another worker vanishing raises
  strategy.WorkerLostError, nothing saved after the last checkpoint.
  """
  wall_start = time.time()
  run = setup(config, workdir, start_over, tuple(accept))
  try:
    return _train(config, workdir, run, wall_start)
  finally:
    run.saver.close()
    if run.lock is not None:
      run.lock.release()


def _train(config, workdir, run, wall_start):
  """The loop of train_and_evaluate over a set-up run."""
  _log_plan(config, workdir, run)
  previous = _previous_results(workdir)
  strategy, data, total = run.strategy, run.data, run.total_steps
  step = int(run.step.numpy())
  train_iter = iter(strategy.distribute_datasets_from_function(
      lambda ctx: pipeline.train_dataset(data.train, config.batch_size, config.seed,
                                         start_step=step, input_context=ctx)))
  watcher = preemption.Watcher()
  train_fn = steps.make_train_fn(strategy, run.model, run.optimizer, config, run.step,
                                 watcher.flag)
  evaluate = _evaluator(config, run)
  train_writer, val_writer = (_writer(workdir, name, run.chief) for name in ('train', 'validation'))
  if config.image_grid_size and step < total and run.chief:
    _write_input_grid(config, data, step, train_writer, workdir, run.saver)
  if run.chief:
    _write_hparams(config, train_writer, run.saver)
  profiler = _Profiler(config, layout.summary_dir(workdir, 'train'), run.chief)
  train_tags = _train_tags(config)
  eval_every = max(int(round(config.eval_every_epochs * run.steps_per_epoch)), 1)
  sums, window_start, window_step = None, time.time(), step  # sums: of the log window's chunks
  train_start, results, stopped = time.time(), {}, False
  skipped = window_skipped = 0  # bad examples skipped (config.dataset.skip_bad_examples)
  # A vanished peer aborts the collectives in a chunk, an evaluation or a save: the error
  # leaves the loop before anything else is saved, so the last checkpoint stays the last whole one.
  with watcher.watching(), strategy_lib.lost_worker_errors(strategy):
    while step < total and not stopped:
      profiler.at(step)
      n = _next_stop(step, total, (config.steps_per_loop, config.log_every_steps, eval_every,
                                   config.checkpoint_every_steps), profiler.marks) - step
      chunk = _run_chunk(train_fn, train_iter, n, config, run)
      first, step = step, int(run.step.numpy())
      skipped += (step - first) * config.batch_size - int(chunk['count'])  # weight-0 examples
      stopped = bool(chunk['stop'] > 0)  # a preemption signal reached a worker: all stopped here
      _check_finite(chunk, first, step, run.saver)
      sums = _add(sums, chunk)
      if step % config.log_every_steps == 0 or step == total or stopped:
        results.update(_log_window(sums, time.time() - window_start, step, window_step, run,
                                   skipped - window_skipped, config.label_smoothing))
        _scalars(train_writer, step, {tag: results[k] for tag, k in train_tags.items()},
                 run.saver)
        sums, window_start, window_step, window_skipped = None, time.time(), step, skipped
      if data.validation is not None and (step % eval_every == 0 or step == total):
        val = evaluate(data.validation, 'validation', step, val_writer)
        results.update({f'validation_{k}': val[k] for k in val if 'accuracy' in k})
        run.saver.save_if_best(step, val['accuracy' + _chosen(config)])
      if step % config.checkpoint_every_steps == 0 or step == total or stopped:
        run.saver.save(step)
  profiler.at(step)
  profiler.end()
  train_seconds = time.time() - train_start
  with _summary_writes(run.saver):
    for writer in (train_writer, val_writer):
      writer.flush()
  final = _final(config, workdir, run, step, evaluate, watcher.signal_name,
                 train_seconds=train_seconds, bad_examples_skipped=skipped)
  final['wall_seconds'] = time.time() - wall_start
  return _write_results(workdir, previous, results, run.chief, **final)


def _final(config, workdir, run, step, evaluate, signal_name, **final):
  """The results of the run's end (with `final`): the test split's metrics once it is done,
  else what stopped it."""
  final.update(step=step, epoch=step / run.steps_per_epoch,
               weights_digest=outputs.weights_digest(run.model),
               precision=(_precision_record(workdir, step) if run.chief
                          else config.mixed_precision),
               precision_reason=run.precision_reason)
  if run.init_from:
    final['init_from'] = run.init_from
  if step < run.total_steps:
    logging.warning('Stopped by %s at step %d of %d, saved: re-run the same command to resume.',
                    signal_name or 'a signal to another worker', step, run.total_steps)
    final['preempted'] = signal_name or 'another worker'
  else:
    test_writer = _writer(workdir, 'test', run.chief)
    test = evaluate(run.data.test, 'test', step, test_writer)
    final.update({f'test_{k}': v for k, v in test.items()}, preempted='')
    with _summary_writes(run.saver):
      test_writer.flush()
  return final


def _writer(workdir, name, chief):
  """TensorBoard's writer of workdir/`name`: the chief's; the other workers write nothing."""
  if chief:
    return tf.summary.create_file_writer(layout.summary_dir(workdir, name))
  return tf.summary.create_noop_writer()


def _run_chunk(train_fn, train_iter, n, config, run):
  """`n` training steps in one compiled call, their totals by name (steps.make_train_fn); a
  corrupt example met there is one line."""
  try:
    return train_fn(train_iter, tf.constant(n))
  except tf.errors.OpError as e:  # other errors go on up
    pipeline.raise_if_bad_example(e, run.data.train, config.batch_size, config.seed,
                                  int(run.step.numpy()) + 1, run.saver.latest.latest_checkpoint)
    raise


# Metrics, TensorBoard tags and results keys with this suffix are of the moving average of the
# weights (config.ema_decay); those without it are always of the raw weights.
EMA_SUFFIX = '_ema'


def _chosen(config):
  """The suffix of the metrics of the weights the run is judged by (best checkpoint, export):
  the moving average's with config.ema_eval, else the raw weights'."""
  return EMA_SUFFIX if config.ema_decay and config.ema_eval else ''


def _evaluator(config, run):
  """evaluate(split, name, step, writer): a split's loss, accuracy and top5_accuracy, logged and
  written to TensorBoard, with EMA on also of the averaged weights (suffixed EMA_SUFFIX); a
  corrupt example is one line, a vanished peer a lost worker."""
  strategy = run.strategy
  eval_fn = steps.make_eval_fn(strategy, run.model, config, run.data.num_classes)

  def evaluate_weights(split, name, step, writer, suffix):
    start = time.time()
    ds = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.eval_dataset(split, config.eval_batch_size, ctx))
    try:
      with strategy_lib.lost_worker_errors(strategy):
        result = steps.evaluate_split(strategy, eval_fn, ds)
    except tf.errors.OpError as e:  # other errors go on up
      pipeline.raise_if_bad_eval_example(e, split, name, run.saver.latest.latest_checkpoint)
      raise
    result['images_per_sec'] = result['num_examples'] / (time.time() - start)
    logging.info('step %d %s%s: loss %.4f accuracy %.4f top-5 %.4f over %d examples (%.0f img/s)',
                 step, name, ' (EMA weights)' if suffix else '', result['loss'],
                 result['accuracy'], result['top5_accuracy'], result['num_examples'],
                 result['images_per_sec'])
    metrics = {k + suffix: result[k] for k in ('loss', 'accuracy', 'top5_accuracy')}
    _scalars(writer, step, metrics, run.saver)
    return metrics

  def evaluate(split, name, step, writer):
    metrics = evaluate_weights(split, name, step, writer, '')
    if config.ema_decay:
      with optim.ema_weights(run.model, run.optimizer):
        metrics.update(evaluate_weights(split, name, step, writer, EMA_SUFFIX))
    return metrics

  return evaluate


def _add(sums, chunk):
  """The window's sums with a chunk's totals added, name by name (None: an empty window). The
  totals are float32, so the sums round as they would on the device."""
  return chunk if sums is None else {name: sums[name] + value for name, value in chunk.items()}


def _check_finite(totals, first, step, saver):
  """Stops the run at the first non-finite loss, before anything is saved from it."""
  loss_sum = float(totals['loss_sum'])
  if not math.isfinite(loss_sum):
    latest = saver.latest.latest_checkpoint
    raise UserError(f'training loss became {loss_sum} between steps {first} and {step}: stopped '
                    f'without saving; the last good checkpoint is {latest or "none (no save yet)"}'
                    '. Lower the learning rate or check the data, then re-run to resume from it')


def _train_tags(config):
  """TensorBoard tag -> results key of the training scalars. train/, validation/ and test/
  share the tags accuracy and loss, except that a training loss with label smoothing is not the
  cross-entropy the others report and says so in its tag."""
  loss = 'loss_with_label_smoothing' if config.label_smoothing else 'loss'
  return {loss: 'train_loss', 'accuracy': 'train_accuracy', 'learning_rate': 'learning_rate',
          'images_per_sec': 'images_per_sec', 'bad_examples': 'bad_examples',
          'grad_norm': 'grad_norm'}


def _write_hparams(config, writer, saver):
  """The run's config as TensorBoard hyperparameters (HParams tab): every field, flattened."""
  from tensorboard.plugins.hparams import api as hparams  # pylint: disable=import-outside-toplevel
  values = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
            for k, v in config_lib.flatten(config).items()}
  with _summary_writes(saver), writer.as_default():
    hparams.hparams(values)


def _log_window(sums, seconds, step, window_start_step, run, bad=0, smoothing=0.0):
  """Logs the metrics of the steps since the last log line; returns them. A loss with label
  `smoothing` says so: it sits well above the plain cross-entropy evaluation reports."""
  loss_sum, correct, count, norm_sum, norms = (
      float(sums[name]) for name in ('loss_sum', 'correct', 'count', 'grad_norm_sum',
                                     'grad_norms'))
  m = {'train_loss': loss_sum / count, 'train_accuracy': correct / count,
       'images_per_sec': count / seconds, 'learning_rate': float(run.lr(step - 1)),
       'bad_examples': bad, 'grad_norm': norm_sum / norms}
  eta = (run.total_steps - step) * seconds / (step - window_start_step)
  logging.info('step %d/%d epoch %.2f: loss%s %.4f accuracy %.4f lr %.2e grad norm %.3g %.0f '
               'img/s ETA %.0fs%s', step, run.total_steps, step / run.steps_per_epoch,
               f' (with label smoothing {smoothing:g})' if smoothing else '', m['train_loss'],
               m['train_accuracy'], m['learning_rate'], m['grad_norm'], m['images_per_sec'], eta,
               f', {bad} bad examples skipped' if bad else '')
  return m


def _previous_results(workdir):
  """The results of the runs before this one in `workdir`, read before this one writes its
  own: the chief may finish first and write them while another worker is still evaluating."""
  return layout.read_results(workdir)


def _write_results(workdir, previous, latest, chief, **final):
  """results.json (the chief's); over resumed runs the seconds and the skipped bad examples add
  up and the last train metrics seen are kept (a re-run of a finished run only re-evaluates)."""
  for key in ('train_seconds', 'wall_seconds', 'bad_examples_skipped'):
    final[key] += previous.get(key, 0)
  results = {**previous, **latest, **final}
  if chief:
    layout.write_results(workdir, results)
  return results
