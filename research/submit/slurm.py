"""Slurm: one `srun` task per worker, preemption saves, the requeued job resumes.

`submit(job)` writes <workdir>/submit/slurm.sbatch and runs `sbatch` on it. Each task runs
`python -m launch.train ...` and builds its place in the cluster from Slurm's environment
(research.core.strategy). A signal (`--signal=USR1@120` before the time limit, `scancel -s USR1`,
a preemption's SIGTERM) makes every worker save at the same step and exit with
processes.PREEMPTED_EXIT_CODE; a worker that vanishes makes the others exit with
processes.LOST_WORKER_EXIT_CODE. On either status the batch script requeues the job (after a lost
worker, only if the chief checkpointed since the job's last loss), and its next start resumes
from the workdir. The job's output goes to <workdir>/submit/slurm-<jobid>.out, appended across
restarts.
"""

import os
import re
import shlex
import shutil
import signal

from research.core import layout
from research.core.errors import UserError
from research.infra import argv as argv_lib
from research.infra import processes
from research.submit import job as job_lib
from research.train import setup as setup_lib

SCRIPT_NAME = 'slurm.sbatch'
# Once a task has ended, srun gives the others this long, then kills them: a frozen worker never
# ends by itself, and the others end within seconds of each other (the chief's last writes).
SRUN_WAIT_SECONDS = 60
# srun's statuses after a lost worker. Measured (Slurm 22.05): one task exiting 200 and the other
# SIGKILLed, or frozen and killed by --wait, make srun exit 137; one exiting 200 and the other 1,
# 200: srun reports a task killed by a signal before the highest exit status.
LOST_STATUSES = (processes.LOST_WORKER_EXIT_CODE, 128 + signal.SIGKILL)
# The chief's latest checkpoint when the job last lost a worker: a second loss at the same one
# ends the job (see `script`).
LOST_AT_NAME = 'lost-worker-at'
# Seconds before the time limit at which Slurm signals the workers: enough to finish the steps
# under way and write a checkpoint (seconds for these models), with room for a slow filesystem.
SIGNAL_SECONDS = 120
# States in which a job still owns its workdir.
ACTIVE = ('PENDING', 'RUNNING', 'REQUEUED', 'CONFIGURING', 'COMPLETING', 'SUSPENDED',
          'RESIZING', 'REQUEUE_HOLD', 'REQUEUE_FED', 'STOPPED', 'SIGNALING')
_TIMEOUT_SECONDS = 60


def log_path(workdir, job_id='%j'):
  return os.path.join(workdir, layout.SUBMIT, f'slurm-{job_id}.out')


def _directive(name, value):
  """`--name=value` as sbatch reads it from an #SBATCH line (src/sbatch/opt.c, _get_argument):
  whitespace ends an argument unless quoted, a backslash escapes the next character, and an
  unquoted '#' starts a comment; a value holding any of those goes in double quotes."""
  value = str(value)
  if re.search(r'[\s"\'\\#]', value):
    value = '"' + value.replace('\\', '\\\\').replace('"', '\\"') + '"'
  return f'--{name}={value}'


def check(job):
  """job_lib.check, then what a Slurm job file cannot carry; raises UserError."""
  job_lib.check(job)
  if '\n' in job.workdir:
    raise UserError(f'--workdir={job.workdir!r} holds a newline, which the job file cannot '
                    'carry: pass a path without one')
  if '\n' in job.chdir:
    raise UserError(f'the current directory {job.chdir!r} holds a newline, which the job file '
                    'cannot carry (--chdir): submit from a directory without one')
  if '%' in job.workdir:
    # --output is a file name pattern: Slurm replaces %j, %x, ... in all of it.
    raise UserError(f"--workdir={job.workdir!r} holds '%', which the job file cannot carry "
                    "(Slurm reads --output's % as a pattern): pass a path without one")


def _directives(job, output, array=''):
  """The #SBATCH lines of `job`, its output going to `output` (a Slurm file name pattern)."""
  directives = [_directive('job-name', job.name), _directive('nodes', job.nodes),
                _directive('ntasks-per-node', job.tasks_per_node)]
  if job.gpus_per_task:
    # Slurm binds each task to its own GPUs (CUDA_VISIBLE_DEVICES), which the worker then uses.
    directives.append(_directive('gpus-per-task', job.gpus_per_task))
  directives += [_directive('time', job.time)] if job.time else []
  directives += [_directive('partition', job.partition)] if job.partition else []
  directives += [_directive('array', array)] if array else []
  directives += [_directive('output', output), '--open-mode=append',
                 _directive('chdir', job.chdir), '--requeue', f'--signal=USR1@{SIGNAL_SECONDS}']
  return [f'#SBATCH {d}' for d in directives]


