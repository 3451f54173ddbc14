"""Sweeps: one training command over a grid of `--config` overrides, as one run per point.

A spec is YAML (a file, or the text itself): a grid maps config fields (as in --config.FIELD) to
a list of values, and expands to every combination, the last field varying fastest; a scalar is
one value; a list of grids is their runs one after the other. A tuple field's value is itself a
list, so a grid gives it a list of lists:

  {seed: [0, 1], schedule.learning_rate: [0.01, 0.003]}               # 4 runs
  [{model.filters: [[16, 32]], seed: [0, 1]}, {model.filters: [[32, 64]]}]   # 3 runs

Each run trains in <workdir>/<name>, the name made of the fields that vary (`seed=1,
learning_rate=0.003`), and gets the sweep's command with its overrides after the user's. Every
run's config is resolved and checked before anything is written; then the sweep's manifest,
<workdir>/sweep.json (each run's overrides, workdir, launch.train flags and job id), is written,
and only then are the runs submitted: on Slurm as one job array whose task i reads run i from
the manifest, on Kubernetes as one job per run. Submitting the same sweep again leaves alone the
runs that finished or are still queued or running and submits the others, which resume.
"""

import dataclasses
import difflib
import itertools
import os
import posixpath
import re

import yaml

from research.core import config as config_lib
from research.core import layout
from research.core import outputs
from research.core.errors import UserError
from research.infra import argv as argv_lib
from research.submit import job as job_lib
from research.submit import kubernetes
from research.submit import slurm

MANIFEST = 'sweep.json'
# More runs than this need --max_runs: a grid grows as a product, and a typo (a list of 50 where
# 5 were meant) should not fill the queue.
DEFAULT_MAX_RUNS = 100
# A run's workdir name is made of its overrides up to this length; beyond it, run-<index>.
_NAME_MAX = 100
# A Kubernetes job per run is named <sweep's name, cut to this>-<index>: room for the suffixes
# the operator adds to its pods' names within their 63 characters.
_JOB_NAME_BASE = 40
_NAME_UNSAFE = re.compile(r'[^A-Za-z0-9._+=,-]+')
# The line an array task's script prints at each start (slurm.array_script).
_START = re.compile(r'^job \d+_\d+ start \d+ on ')
# How --status counts the runs, in this order.
_STATES = ('done', 'running', 'preempted', 'queued', 'failed', 'unsubmitted')


@dataclasses.dataclass
class Run:
  """One point of the sweep: its place, overrides ({field: value as in the spec}) and job."""
  index: int
  name: str
  overrides: dict
  job: job_lib.Job

  @property
  def args(self):
    """launch.train's flags for every worker of the run."""
    return job_lib.worker_args(self.job)


def read_spec(spec):
  """The parsed spec: `spec` is a YAML file's path or YAML text."""
  text = spec
  if os.path.isfile(spec):
    try:
      with open(spec) as f:
        text = f.read()
    except OSError as e:
      raise UserError(f'cannot read --sweep={spec}: {e}') from None
  try:
    parsed = yaml.safe_load(text)
  except yaml.YAMLError as e:
    where = f' (line {e.problem_mark.line + 1})' if getattr(e, 'problem_mark', None) else ''
    raise UserError(f'--sweep={spec!r} is neither a file nor a YAML grid{where}: '
                    f'{" ".join(str(getattr(e, "problem", e)).split())}') from None
  if isinstance(parsed, str):
    raise UserError(f'--sweep={spec!r} is no file, nor a grid: give a YAML mapping such as '
                    '"{seed: [0, 1]}", or the path of a file holding one')
  return parsed


def _check_grid(grid, fields):
  """Raises UserError unless `grid` maps config fields (of `fields`) to values or lists of
  them; returns how many runs it makes."""
  if not isinstance(grid, dict) or not grid:
    raise UserError(f'a sweep grid maps config fields to lists of values, like '
                    f'{{seed: [0, 1]}}; got {grid!r}')
  size = 1
  for field, values in grid.items():
    if not isinstance(field, str) or field not in fields:
      close = difflib.get_close_matches(str(field), fields, n=1)
      raise UserError(f'the sweep names {field!r}, which is no config field'
                      + (f': did you mean {close[0]}?' if close else
                         ' (fields are named as in --config.FIELD, e.g. schedule.learning_rate)'))
    if isinstance(values, list) and not values:
      raise UserError(f'the sweep gives {field} an empty list of values: an empty grid has no '
                      'run')
    for value in values if isinstance(values, list) else [values]:
      override_text(value)  # a section, or a value with a newline, fails here
    size *= len(values) if isinstance(values, list) else 1
  return size


