"""Imports TensorFlow with the notices its libraries log while loading shown once, if at all.

TensorFlow's C++ code logs a few notices as its shared libraries load (oneDNN's, the CUDA
stub's), before TF_CPP_MIN_LOG_LEVEL takes effect; and two of those libraries
(libtensorflow_framework and the profiler's _pywrap_profiler_plugin) each carry their own copy
of that code and of absl's logging, so every notice came out twice, each time after absl's
"All log messages before absl::InitializeLog()" line. When CUDA starts, a machine without a GPU
logs an error-level "failed call to cuInit" that is no error. `import_tensorflow` starts CUDA
during the import and sends the import's stderr through `filter_lines`, which takes that line for
a notice, applies TF_CPP_MIN_LOG_LEVEL to those lines and drops repeats; all other output passes
unchanged.

`filter_tensorflow_import` makes TensorFlow's first import, wherever it happens, go through
`import_tensorflow`: an entry point can then leave TensorFlow out of a path that does not need
it (a bad config's one line, the --local_workers supervisor) and still have its notices filtered
when it does load.

`HeldStderr` holds what is written to stderr during a call, for callers that report its failure
in their own words: TensorFlow logs a failed op (a file that is no image) from C++, several lines
that the caller's one-line message replaces.

The filter runs in a process of its own: if TensorFlow aborts while loading (a CPU without the
instructions it was built for), what it wrote before still reaches stderr. That process is
this file run as a script, on the standard library alone.
"""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile

# absl's and TensorFlow's log line prefix: severity, date, time, thread id; then file:line].
_LOG_LINE = re.compile(rb'([IWEF])\d{4} [\d:.]+ +\d+ (.*)', re.DOTALL)
_SEVERITIES = b'IWEF'  # TF_CPP_MIN_LOG_LEVEL 0..3 hides those before its index
_ABSL_PREAMBLE = b'WARNING: All log messages before absl::InitializeLog() is called'
# CUDA's cuInit failing with 303 (no driver library) or 100 (no device) is how TensorFlow finds
# a machine without a GPU, logged as an error; it is a notice like the CUDA stub's. Other
# failures (a driver that does not match, ...) stay errors.
_NO_GPU = re.compile(rb'failed call to cuInit: .*\((?:100|303)\)\s*$')
# How long the filter may take to drain after the import; a process started during the import
# could hold the pipe open for ever.
_DRAIN_SECONDS = 5.0


def min_log_level():
  """TF_CPP_MIN_LOG_LEVEL as TensorFlow reads it (0 when unset or not a number)."""
  try:
    return int(os.environ.get('TF_CPP_MIN_LOG_LEVEL', '0'))
  except ValueError:
    return 0


def filter_lines(lines, out, min_level):
  """Writes each of `lines` (bytes) to `out`, but not absl's preamble, log lines of a severity
  below `min_level`, nor a log line written before (the same but for its time and thread)."""
  seen = set()
  for line in lines:
    if line.startswith(_ABSL_PREAMBLE):
      continue
    match = _LOG_LINE.match(line)
    if match:
      severity = b'I' if _NO_GPU.search(match.group(2)) else match.group(1)
      if _SEVERITIES.index(severity) < min_level:
        continue
      key = match.group(1) + match.group(2)
      if key in seen:
        continue
      seen.add(key)
    out.write(line)
    out.flush()


def import_tensorflow():
  """Imports TensorFlow, its loading notices filtered; a no-op once it is imported."""
  if 'tensorflow' in sys.modules:
    return
  with filtered_stderr():
    import tensorflow  # pylint: disable=import-outside-toplevel
    # CUDA starts with the first op, long after the import, and logs from there: start it here,
    # inside the filter. Listing devices leaves them configurable (logical CPUs, visible GPUs).
    tensorflow.config.list_physical_devices('GPU')


def filter_tensorflow_import():
  """From now on, the first `import tensorflow` is `import_tensorflow()`'s."""
  if 'tensorflow' not in sys.modules and not any(
      isinstance(f, _TensorFlowFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _TensorFlowFinder())


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
  """Answers the first `import tensorflow` with the module import_tensorflow() loaded."""

  def find_spec(self, name, path=None, target=None):
    if name != 'tensorflow':
      return None
    sys.meta_path.remove(self)
    import_tensorflow()  # imports it again from here, this finder gone: the normal import
    return importlib.util.spec_from_loader(name, _Imported())


class _Imported(importlib.abc.Loader):
  """Gives the import machinery the module that is already in sys.modules."""

  def create_module(self, spec):
    return sys.modules[spec.name]

  def exec_module(self, module):
    pass


@contextlib.contextmanager
def filtered_stderr():
  """File descriptor 2 (C++ code writes there, not to sys.stderr) through `filter_lines`."""
  try:
    stderr = os.dup(2)
  except OSError:  # no stderr to filter
    yield
    return
  sys.stderr.flush()
  # -I -S: the standard library only, whatever the environment or this file's directory holds.
  filter_process = subprocess.Popen(
      [sys.executable, '-I', '-S', os.path.abspath(__file__), str(min_log_level())],
      stdin=subprocess.PIPE)
  try:
    os.dup2(filter_process.stdin.fileno(), 2)
    yield
  finally:
    sys.stderr.flush()
    os.dup2(stderr, 2)
    os.close(stderr)
    filter_process.stdin.close()
    try:
      filter_process.wait(_DRAIN_SECONDS)
    except subprocess.TimeoutExpired:
      filter_process.kill()
      filter_process.wait()


class HeldStderr:
  """`with held:` sends what is written to file descriptor 2 in the block (C++ code writes there,
  past sys.stderr) to a file, and passes it on at the end unless `drop()` was called in the
  block. One instance serves many blocks, one at a time; it costs a few system calls each."""

  def __init__(self):
    self._file = tempfile.TemporaryFile()
    self._saved = None
    self._dropped = False

  def __enter__(self):
    sys.stderr.flush()
    self._file.seek(0)
    self._file.truncate()
    self._dropped = False
    self._saved = os.dup(2)
    os.dup2(self._file.fileno(), 2)
    return self

  def drop(self):
    """Forget what the block wrote so far and writes from here on."""
    self._dropped = True

  def __exit__(self, *exc_info):
    sys.stderr.flush()
    os.dup2(self._saved, 2)
    os.close(self._saved)
    if not self._dropped:
      self._file.seek(0)
      held = self._file.read()
      if held:
        os.write(2, held)
    return False


if __name__ == '__main__':
  # A Ctrl-C meant for the import must not cut off what it still has to pass on.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  filter_lines(sys.stdin.buffer, sys.stderr.buffer, int(sys.argv[1]))
