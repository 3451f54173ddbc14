"""Evaluates a training run's checkpoint (its best by default) on a split: exact top-1 and top-5
accuracy, loss, confusion; and on corrupted copies of the split (research.apps.corruptions)."""

import os

from absl import logging
import numpy as np
import tensorflow as tf

from research.apps import corruptions
from research.core import checkpoints
from research.core import layout
from research.core import outputs
from research.core import plots
from research.core.errors import UserError
from research.data import datasets
from research.data import pipeline
from research.train import steps

SPLITS = ('train', 'validation', 'test')


class _Evaluator:
  """A run's restored model over one split, evaluated with or without a corruption."""

  def __init__(self, workdir, split, data_dir, checkpoint):
    if split not in SPLITS:
      raise UserError(f'unknown split {split!r}: use one of {", ".join(SPLITS)}')
    self.split = split
    self.config, self.info, self.model, self.path = checkpoints.load_for_inference(
        workdir, checkpoint)
    if data_dir is not None:
      self.config.dataset.data_dir = data_dir
    data = datasets.load(self.config.dataset, splits=(split,),
                         input_size=self.config.model.input_size)
    self.examples = getattr(data, split)
    if self.examples is None:
      raise UserError(f'the run has no {split} split (validation_size is 0): pick another split')
    self.strategy = tf.distribute.get_strategy()
    self.eval_fn = steps.make_eval_fn(self.strategy, self.model, self.config,
                                      self.info['num_classes'])

  def run(self, corrupt=None):
    """Metrics over the split; `corrupt(images, index)` changes each uint8 batch first."""
    batch = self.config.eval_batch_size

    def dataset(ctx):
      ds = pipeline.eval_dataset(self.examples, batch, ctx)
      if corrupt is None:
        return ds
      # One input pipeline on one device: batch b holds examples b·batch .. b·batch + batch - 1.
      return ds.enumerate().map(lambda b, e: (
          corrupt(e[0], b * batch + tf.range(batch, dtype=tf.int64)), *e[1:]))

    ds = self.strategy.distribute_datasets_from_function(dataset)
    try:
      return steps.evaluate_split(self.strategy, self.eval_fn, ds)
    except tf.errors.OpError as e:  # a corrupt example is one line; other errors go on up
      pipeline.raise_if_bad_eval_example(e, self.examples, self.split, self.path)
      raise


def _out_dir(workdir, out, files):
  """Where the evaluation's `files` go: `out` (made if missing), else the run's workdir; None
  when that is read-only (a finished run on shared storage): the metrics are then only printed
  and logged, and nothing is written or locked."""
  if out:
    try:
      os.makedirs(out, exist_ok=True)
    except OSError as e:
      raise outputs.write_error('evaluation output directory', out, e) from None
    return out
  if os.access(workdir, os.W_OK):
    return workdir
  logging.warning('%s is read-only: the metrics are printed, not written; pass --out=DIR to keep '
                  '%s.', workdir, ' and '.join(files))
  return None


def evaluate(workdir, split='test', data_dir=None, checkpoint='best', out=None):
  """Writes eval_<split>.json and confusion_<split>.png into `out` (default: `workdir`);
  returns the metrics."""
  ev = _Evaluator(workdir, split, data_dir, checkpoint)
  files = layout.evaluation_files(split)
  out = _out_dir(workdir, out, files)
  metrics = ev.run()
  confusion = metrics.pop('confusion')
  if out is not None:
    plots.confusion(confusion, ev.info['class_names'], os.path.join(out, files[1]),
                    title=f'{ev.config.model.name} on {ev.config.dataset.name} {split}')
    outputs.write_json(os.path.join(out, files[0]),
                       {**metrics, 'split': split, 'checkpoint': ev.path,
                        'confusion_matrix': confusion.tolist()})
  logging.info('Evaluated %s on %s: accuracy %.4f top-5 %.4f loss %.4f (%d examples).',
               workdir, split, metrics['accuracy'], metrics['top5_accuracy'], metrics['loss'],
               metrics['num_examples'])
  return metrics


def evaluate_corrupted(workdir, names, split='test', data_dir=None, checkpoint='best',
                       out=None):
  """Accuracy on `split` under each corruption of `names` at each severity; writes
  eval_<split>_corrupt.json and corrupt_<split>.png into `out` (default: `workdir`) and returns
  the record."""
  names = corruptions.parse(','.join(names))
  ev = _Evaluator(workdir, split, data_dir, checkpoint)
  files = layout.evaluation_files(split, corrupted=True)
  out = _out_dir(workdir, out, files)
  clean = ev.run()['accuracy']
  logging.info('%s clean: accuracy %.4f', split, clean)
  table = {}
  for name in names:
    table[name] = {}
    for severity in corruptions.severities(name):
      m = ev.run(lambda x, index, n=name, s=severity: corruptions.apply(n, x, s, index))
      table[name][str(severity)] = m['accuracy']
      logging.info('%s %s severity %d: accuracy %.4f', split, name, severity, m['accuracy'])
  record = {'split': split, 'checkpoint': ev.path, 'clean_accuracy': clean,
            'accuracy': table,
            'mean_accuracy': float(np.mean([a for t in table.values() for a in t.values()]))}
  if out is not None:
    outputs.write_json(os.path.join(out, files[0]), record)
    plots.corruption_chart(clean, table, os.path.join(out, files[1]),
                           title=f'{ev.config.model.name} on {ev.config.dataset.name} {split}')
  return record