def _train_and_requeue(train, workdir, label='$SLURM_JOB_ID'):
  """The script's lines from srun on: `train` runs launch.train in every task (shell text), in
  the run's `workdir` (a shell word), and the job requeues itself after a stop it recovers from.
  `$SLURM_JOB_ID` is an array task's own id, so only that task goes back into the queue; the
  messages name the job as `label` (shell text) says."""
  state = f'{workdir}/{layout.CHECKPOINTS}/checkpoint'  # names the latest first
  lost_at = f'{workdir}/{layout.SUBMIT}/{LOST_AT_NAME}'
  return [
      '# The workers save on SIGTERM too (scancel, preemption): let them, then end normally.',
      'trap \'echo "batch shell: SIGTERM, waiting for the workers to save"\' TERM',
      '# One task per worker; each finds its place in the cluster from the Slurm environment.',
      '# After a task ends the others get a while, then are killed (a frozen one never ends);',
      '# a task failing does not stop the others, whatever the site\'s KillOnBadExit.',
      f'srun --label --wait={SRUN_WAIT_SECONDS} --kill-on-bad-exit=0 {train}',
      'status=$?',
      '# Back into the queue after a stop that the next start recovers from: it resumes from',
      '# the workdir\'s last checkpoint. Any other failure (a bug, a bad setting) ends the job.',
      'case "$status" in',
      f'  {processes.PREEMPTED_EXIT_CODE})',
      '    # A signal stopped the workers and they saved. (Slurm requeues a job it preempts',
      '    # itself, not one that reaches its time limit.)',
      f'    echo "saved after a signal (exit $status): requeueing job {label}"',
      '    scontrol requeue "$SLURM_JOB_ID" ;;',
      f'  {"|".join(str(c) for c in LOST_STATUSES)})',
      '    # A worker vanished (killed, frozen, its node gone) and the others stopped without',
      '    # saving (200; srun reports 137 when a task was SIGKILLed). A worker failing alone',
      '    # (a bug: 1) looks the same to the others, and srun reports their 200: a second loss',
      '    # before a new checkpoint ends the job rather than requeue it forever.',
      f'    latest=$(head -n 1 {state} 2>/dev/null)',
      f'    if [ "$(cat {lost_at} 2>/dev/null || echo none)" = "$latest" ]; then',
      '      echo "lost a worker again before a new checkpoint (exit $status): not requeueing; '
      'see the workers\' errors above"',
      '    else',
      f'      echo "$latest" > {lost_at}',
      f'      echo "lost a worker (exit $status): requeueing job {label} to resume from '
      'the last checkpoint"',
      '      scontrol requeue "$SLURM_JOB_ID"',
      '    fi ;;',
      'esac',
      'exit "$status"',
      '']


def script(job):
  """The sbatch script of `job` (text)."""
  train = ' '.join(shlex.quote(a) for a in
                   [job.python, '-m', 'launch.train', *job_lib.worker_args(job)])
  return '\n'.join([
      '#!/bin/bash',
      f'# {job.name}: {job.workers} worker(s), written by launch.submit for {job.workdir}.',
      *([f'# {job.command}'] if job.command else []),
      *_directives(job, log_path(job.workdir)),
      '',
      '# Progress lines reach the log (and launch.submit --status) as they are written.',
      'export PYTHONUNBUFFERED=1',
      'echo "job $SLURM_JOB_ID start $((${SLURM_RESTART_COUNT:-0} + 1)) on $SLURM_JOB_NODELIST"',
      *_train_and_requeue(train, shlex.quote(job.workdir))])


# An array task's run from the sweep's manifest (research.submit.sweep): its workdir, then its
# launch.train flags, one a line. Python's own json, so that no training import slows it.
_READ_RUN = ('import json, sys; run = json.load(open(sys.argv[1]))["runs"][int(sys.argv[2])]; '
             'print("\\n".join([run["workdir"], *run["args"]]))')


def array_log_path(workdir, array_id='%A', index='%a'):
  """An array task's output, in the sweep's own workdir: Slurm names it before the task runs."""
  return os.path.join(workdir, layout.SUBMIT, f'slurm-{array_id}_{index}.out')


def array_script(job, manifest, array):
  """The sbatch script of a sweep: one array task per run (`array`: Slurm's index list, with
  %K for at most K at once), each reading its run from the sweep's `manifest` at every start.
  `job` is the sweep's: its workdir holds the runs', its sizes are every run's."""
  read = ' '.join(shlex.quote(a) for a in [job.python, '-c', _READ_RUN, manifest])
  return '\n'.join([
      '#!/bin/bash',
      f'# {job.name}: a sweep of runs of {job.workers} worker(s), one array task each, written by '
      f'launch.submit for {job.workdir}.',
      *([f'# {job.command}'] if job.command else []),
      *_directives(job, array_log_path(job.workdir), array),
      '',
      '# Progress lines reach the log (and launch.submit --status) as they are written.',
      'export PYTHONUNBUFFERED=1',
      '# This task\'s run from the manifest: its workdir, then launch.train\'s flags.',
      f'mapfile -t run < <({read} "$SLURM_ARRAY_TASK_ID")',
      'if [ "${#run[@]}" -lt 2 ]; then',
      f'  echo "no run $SLURM_ARRAY_TASK_ID in {manifest}"; exit 2',
      'fi',
      'echo "job ${SLURM_ARRAY_JOB_ID}_$SLURM_ARRAY_TASK_ID start '
      '$((${SLURM_RESTART_COUNT:-0} + 1)) on $SLURM_JOB_NODELIST: ${run[0]}"',
      *_train_and_requeue(f'{shlex.quote(job.python)} -m launch.train "${{run[@]:1}}"',
                          '"${run[0]}"', '${SLURM_ARRAY_JOB_ID}_$SLURM_ARRAY_TASK_ID')])