def expand(spec, fields, max_runs=DEFAULT_MAX_RUNS):
  """[{field: value}, ...]: the runs of a parsed `spec`, in order; `fields` are the config's."""
  grids = spec if isinstance(spec, list) else [spec]
  if spec is None or not grids:
    raise UserError('the sweep is empty: give a grid such as {seed: [0, 1]}')
  size = sum(_check_grid(grid, fields) for grid in grids)
  if size > max_runs:
    raise UserError(f'the sweep has {size} runs, more than --max_runs={max_runs}: pass '
                    f'--max_runs={size} if that many are meant')
  points = []
  for grid in grids:
    choices = [v if isinstance(v, list) else [v] for v in grid.values()]
    points += [dict(zip(grid, point)) for point in itertools.product(*choices)]
  seen = {}
  for i, point in enumerate(points):
    key = tuple(sorted((f, override_text(v)) for f, v in point.items()))
    if key in seen:
      raise UserError(f'runs {seen[key]} and {i} of the sweep are the same ({point}): drop one')
    seen[key] = i
  return points


def override_text(value):
  """`value` as launch.train's --config.FIELD=TEXT reads it (ml_collections parses TEXT by the
  field's type: the field, not YAML, decides that 1e-3 is a float)."""
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  if isinstance(value, dict):
    raise UserError(f'a sweep value cannot be a section ({value!r}): name its fields, e.g. '
                    'augment.rotate')
  if '\n' in str(value):
    raise UserError(f'a sweep value cannot hold a newline ({value!r})')
  return str(value)


def _name_part(value):
  if isinstance(value, (list, tuple)):
    return 'x'.join(_name_part(v) for v in value)
  return override_text(value)


def run_names(points):
  """A workdir name for each run: the fields that vary across the sweep (by their last part,
  unless two share it), `field=value` joined by commas; run-<i> when too long to be a name."""
  varying = [f for f in dict.fromkeys(f for p in points for f in p)
             if len({override_text(p.get(f)) for p in points}) > 1 or len(points) == 1]
  last = [f.rsplit('.', 1)[-1] for f in varying]
  short = {f: s if last.count(s) == 1 else f for f, s in zip(varying, last)}
  names = []
  for i, point in enumerate(points):
    name = ','.join(f'{short[f]}={_name_part(point[f])}' for f in varying if f in point)
    name = _NAME_UNSAFE.sub('_', name).strip('.') or f'run-{i}'
    names.append(name if len(name) <= _NAME_MAX else f'run-{i}')
  if len(set(names)) < len(names):  # values that differ only in unsafe characters
    names = [f'{n},{i}' for i, n in enumerate(names)]
  return names


def plan(sweep_job, spec, resolve, max_runs=DEFAULT_MAX_RUNS):
  """The Runs of the sweep, each checked as its own job would be; raises UserError before
  anything is written. `sweep_job` holds the command for every run (its workdir the sweep's);
  `resolve(train_args)` is the config launch.train resolves from those flags."""
  points = expand(spec, list(config_lib.flatten(sweep_job.config)), max_runs)
  given = {a.split('=', 1)[0][len('--config.'):] for a in sweep_job.train_args
           if a.startswith('--config.')}
  both = sorted(given & {f for p in points for f in p})
  if both:
    raise UserError(f'{", ".join(both)} is set both after "--" (--config.{both[0]}) and by '
                    'the sweep: drop one')
  join = posixpath.join if sweep_job.cluster == 'kubernetes' else os.path.join
  base = argv_lib.strip_flag(sweep_job.train_args, 'workdir')
  runs = []
  for i, (name, point) in enumerate(zip(run_names(points), points)):
    workdir = join(sweep_job.workdir, name)
    train_args = base + [f'--config.{f}={override_text(v)}' for f, v in point.items()]
    train_args.append(f'--workdir={workdir}')
    try:
      config = resolve(train_args)
      job = dataclasses.replace(sweep_job, workdir=workdir, train_args=train_args,
                                config=config, name=_job_name(sweep_job, i))
      (slurm.check if job.cluster == 'slurm' else kubernetes.check)(job)
      config_lib.validate(config, job.replicas)
    except UserError as e:
      raise UserError(f'sweep run {i} ({name}): {e}') from None
    runs.append(Run(i, name, point, job))
  return runs


