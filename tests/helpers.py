"""Test helpers: tiny configs, mock tfds data, and the real-MNIST location."""

import contextlib
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
  full_env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', **(env or {})}
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=full_env,
                        capture_output=True, text=True, timeout=timeout)


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
