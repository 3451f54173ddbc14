"""The outer training loop: train in compiled chunks, log, evaluate, checkpoint, record results.

Re-running with the same workdir resumes from the latest checkpoint, exactly: the data order
and the augmentation are pure functions of (seed, step), so a step counter in the checkpoint is
all the data position there is, and Dropout's generator states are saved with the weights.
A preemption signal stops the loop after the current step; it saves and returns. What happens
before the first step is research/train/setup.py's.
"""

import math
import time

from absl import logging
import tensorflow as tf

from research.core import config as config_lib
from research.core import layout
from research.core import outputs
from research.core import strategy as strategy_lib
from research.core.errors import UserError
from research.data import pipeline
from research.infra import preemption
from research.train import optim
from research.train import setup as setup_lib
from research.train import steps
from research.train import summaries


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
  run = setup_lib.setup(config, workdir, start_over, tuple(accept))
  try:
    return _train(config, workdir, run, wall_start)
  finally:
    run.saver.close()
    if run.lock is not None:
      run.lock.release()


def _train(config, workdir, run, wall_start):
  """The loop of train_and_evaluate over a set-up run."""
  # Read before this run writes its own: the chief may finish first and write them while
  # another worker is still evaluating.
  previous = layout.read_results(workdir)
  strategy, data, total = run.strategy, run.data, run.total_steps
  step = int(run.step.numpy())
  train_iter = iter(strategy.distribute_datasets_from_function(
      lambda ctx: pipeline.train_dataset(data.train, config.batch_size, config.seed,
                                         start_step=step, input_context=ctx)))
  watcher = preemption.Watcher()
  train_fn = steps.make_train_fn(strategy, run.model, run.optimizer, config, run.step,
                                 watcher.flag)
  evaluate = _evaluator(config, run)
  train_tags = summaries.train_tags(config)
  sums, window_start, window_step = None, time.time(), step  # sums: of the log window's chunks
  train_start, results, stopped = time.time(), {}, False
  skipped = window_skipped = 0  # bad examples skipped (config.dataset.skip_bad_examples)
  # A vanished peer aborts the collectives in a chunk, an evaluation or a save: the error
  # leaves the loop before anything else is saved, so the last checkpoint stays the last whole one.
  with watcher.watching(), strategy_lib.lost_worker_errors(strategy):
    while step < total and not stopped:
      run.profiler.at(step)
      n = _next_stop(step, total, (config.steps_per_loop, config.log_every_steps,
                                   run.eval_every, config.checkpoint_every_steps),
                     run.profiler.marks) - step
      chunk = _run_chunk(train_fn, train_iter, n, config, run)
      first, step = step, int(run.step.numpy())
      skipped += (step - first) * config.batch_size - int(chunk['count'])  # weight-0 examples
      stopped = bool(chunk['stop'] > 0)  # a preemption signal reached a worker: all stopped here
      _check_finite(chunk, first, step, run.saver)
      sums = _add(sums, chunk)
      if step % config.log_every_steps == 0 or step == total or stopped:
        results.update(_log_window(sums, time.time() - window_start, step, window_step, run,
                                   skipped - window_skipped, config.label_smoothing))
        summaries.scalars(run.writers['train'], step,
                          {tag: results[k] for tag, k in train_tags.items()}, run.saver)
        sums, window_start, window_step, window_skipped = None, time.time(), step, skipped
      if data.validation is not None and (step % run.eval_every == 0 or step == total):
        val = evaluate(data.validation, 'validation', step, run.writers['validation'])
        results.update({f'validation_{k}': val[k] for k in val if 'accuracy' in k})
        run.saver.save_if_best(step, val['accuracy' + _chosen(config)])
      if step % config.checkpoint_every_steps == 0 or step == total or stopped:
        run.saver.save(step)
  run.profiler.at(step)
  run.profiler.end()
  train_seconds = time.time() - train_start
  summaries.flush(run.writers.values(), run.saver)
  final = _final(config, workdir, run, step, evaluate, watcher.signal_name,
                 train_seconds=train_seconds, bad_examples_skipped=skipped)
  final['wall_seconds'] = time.time() - wall_start
  return _write_results(workdir, previous, results, run.chief, **final)


def _next_stop(step, total, intervals, marks=()):
  """The next step at which the loop must surface: a multiple of any interval, a mark after
  `step`, or the end."""
  return min([total] + [(step // k + 1) * k for k in intervals if k > 0]
             + [m for m in marks if m > step])


def _run_chunk(train_fn, train_iter, n, config, run):
  """`n` training steps in one compiled call, their totals by name (steps.make_train_fn); a
  corrupt example met there is one line."""
  try:
    return train_fn(train_iter, tf.constant(n))
  except tf.errors.OpError as e:  # other errors go on up
    pipeline.raise_if_bad_example(e, run.data.train, config.batch_size, config.seed,
                                  int(run.step.numpy()) + 1, run.saver.latest.latest_checkpoint)
    raise


def _check_finite(totals, first, step, saver):
  """Stops the run at the first non-finite loss, before anything is saved from it."""
  loss_sum = float(totals['loss_sum'])
  if not math.isfinite(loss_sum):
    latest = saver.latest.latest_checkpoint
    raise UserError(f'training loss became {loss_sum} between steps {first} and {step}: stopped '
                    f'without saving; the last good checkpoint is {latest or "none (no save yet)"}'
                    '. Lower the learning rate or check the data, then re-run to resume from it')


def _add(sums, chunk):
  """The window's sums with a chunk's totals added, name by name (None: an empty window). The
  totals are float32, so the sums round as they would on the device."""
  return chunk if sums is None else {name: sums[name] + value for name, value in chunk.items()}


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
    summaries.scalars(writer, step, metrics, run.saver)
    return metrics

  def evaluate(split, name, step, writer):
    metrics = evaluate_weights(split, name, step, writer, '')
    if config.ema_decay:
      with optim.ema_weights(run.model, run.optimizer):
        metrics.update(evaluate_weights(split, name, step, writer, EMA_SUFFIX))
    return metrics

  return evaluate


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
    test_writer = summaries.writer(workdir, 'test', run.chief)
    test = evaluate(run.data.test, 'test', step, test_writer)
    final.update({f'test_{k}': v for k, v in test.items()}, preempted='')
    summaries.flush([test_writer], run.saver)
  return final


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


def _write_results(workdir, previous, latest, chief, **final):
  """results.json (the chief's); over resumed runs the seconds and the skipped bad examples add
  up and the last train metrics seen are kept (a re-run of a finished run only re-evaluates)."""
  for key in ('train_seconds', 'wall_seconds', 'bad_examples_skipped'):
    final[key] += previous.get(key, 0)
  results = {**previous, **latest, **final}
  if chief:
    layout.write_results(workdir, results)
  return results