def _job_name(sweep_job, index):
  """Slurm names the array's tasks itself; a Kubernetes job per run needs a name of its own."""
  if sweep_job.cluster == 'slurm':
    return sweep_job.name
  return f'{sweep_job.name[:_JOB_NAME_BASE].rstrip("-")}-{index}'


def manifest_path(sweep_job):
  """Slurm: in the sweep's workdir. Kubernetes: beside the jobs' manifests, on this machine (the
  workdir is on the pods' volume)."""
  if sweep_job.cluster == 'slurm':
    return os.path.join(sweep_job.workdir, MANIFEST)
  return os.path.join(kubernetes.MANIFEST_DIR,
                      f'{sweep_job.namespace}-{sweep_job.name}-{MANIFEST}')


def _manifest(sweep_job, spec, runs, job_ids):
  return dict(
      cluster=sweep_job.cluster, workdir=sweep_job.workdir, name=sweep_job.name,
      namespace=sweep_job.namespace, command=sweep_job.command, spec=spec,
      train_args=sweep_job.train_args,
      runs=[dict(index=r.index, name=r.name, overrides=r.overrides, workdir=r.job.workdir,
                 job_name=r.job.name, args=r.args, job_id=job_ids.get(r.index))
            for r in runs])


def read_manifest(path):
  try:
    return outputs.read_json(path)
  except (OSError, ValueError) as e:
    raise UserError(f'cannot read the sweep manifest {path}: {e}') from None


def _check_same_sweep(previous, runs, path):
  """A sweep submitted again must be the same runs: a run's index is its array task's."""
  before = [(r['workdir'], r['args']) for r in previous['runs']]
  now = [(r.job.workdir, r.args) for r in runs]
  if before != now:
    changed = next((i for i, (a, b) in enumerate(zip(before, now)) if a != b),
                   min(len(before), len(now)))
    raise UserError(f'{path} holds another sweep ({len(before)} runs; run {changed} differs): '
                    're-submit it with the same spec and flags, or pass a new --workdir '
                    '(nothing was submitted)')


def finished(workdir):
  """Whether the run in `workdir` trained to its end (results.json has its test accuracy)."""
  try:
    results = layout.read_results(workdir)
  except (OSError, ValueError):
    return False
  return 'test_accuracy' in results and not results.get('preempted')


def _slurm_state(job_id):
  return slurm.job_state(job_id) if job_id else ('NOT SUBMITTED', '')


def array_indices(indices):
  """Slurm's --array list for sorted `indices`: ranges where they run on (0-3, or 0-1,3)."""
  parts = []
  for _, group in itertools.groupby(enumerate(indices), lambda p: p[1] - p[0]):
    group = [i for _, i in group]
    parts.append(str(group[0]) if len(group) == 1 else f'{group[0]}-{group[-1]}')
  return ','.join(parts)


def expansion(runs, action=None):
  """One line per run: index, workdir, overrides (and what a submission does with it)."""
  lines = []
  for run in runs:
    flags = ' '.join(f'--config.{f}={override_text(v)}' for f, v in run.overrides.items())
    lines.append(f'  {run.index}  {run.job.workdir}  {flags}'
                 + (f'  [{action[run.index]}]' if action else ''))
  return lines


def _slurm_actions(runs, previous):
  """{index: what submitting does with the run}: 'submit', or why not ('finished', the live
  job's state). A run's job id comes from the manifest, else its workdir's job record."""
  actions = {}
  for run in runs:
    workdir = run.job.workdir
    if finished(workdir):
      actions[run.index] = 'finished: skip'
      continue
    job_id = (previous['runs'][run.index].get('job_id') if previous else None)
    if not job_id and os.path.exists(job_lib.record_path(workdir)):
      record = job_lib.read_record(workdir)
      job_id = record.get('job_id') if record.get('cluster') == 'slurm' else None
    state = slurm.job_state(job_id)[0] if job_id else None
    if state in slurm.ACTIVE:
      actions[run.index] = f'job {job_id} {state}: skip'
    else:
      actions[run.index] = 'resume' if os.path.exists(layout.config_path(workdir)) else 'submit'
  return actions


