"""Streaming-input benchmark: can the host decode and crop as fast as the model trains?

On JPEG files written for the run (ImageNet-like: 3 channels, sides of 300–500 pixels), in the
image-folder layout, it measures in one process:
- the streaming pipeline alone (pipeline.train_dataset over the folder: read, partial JPEG decode
  inside a random-resized crop, resize to the crop size, batch), drained inside a tf.function;
- a bare tf.data loop over the same files doing the same work with TensorFlow's ops directly
  (read, decode_and_crop_jpeg in a sample_distorted_bounding_box, resize, batch): what the
  pipeline's index order, per-example keys and batch-wise reads cost;
- AlexNet training (the custom loop, as research.benchmark.models times it) fed by the streaming
  pipeline, against the same model on synthetic uint8 batches already at the crop size.
Ratios are taken per round against the reference samples around each variant (see
research.benchmark.timing.interleave), so the machine's drift cancels.
"""

import os
import shutil
import tempfile
import time

from absl import logging
import keras
import numpy as np
from PIL import Image
import tensorflow as tf

from research.benchmark import models
from research.benchmark import report as report_lib
from research.benchmark import timing
from research.core import outputs
from research.core import strategy as strategy_lib
from research.data import datasets
from research.data import pipeline
from research.train import setup as setup_lib

# name -> (config file[:variant], files written, steps per timed training call, batches per
# timed pipeline call): each timed call takes seconds on 2 CPU cores.
# --smoke: every measurement and ratio of the quick run, in as few calls as they need.
SETUPS = {'full': ('alexnet_imagenet.py', 1280, 5, 60),
          'quick': ('alexnet_imagenet.py:tiny', 256, 200, 200),
          'smoke': ('alexnet_imagenet.py:tiny', 32, 8, 8)}
NUM_CLASSES = 10


def write_jpegs(root, count, seed=0):
  """`count` JPEG files in root/train/<class>/, smooth content plus noise (so they compress like
  photographs, ~60–150 KB at quality 90), sides of 300–500 pixels. Returns their total bytes."""
  rng = np.random.default_rng(seed)
  total = 0
  for i in range(count):
    label = i % NUM_CLASSES
    directory = os.path.join(root, 'train', f'class{label}')
    os.makedirs(directory, exist_ok=True)
    h, w = (int(v) for v in rng.integers(300, 501, 2))
    coarse = Image.fromarray(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8))
    pixels = np.asarray(coarse.resize((w, h), Image.BICUBIC), np.int16)
    pixels = np.clip(pixels + rng.normal(0, 8, pixels.shape), 0, 255).astype(np.uint8)
    path = os.path.join(directory, f'{i:05d}.jpg')
    Image.fromarray(pixels).save(path, 'JPEG', quality=90)
    total += os.path.getsize(path)
  return total


