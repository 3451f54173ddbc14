"""N training workers on this machine as one multi-worker cluster: tests, debugging, a laptop.

`python -m launch.train --strategy=multi_worker_mirrored --local_workers=2 ...` runs
`run_local_workers`, which starts one `python -m launch.train ...` per worker, each with its own
TF_CONFIG over free localhost ports, and supervises them:

* their output comes through line by line, each line prefixed with `[worker i] `;
* SIGTERM, SIGINT and SIGUSR1 sent to the supervisor go to every worker (how a preemption
  notice reaches them), and the supervisor waits for them; a second SIGINT kills them;
* when a worker dies (killed by a signal) or exits with the lost-worker status, the others
  notice the loss themselves within `lost_seconds` (config.worker_lost_seconds) and exit with
  that status (research.core.strategy.WorkerLostError): they are left to it, and get SIGKILL only if
  still running after `lost_seconds` plus a grace period. The supervisor then exits with the
  lost-worker status too, so that it reads as a lost node, not as a bug;
* when a worker exits with another non-zero status (a bug, a bad setting) the others get SIGTERM
  at once (a worker still starting exits on it) and SIGKILL after the same wait; the supervisor
  exits with that worker's status.

Either way it ends with one line naming the worker.

Nothing here imports TensorFlow: the supervisor stays light and quick to start.
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import logging

from research.core.errors import UserError
from research.infra import argv as argv_lib
from research.infra import processes

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
# After a worker failed, how long the others get beyond `lost_seconds` before SIGKILL: to exit
# after they noticed the loss.
GRACE_SECONDS = 10.0
_POLL_SECONDS = 0.1
# Output readers end when a worker's pipes close; a grandchild holding them open must not
# keep the supervisor waiting.
_READER_JOIN_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1


def free_ports(count, host='127.0.0.1'):
  """`count` distinct ports that were free on `host` a moment ago (the OS's picks)."""
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind((host, 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def tf_config(addresses, index):
  """TF_CONFIG of worker `index` of a cluster of workers at `addresses`."""
  return json.dumps({'cluster': {'worker': list(addresses)},
                     'task': {'type': 'worker', 'index': index}})


def _parent_death_signal():
  """A preexec_fn making the child get SIGKILL when the supervisor dies, even by SIGKILL (Linux
  prctl), so that no worker outlives it; None elsewhere. Looked up here, in the parent: the
  child between fork and exec must not load libraries."""
  try:
    prctl = ctypes.CDLL(None, use_errno=True).prctl
  except (OSError, AttributeError):
    return None
  parent = os.getpid()

  def preexec():
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
      os._exit(1)  # pylint: disable=protected-access

  return preexec


def _pump(stream, out, prefix, lock):
  """Copies `stream` to `out` line by line, each line prefixed, whole lines at a time."""
  for line in iter(stream.readline, ''):
    with lock:
      out.write(prefix + line if line.endswith('\n') else prefix + line + '\n')
      out.flush()
  stream.close()


def _describe(returncode):
  if returncode < 0:
    try:
      return f'was killed by {signal.Signals(-returncode).name}'
    except ValueError:
      return f'was killed by signal {-returncode}'
  return f'exited with status {returncode}'


def _lost(returncode):
  """Whether a worker's end means a lost worker: its own death by a signal, or it lost one."""
  return returncode < 0 or returncode == processes.LOST_WORKER_EXIT_CODE


def _stopped(pid):
  """Whether process `pid` is stopped (SIGSTOP), a frozen worker."""
  return processes.state(pid) in ('T', 't')


class _Workers:
  """The worker processes and what has happened to them."""

  def __init__(self):
    self.lock = threading.Lock()
    self.procs = []
    self.readers = []

  def start(self, commands, envs, stdout, stderr):
    preexec = _parent_death_signal()
    # Every worker starts before any reader thread: forking a multi-threaded process is unsafe
    # with a preexec_fn. Each worker is detached from the terminal (setsid): a terminal's
    # Ctrl-C reaches the supervisor only, which forwards it once.
    for command, env in zip(commands, envs):
      self.procs.append(subprocess.Popen(
          command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
          stderr=subprocess.PIPE, text=True, errors='replace', bufsize=1,
          start_new_session=True, preexec_fn=preexec))
    for i, proc in enumerate(self.procs):
      for stream, out in ((proc.stdout, stdout), (proc.stderr, stderr)):
        t = threading.Thread(target=_pump, args=(stream, out, f'[worker {i}] ', self.lock),
                             daemon=True)
        t.start()
        self.readers.append(t)

  def live(self):
    return [p for p in self.procs if p.poll() is None]

  def signal(self, signum):
    for proc in self.live():
      try:
        proc.send_signal(signum)
      except ProcessLookupError:
        pass

  def join_readers(self):
    deadline = time.monotonic() + _READER_JOIN_SECONDS
    for t in self.readers:
      t.join(max(deadline - time.monotonic(), 0))


def run_local_workers(argv, num_workers, lost_seconds, command=None, grace_seconds=GRACE_SECONDS,
                      host='127.0.0.1', stdout=None, stderr=None):
  """Runs `command + argv` (default `python -m launch.train`) as `num_workers` workers of one
  TF_CONFIG cluster on `host`; returns 0 when all exit 0, processes.LOST_WORKER_EXIT_CODE when a
  worker was lost, else the failed worker's status. `lost_seconds`: how long the workers take to
  notice a lost one (config.worker_lost_seconds).

  `argv` loses its --local_workers flag. Must be called from the main thread (signal handlers;
  the workers die with the thread that started them).
  """
  if num_workers < 1:
    raise UserError(f'local_workers={num_workers}: give 1 or more workers')
  stdout = stdout or sys.stdout
  stderr = stderr or sys.stderr
  command = list(command or [sys.executable, '-m', 'launch.train'])
  argv = argv_lib.strip_flag(list(argv), 'local_workers')
  addresses = [f'{host}:{port}' for port in free_ports(num_workers, host)]
  base_env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
  envs = [{**base_env, 'TF_CONFIG': tf_config(addresses, i)} for i in range(num_workers)]

  received = []
  previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
              for s in FORWARDED_SIGNALS}
  workers = _Workers()
  try:
    workers.start([command + argv] * num_workers, envs, stdout, stderr)
    logging.info('Started %d workers (pids %s) on %s.', num_workers,
                 [p.pid for p in workers.procs], addresses)
    return _supervise(workers, received, lost_seconds + grace_seconds, stderr)
  finally:
    for proc in workers.live():  # only on an exception in the supervisor itself
      proc.kill()
    for proc in workers.procs:
      proc.wait()
    workers.join_readers()
    for s, handler in previous.items():
      signal.signal(s, handler)


def _supervise(workers, received, wait_seconds, stderr):
  """Waits for the workers; after a failure, SIGKILLs those still running `wait_seconds` later
  (or at once when, after a loss, all of them are stopped)."""
  failure, kill_at, interrupts, killed_text = None, None, 0, ''
  while True:
    while received:
      signum = received.pop(0)
      interrupts += signum == signal.SIGINT
      if interrupts >= 2 and failure is None:
        logging.warning('Second SIGINT: killing the workers.')
        workers.signal(signal.SIGKILL)
        failure = (None, -signal.SIGINT)
      else:
        logging.info('Forwarding %s to the workers.', signal.Signals(signum).name)
        workers.signal(signum)
    codes = [p.poll() for p in workers.procs]
    failed = [((code >= 0, code == processes.LOST_WORKER_EXIT_CODE), i)
              for i, code in enumerate(codes) if code not in (None, 0)]
    if failure is None and failed:
      # Several seen at once: one killed by a signal is likelier the cause than one that
      # exited with an error after its peer vanished, and either than one that lost a peer.
      i = min(failed)[1]
      failure = (i, codes[i])
      kill_at = time.monotonic() + wait_seconds
      if _lost(codes[i]):
        logging.warning('Worker %d %s: the others should notice and exit by themselves.', i,
                        _describe(codes[i]))
      else:
        logging.warning('Worker %d %s: stopping the others.', i, _describe(codes[i]))
        workers.signal(signal.SIGTERM)
    if all(code is not None for code in codes):
      break
    live = [j for j, p in enumerate(workers.procs) if p.poll() is None]
    # After a loss, workers that are all stopped (SIGSTOP) are the lost ones: nothing to wait for.
    frozen = (kill_at is not None and _lost(failure[1])
              and all(_stopped(workers.procs[j].pid) for j in live))
    if kill_at is not None and (frozen or time.monotonic() >= kill_at):
      killed = [(j, _stopped(workers.procs[j].pid)) for j in live]
      killed_text = ', '.join(f'worker {j}' + (' (stopped)' if stopped else '')
                              for j, stopped in killed)
      if not frozen:
        killed_text += f' still running {wait_seconds:.0f}s later'
      logging.warning('Worker %d failed; SIGKILL to %s.', failure[0], killed_text)
      workers.signal(signal.SIGKILL)
      kill_at = None
    time.sleep(_POLL_SECONDS)
  return _verdict(workers, failure, killed_text, stderr)


def _verdict(workers, failure, killed_text, stderr):
  """The launcher's exit status, with its one line on `stderr` after a `failure` (the index of
  the worker that failed first, None for a second SIGINT; its exit code)."""
  if failure is None:
    return 0
  index, code = failure
  workers.join_readers()  # the failed worker's last words come before the verdict
  with workers.lock:
    if index is None:
      print('error: interrupted twice: killed the workers', file=stderr, flush=True)
      return 128 + signal.SIGINT
    pid = workers.procs[index].pid
    if not _lost(code):
      print(f'error: worker {index} (pid {pid}) {_describe(code)}; stopped the other workers',
            file=stderr, flush=True)
      return code
    others = f'killed {killed_text}' if killed_text else 'the others exited by themselves'
    print(f'error: worker {index} (pid {pid}) {_describe(code)}; {others}: a lost worker, exit '
          f'status {processes.LOST_WORKER_EXIT_CODE}', file=stderr, flush=True)
  return processes.LOST_WORKER_EXIT_CODE