def _check_run_workdirs(runs):
  """Each run's workdir may take the run (new, or the same experiment to resume)."""
  for run in runs:
    try:
      slurm.check_workdir(run.job)
    except UserError as e:
      raise UserError(f'sweep run {run.index} ({run.name}): {e}') from None


def _submit_array(sweep_job, spec, runs, todo, previous, max_parallel):
  """Writes the manifest, then the array script, then runs sbatch; records each task's job."""
  path = manifest_path(sweep_job)
  job_ids = {r['index']: r.get('job_id') for r in (previous or {}).get('runs', [])}
  os.makedirs(os.path.join(sweep_job.workdir, layout.SUBMIT), exist_ok=True)
  outputs.write_json(path, _manifest(sweep_job, spec, runs, job_ids))
  array = array_indices(todo) + (f'%{max_parallel}' if max_parallel else '')
  script_path = os.path.join(sweep_job.workdir, layout.SUBMIT, 'sweep.sbatch')
  with open(script_path, 'w') as f:
    f.write(slurm.array_script(sweep_job, path, array))
  for i in todo:
    slurm.forget_lost_worker(runs[i].job.workdir)
  array_id = slurm.sbatch(script_path)
  for i in todo:
    job_ids[i] = f'{array_id}_{i}'
    job_lib.write_record(runs[i].job, job_ids[i], script=script_path, sweep=path,
                         log=slurm.array_log_path(sweep_job.workdir, array_id, i))
  outputs.write_json(path, _manifest(sweep_job, spec, runs, job_ids))
  return array_id, array


def submit_slurm(sweep_job, spec, runs, max_parallel=0, dry_run=False):
  """Submits the sweep's runs that are neither finished nor alive as one Slurm job array;
  returns what to tell the user. With `dry_run`, the expansion and the script only."""
  path = manifest_path(sweep_job)
  previous = read_manifest(path) if os.path.exists(path) else None
  if previous:
    _check_same_sweep(previous, runs, path)
  actions = _slurm_actions(runs, previous) if previous or any(
      os.path.exists(r.job.workdir) for r in runs) else {r.index: 'submit' for r in runs}
  todo = [i for i, a in sorted(actions.items()) if a in ('submit', 'resume')]
  head = [f'sweep of {len(runs)} run(s) in {sweep_job.workdir} '
          f'(manifest {path}):', *expansion(runs, actions)]
  if not todo:
    return '\n'.join(head + ['nothing to submit: every run finished or is queued or running'])
  array = array_indices(todo) + (f'%{max_parallel}' if max_parallel else '')
  if dry_run:
    return '\n'.join(head + ['', slurm.array_script(sweep_job, path, array),
                             f'# would write {path} and the script above, and run sbatch on it'])
  slurm.require('sbatch')
  _check_run_workdirs([runs[i] for i in todo])
  array_id, array = _submit_array(sweep_job, spec, runs, todo, previous, max_parallel)
  return '\n'.join(head + [
      f'submitted Slurm job array {array_id} (--array={array}): {len(todo)} task(s), one per run',
      f'logs: {slurm.array_log_path(sweep_job.workdir, array_id, "<index>")}',
      f'status: python -m launch.submit --status --workdir={sweep_job.workdir}'])


def submit_kubernetes(sweep_job, spec, runs, dry_run=False):
  """One Kubernetes job per run, each through research.submit.kubernetes; the manifest first.
  Applying a run's job again changes nothing, so a sweep submitted again duplicates no run."""
  path = manifest_path(sweep_job)
  head = [f'sweep of {len(runs)} run(s) in {sweep_job.workdir} (manifest {path}):',
          *expansion(runs)]
  if dry_run:
    return '\n\n'.join(['\n'.join(head)] + [kubernetes.submit(r.job, dry_run=True)
                                            for r in runs])
  os.makedirs(os.path.dirname(path), exist_ok=True)
  outputs.write_json(path, _manifest(sweep_job, spec, runs, {r.index: r.job.name for r in runs}))
  return '\n'.join(head + [kubernetes.submit(r.job) for r in runs])


