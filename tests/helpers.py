"""Test helpers: tiny configs, mock tfds data, and the real-MNIST location."""

import contextlib
import json
import os
import shlex
import subprocess
import sys
import unittest
from unittest import mock

import numpy as np
import tensorflow_datasets as tfds

from research.core import config as config_lib
from research.infra import processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name, variant=''):
  """configs/<name>.py's config (of `variant`)."""
  return config_lib.load_file(os.path.join(config_lib.CONFIG_DIR, name + '.py'), variant)


def tiny_config(model='cnn', dataset='mnist', **overrides):
  """A config that trains in seconds: few steps, small batches, no periodic outputs."""
  c = config_lib.base(model, dataset)
  c.batch_size = 8
  c.eval_batch_size = 16
  c.num_train_steps = 2
  c.steps_per_loop = 1
  c.log_every_steps = 1
  c.dataset.validation_size = 16
  c.image_grid_size = 4
  # The loop's tests compare numbers between runs on any CI machine; the precision has its own.
  c.mixed_precision = 'float32'
  c.update(overrides)
  return c


@contextlib.contextmanager
def mock_tfds(num_examples=64):
  """tfds with random examples in place of the real files; its download is a no-op, so the
  network probe that guards real downloads is bypassed too."""
  with tfds.testing.mock_data(num_examples=num_examples), mock.patch(
      'research.data.datasets.check_download_reachable'):
    yield


@contextlib.contextmanager
def after_each_train_call(hook):
  """Within: each compiled training call of the loop returns hook(step, totals) instead of its
  totals, `step` being the step counter after the call (steps.make_train_fn)."""
  from research.train import steps  # pylint: disable=import-outside-toplevel  # a TF import
  make_train_fn = steps.make_train_fn

  def make(strategy, model, optimizer, config, step, stop_flag):
    train = make_train_fn(strategy, model, optimizer, config, step, stop_flag)

    def train_then_hook(iterator, num_steps):
      totals = train(iterator, num_steps)
      return hook(int(step.numpy()), totals)

    return train_then_hook

  with mock.patch.object(steps, 'make_train_fn', make):
    yield


def real_data_dir():
  """TFDS_DATA_DIR holding prepared MNIST (CI points it at ../shared/tfds), or None."""
  path = os.environ.get('TFDS_DATA_DIR', '')
  return path if os.path.isdir(os.path.join(path, 'mnist')) else None


def require_real_data():
  """real_data_dir(), or a skip that says how to provide it."""
  path = real_data_dir()
  if path is None:
    raise unittest.SkipTest('needs prepared MNIST: set TFDS_DATA_DIR (CI: ../shared/tfds)')
  return path


def run_cli(module, *args, env=None, timeout=300):
  """Runs `python -m module args` from the repo root; returns the CompletedProcess."""
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=_cli_env(env),
                        capture_output=True, text=True, timeout=timeout)


def cluster_variables():
  """This environment's variables that place a process in a cluster (TF_CONFIG, Slurm's): a
  command a test runs outside any cluster, whatever the machine running the test is part of,
  goes without them (TensorFlow fails on an empty TF_CONFIG: they must go, not be emptied)."""
  return [k for k in os.environ if k == 'TF_CONFIG' or k.startswith('SLURM')]


def _cli_env(env):
  """run_cli's environment: this process' with TensorFlow's notices off, then `env` (where a
  value None removes the variable)."""
  merged = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', **(env or {})}
  return {k: v for k, v in merged.items() if v is not None}


