"""A training run's workdir: the name of everything the project writes there, and the reads and
writes of its records. Every other module finds a workdir's files through here (the Slurm
submitter names its own script and output inside submit/).

  config.json           the config as the run started (research/core/config.py)
  config_changes.json   the changes resumes made since, with the step each took effect at
  data_info.json        classes, image shape, pipeline and fingerprint of the data read
  results.json          the run record: step, metrics, seconds, weights digest
  checkpoints/          the latest checkpoints; best/ the best by validation, best.json its step
  lock.json             who holds the workdir now (research/infra/workdir_lock.py)
  submit/               a cluster job's record (job.json), scripts and output
  train/ validation/ test/   TensorBoard's events files; inputs.png the first batch
  eval_<split>.json ... launch.evaluate's outputs (unless sent elsewhere with --out)
"""

import contextlib
import os
import re

from research.core import outputs

CONFIG = 'config.json'
CONFIG_CHANGES = 'config_changes.json'
DATA_INFO = 'data_info.json'
RESULTS = 'results.json'
# Its former name: a workdir trained before the rename still holds it, and resumes from it.
_FORMER_RESULTS = 'train_summary.json'
CHECKPOINTS = 'checkpoints'
BEST = 'best'  # under CHECKPOINTS
_BEST_RECORD = 'best.json'  # in BEST
LOCK = 'lock.json'
SUBMIT = 'submit'
_JOB_RECORD = 'job.json'  # in SUBMIT
INPUT_GRID = 'inputs.png'

# What the project writes at the top of a workdir (and the temporary names of its atomic writes:
# NAME.tmp, NAME.<pid>.tmp): a directory holding none of these is not a run, and training into
# it (a folder of images, a home directory) is refused.
_RUN_FILES = (CONFIG, CONFIG_CHANGES, DATA_INFO, RESULTS, CHECKPOINTS, LOCK, SUBMIT)
_TEMPORARY = re.compile(r'(\.\d+)?\.tmp$')


def is_run_file(name):
  """Whether an entry `name` at the top of a directory is one a run writes."""
  return _TEMPORARY.sub('', name) in _RUN_FILES


def is_workdir(directory):
  """Whether `directory` is a training run's workdir: a config and a checkpoint or data info
  (written before the first checkpoint)."""
  return os.path.isfile(config_path(directory)) and any(
      os.path.exists(os.path.join(directory, m)) for m in (CHECKPOINTS, DATA_INFO))


def _read(path, missing=None):
  """The JSON file at `path`, or `missing` when there is none."""
  return outputs.read_json(path) if os.path.exists(path) else missing


def config_path(workdir):
  return os.path.join(workdir, CONFIG)


def read_config(workdir):
  """config.json as a JSON tree; None when there is none."""
  return _read(config_path(workdir))


def write_config(workdir, tree):
  """config.json (JSON tree `tree`) of a run that starts: a fresh start drops earlier changes."""
  outputs.write_json(config_path(workdir), tree)
  with contextlib.suppress(FileNotFoundError):
    os.remove(os.path.join(workdir, CONFIG_CHANGES))


def read_config_changes(workdir):
  """config_changes.json: [{"step": s, "time": t, "fields": {name: [old, new]}}, ...], oldest
  first; [] when there is none."""
  return _read(os.path.join(workdir, CONFIG_CHANGES), [])


def write_config_changes(workdir, changes):
  outputs.write_json(os.path.join(workdir, CONFIG_CHANGES), changes)


def data_info_path(workdir):
  return os.path.join(workdir, DATA_INFO)


def read_data_info(workdir):
  """data_info.json as a dict; None when there is none."""
  return _read(data_info_path(workdir))


def write_data_info(workdir, info):
  outputs.write_json(data_info_path(workdir), info)


def read_results(workdir):
  """The run record of `workdir` ({} before its first run ends): results.json, else the
  train_summary.json of a run made before the rename."""
  for name in (RESULTS, _FORMER_RESULTS):
    path = os.path.join(workdir, name)
    if os.path.exists(path):
      return outputs.read_json(path)
  return {}


def write_results(workdir, results):
  outputs.write_json(os.path.join(workdir, RESULTS), results)


def checkpoint_dir(workdir):
  """Where the run's latest checkpoints are (a multi-worker run's other workers write theirs
  to a directory of their own, laid out alike)."""
  return os.path.join(workdir, CHECKPOINTS)


def best_dir(checkpoint_root):
  """The best checkpoint's directory under a checkpoint directory."""
  return os.path.join(checkpoint_root, BEST)


def read_best(checkpoint_root):
  """best.json ({"step", "validation_accuracy"}) under `checkpoint_root`; None when none."""
  return _read(os.path.join(best_dir(checkpoint_root), _BEST_RECORD))


def write_best(checkpoint_root, step, accuracy):
  outputs.write_json(os.path.join(best_dir(checkpoint_root), _BEST_RECORD),
                     {'step': step, 'validation_accuracy': accuracy})


def checkpoint_step(path):
  """The step a checkpoint prefix (.../ckpt-350) was saved at."""
  return int(path.rsplit('-', 1)[1])


def lock_path(workdir):
  return os.path.join(workdir, LOCK)


def job_record_path(workdir):
  """submit/job.json: which scheduler runs the workdir's job, under what id."""
  return os.path.join(workdir, SUBMIT, _JOB_RECORD)


def summary_dir(workdir, split):
  """TensorBoard's directory of `split`'s scalars ('train', 'validation' or 'test')."""
  return os.path.join(workdir, split)


def input_grid_path(workdir):
  return os.path.join(workdir, INPUT_GRID)


def evaluation_files(split, corrupted=False):
  """(metrics JSON, picture) that launch.evaluate writes for `split`."""
  if corrupted:
    return f'eval_{split}_corrupt.json', f'corrupt_{split}.png'
  return f'eval_{split}.json', f'confusion_{split}.png'