def submit(sweep_job, spec_text, resolve, max_runs=DEFAULT_MAX_RUNS, max_parallel=0,
           dry_run=False):
  """Expands, checks and submits the sweep `spec_text` (read_spec) of `sweep_job`'s command."""
  if max_parallel < 0:
    raise UserError(f'--max_parallel={max_parallel} must be 0 (no limit) or more')
  spec = read_spec(spec_text)
  if sweep_job.cluster == 'slurm':
    slurm.check(sweep_job)  # the sweep's workdir holds the array's logs
  runs = plan(sweep_job, spec, resolve, max_runs)
  if sweep_job.cluster == 'slurm':
    return submit_slurm(sweep_job, spec, runs, max_parallel, dry_run)
  return submit_kubernetes(sweep_job, spec, runs, dry_run)


def find_manifest(workdir, cluster='slurm', namespace='default', name=''):
  """The manifest of the sweep in `workdir`, or None when it holds no sweep."""
  path = manifest_path(job_lib.Job(
      cluster=cluster or 'slurm', workdir=workdir, train_args=[], config=None,
      namespace=namespace or 'default', name=name or job_lib.default_name(workdir)))
  return path if os.path.isfile(path) else None


def _progress_step(log):
  """'step N/T' of the task's last progress line since its latest start, or None."""
  if not os.path.exists(log):
    return None
  with open(log, errors='replace') as f:
    lines = f.readlines()
  starts = [i for i, line in enumerate(lines) if _START.match(line)]
  line = job_lib.last_progress_line(lines[starts[-1] if starts else 0:])
  return line.split(' epoch', 1)[0] if line else None


def _last_line(log):
  if not os.path.exists(log):
    return 'no log yet'
  with open(log, errors='replace') as f:
    lines = [line.strip() for line in f if line.strip()]
  return lines[-1] if lines else 'an empty log'


def run_state(run, array_log):
  """How one run of a Slurm sweep stands: queued, running (with its step), preempted, done
  (with its test accuracy) or failed (with its log's last line)."""
  workdir, job_id = run['workdir'], run.get('job_id')
  results = {}
  if os.path.exists(workdir):
    try:
      results = layout.read_results(workdir)
    except (OSError, ValueError):
      pass
  if 'test_accuracy' in results and not results.get('preempted'):
    return f'done: test accuracy {results["test_accuracy"]:.4f} at step {results["step"]}'
  state, details = _slurm_state(job_id)
  if state == 'RUNNING':
    return f'running: {_progress_step(array_log) or "starting"} (job {job_id})'
  if results.get('preempted') and state in slurm.ACTIVE:
    return f'preempted at step {results["step"]}, saved, requeued: {state} (job {job_id})'
  if state in slurm.ACTIVE:
    return f'queued: {state} {details} (job {job_id})'
  if state == 'NOT SUBMITTED':
    return 'unsubmitted: submit the sweep again'
  if results.get('preempted'):
    return (f'preempted at step {results["step"]}, saved; job {job_id} {state}: submit the '
            'sweep again to resume')
  return f'failed: job {job_id} {state} {details}: {_last_line(array_log)}'


def _kubernetes_status(manifest):
  return '\n'.join([f'sweep {manifest["workdir"]}: {len(manifest["runs"])} Kubernetes job(s)'] + [
      kubernetes.status(r['workdir'], r['job_name'], manifest['namespace'])
      for r in manifest['runs']])


def status(path):
  """Every run's state, from the sweep's manifest at `path` (find_manifest) and the scheduler."""
  manifest = read_manifest(path)
  if manifest['cluster'] == 'kubernetes':
    return _kubernetes_status(manifest)
  slurm.require('squeue')
  lines, counts = [], {}
  for run in manifest['runs']:
    array_id, _, index = (run.get('job_id') or '').partition('_')
    state = run_state(run, slurm.array_log_path(manifest['workdir'], array_id, index))
    word = re.split(r'[: ]', state, maxsplit=1)[0]
    counts[word] = counts.get(word, 0) + 1
    lines.append(f'  {run["index"]}  {run["name"]}  {state}')
  summary = ', '.join(f'{counts[w]} {w}' for w in _STATES if w in counts)
  return '\n'.join([f'sweep {manifest["workdir"]}: {len(lines)} run(s), {summary}'] + lines)
