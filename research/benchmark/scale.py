"""A rehearsal at ImageNet's shape: what a folder of N images costs before and during training.

`python -m launch.benchmark --scale --scale_files=N [--scale_dir=DIR]` builds (or reuses) a folder
laid out as ImageNet's: DIR/train/<1000 classes>/*.JPEG holding N files and DIR/val/ holding N/25
(ImageNet's 1.28M/50k), JPEGs of ImageNet's dimensions (sides of 300–500 pixels) but smoother
content, so about a sixth of its bytes (N = 400k fits in ~6 GB). It then measures, in turn:

- the first listing with the page cache dropped (cold; needs root, else not measured) and with
  the files' metadata cached (warm), each into a fresh index, with the resident memory it added;
- reading the index (what every later start, resume, evaluation and worker does);
- `launch.train` as a user runs it (`--dataset=folder:DIR --model=cnn`, 32×32 crops, so that the
  step is cheap and the start dominates): command to step 1 with the index in place, for one
  worker and for `--local_workers=2`; resume to the next step; the test evaluation (val/); peak
  RSS of each command (its largest process);
- the same start and resume for in-memory MNIST, the reference a folder start is held to;
- steady images/s of the streaming pipeline at AlexNet's 227×227 crops, against a bare tf.data
  decode-and-crop loop over the same files (research.benchmark.streaming), in turns.

Then it extrapolates to ImageNet's 1.28M files with the model docs/benchmarks.md states: a listing
costs a fixed time per file (measured here), and on a filesystem answering each request in
`latency` it costs REQUESTS_PER_FILE round trips per file, spread over the listing's threads; a
start with the index stats the root, split and class folders once each and reads one file.
"""

import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from absl import logging
import numpy as np
from PIL import Image

from research.benchmark import streaming
from research.benchmark import timing
from research.core import outputs
from research.core.errors import UserError
from research.data import folder

CLASSES = 1000
VAL_EVERY = 25  # ImageNet: 1,281,167 train and 50,000 val images
POOL = 500  # distinct JPEGs; the N files are copies of them, each its own file
IMAGENET_SIDES = (300, 500)
_MARKER = '.scale-rehearsal.json'  # written last: a folder without it is not (fully) built
_FORMAT = 1
IMAGENET_FILES = 1_281_167 + 50_000
# First listing on a filesystem with per-request latency: open, read the head, read the end (the
# close of a file only read costs no round trip), spread over folder._THREADS threads.
REQUESTS_PER_FILE = 3
STEPS = 20  # of each training command: enough for a steady step, few enough that start dominates
_STEP_LINE = re.compile(r'\] step (\d+)/\d+ epoch')
_EVAL_LINE = re.compile(r'\] step \d+ (test)\S*: .* over (\d+) examples \((\d+) img/s\)')


