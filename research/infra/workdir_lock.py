"""One writer per workdir: an exclusive lock file in the workdir that names its holder.

Two trainers on one workdir (a job requeued while its first copy still runs, a command typed
twice) would write over each other's checkpoints. The chief takes `lock.json` before it writes
anything and keeps it until the run ends; the other workers of a multi-worker job write nothing
to the workdir and share it. A second run finds the lock and stops with one line naming the
holder. A lock whose holder is gone is taken over with a warning:

* the holder ran on this host and its process is no longer running (a kill -9, a crash);
* the holder was an earlier start of this same scheduler job (Slurm keeps the job id when it
  requeues a job, and starts it again only after the first start ended);
* the holder has not refreshed the lock for STALE_SECONDS (its host vanished): the holder
  touches the file every HEARTBEAT_SECONDS while it runs.

Deciding and replacing happen under a flock of the workdir, so two runs that start at once
cannot both take over the same stale lock.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket
import threading
import time

from absl import logging

from research.core import layout
from research.core import outputs
from research.core.errors import UserError
from research.infra import processes

HEARTBEAT_SECONDS = 30
# A lock from another host not refreshed for this long belongs to a run that is gone.
STALE_SECONDS = 300
# A scheduler job's id: the same for every start of the job (Slurm's survives a requeue).
JOB_ID_ENVS = ('SLURM_JOB_ID', 'RESEARCH_JOB_ID')


def _alive(pid, start):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # another user's process: it exists
  now = processes.start_ticks(pid)
  return start is None or now is None or now == start


def _job_id():
  return next((os.environ[k] for k in JOB_ID_ENVS if os.environ.get(k)), '')


def me():
  """This process as a lock holder."""
  return {'host': socket.gethostname(), 'pid': os.getpid(),
          'pid_start': processes.start_ticks(os.getpid()), 'job_id': _job_id(),
          'since': datetime.datetime.now().astimezone().isoformat(timespec='seconds')}


def read(workdir):
  """The holder recorded in `workdir`'s lock, with `age` (seconds since it was refreshed); None
  when there is no lock."""
  path = layout.lock_path(workdir)
  try:
    with open(path) as f:
      holder = json.load(f)
    holder['age'] = max(time.time() - os.stat(path).st_mtime, 0.0)
    return holder
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    # A lock being written this instant, or truncated by a crash: taken as old and anonymous.
    return {'host': '?', 'pid': -1, 'age': float('inf')}


def describe_holder(holder):
  job = f', job {holder["job_id"]}' if holder.get('job_id') else ''
  return (f'pid {holder.get("pid")} on {holder.get("host")}{job}, since '
          f'{holder.get("since", "?")}, refreshed {holder["age"]:.0f}s ago')


def status(workdir):
  """One line for `launch.submit --status`: who holds the workdir, if anyone."""
  holder = read(workdir)
  if holder is None:
    return f'workdir lock: free (no run holds {workdir})'
  return f'workdir lock: held by {describe_holder(holder)}'


def held(workdir, stale_seconds=STALE_SECONDS):
  """The holder of `workdir`'s lock while its run is alive, else None (free, or left by a run
  that is gone)."""
  holder = read(workdir)
  return holder if holder is not None and not _gone(holder, stale_seconds) else None


def _gone(holder, stale_seconds):
  """Why `holder` no longer runs (a reason to take its lock over), or '' when it may."""
  if holder.get('host') == socket.gethostname() and holder.get('pid', -1) > 0 and not _alive(
      holder['pid'], holder.get('pid_start')):
    return 'its process is no longer running'
  if holder.get('job_id') and holder['job_id'] == _job_id():
    return 'it was an earlier start of this job'
  if holder['age'] > stale_seconds:
    return f'it was not refreshed for {holder["age"]:.0f}s'
  return ''


@contextlib.contextmanager
def _guard(workdir):
  """Serializes reading, deciding and replacing the lock among runs that start at once: flock
  on the workdir itself, which leaves no file behind. A filesystem that refuses it (NFS emulates
  flock with write locks, which a directory cannot take) goes without: the rules still hold,
  only two simultaneous take-overs of one stale lock could both proceed."""
  fd = os.open(workdir, os.O_RDONLY)
  try:
    with contextlib.suppress(OSError):
      fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)  # releases the flock


def _write(path, holder):
  tmp = f'{path}.{os.getpid()}.tmp'
  with open(tmp, 'w') as f:
    json.dump(holder, f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


class WorkdirLock:
  """Holds `workdir`'s lock from `acquire` to `release`; a thread refreshes it meanwhile."""

  def __init__(self, workdir, stale_seconds=STALE_SECONDS, heartbeat_seconds=HEARTBEAT_SECONDS):
    self.workdir = workdir
    self.path = layout.lock_path(workdir)
    self.stale_seconds = stale_seconds
    self.heartbeat_seconds = heartbeat_seconds
    self.holder = None
    self._stop = threading.Event()
    self._thread = None
    self._created = False  # by acquire: a run refused before writing leaves no empty workdir

  def acquire(self):
    """Takes the lock or raises UserError naming its holder, or why the workdir is unusable."""
    try:
      self._acquire()
    except OSError as e:  # read-only storage, a parent that is a file, a name too long, ...
      if self._created:
        with contextlib.suppress(OSError):
          os.rmdir(self.workdir)
      raise outputs.write_error(
          'to workdir', self.workdir, e,
          'training needs a --workdir it can create and write (nothing was written; a finished '
          'run on read-only storage is still read by launch.evaluate --out, predict and export)'
      ) from None
    self._thread = threading.Thread(target=self._refresh, daemon=True, name='workdir-lock')
    self._thread.start()
    return self

  def _acquire(self):
    self._created = self._created or not os.path.isdir(self.workdir)
    os.makedirs(self.workdir, exist_ok=True)
    with _guard(self.workdir):
      held = read(self.workdir)
      if held is not None and not self._mine(held):
        reason = _gone(held, self.stale_seconds)
        if not reason:
          raise UserError(
              f'workdir {self.workdir!r} is in use by another run ({describe_holder(held)}): '
              f'wait for it to end or stop it, or pass another --workdir (nothing was changed; '
              f'a lock not refreshed for {self.stale_seconds}s is taken over)')
        logging.warning('Taking over the lock of %s from %s: %s.', self.workdir,
                        describe_holder(held), reason)
      self.holder = me()
      try:
        _write(self.path, self.holder)
      except OSError:
        self.holder = None
        with contextlib.suppress(OSError):
          os.remove(f'{self.path}.{os.getpid()}.tmp')
        raise

  def _mine(self, holder):
    return (holder.get('host') == socket.gethostname() and holder.get('pid') == os.getpid())

  def _refresh(self):
    while not self._stop.wait(self.heartbeat_seconds):
      try:
        os.utime(self.path)
      except OSError:
        pass  # check() reports a lock that is gone; a failing disk shows at the next write

  def check(self):
    """Raises UserError when another run has taken the lock over: nothing more may be written."""
    held = read(self.workdir)
    if held is None or not self._mine(held):
      taker = 'it was removed' if held is None else f'now {describe_holder(held)}'
      raise UserError(f'lost the lock of workdir {self.workdir!r} ({taker}): stopped without '
                      'writing more; check that only one run uses this workdir, then re-run')

  def follow(self, moved_to):
    """The locked workdir was just renamed to `moved_to` (starting over), its lock with it: drops
    that one and takes the lock of the workdir's new, empty directory."""
    self._stop_refreshing()
    with contextlib.suppress(FileNotFoundError):
      os.remove(layout.lock_path(moved_to))
    self.holder = None
    self.acquire()

  def _stop_refreshing(self):
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
      self._thread = None
    self._stop = threading.Event()

  def release(self):
    """Drops the lock if this process still holds it."""
    self._stop_refreshing()
    if self.holder is None:
      return
    with contextlib.suppress(OSError), _guard(self.workdir):
      held = read(self.workdir)
      if held is not None and self._mine(held):
        os.remove(self.path)
    self.holder = None
    if self._created:
      with contextlib.suppress(OSError):
        os.rmdir(self.workdir)  # only if the run wrote nothing into it
