"""Evaluates a training run's checkpoint (its best by default) on a split: exact top-1 and top-5
accuracy, loss, confusion."""

import os

from absl import logging
import tensorflow as tf

from research import checkpoints
from research import outputs
from research import plots
from research.data import datasets
from research.data import pipeline
from research.errors import UserError
from research.train import steps

SPLITS = ('train', 'validation', 'test')


def evaluate(workdir, split='test', data_dir=None, checkpoint='best'):
  """Writes eval_<split>.json and confusion_<split>.png into `workdir`; returns the metrics."""
  if split not in SPLITS:
    raise UserError(f'unknown split {split!r}: use one of {", ".join(SPLITS)}')
  config, info, model, path = checkpoints.load_for_inference(workdir, checkpoint)
  if data_dir is not None:
    config.dataset.data_dir = data_dir
  data = datasets.load(config.dataset, splits=(split,), input_size=config.model.input_size)
  examples = getattr(data, split)
  if examples is None:
    raise UserError(f'the run has no {split} split (validation_size is 0): pick another split')
  strategy = tf.distribute.get_strategy()
  eval_fn = steps.make_eval_fn(strategy, model, config, info['num_classes'])
  ds = strategy.distribute_datasets_from_function(
      lambda ctx: pipeline.eval_dataset(examples, config.eval_batch_size, ctx))
  try:
    metrics = steps.evaluate_split(strategy, eval_fn, ds)
  except tf.errors.OpError as e:  # a corrupt example is one line; other errors go on up
    pipeline.raise_if_bad_eval_example(e, examples, split, path)
    raise
  confusion = metrics.pop('confusion')
  plots.confusion(confusion, info['class_names'], os.path.join(workdir, f'confusion_{split}.png'),
                  title=f'{config.model.name} on {config.dataset.name} {split}')
  outputs.write_json(os.path.join(workdir, f'eval_{split}.json'),
                     {**metrics, 'split': split, 'confusion_matrix': confusion.tolist()})
  logging.info('Evaluated %s on %s: accuracy %.4f top-5 %.4f loss %.4f (%d examples).',
               workdir, split, metrics['accuracy'], metrics['top5_accuracy'], metrics['loss'],
               metrics['num_examples'])
  return metrics
