"""Preemption: SIGTERM, SIGINT or SIGUSR1 stop training after the current step, which is saved.

Schedulers warn before they kill: Slurm with `--signal=USR1@120`, Kubernetes and most others
with SIGTERM and a grace period. The compiled step reads a flag variable on every step, and a
thread sets it as soon as a signal arrives: a Python signal handler alone would run only when the
current multi-step `tf.function` call returns, which for a large model can be minutes later.
"""

import contextlib
import os
import signal
import threading

from absl import logging
import tensorflow as tf

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
_SIGNAL_NUMBERS = frozenset(int(s) for s in SIGNALS)  # as the wakeup fd's bytes read back


class Watcher:
  """`flag` (a float32 variable) becomes 1 when one of SIGNALS arrives; `signal_name` says which.

  A second SIGINT interrupts at once (KeyboardInterrupt), for a user who does not want to wait.
  """

  def __init__(self):
    self.flag = tf.Variable(0.0, trainable=False, name='preempted')
    self.signal_name = None

  def _handler(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.signal_name == 'SIGINT':
      raise KeyboardInterrupt
    self.signal_name = signal.Signals(signum).name  # the flag is the watcher thread's to set

  def _wake(self, fd):
    # The C-level handler writes the signal number to `fd` the moment it arrives, from whatever
    # thread the kernel picked, while the main thread may be inside a long compiled call.
    while True:
      data = os.read(fd, 16)
      if not data:
        return
      if not _SIGNAL_NUMBERS.isdisjoint(data):
        self.flag.assign(1.0)

  @contextlib.contextmanager
  def watching(self):
    """Installs the handlers for the duration (main thread only; elsewhere it watches nothing).
    After, the former handlers are back; but once a notice has stopped the run, SIGTERM and
    SIGUSR1 stay ignored: the run is saved and on its way out, and a repeat of the notice (Slurm
    re-sends a signal to a step; a scheduler's SIGTERM follows its --signal) would otherwise end
    the process by that signal, which a job script reads as a failure, not as the preempted exit
    status it requeues on."""
    if threading.current_thread() is not threading.main_thread():
      logging.warning('Not on the main thread: preemption signals are not watched.')
      yield self
      return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    old = {s: signal.signal(s, self._handler) for s in SIGNALS}
    thread = threading.Thread(target=self._wake, args=(read_fd,), daemon=True,
                              name='preemption-watcher')
    thread.start()
    try:
      yield self
    finally:
      for s, handler in old.items():
        stopped = self.signal_name is not None and s != signal.SIGINT
        signal.signal(s, signal.SIG_IGN if stopped else handler)
      signal.set_wakeup_fd(old_fd)
      os.close(write_fd)  # ends the thread's read
      thread.join(timeout=5)
      os.close(read_fd)