def _run(argv):
  return job_lib.run_command(argv, _TIMEOUT_SECONDS, 'is slurmctld up? (scontrol ping)')


def _first_line(text):
  lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
  return lines[0] if lines else 'no message'


def require(command):
  if shutil.which(command) is None:
    raise UserError(f'{command} not found: run launch.submit --cluster=slurm on a Slurm login '
                    'node (with the Slurm client commands on PATH), or use --dry_run to see the '
                    'script')


def job_state(job_id):
  """(state, details) of Slurm job `job_id`: from squeue while it is queued or running, else
  from scontrol (kept MinJobAge after the end), else sacct (needs accounting)."""
  out = _run(['squeue', '-h', '-j', job_id, '-o', '%T|%r|%M|%D'])
  if out.returncode == 0 and out.stdout.strip():
    state, reason, elapsed, nodes = out.stdout.strip().split('|')
    details = f'{elapsed} elapsed on {nodes} node(s)' if state == 'RUNNING' else f'({reason})'
    return state, details
  out = _run(['scontrol', 'show', 'job', '-o', job_id])
  if out.returncode == 0 and 'JobState=' in out.stdout:
    fields = dict(f.split('=', 1) for f in out.stdout.split() if '=' in f)
    return fields['JobState'], (f'exit code {fields.get("ExitCode", "?")}, '
                                f'{fields.get("Restarts", "0")} restart(s)')
  out = _run(['sacct', '-j', job_id, '-X', '-n', '-P', '-o', 'State,ExitCode'])
  if out.returncode == 0 and out.stdout.strip():
    state, exit_code = out.stdout.strip().splitlines()[0].split('|')
    return state.split()[0], f'exit code {exit_code}'
  return 'UNKNOWN', 'no longer known to squeue, scontrol or sacct'


def _check_not_running(workdir):
  """A second job on a workdir would train beside the first one: refuse while it is alive."""
  if not os.path.exists(job_lib.record_path(workdir)):
    return
  record = job_lib.read_record(workdir)
  if record.get('cluster') != 'slurm':
    return
  state, _ = job_state(record['job_id'])
  if state in ACTIVE:
    raise UserError(f'Slurm job {record["job_id"]} is {state} on workdir {workdir!r}: wait for '
                    f'it, or `scancel {record["job_id"]}` first (nothing was submitted)')


def check_workdir(job):
  """The workers would refuse a workdir of another experiment only once they start: refuse it
  now (UserError)."""
  accept = (argv_lib.flag_value(job.train_args, 'accept_changes') or '').split(',')
  setup_lib.check_workdir(job.config, job.workdir, start_over=False,
                          accept=[f for f in accept if f])


def forget_lost_worker(workdir):
  """A new submission gets its own chance after a lost worker."""
  lost_at = os.path.join(workdir, layout.SUBMIT, LOST_AT_NAME)
  if os.path.exists(lost_at):
    os.remove(lost_at)


def sbatch(path):
  """Submits the script at `path`; returns the job's id."""
  out = _run(['sbatch', '--parsable', path])
  if out.returncode != 0:
    raise UserError(f'sbatch rejected the job: {_first_line(out.stderr or out.stdout)} '
                    f'(script: {path})')
  return out.stdout.strip().split(';')[0]


def submit(job, dry_run=False):
  """Checks `job`, writes its script and runs sbatch; returns what to tell the user. With
  `dry_run`, returns the script and writes and submits nothing."""
  check(job)
  path = os.path.join(job.workdir, layout.SUBMIT, SCRIPT_NAME)
  text = script(job)
  if dry_run:
    return f'{text}\n# would write {path} and run: sbatch {path}'
  require('sbatch')
  _check_not_running(job.workdir)
  check_workdir(job)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)
  forget_lost_worker(job.workdir)
  job_id = sbatch(path)
  job_lib.write_record(job, job_id, script=path, log=log_path(job.workdir, job_id))
  return (f'submitted Slurm job {job_id}: {job.workers} worker(s) on {job.nodes} node(s)\n'
          f'log: {log_path(job.workdir, job_id)}\n'
          f'status: python -m launch.submit --status --workdir={job.workdir}')


def status(record):
  """The job's state and the last training progress line of its log."""
  require('squeue')
  state, details = job_state(record['job_id'])
  lines = [f'Slurm job {record["job_id"]} ({record["name"]}): {state} {details}']
  log = record.get('log') or log_path(record['workdir'], record['job_id'])
  progress = None
  if os.path.exists(log):
    with open(log, errors='replace') as f:
      progress = job_lib.last_progress_line(f)
  lines.append(f'  progress: {progress or "no progress line yet"}')
  run = job_lib.run_line(record['workdir'])
  if run:
    lines.append(f'  run: {run}')
  lines.append(f'  log: {log}')
  return '\n'.join(lines)