# Imports what every entry point imports first (launch/, TensorFlow) and the library modules
# they import, as launch/*.py write those imports. Then reads {"module", "args", "env", "stdout",
# "stderr", "timeout"} lines; for each it forks a child that runs the module as `python -m`
# would, in that environment, its output to the two files, and answers with the child's exit
# status. Only the imports are shared: every command starts from the state of a process that
# imported them and ran nothing else.
_SERVER = r"""
import ast, atexit, glob, json, os, runpy, signal, sys, traceback
import launch
for path in glob.glob(os.path.join('launch', '*.py')):
  with open(path) as f:
    for node in ast.parse(f.read()).body:
      if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('research'):
        exec(compile(ast.Module([node], []), path, 'exec'), {})


def child(module, args, env, stdout, stderr, timeout):
  code = 1
  try:
    signal.alarm(timeout)
    os.environ.clear()
    os.environ.update(env)
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                            (1, stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
      os.dup2(os.open(path, flags), fd)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name='__main__', alter_sys=True)
    code = 0
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    if not isinstance(e.code, (int, type(None))):
      print(e.code, file=sys.stderr)
  except BaseException:  # what the interpreter does with an uncaught exception
    traceback.print_exc()
  finally:
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


for line in sys.stdin:
  request = json.loads(line)
  pid = os.fork()
  if pid == 0:
    child(**request)
  print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


class CommandServer:
  """`run_cli` like the function, one command at a time, without the imports' cost: each
  command runs in a process forked from a server that made them once (3-4 s of a fresh
  process' start-up). `close()` when done; tests take command_server()'s."""

  def __init__(self):
    import tempfile  # pylint: disable=g-import-not-at-top
    self._scratch = tempfile.mkdtemp(prefix='commands-')
    self._count = 0
    self._proc = subprocess.Popen([sys.executable, '-c', _SERVER], cwd=ROOT, env=_cli_env(None),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

  def run_cli(self, module, *args, env=None, timeout=300):
    self._count += 1
    out, err = (os.path.join(self._scratch, f'{self._count}.{n}') for n in ('out', 'err'))
    request = dict(module=module, args=args, env=_cli_env(env), stdout=out, stderr=err,
                   timeout=timeout)
    self._proc.stdin.write(json.dumps(request) + '\n')
    self._proc.stdin.flush()
    status = self._proc.stdout.readline()
    if not status:
      raise RuntimeError(f'the command server ended (status {self._proc.wait()})')
    with open(out) as f_out, open(err) as f_err:
      proc = subprocess.CompletedProcess([module, *args], int(status), f_out.read(),
                                         f_err.read())
    os.remove(out)
    os.remove(err)
    return proc

  def ended(self):
    return self._proc.poll() is not None

  def close(self):
    import shutil  # pylint: disable=g-import-not-at-top
    # Between commands it holds nothing, and an interpreter with TensorFlow takes seconds to
    # shut down.
    self._proc.kill()
    self._proc.wait()
    self._proc.stdin.close()
    self._proc.stdout.close()
    shutil.rmtree(self._scratch, ignore_errors=True)


_SERVERS = []


def command_server():
  """The CommandServer of this test process, started on first use (its imports then overlap
  what the caller does next), shared by the tests the process runs, one at a time, and closed at
  exit: a server per test class would pay the imports it saves once more for each."""
  if not _SERVERS or _SERVERS[-1].ended():
    import atexit  # pylint: disable=g-import-not-at-top
    server = CommandServer()
    atexit.register(server.close)
    _SERVERS.append(server)
  return _SERVERS[-1]


def run_forked(module, *args, env=None, timeout=300):
  """run_cli's command forked from command_server(): the same process but for the imports it
  starts with (made once per test process)."""
  return command_server().run_cli(module, *args, env=env, timeout=timeout)


def error_line(proc):
  """The last non-empty stderr line of a finished command, which must carry the whole message."""
  lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
  return lines[-1] if lines else ''


def alive(pid):
  """Whether process `pid` runs (a zombie waiting for its reaper does not)."""
  return processes.state(pid) not in (None, 'Z', 'X')


def fake_command(bin_dir, name, stdout='', stderr='', status=0):
  """An executable `name` in `bin_dir` standing in for a cluster tool: it appends its arguments
  (one call per line) to bin_dir/<name>.calls, prints `stdout` and `stderr`, exits `status`."""
  os.makedirs(bin_dir, exist_ok=True)
  path = os.path.join(bin_dir, name)
  calls = shlex.quote(os.path.join(bin_dir, name + '.calls'))
  with open(path, 'w') as f:
    f.write(f'#!/bin/bash\necho "$*" >> {calls}\nprintf %s {shlex.quote(stdout)}\n'
            f'printf %s {shlex.quote(stderr)} >&2\nexit {status}\n')
  os.chmod(path, 0o755)
  return path


def fake_calls(bin_dir, name):
  """The argument lines fake_command `name` was called with, in order ([] if never)."""
  path = os.path.join(bin_dir, name + '.calls')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return f.read().splitlines()


def write_image_folder(root, classes=('cat', 'dog', 'emu'), per_class=6, splits=('train',),
                       seed=0):
  """Real image files in tfds' ImageFolder layout, root/<split>/<class>/<i>.<ext>: JPEG and
  PNG, grey and colour, of varied sizes and aspect ratios, each class a brightness band (so
  the classes can be learnt). Returns root."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for split in splits:
    for label, name in enumerate(classes):
      os.makedirs(os.path.join(root, split, name), exist_ok=True)
      for i in range(per_class):
        h, w = (int(v) for v in rng.integers(20, 90, 2))
        level = 40 + 80 * label
        pixels = rng.integers(level, level + 40, (h, w, 3)).astype(np.uint8)
        image = Image.fromarray(pixels)
        if i % 3 == 1:
          image = image.convert('L')
        ext = ('jpg', 'png', 'jpeg')[i % 3]
        image.save(os.path.join(root, split, name, f'{i}.{ext}'),
                   'JPEG' if ext != 'png' else 'PNG')
  return root


def write_digit_folder(root, images, labels, split='train', seed=0, centred=False):
  """Grey digits (uint8 [N, 28, 28]) as files in root/<split>/<label>/, as a folder of scanned
  digits looks: each scaled by 0.8–2.5 and put at a random place (or the centre) of a black
  canvas of its own size and aspect (1:2 to 2:1), alternately PNG and JPEG. Returns root."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for i, (pixels, label) in enumerate(zip(images, labels)):
    directory = os.path.join(root, split, str(int(label)))
    os.makedirs(directory, exist_ok=True)
    side = int(round(28 * rng.uniform(0.8, 2.5)))
    digit = Image.fromarray(pixels).resize((side, side), Image.BILINEAR)
    aspect = rng.uniform(1.0, 2.0)
    h, w = (side, int(side * aspect)) if rng.random() < 0.5 else (int(side * aspect), side)
    canvas = Image.new('L', (w, h))
    x, y = (int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1)))
    canvas.paste(digit, ((w - side) // 2, (h - side) // 2) if centred else (x, y))
    if i % 2:
      canvas.save(os.path.join(directory, f'{i}.jpg'), 'JPEG', quality=90)
    else:
      canvas.save(os.path.join(directory, f'{i}.png'), 'PNG')
  return root


_STREAMING_MNIST = []


def streaming_mnist():
  """A copy of the prepared real MNIST with ArrayRecord shards added beside its tfrecord ones
  (what `launch.prepare` does in place): a data dir the streaming pipeline reads by index. Made
  once per test process (the conversion takes seconds), removed at exit; needs real data."""
  if _STREAMING_MNIST:
    return _STREAMING_MNIST[0]
  import atexit  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  from research.data import arrayrecord  # pylint: disable=g-import-not-at-top
  source = os.path.join(require_real_data(), 'mnist')
  version = sorted(os.listdir(source))[-1]
  root = tempfile.mkdtemp(prefix='streaming-mnist-')
  atexit.register(shutil.rmtree, root, ignore_errors=True)
  target = os.path.join(root, 'mnist', version)
  # shared/ is read-only, and copytree would keep its modes.
  shutil.copytree(os.path.join(source, version), target, copy_function=shutil.copyfile)
  os.chmod(target, 0o755)
  arrayrecord.convert_to_array_record(target)
  _STREAMING_MNIST.append(root)
  return root


def class_probabilities(prediction, names):
  """A research.apps.predict Prediction's probabilities in class order (its top must hold them
  all)."""
  p = dict(prediction.top)
  return np.array([p[n] for n in names])


def snapshot(path):
  """Every file under `path` with its bytes: a command that refuses must leave them all."""
  files = {}
  for root, _, names in os.walk(path):
    for name in names:
      full = os.path.join(root, name)
      with open(full, 'rb') as f:
        files[os.path.relpath(full, path)] = f.read()
  return files