def _bare_dataset(paths, size, batch):
  """The reference: TensorFlow's own ops over the files in a fixed order, nothing else."""
  def load(path):
    data = tf.io.read_file(path)
    begin, extent, _ = tf.image.sample_distorted_bounding_box(
        tf.io.extract_jpeg_shape(data), tf.zeros([1, 0, 4]), min_object_covered=0.0,
        aspect_ratio_range=(0.75, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    box = tf.stack([begin[0], begin[1], extent[0], extent[1]])
    image = tf.io.decode_and_crop_jpeg(data, box, channels=3)
    image = tf.image.resize(tf.cast(image, tf.float32), [size, size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), 0

  return (tf.data.Dataset.from_tensor_slices(paths).repeat()
          .map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True)
          .prefetch(tf.data.AUTOTUNE))


def _drain(key, make_dataset, batches):
  """A pipeline alone: `batches` pulled inside one tf.function from a new iterator per call.

  A new one each time, so that no pipeline fills its buffers in the background while the other
  is timed (both would then share the cores, and the idle one start with a head start); calls
  of many batches make the start-up a small part of each.
  """
  @tf.function
  def loop(ds, n):
    count = tf.zeros([])
    for images, _ in ds.take(n):
      count += tf.cast(tf.shape(images)[0], tf.float32)
    return count

  return timing.Measurement(
      key, lambda n: (float(loop(make_dataset(), tf.constant(n, tf.int64)).numpy()), None),
      batches,
      max(2, batches // 8))


LABELS = {
    'stream_pipeline_only': 'streaming pipeline alone (folder, JPEG crop)',
    'bare_decode_crop': 'bare tf.data read + decode_and_crop + resize',
    'custom_synthetic': 'custom loop, synthetic uint8 at the crop size',
    'custom_stream': 'custom loop, fed by the streaming pipeline',
}


def run(quick=False, repeats=3, smoke=False):
  """Writes the files, measures, returns the JSON-able results (see the module docstring)."""
  spec, count, steps, drain_batches = SETUPS['smoke' if smoke else 'quick' if quick else 'full']
  config = models.load_config(spec)
  tmp = tempfile.mkdtemp(prefix='stream-bench-')
  index_dir = tempfile.mkdtemp(prefix='stream-bench-index-')  # not the user's cache
  try:
    start = time.time()
    total = write_jpegs(tmp, count)
    logging.info('Wrote %d JPEG files (%.1f MB) in %.0fs.', count, total / 1e6,
                 time.time() - start)
    config.dataset.name = f'folder:{tmp}'
    config.dataset.index_dir = index_dir
    config.dataset.validation_size = 0
    config.dataset.test_fraction = 0.05
    data = datasets.load(config.dataset, splits=('train',), input_size=config.model.input_size)
    size, batch = config.model.input_size, config.batch_size
    strategy = strategy_lib.build(config)
    model, optimizer, _, step = setup_lib.build_state(config, strategy, data.num_classes,
                                                      data.image_shape, 1000, 100)
    state = (model, optimizer, step)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, data.num_classes, batch, dtype=np.int32)
    synthetic = models.custom(
        'custom_synthetic', strategy, state, config,
        models.synthetic_fn(images, labels), steps)
    stream = models.custom(
        'custom_stream', strategy, state, config,
        lambda ctx: pipeline.train_dataset(data.train, batch, config.seed, input_context=ctx),
        steps)
    paths = tf.constant([p.decode() for p in data.train.paths.numpy()])
    pipe = _drain('stream_pipeline_only',
                  lambda: pipeline.train_dataset(data.train, batch, config.seed), drain_batches)
    bare = _drain('bare_decode_crop', lambda: _bare_dataset(paths, size, batch), drain_batches)
    # Two groups: the pipelines against the bare loop, training fed by the stream against
    # synthetic batches; each bracketed by its own reference.
    timing.interleave('streaming input', [bare, pipe], repeats, bare)
    timing.interleave('streaming training', [synthetic, stream], repeats, synthetic)
    measured = {m.key: m.result() for m in (pipe, bare, synthetic, stream)}
    for key, row in measured.items():
      row['label'] = LABELS[key]
    ratios = {
        'pipeline_over_bare': {'label': 'streaming pipeline / bare decode-and-crop loop',
                               **timing.stats(pipe.relative())},
        'stream_over_synthetic': {'label': 'training fed by streaming / synthetic',
                                  **timing.stats(stream.relative())},
    }
    return {'config': f'configs/{spec}', 'model': config.model.name, 'batch_size': batch,
            'crop_size': size, 'files': count, 'file_bytes': total,
            'steps_per_call': steps, 'batches_per_pipeline_call': drain_batches,
            'measurements': measured, 'ratios': ratios}
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(index_dir, ignore_errors=True)
    keras.backend.clear_session()


def format_table(result):
  """The streaming section of the printed report."""
  lines = [f'streaming: {result["config"]} ({result["model"]}), batch {result["batch_size"]}, '
           f'crop {result["crop_size"]}², {result["files"]} JPEG files '
           f'({result["file_bytes"] / result["files"] / 1e3:.0f} KB each on average)',
           f'  {"measurement":<52}{"images/s":>26}{"cpu":>7}']
  for row in result['measurements'].values():
    lines.append(f'  {row["label"]:<52}{report_lib.spread(row["images_per_sec"]):>26}'
                 f'{row["cpu_util"]["median"]:>7.2f}')
  for row in result['ratios'].values():
    lines.append(f'  {row["label"]:<52}'
                 f'{report_lib.spread(row, lambda v: f"{v:.3f}"):>26}')
  return '\n'.join(line.rstrip() for line in lines)


def report(quick=False, repeats=None, json_path=None, smoke=False):
  """Runs the benchmark; writes JSON to `json_path` if given; returns the printed table.
  `smoke`: the quick run at the smallest sizes (SETUPS), its figures meaningless."""
  quick = quick or smoke
  repeats = repeats or (2 if quick else 3)
  start = time.time()
  result = run(quick, repeats, smoke)
  result.update(repeats=repeats, quick=quick, smoke=smoke, wall_seconds=time.time() - start,
                host={'cpu_count': os.cpu_count(), 'tensorflow': tf.__version__})
  if json_path:
    outputs.write_json(json_path, result)
  return (f'Streaming benchmark: {repeats} round(s), median [min–max]; each ratio against the '
          f'reference samples around it.\n{format_table(result)}\n'
          f'{result["wall_seconds"]:.0f}s in all.')
