"""A table across training runs: one row per workdir, with the settings that differ between the
runs, where each run stands, and what it reached; and their validation curves as one picture.

Everything is read, nothing written into a workdir, so runs still training are read as they
are: results.json is replaced atomically, TensorBoard's events files grow by whole records (a
record still being written ends the read), and the lock says whether a run is alive.
"""

import dataclasses
import glob
import json
import os
import statistics

from absl import logging

from research.core import checkpoints
from research.core import config as config_lib
from research.core import layout
from research.core import plots
from research.core.errors import UserError
from research.infra import workdir_lock

# Where a run stands: training now; stopped by a signal and saved; finished (tested); stopped
# otherwise (killed, crashed, a bad setting) with checkpoints to resume from; never trained.
STATES = ('running', 'preempted', 'done', 'stopped', 'new')

# The columns of every row after the differing settings; metrics of the run's chosen weights.
METRICS = ('state', 'step', 'best_validation_accuracy', 'best_validation_top5_accuracy',
           'test_accuracy', 'test_top5_accuracy', 'train_seconds', 'images_per_sec',
           'precision')
# Settings that say where, how often or on what a run was computed, not what it is: never a
# column (those a resume may change, but its length and the weights it started from).
_NOT_SETTINGS = tuple(f for f in config_lib.RESUME_FREE_FIELDS
                      if f not in ('num_train_steps', 'num_epochs', 'init_from'))
# How each number of METRICS is shown; settings show four significant digits.
_SHOWN = {'best_validation_accuracy': '{:.4f}', 'best_validation_top5_accuracy': '{:.4f}',
          'test_accuracy': '{:.4f}', 'test_top5_accuracy': '{:.4f}', 'train_seconds': '{:.1f}',
          'images_per_sec': '{:.0f}'}


@dataclasses.dataclass
class Run:
  """One workdir as read now."""
  workdir: str
  settings: dict  # the config as the run trains now, by dotted field name
  state: str
  values: dict  # METRICS' values (None where the run has none yet)
  curves: dict  # 'accuracy'/'loss' -> [(step, value), ...] of the validation split


def find(paths):
  """The workdirs under `paths` (workdirs, folders holding them at any depth, or glob patterns),
  each once, in order; a path that holds no run is an error."""
  found = []
  for pattern in paths:
    matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    runs = [w for m in matches for w in _workdirs_in(m)]
    if not runs:
      raise UserError(f'{pattern!r} holds no training run (no config.json in it or below): pass '
                      'workdirs or the folder that holds them')
    found.extend(w for w in runs if w not in found)
  return found


def _workdirs_in(path):
  if os.path.isfile(layout.config_path(path)):
    return [os.path.normpath(path)]
  if not os.path.isdir(path):
    return []
  runs = []
  for root, dirs, files in os.walk(path):
    dirs.sort()
    if layout.CONFIG in files:
      runs.append(os.path.normpath(root))
      dirs[:] = []  # a run's own subfolders hold no other run
  return runs


def _state(workdir, results):
  if workdir_lock.held(workdir):
    return 'running'
  if results.get('preempted'):
    return 'preempted'
  if 'test_accuracy' in results:
    return 'done'
  if checkpoints.trained(workdir):
    return 'stopped'
  return 'new'


def _step(workdir, results):
  trained = checkpoints.trained(workdir)
  latest = layout.checkpoint_step(trained[-1]) if trained else 0
  return max(latest, results.get('step', 0))


def _total(settings, results):
  """The run's length in steps, or None until it is known (num_epochs needs the epoch size,
  which results.json gives through its step and epoch)."""
  if settings.get('num_train_steps'):
    return settings['num_train_steps']
  if results.get('epoch'):
    return int(round(settings['num_epochs'] * results['step'] / results['epoch']))
  return None


def read(workdir):
  """The Run of `workdir`."""
  config = config_lib.load(workdir)
  settings = config_lib.flatten(config)
  results = layout.read_results(workdir)
  suffix = '_ema' if config.get('ema_decay') and config.get('ema_eval', True) else ''
  curves = scalars(layout.summary_dir(workdir, 'validation'),
                   {'accuracy': 'accuracy' + suffix, 'top5_accuracy': 'top5_accuracy' + suffix,
                    'loss': 'loss' + suffix})
  accuracy = curves.get('accuracy', [])
  best = max(accuracy, key=lambda p: p[1]) if accuracy else None
  top5 = dict(curves.get('top5_accuracy', []))
  total = _total(settings, results)
  step = _step(workdir, results)
  values = {
      'state': _state(workdir, results),
      'step': f'{step}/{total}' if total else str(step),
      'best_validation_accuracy': best[1] if best else None,
      'best_validation_top5_accuracy': top5.get(best[0]) if best else None,
      'test_accuracy': results.get('test_accuracy' + suffix),
      'test_top5_accuracy': results.get('test_top5_accuracy' + suffix),
      'train_seconds': results.get('train_seconds'),
      'images_per_sec': results.get('images_per_sec'),
      'precision': results.get('precision', settings.get('mixed_precision')),
  }
  return Run(workdir, settings, values['state'], values, curves)