def _pool(sides, seed=0):
  """POOL encoded JPEGs with sides in [sides[0], sides[1]]: smooth colour fields, a little noise."""
  rng = np.random.default_rng(seed)
  pool = []
  for _ in range(POOL):
    h, w = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
    coarse = Image.fromarray(
        rng.integers(0, 256, (max(h // 32, 2), max(w // 32, 2), 3), dtype=np.uint8))
    pixels = np.asarray(coarse.resize((w, h), Image.BICUBIC), np.int16)
    pixels = np.clip(pixels + rng.normal(0, 2, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, 'JPEG', quality=85)
    pool.append(buffer.getvalue())
  return pool


def build_folder(root, files, classes=CLASSES, sides=IMAGENET_SIDES):
  """A folder at `root` laid out as ImageNet's (see the module docstring), with `classes`
  classes of JPEGs of `sides`; reused when a previous call built it whole with the same
  arguments. Returns (total bytes, seconds spent building; 0 if reused)."""
  marker = os.path.join(root, _MARKER)
  expected = {'format': _FORMAT, 'files': files, 'classes': classes, 'sides': list(sides),
              'val_every': VAL_EVERY}
  if os.path.exists(marker):
    with open(marker) as f:
      built = json.load(f)
    if {k: built.get(k) for k in expected} == expected:
      return built['bytes'], 0.0
  if os.path.exists(root) and not os.path.isdir(root):
    raise UserError(f'--scale_dir {root} is a file: give a new or empty folder')
  if os.path.isdir(root) and os.listdir(root):
    raise UserError(f'--scale_dir {root} holds files that are not a rehearsal folder of '
                    f'{files:,} images: give a new or empty folder (or the one a run with '
                    f'--scale_files={files} built)')
  try:
    return _write_folder(root, files, classes, sides, marker, expected)
  except OSError as e:
    raise UserError(f'cannot build the rehearsal folder in {root} ({e.strerror}: '
                    f'{e.filename}): give a writable folder with room for it') from None


def _write_folder(root, files, classes, sides, marker, expected):
  start, total, pool = time.monotonic(), 0, _pool(sides)
  for split, count in (('train', files), ('val', max(classes, files // VAL_EVERY))):
    for label in range(classes):
      os.makedirs(os.path.join(root, split, f'n{label:08d}'), exist_ok=True)
    for i in range(count):
      label = i % classes
      data = pool[(i * 7919) % POOL]
      with open(os.path.join(root, split, f'n{label:08d}', f'{split}_{i:08d}.JPEG'), 'wb') as f:
        f.write(data)
      total += len(data)
      if i and i % 100_000 == 0:
        logging.info('Wrote %d of %d %s files.', i, count, split)
  outputs.write_json(marker, {**expected, 'bytes': total})
  return total, time.monotonic() - start


def _drop_page_cache():
  """True if the kernel dropped its page, dentry and inode caches (root only)."""
  try:
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as f:
      f.write('3\n')
    return True
  except OSError:
    return False


def _dataset_config(root, index_dir):
  from research.core import config as config_lib  # pylint: disable=import-outside-toplevel
  config = config_lib.base('cnn', f'folder:{root}')
  config.dataset.index_dir = index_dir
  return config.dataset


def _listing(root, index_dir, cold):
  """Seconds and added resident MB of one list_images call (a first listing when index_dir is
  empty, else an index read); None when `cold` and the caches could not be dropped."""
  if cold and not _drop_page_cache():
    return None
  timing.reset_peak_rss()
  rss = timing.status_mb('VmRSS')
  start = time.monotonic()
  listing = folder.list_images(_dataset_config(root, index_dir))
  seconds = time.monotonic() - start
  return {'seconds': seconds, 'added_mb': timing.status_mb('VmHWM') - rss,
          'files': sum(len(p) for p, _ in listing.splits.values()),
          'from_index': listing.from_index}


@dataclasses.dataclass
class Command:
  """What one launch.train command took: seconds from its start to the first step it logged,
  the test evaluation's examples and seconds, its largest process's peak RSS, its exit status."""
  to_first_step: float = None
  first_step: int = None
  eval_examples: int = None
  eval_seconds: float = None
  peak_rss_mb: float = None
  wall: float = None
  status: int = None
  tail: list = dataclasses.field(default_factory=list)
  samples: list = dataclasses.field(default_factory=list)


def _rss_mb(pid):
  try:
    with open(f'/proc/{pid}/status') as f:
      return next(int(line.split()[1]) / 1024 for line in f if line.startswith('VmRSS:'))
  except (OSError, StopIteration):
    return None


def run_command(args, sample_seconds=None):
  """Runs `python -m launch.train ARGS`, watching its log as it comes; every `sample_seconds`,
  if given, records (last step logged, resident MB) of the command's process in `samples`."""
  result, step = Command(), [0]
  start = time.monotonic()
  proc = subprocess.Popen([sys.executable, '-m', 'launch.train', *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  done = threading.Event()

  def sample():
    while not done.wait(sample_seconds):
      rss = _rss_mb(proc.pid)
      if rss is not None:
        result.samples.append((step[0], rss))

  sampler = threading.Thread(target=sample, daemon=True)
  if sample_seconds:
    sampler.start()
  for line in proc.stdout:
    result.tail = (result.tail + [line.rstrip()])[-15:]
    logged = _STEP_LINE.search(line)
    if logged:
      step[0] = int(logged.group(1))
      if result.to_first_step is None:
        result.to_first_step, result.first_step = time.monotonic() - start, step[0]
    evaluation = _EVAL_LINE.search(line)
    if evaluation:
      result.eval_examples = int(evaluation.group(2))
      result.eval_seconds = result.eval_examples / max(int(evaluation.group(3)), 1)
  done.set()
  # wait4, not wait: its rusage is the command's and the workers' it waited for.
  _, status, usage = os.wait4(proc.pid, 0)
  proc.returncode = os.waitstatus_to_exitcode(status)
  result.status, result.wall = proc.returncode, time.monotonic() - start
  result.peak_rss_mb = usage.ru_maxrss / 1024
  if result.status:
    logging.warning('launch.train %s exited with status %d; its last lines:\n%s',
                    ' '.join(args), result.status, '\n'.join(result.tail))
  return result


def train_args(dataset, workdir, steps, index_dir, extra=(), log_every=1):
  """launch.train's flags for the cnn on `dataset` (32×32 crops of a folder), logging every
  `log_every` steps."""
  return [f'--dataset={dataset}', '--model=cnn', f'--workdir={workdir}',
          f'--config.num_train_steps={steps}', f'--config.log_every_steps={log_every}',
          *(['--config.model.input_size=32', f'--config.dataset.index_dir={index_dir}']
            if dataset.startswith('folder:') else []), *extra]


def _commands(root, index_dir, scratch, with_mnist):
  """Fresh start, resume and two workers on the folder; start and resume on MNIST."""
  folder_data = f'folder:{root}'
  results = {}
  plan = [('mnist', 'mnist')] if with_mnist else []
  plan.append(('folder', folder_data))
  for name, dataset in plan:
    workdir = os.path.join(scratch, name)
    results[f'{name}_start'] = run_command(train_args(dataset, workdir, STEPS, index_dir))
    results[f'{name}_resume'] = run_command(train_args(dataset, workdir, 2 * STEPS, index_dir))
  results['folder_two_workers'] = run_command(train_args(
      folder_data, os.path.join(scratch, 'two'), STEPS, index_dir,
      ['--local_workers=2', '--strategy=multi_worker_mirrored']))
  return results


def _steady(root, index_dir, repeats):
  """images/s of the streaming pipeline against the bare decode-and-crop loop, in turns."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from research.benchmark import models  # pylint: disable=import-outside-toplevel
  from research.data import datasets  # pylint: disable=import-outside-toplevel
  from research.data import pipeline  # pylint: disable=import-outside-toplevel
  config = models.load_config('alexnet_imagenet.py')
  config.dataset.name, config.dataset.index_dir = f'folder:{root}', index_dir
  config.dataset.validation_size = 0
  data = datasets.load(config.dataset, splits=('train',), input_size=config.model.input_size)
  size, batch, batches = config.model.input_size, 32, 100
  paths = tf.constant([p.decode() for p in data.train.paths.numpy()[:200_000]])
  pipe = streaming.drain('stream_pipeline_only',
                         lambda: pipeline.train_dataset(data.train, batch, config.seed), batches)
  bare = streaming.drain('bare_decode_crop', lambda: streaming.bare_dataset(paths, size, batch),
                         batches)
  timing.interleave('scale input', [bare, pipe], repeats, bare)
  return {'crop_size': size, 'batch_size': batch, 'pipeline': pipe.result(),
          'bare': bare.result(), 'pipeline_over_bare': timing.stats(pipe.relative())}


def extrapolate(listing_seconds, files, threads, latency=1e-3):
  """First-listing seconds at ImageNet's size: locally (this machine's time per file) and on a
  filesystem of `latency` per request (REQUESTS_PER_FILE round trips per file over `threads`)."""
  per_file = listing_seconds / files
  local = per_file * IMAGENET_FILES
  return {'local_seconds': local,
          'network_seconds': local + IMAGENET_FILES * REQUESTS_PER_FILE * latency / threads,
          'index_check_network_seconds': (2 * CLASSES + 3) * latency}


def run(files, scale_dir=None, repeats=2, with_mnist=True):
  """Builds or reuses the folder, measures, returns the JSON-able results (module docstring)."""
  own_root = scale_dir is None
  root = tempfile.mkdtemp(prefix='scale-rehearsal-') if own_root else os.path.abspath(scale_dir)
  scratch = tempfile.mkdtemp(prefix='scale-rehearsal-runs-')
  try:
    total, build_seconds = build_folder(root, files)
    logging.info('Rehearsal folder %s: %d files (%.1f GB)%s.', root, files, total / 1e9,
                 f' built in {build_seconds:.0f}s' if build_seconds else ', reused')
    index_dir = os.path.join(scratch, 'index')
    listings = {}
    for name, cold in (('cold', True), ('warm', False)):
      shutil.rmtree(index_dir, ignore_errors=True)
      listings[name] = _listing(root, index_dir, cold)
    listings['index'] = _listing(root, index_dir, False)
    result = {'files': files, 'root': root, 'bytes': total, 'build_seconds': build_seconds,
              'listing': listings,
              'commands': {k: dataclasses.asdict(v)
                           for k, v in _commands(root, index_dir, scratch, with_mnist).items()},
              'steady': _steady(root, index_dir, repeats)}
    result['extrapolation'] = extrapolate(listings['warm']['seconds'], listings['warm']['files'],
                                          folder.THREADS)
    return result
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
    if own_root:
      shutil.rmtree(root, ignore_errors=True)


def _seconds(value, unit='s'):
  return '—' if value is None else f'{value:.1f} {unit}'


def format_table(result):
  """The printed report: one row per measurement, then the extrapolation."""
  lst, cmd, steady = result['listing'], result['commands'], result['steady']
  rows = [('first listing, cold (page cache dropped)', lst['cold']),
          ('first listing, warm', lst['warm']), ('index read', lst['index'])]
  lines = [f'Rehearsal at ImageNet\'s shape: {result["files"]:,} train files in {CLASSES} classes '
           f'(+ val/), {result["bytes"] / 1e9:.1f} GB, {result["root"]}',
           f'  {"measurement":<58}{"value":>14}{"peak RSS / added":>20}']
  for label, row in rows:
    lines.append(f'  {label:<58}{_seconds(row and row["seconds"]):>14}'
                 f'{_seconds(row and row["added_mb"], "MB"):>20}')
  for key, label in (('mnist_start', 'in-memory MNIST: command to step 1'),
                     ('mnist_resume', 'in-memory MNIST: resume to its next step'),
                     ('folder_start', 'folder, 1 worker: command to step 1'),
                     ('folder_resume', 'folder, 1 worker: resume to its next step'),
                     ('folder_two_workers', 'folder, --local_workers=2: command to step 1')):
    if key in cmd:
      c = cmd[key]
      lines.append(f'  {label:<58}{_seconds(c["to_first_step"]):>14}'
                   f'{_seconds(c["peak_rss_mb"], "MB"):>20}')
  start = cmd['folder_start']
  if start['eval_seconds'] is not None:
    label = f'test evaluation (val/, {start["eval_examples"]:,} images)'
    lines.append(f'  {label:<58}{_seconds(start["eval_seconds"]):>14}')
  for key, label in (('pipeline', 'streaming pipeline, images/s'),
                     ('bare', 'bare tf.data decode-and-crop loop, images/s')):
    label = f'{label} ({steady["crop_size"]}² crops)'
    lines.append(f'  {label:<58}'
                 f'{steady[key]["images_per_sec"]["median"]:>14.0f}')
  lines.append(f'  {"streaming pipeline / bare loop":<58}'
               f'{steady["pipeline_over_bare"]["median"]:>14.3f}')
  ext = result['extrapolation']
  lines.append(f'At ImageNet\'s {IMAGENET_FILES:,} files: first listing '
               f'~{ext["local_seconds"]:.0f} s here, ~{ext["network_seconds"]:.0f} s on a '
               f'1 ms-per-request filesystem '
               f'({REQUESTS_PER_FILE} requests per file over {folder.THREADS} threads); a start '
               f'with the index checks it in ~{ext["index_check_network_seconds"]:.0f} s there.')
  return '\n'.join(lines)


def report(files, scale_dir=None, repeats=None, json_path=None):
  """Runs the rehearsal; writes JSON to `json_path` if given; returns the printed table."""
  start = time.time()
  result = run(files, scale_dir, repeats or 2)
  result.update(wall_seconds=time.time() - start, host={'cpu_count': os.cpu_count()})
  if json_path:
    outputs.write_json(json_path, result)
  return f'{format_table(result)}\n{result["wall_seconds"]:.0f}s in all.'


SOAK_FILES, SOAK_CLASSES, SOAK_SIDES = 5000, 10, (32, 48)


def _window(samples, low, high):
  values = [rss for step, rss in samples if low <= step <= high]
  return float(np.median(values)) if values else None


def soak(steps, scale_dir=None):
  """Resident memory over a long streamed run: `steps` steps of the cnn on a small folder of
  small JPEGs (so that steps are quick), evaluating every 8 epochs and checkpointing every 1,000
  steps, RSS sampled each second. Returns the samples and the RSS around 10% and 90% of the run
  (median of the samples within ±2.5% of the run), their ratio and the slope after 10%."""
  own_root = scale_dir is None
  root = tempfile.mkdtemp(prefix='soak-folder-') if own_root else os.path.abspath(scale_dir)
  scratch = tempfile.mkdtemp(prefix='soak-run-')
  try:
    build_folder(root, SOAK_FILES, SOAK_CLASSES, SOAK_SIDES)
    command = run_command(
        train_args(f'folder:{root}', os.path.join(scratch, 'run'), steps,
                   os.path.join(scratch, 'index'),
                   ['--config.batch_size=32', '--config.checkpoint_every_steps=1000',
                    '--config.eval_every_epochs=8'], log_every=max(1, steps // 200)),
        sample_seconds=1.0)
    samples = command.samples
    after = np.array([(s, r) for s, r in samples if s >= steps // 10] or [(0, 0)], float)
    slope = float(np.polyfit(after[:, 0], after[:, 1], 1)[0]) * 1000 if len(after) > 2 else None
    at_10 = _window(samples, steps * 0.075, steps * 0.125)
    at_90 = _window(samples, steps * 0.875, steps * 0.925)
    return {'steps': steps, 'status': command.status, 'wall_seconds': command.wall,
            'rss_at_10_mb': at_10, 'rss_at_90_mb': at_90,
            'ratio': at_90 / at_10 if at_10 and at_90 else None,
            'max_after_10_mb': float(after[:, 1].max()), 'mb_per_1000_steps': slope,
            'peak_rss_mb': command.peak_rss_mb, 'samples': samples}
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
    if own_root:
      shutil.rmtree(root, ignore_errors=True)


def soak_report(steps, scale_dir=None, json_path=None):
  """Runs soak; writes JSON to `json_path` if given; returns the printed lines."""
  result = soak(steps, scale_dir)
  if json_path:
    outputs.write_json(json_path, result)
  if result['ratio'] is None:
    return (f'Soak of {steps:,} steps: exit status {result["status"]}, too few RSS samples '
            'to compare (see the log).')
  return (f'Soak of {steps:,} streamed steps ({result["wall_seconds"]:.0f}s, exit status '
          f'{result["status"]}): RSS {result["rss_at_10_mb"]:.0f} MB at 10%, '
          f'{result["rss_at_90_mb"]:.0f} MB at 90% (ratio {result["ratio"]:.3f}); '
          f'{result["mb_per_1000_steps"]:+.2f} MB per 1,000 steps after 10%; '
          f'max {result["max_after_10_mb"]:.0f} MB, peak {result["peak_rss_mb"]:.0f} MB.')