def scalars(logdir, tags):
  """{name: [(step, value), ...]} of TensorBoard scalars `tags` ({name: tag}) in `logdir`'s
  events files, by step (a resumed run's later file wins a repeated step)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  wanted = {tag: name for name, tag in tags.items()}
  points = {name: {} for name in tags}
  for path in sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*'))):
    try:
      for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
          if value.tag in wanted:
            number = float(tf.make_ndarray(value.tensor)) if value.HasField('tensor') else (
                value.simple_value)
            points[wanted[value.tag]][event.step] = number
    except tf.errors.DataLossError:
      logging.info('%s ends in a record being written: read up to it.', path)
  return {name: sorted(p.items()) for name, p in points.items() if p}


def differing(runs):
  """The settings whose values are not the same in every run, in the config's order."""
  if len(runs) < 2:
    return []
  fields = [f for f in runs[0].settings if f not in _NOT_SETTINGS]
  for run in runs[1:]:
    fields += [f for f in run.settings if f not in fields and f not in _NOT_SETTINGS]
  return [f for f in fields
          if len({json.dumps(r.settings.get(f), sort_keys=True) for r in runs}) > 1]


def rows(runs, sort='', group=''):
  """(columns, rows): a dict per run (or per group of runs that differ only in `group`, e.g.
  seed, with the mean and spread of each number), sorted by column `sort` (`-name`: descending)."""
  fields = [f for f in differing(runs) if f != group]
  table = [{'run': r.workdir, **{f: r.settings.get(f) for f in fields}, **r.values}
           for r in runs]
  columns = ['run'] + fields + list(METRICS)
  if group:
    table = _grouped(runs, table, fields, group)
    columns = ['run', 'runs'] + fields + list(METRICS)
  if sort:
    key = sort.lstrip('-')
    if key not in columns:
      raise UserError(f'--sort={sort}: no such column; use one of {", ".join(columns)}')
    present = [r for r in table if r.get(key) is not None]
    present.sort(key=lambda r: _sort_key(r[key]), reverse=sort.startswith('-'))
    table = present + [r for r in table if r.get(key) is None]
  return columns, table


def _sort_key(value):
  if isinstance(value, dict):
    return (0, value['mean'], '')
  return (0, value, '') if isinstance(value, (int, float)) else (1, 0, str(value))


def _grouped(runs, table, fields, group):
  if group not in runs[0].settings:
    raise UserError(f'--group={group}: no such config field (e.g. seed)')
  groups = {}
  for row in table:
    groups.setdefault(json.dumps([row[f] for f in fields], default=str), []).append(row)
  merged = []
  for members in groups.values():
    row = {'run': ', '.join(m['run'] for m in members), 'runs': len(members),
           **{f: members[0][f] for f in fields}}
    for name in METRICS:
      numbers = [m[name] for m in members if isinstance(m[name], (int, float))]
      if numbers and len(numbers) == len(members):
        row[name] = {'mean': statistics.fmean(numbers),
                     'spread': statistics.stdev(numbers) if len(numbers) > 1 else 0.0}
      else:
        row[name] = ', '.join(sorted({str(m[name]) for m in members}))
    merged.append(row)
  return merged


def _cell(value, column=''):
  if value is None:
    return '-'
  if isinstance(value, dict):
    return f'{_cell(value["mean"], column)} ± {_cell(value["spread"], column)}'
  if isinstance(value, float):
    return _SHOWN.get(column, '{:.4g}').format(value)
  if isinstance(value, (list, tuple)):
    return '(' + ','.join(_cell(v) for v in value) + ')'
  return str(value)


def text(columns, table):
  """An aligned text table with a header line."""
  cells = [columns] + [[_cell(row.get(c), c) for c in columns] for row in table]
  widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
  return '\n'.join('  '.join(v.ljust(w) for v, w in zip(line, widths)).rstrip()
                   for line in cells) + '\n'


def csv_text(columns, table):
  import csv  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(columns)
  for row in table:
    writer.writerow([_csv_cell(row.get(c)) for c in columns])
  return out.getvalue()


def _csv_cell(value):
  """Numbers in full; a group's as mean±spread; lists as JSON."""
  if value is None:
    return ''
  if isinstance(value, dict):
    return f'{value["mean"]!r}±{value["spread"]!r}'
  if isinstance(value, (list, tuple)):
    return json.dumps(value)
  return value


def json_text(columns, table):
  return json.dumps([{c: row.get(c) for c in columns} for row in table], indent=2,
                    default=str) + '\n'


FORMATS = {'text': text, 'csv': csv_text, 'json': json_text}


def curves(runs, path):
  """Writes the runs' validation accuracy and loss curves to the PNG `path`, each run labelled
  by the settings that differ; returns its pixels."""
  fields = differing(runs)
  labels = [', '.join(f'{f.rsplit(".", 1)[-1]}={_cell(r.settings.get(f))}' for f in fields)
            or os.path.basename(r.workdir) for r in runs]
  return plots.curves([r.curves for r in runs], labels, path)
