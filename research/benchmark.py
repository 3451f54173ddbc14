"""Training-throughput benchmark (issue 6): where a step's time goes, measured in one process.

For each model (a config file, e.g. configs/alexnet_mnist.py) it times the real custom-loop train
function (research.train.steps.make_train_fn) fed from synthetic in-memory uint8 batches, from the
real tfds pipeline, and at the model's own input size (so the on-device pad-resize is left out);
Keras `fit` on the same model and data (and the milliseconds per step it spends beyond the custom
loop, which bound what a loop of our own can gain over it); the custom loop under the one_device
and single-replica mirrored strategies; and the input pipeline alone. Analytic FLOP counts turn
images/s into GFLOP/s, set against a matmul and a 3×3 conv ceiling measured in the same run; the
conv is also timed with its two gradients, as training runs it, whose rate ÷ the forward's shows
what TF's backward kernels cost.

Every variant of a model is warmed up (traced) first, then the variants take turns, round after
round, each variant that enters a ratio bracketed by the reference variant (R A R B R ...: the
machine's speed drifts by ±20% within minutes, and only a sample's neighbours in time share its
conditions); the report gives the median and the min–max over rounds, and a ratio is taken per
round, each variant against the mean of the two reference samples around it, before its median.
Each timed call runs K steps inside ONE tf.function call: wall clock around it measures the
compiled loop, not Python.
"""

import gc
import math
import os
import platform
import resource
import statistics
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from research import checkpoints
from research import config as config_lib
from research import outputs
from research import strategy as strategy_lib
from research.data import datasets
from research.data import pipeline
from research.data import preprocess
from research.errors import UserError
from research.models import blocks
from research.models import vgg
from research.train import trainer
from research.train import steps as steps_lib


# Every benchmarked config trains on MNIST: synthetic batches mimic its images and classes.
SOURCE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
FIT_SPE = 25  # the steps_per_execution of the second `fit` measurement

# name -> (config file[:variant], steps per timed call in a full run, in a --quick run). The step
# counts keep one call at roughly 2–30 s on 2 CPU cores; VGG16-224 runs at ~1–2 img/s here.
MODELS = {
    'cnn': ('cnn_mnist.py', 100, 25),
    'alexnet': ('alexnet_mnist.py', 5, 2),
    'alexnet_cpu': ('alexnet_mnist.py:cpu', 25, 5),
    'alexnet_tiny': ('alexnet_mnist.py:tiny', 200, 100),
    'vgg16': ('vgg16_mnist.py', 1, 1),
    'vgg16_cpu': ('vgg16_mnist.py:cpu', 25, 5),
    'vgg16_tiny': ('vgg16_mnist.py:tiny', 200, 100),
}
DEFAULT_MODELS = ('cnn', 'alexnet', 'vgg16', 'vgg16_cpu')
QUICK_MODELS = ('cnn', 'alexnet_tiny')

# Measurement key -> the row label of the table; the JSON carries both.
MEASUREMENTS = {
    'custom_synthetic': '(a) custom loop, synthetic uint8 at source size',
    'custom_pipeline': '(b) custom loop, real tfds pipeline',
    'custom_input_size': '(c) custom loop, synthetic at input size (no resize)',
    'custom_synthetic_no_augment': '(a0) as (a), augmentation off',
    'custom_input_size_no_augment': '(c0) as (c), augmentation off',
    'fit': 'fit(), preprocess mapped in tf.data (float in)',
    'fit_spe25': f'fit(steps_per_execution={FIT_SPE}), same data',
    'one_device': 'custom loop, one_device strategy (synthetic)',
    'mirrored': 'custom loop, mirrored 1 replica (synthetic)',
    'pipeline_only': 'input pipeline alone (tfds MNIST)',
}
# Ratio key -> (numerator, denominator, label).
RATIOS = {
    'pipeline_over_synthetic': ('custom_pipeline', 'custom_synthetic',
                                'b/a  real pipeline vs synthetic'),
    'resize_over_no_resize': ('custom_synthetic', 'custom_input_size',
                              'a/c  with pad-resize vs without (cost = 1 - a/c)'),
    # Augmentation runs before the resize, so (c) augments at the input size and (a) at the
    # source size: a/c mixes the resize with a cheaper augmentation. a0/c0 is the resize alone.
    'resize_over_no_resize_no_augment': ('custom_synthetic_no_augment',
                                         'custom_input_size_no_augment',
                                         'a0/c0  the same, augmentation off in both'),
    'custom_over_fit': ('custom_synthetic', 'fit', 'a/fit  custom loop vs fit()'),
    'custom_over_fit_spe25': ('custom_synthetic', 'fit_spe25',
                              f'a/fit  custom loop vs fit(spe={FIT_SPE})'),
    'one_device_over_default': ('one_device', 'custom_synthetic', 'one_device / default strategy'),
    'mirrored_over_default': ('mirrored', 'custom_synthetic', 'mirrored / default strategy'),
}


# ----------------------------------------------------------------------------------------------
# Analytic FLOP count.

# Leaves that do no multiply-adds (pooling compares or averages, the rest is elementwise or
# reshaping). A whitelist, not "has no weights": an unbuilt conv has no weights yet either.
_NO_MACS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
            keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D,
            keras.layers.Flatten, keras.layers.Reshape, keras.layers.ZeroPadding2D,
            keras.layers.Activation, keras.layers.ReLU, keras.layers.Dropout,
            keras.layers.BatchNormalization)


def _parts(layer):
  """The sublayers of a composite layer in the order they are applied, or None for a leaf.

  Batch norm and activations are left out: they keep the shape and their elementwise work is
  small next to the convs' and dense layers' multiply-adds.
  """
  if isinstance(layer, blocks.LayerStack):
    return tuple(layer.stack)
  if isinstance(layer, blocks.ConvBlock):
    return (layer.conv,)
  if isinstance(layer, (blocks.DenseBlock, blocks.Logits)):
    return (layer.dense,)
  if isinstance(layer, vgg.VGGBlock):
    return (*layer.convs, layer.pool)
  return None


def layer_macs(layer, shape):
  """(multiply-adds per image, output shape) of `layer` on an input of `shape` (batch first).

  Convs cost (output positions × output channels) × (kernel area × input channels / groups);
  dense layers cost (positions × input features × units). Layers without weights cost nothing.
  """
  shape = tuple(shape)
  if isinstance(layer, keras.layers.Conv2D):
    out = tuple(layer.compute_output_shape(shape))
    kh, kw = layer.kernel_size
    return math.prod(out[1:]) * kh * kw * shape[-1] // layer.groups, out
  if isinstance(layer, keras.layers.Dense):
    return math.prod(shape[1:]) * layer.units, tuple(layer.compute_output_shape(shape))
  parts = _parts(layer)
  if parts is not None:
    total = 0
    for part in parts:
      macs, shape = layer_macs(part, shape)
      total += macs
    return total, shape
  if not isinstance(layer, _NO_MACS):
    raise ValueError(f'cannot count the multiply-adds of layer {layer.name!r} '
                     f'({type(layer).__name__}): teach research.benchmark._parts or _NO_MACS '
                     'about it')
  return 0, tuple(layer.compute_output_shape(shape))


def forward_macs(model, input_shape):
  """Rows of (stack layer name, multiply-adds per image) of one forward pass of a LayerStack."""
  shape = (1, *input_shape)
  rows = []
  for layer in model.stack:
    macs, shape = layer_macs(layer, shape)
    rows.append((layer.name, macs))
  return rows


def train_flops_per_image(forward_mac_count):
  """Forward FLOPs are 2 per multiply-add; backward costs about twice the forward (the input
  and the weight gradients), so a training step is ≈ 3× the forward."""
  return 3 * 2 * forward_mac_count


# ----------------------------------------------------------------------------------------------
# Timing.

def stats(values):
  return {'median': statistics.median(values), 'min': min(values), 'max': max(values),
          'samples': list(values)}


class Measurement:
  """One benchmarked variant: `call(n)` runs n steps in one compiled call and returns
  (images processed, mean loss or None[, end]); the first call (the warm-up) traces.

  `end`, if given, is (perf_counter, process_time) when the steps' work ended: whatever the call
  did after it is timed apart, in `after_end` (see _fit), not counted against the steps.
  `around` holds, per sample, the mean rate of the reference's samples just before and after it
  (see interleave); `bracket=False` leaves a variant that enters no ratio unbracketed.
  """

  def __init__(self, key, call, steps, warm_up_steps, unit='img/s', bracket=True):
    self.key, self.call, self.steps, self.warm_up_steps = key, call, steps, warm_up_steps
    self.unit, self.bracket = unit, bracket
    self.rates, self.cpu_util, self.after_end, self.loss = [], [], [], None
    self.around = []

  def warm_up(self):
    start = time.perf_counter()
    self.call(self.warm_up_steps)
    logging.info('  warm-up %s: %d steps in %.1fs (includes tracing)', self.key,
                 self.warm_up_steps, time.perf_counter() - start)

  def time_once(self):
    # Process CPU time over wall time: ~2 on an idle 2-core machine, much less when another
    # process competes for the cores; a low value flags a polluted sample.
    cpu, wall = time.process_time(), time.perf_counter()
    images, self.loss, *end = self.call(self.steps)
    returned = time.perf_counter(), time.process_time()
    end_wall, end_cpu = end[0] if end else returned
    if end:
      self.after_end.append(returned[0] - end_wall)
    wall = end_wall - wall
    self.rates.append(images / wall)
    self.cpu_util.append((end_cpu - cpu) / wall)
    return wall

  def result(self):
    out = {'label': MEASUREMENTS.get(self.key, self.key), 'steps_per_call': self.steps,
           'images_per_sec': stats(self.rates), 'cpu_util': stats(self.cpu_util)}
    if self.loss is not None:
      out['final_loss'] = float(self.loss)
    if self.after_end:
      out['seconds_after_end'] = stats(self.after_end)
    if self.around:
      out['reference_around'] = list(self.around)
    return out

  def relative(self):
    """Per round, this variant's rate ÷ the reference's around it; None if not bracketed."""
    if not self.around:
      return None
    return [rate / ref for rate, ref in zip(self.rates, self.around)]


def interleave(group, measurements, repeats, reference):
  """Warms every measurement up, then times them in turns, `repeats` rounds.

  Each round runs the unbracketed measurements first, then the `reference` before the first
  bracketed one and again after every one (U… R A R B R), and records the mean of the two reference
  rates around each sample in its `around`. A drift of the machine that is linear over those
  three calls cancels in the sample's ratio to that mean; a reference timed once per round
  would be paired with a variant timed minutes away.
  """
  for m in measurements:
    m.warm_up()

  def time_once(m, r):
    wall = m.time_once()
    logging.info('%s round %d/%d %s: %.4g %s (%.1fs, cpu util %.2f%s)', group, r + 1,
                 repeats, m.key, m.rates[-1], m.unit, wall, m.cpu_util[-1],
                 f'; returned {m.after_end[-1]:.1f}s after its end' if m.after_end else '')

  others = [m for m in measurements if m is not reference]
  for r in range(repeats):
    for m in others:
      if not m.bracket:
        time_once(m, r)
    time_once(reference, r)
    for m in others:
      if m.bracket:
        before = reference.rates[-1]
        time_once(m, r)
        time_once(reference, r)
        m.around.append((before + reference.rates[-1]) / 2)


# ----------------------------------------------------------------------------------------------
# Ceiling probes.

def _probe(key, fn, args, flops_per_iteration, iterations, bracket=True):
  """A measurement whose 'images' are FLOPs: its rate, divided by 1e9, is GFLOP/s."""

  @tf.function
  def loop(n):
    # Every iteration feeds the returned sum, so none can be pruned.
    acc = tf.zeros([])
    for _ in tf.range(n):
      for out in tf.nest.flatten(fn(*args)):
        acc += tf.reduce_sum(out[..., :1])
    return acc

  def call(n):
    loop(tf.constant(n)).numpy()
    return n * flops_per_iteration / 1e9, None

  return Measurement(key, call, iterations, 1, unit='GFLOP/s', bracket=bracket)


def _conv_train(x, w):
  """A 3×3 conv as a training step runs it: forward, then TF's gradients of its input and of its
  filter from the output's gradient (here the output itself, so both wait for the forward)."""
  with tf.GradientTape() as tape:
    tape.watch([x, w])
    y = tf.nn.conv2d(x, w, 1, 'SAME')
  return tape.gradient(y, [x, w], output_gradients=y)


def ceilings(quick, repeats):
  """GFLOP/s of a 4096² float32 matmul and of a 3×3 conv (batch 32, 56×56×128 → 128); the conv
  also as training runs it (forward + both gradients, 3× the FLOPs), and that rate ÷ the forward.

  The ceilings are the matmul and the forward conv. The training conv is not one: its rate
  depends on the shapes far more than the forward's (AlexNet-227's convs train faster than this
  one), but the ratio shows how much of the gap between a model's training GFLOP/s and the
  forward-conv ceiling comes from TF's backward conv kernels, which no model code changes.
  """
  n = 4096
  a = tf.random.stateless_normal([n, n], seed=[0, 1])
  b = tf.random.stateless_normal([n, n], seed=[0, 2])
  x = tf.random.stateless_normal([32, 56, 56, 128], seed=[0, 3])
  w = tf.random.stateless_normal([3, 3, 128, 128], seed=[0, 4]) * 0.03
  conv_flops = 2 * 32 * 56 * 56 * 128 * 128 * 9
  probes = [
      _probe('matmul', tf.matmul, (a, b), 2 * n ** 3, 1 if quick else 3, bracket=False),
      _probe('conv3x3', lambda x, w: tf.nn.conv2d(x, w, 1, 'SAME'), (x, w), conv_flops,
             2 if quick else 8),
      _probe('conv3x3_train', _conv_train, (x, w), 3 * conv_flops, 1 if quick else 3),
  ]
  _, forward, train = probes
  interleave('ceilings', probes, repeats, reference=forward)
  labels = {'matmul': 'matmul 4096×4096 float32',
            'conv3x3': 'conv 3×3, 32×56×56×128 → 128, float32',
            'conv3x3_train': 'the same conv, forward + both gradients'}
  results = {p.key: {'label': labels[p.key], 'gflops': stats(p.rates),
                     'cpu_util': stats(p.cpu_util)} for p in probes}
  results['conv3x3_train'].update(reference_around=list(train.around),
                                  over_forward=statistics.median(train.relative()))
  return results


# ----------------------------------------------------------------------------------------------
# Configs, data and models.

def load_config(spec):
  """The config of 'file.py[:variant]' under configs/, loaded by path as config_flags does."""
  filename, _, variant = spec.partition(':')
  config = config_lib.load_file(os.path.join(config_lib.CONFIG_DIR, filename), variant)
  config.strategy = 'default'
  config_lib.check_types(config)
  return config


class _RealData:
  """MNIST's train split from the tfds data dir, loaded once; never downloads (a benchmark must
  not spend minutes fetching), so without a prepared copy the real-data rows are skipped."""

  def __init__(self):
    self._loaded = {}

  def get(self, dataset_config):
    """(train split, None) or (None, the reason it is unavailable)."""
    cfg = dataset_config.copy_and_resolve_references()
    cfg.download = False
    key = (cfg.name, cfg.train_split, cfg.validation_size, cfg.data_dir)
    if key not in self._loaded:
      try:
        data = datasets.load(cfg, splits=('train',))
        if tuple(data.image_shape) != SOURCE_SHAPE:
          raise UserError(f'{cfg.name} images are {data.image_shape}, not {SOURCE_SHAPE}')
        self._loaded[key] = (data.train, None)
      except UserError as e:
        logging.warning('Real data unavailable, its rows are skipped: %s', e)
        self._loaded[key] = (None, f'no real data: {e}')
    return self._loaded[key]


def _synthetic(batch, size, seed):
  """Random uint8 pixels and random labels: all-zero labels saturate the net and ran ~40%
  slower here (denormals, probably), which would measure the data, not the loop."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch, size, size, SOURCE_SHAPE[-1]), dtype=np.uint8)
  labels = rng.integers(0, NUM_CLASSES, batch, dtype=np.int32)
  return images, labels


def synthetic_fn(images, labels):
  """A dataset_fn for distribute_datasets_from_function: the same batch, forever."""

  def dataset_fn(ctx):
    n = ctx.get_per_replica_batch_size(len(labels))
    return tf.data.Dataset.from_tensors((images[:n], labels[:n])).repeat()

  return dataset_fn


def _build(config, strategy):
  """Model, optimizer and step counter as the trainer builds them."""
  per_epoch = pipeline.steps_per_epoch(60000 - config.dataset.validation_size,
                                       config.batch_size)
  total = max(int(config.num_epochs * per_epoch), 1)
  model, optimizer, _, step = trainer.build_state(config, strategy, NUM_CLASSES, SOURCE_SHAPE,
                                                  total, per_epoch)
  return model, optimizer, step


def custom(key, strategy, state, config, dataset_fn, steps):
  model, optimizer, step = state
  train = steps_lib.make_train_fn(strategy, model, optimizer, config, step,
                                  tf.Variable(0.0, trainable=False))
  iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))

  def call(n):
    loss_sum, _, count, _ = train(iterator, tf.constant(n)).numpy()
    return float(count), loss_sum / count

  return Measurement(key, call, steps, max(1, steps // 4))


def _fit(key, model, optimizer, config, images, labels, steps, steps_per_execution):
  """Keras fit on float inputs preprocessed (and augmented, as the custom loop does on device)
  by the same preprocess(), mapped in tf.data, which overlaps it with the step."""
  augment = config.augment if config.augment.enabled else None

  def prep(step, batch):
    x, y = batch
    x = preprocess.preprocess(x, input_size=config.model.input_size, training=True,
                              augment=augment, seed=steps_lib.augment_seed(config.seed, step))
    return x, y

  dataset = (tf.data.Dataset.from_tensors((images, labels)).repeat().enumerate()
             .map(prep, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
  model.compile(optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                steps_per_execution=steps_per_execution, jit_compile=config.jit_compile)

  class _End(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
      self.at = (time.perf_counter(), time.process_time())

  def call(n):
    # Each fit() starts a new iterator over the dataset, as each epoch of a real fit does. The
    # steps' time ends at on_train_end: fit() returned seconds after it here, snapping its
    # whole duration to a multiple of ~10.25 s (tf.data's iterator teardown waiting on a timed
    # thread, it seems), which would have measured the tick, not fit. It is reported apart.
    end = _End()
    history = model.fit(dataset, epochs=1, steps_per_epoch=n, verbose=0, callbacks=[end])
    return float(n * len(labels)), history.history['loss'][-1], end.at

  return Measurement(key, call, steps, steps_per_execution if steps_per_execution > 1
                     else max(1, steps // 4))


def _drain(split, config, steps):
  """The input pipeline alone: batches pulled inside one tf.function, nothing computed."""
  iterator = iter(pipeline.train_dataset(split, config.batch_size, config.seed))

  @tf.function
  def loop(n):
    count = tf.zeros([])
    for _ in tf.range(n):
      _, labels = next(iterator)
      count += tf.cast(tf.shape(labels)[0], tf.float32)
    return count

  def call(n):
    return float(loop(tf.constant(n)).numpy()), None

  # Pulling a batch costs ~100× less than training on it: many more per call.
  many = max(50, 8 * steps)
  return Measurement('pipeline_only', call, many, many // 4, bracket=False)


# ----------------------------------------------------------------------------------------------
# Memory.

def _status_mb(field):
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return None


def _reset_peak_rss():
  """Resets the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux ≥ 4.0); False if not
  possible, and the per-model figure is then only the process peak so far."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def _process_peak_mb():
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  peak = peak / 2 ** 20 if platform.system() == 'Darwin' else peak / 1024  # bytes vs KiB
  # Linux folds the current high-water mark into ru_maxrss only now and then: take the larger.
  return max(peak, _status_mb('VmHWM') or 0.0)


# ----------------------------------------------------------------------------------------------
# One model.

def _skip(key, reason):
  return {'label': MEASUREMENTS[key], 'skipped': reason}


def _ratio(measured, key, reference):
  num, den, label = RATIOS[key]
  a, b = measured.get(num), measured.get(den)
  if a is None or b is None:
    missing = [k for k, m in ((num, a), (den, b)) if m is None]
    return {'label': label, 'skipped': f'{" and ".join(missing)} not measured'}
  # Each variant against the reference samples just around it (see interleave), so neither
  # side carries the machine's drift between their turns; a ratio of two variants is the
  # quotient of their relative rates within the round.
  rel_a = None if num == reference else a.relative()
  rel_b = None if den == reference else b.relative()
  rel_a, rel_b = rel_a or [1.0] * len(rel_b), rel_b or [1.0] * len(rel_a)
  return {'label': label, **stats([x / y for x, y in zip(rel_a, rel_b)])}


def _step_overhead(measured, key, batch):
  """Milliseconds per step that `key` (a fit variant) spends beyond the custom loop, per round
  against the reference samples around it; and the custom loop's own step time. Their quotient
  bounds what any loop-level change can gain over fit: custom ÷ fit = 1 + extra ÷ custom step."""
  m = measured.get(key)
  if m is None or not m.around:
    return None
  custom = [1e3 * batch / ref for ref in m.around]
  extra = [1e3 * batch / rate - c for rate, c in zip(m.rates, custom)]
  return {'extra_ms_per_step': stats(extra), 'custom_ms_per_step': stats(custom)}


def benchmark_model(name, quick, repeats, real, ceiling):
  """Every measurement of one model, its ratios, GFLOP/s and peak RSS."""
  spec, full_steps, quick_steps = MODELS[name]
  steps = quick_steps if quick else full_steps
  config = load_config(spec)
  batch, size = config.batch_size, config.model.input_size or SOURCE_SHAPE[0]
  resized = size != SOURCE_SHAPE[0]
  logging.info('Model %s (configs/%s): batch %d, input %d, %d steps per call.', name, spec,
               batch, size, steps)
  reset = _reset_peak_rss()
  rss_start = _status_mb('VmRSS')

  entry = {'config': f'configs/{spec}', 'model': config.model.name, 'batch_size': batch,
           'input_size': size, 'source_size': SOURCE_SHAPE[0], 'steps_per_call': steps}
  skipped = {}
  default = strategy_lib.build(config)
  state = _build(config, default)
  model, optimizer, _ = state
  entry['params'] = int(model.count_params())
  shape = checkpoints.input_shape(config.model, SOURCE_SHAPE)
  macs = sum(m for _, m in forward_macs(model, shape))
  entry['forward_macs_per_image'] = macs
  entry['train_gflop_per_image'] = train_flops_per_image(macs) / 1e9

  images, labels = _synthetic(batch, SOURCE_SHAPE[0], config.seed)
  todo = [custom('custom_synthetic', default, state, config,
                 synthetic_fn(images, labels), steps)]
  resize_keys = ('custom_input_size', 'custom_synthetic_no_augment',
                 'custom_input_size_no_augment')
  if resized:
    big, _ = _synthetic(batch, size, config.seed)
    plain = config.copy_and_resolve_references()
    plain.augment.enabled = False
    for key, cfg, pixels in zip(resize_keys, (config, plain, plain), (big, images, big)):
      todo.append(custom(key, default, state, cfg, synthetic_fn(pixels, labels), steps))
  else:
    for key in resize_keys:
      skipped[key] = f'input size = source size {size}: no resize to leave out'

  only_resize = quick and resized
  why_quick = '--quick: resized models measure only the resize ratios (a, c, a0, c0)'
  if only_resize:
    for key in ('custom_pipeline', 'pipeline_only', 'fit', 'fit_spe25', 'one_device',
                'mirrored'):
      skipped[key] = why_quick
  else:
    split, reason = real.get(config.dataset)
    if split is None:
      skipped['custom_pipeline'] = skipped['pipeline_only'] = reason
    else:
      todo.append(custom('custom_pipeline', default, state, config,
                         lambda ctx: pipeline.train_dataset(split, batch, config.seed,
                                                            input_context=ctx), steps))
      todo.append(_drain(split, config, steps))
    # fit shares the custom loop's model and optimizer (memory: VGG16 is 134M parameters);
    # fit(steps_per_execution) needs its own compiled model, hence its own copy.
    todo.append(_fit('fit', model, optimizer, config, images, labels, steps, 1))
    if steps >= FIT_SPE:
      copy, copy_optimizer, _ = _build(config, default)
      todo.append(_fit('fit_spe25', copy, copy_optimizer, config, images, labels,
                       -(-steps // FIT_SPE) * FIT_SPE, FIT_SPE))
    else:
      skipped['fit_spe25'] = (f'only {steps} step(s) per call for this slow model: '
                              f'steps_per_execution={FIT_SPE} would need {FIT_SPE}-step calls '
                              'to amortise per-step overhead of milliseconds')
    for strategy_name in ('one_device', 'mirrored'):
      cfg = config.copy_and_resolve_references()
      cfg.strategy = strategy_name
      strategy = strategy_lib.build(cfg)
      todo.append(custom(strategy_name, strategy, _build(cfg, strategy), cfg,
                         synthetic_fn(images, labels), steps))

  reference = todo[0]  # custom_synthetic: the denominator, or numerator, of every ratio
  interleave(name, todo, repeats, reference)
  measured = {m.key: m for m in todo}
  entry['measurements'] = {key: (measured[key].result() if key in measured
                                 else _skip(key, skipped[key])) for key in MEASUREMENTS}
  entry['ratios'] = {key: _ratio(measured, key, reference.key) for key in RATIOS}
  overheads = {key: _step_overhead(measured, key, batch) for key in ('fit', 'fit_spe25')}
  entry['fit_step_overhead'] = {k: v for k, v in overheads.items() if v}

  rate = entry['measurements']['custom_synthetic']['images_per_sec']['median']
  achieved = rate * entry['train_gflop_per_image']
  entry['compute'] = {
      'achieved_gflops': achieved,
      # conv3x3_train is not a ceiling: a training step runs each conv forward and twice
      # backward, so it says how far the model is from what the backward kernels allow.
      **{f'fraction_of_{key}': achieved / probe['gflops']['median']
         for key, probe in ceiling.items()},
      'basis': '(a) median images/s × 3 × 2 × forward conv/dense multiply-adds per image'}
  entry['memory'] = {
      'rss_start_mb': rss_start,
      'peak_rss_mb': _status_mb('VmHWM') if reset else _process_peak_mb(),
      'process_peak_rss_mb': _process_peak_mb(),
      'method': ('peak RSS while this model ran: VmHWM reset at its start via '
                 '/proc/self/clear_refs; it includes what earlier models left resident'
                 if reset else 'process peak (ru_maxrss) after this model: not per model')}
  del todo, measured, model, optimizer
  keras.backend.clear_session()
  gc.collect()
  return entry


# ----------------------------------------------------------------------------------------------
# The whole run and its report.

def run(names=None, quick=False, repeats=None, json_path=None):
  """Benchmarks `names` (MODELS keys); writes JSON to `json_path` if given; returns the table."""
  names = list(names or (QUICK_MODELS if quick else DEFAULT_MODELS))
  unknown = [n for n in names if n not in MODELS]
  if unknown:
    raise UserError(f'unknown model(s) {", ".join(unknown)} for --models: choose from '
                    f'{", ".join(MODELS)}')
  repeats = repeats or (2 if quick else 3)
  if repeats < 1:
    raise UserError(f'--repeats={repeats}: need at least 1')
  if json_path:
    folder = os.path.dirname(os.path.abspath(json_path))
    if not os.path.isdir(folder):
      raise UserError(f'--json={json_path}: directory {folder} does not exist; create it first')

  start = time.time()
  results = {
      'quick': quick, 'repeats': repeats, 'models_requested': names,
      'host': {'cpu_count': os.cpu_count(), 'cores_usable': len(os.sched_getaffinity(0)),
               'load_average_start': os.getloadavg()[0], 'platform': platform.platform(),
               'tensorflow': tf.__version__, 'keras': keras.__version__},
      'method': ('one process; every variant warmed up (traced), then timed in turns over '
                 'rounds, each variant in a ratio between two samples of the reference '
                 '(custom_synthetic; the forward conv for the probes); K steps inside one '
                 'tf.function call per timing; medians and min–max over rounds; a ratio per '
                 'round against the mean of the reference samples around each variant'),
  }
  logging.info('Benchmark of %s, %d round(s)%s.', ', '.join(names), repeats,
               ' (quick)' if quick else '')
  results['ceilings'] = ceilings(quick, repeats)
  real = _RealData()
  results['models'] = {name: benchmark_model(name, quick, repeats, real, results['ceilings'])
                       for name in names}
  results['host']['load_average_end'] = os.getloadavg()[0]
  results['wall_seconds'] = time.time() - start
  if json_path:
    outputs.write_json(json_path, results)
    logging.info('Wrote %s.', json_path)
  return format_table(results)


def _num(value):
  if value >= 1e6:
    return f'{value / 1e6:.3g}M'
  if value >= 100:
    return f'{value:,.0f}'
  return f'{value:.3g}' if value >= 1 else f'{value:.3f}'


def spread(stats, fmt=_num):
  return f'{fmt(stats["median"])} [{fmt(stats["min"])}–{fmt(stats["max"])}]'


def format_table(results):
  """The printed report: ceilings, then per model its measurements, ratios, compute, memory."""
  lines = [f'Benchmark: {results["repeats"]} round(s), variants interleaved, each one in a '
           'ratio between two samples of the reference ((a); the forward conv for the probe); '
           f'median [min–max] over rounds; load average '
           f'{results["host"]["load_average_start"]:.1f} at start. cpu = process CPU s / wall s '
           '(2 = both cores busy with this run).']
  for probe in results['ceilings'].values():
    if 'over_forward' in probe:  # a reference, not a ceiling: see ceilings()
      lines.append(f'probe    {probe["label"]:<40} {spread(probe["gflops"]):>28} GFLOP/s = '
                   f'{probe["over_forward"]:.2f} × the forward rate')
    else:
      lines.append(f'ceiling  {probe["label"]:<40} {spread(probe["gflops"]):>28} GFLOP/s')
  for name, m in results['models'].items():
    lines += ['', f'{name}: {m["config"]} ({m["model"]}, {m["params"]:,} params), batch '
              f'{m["batch_size"]}, input {m["input_size"]}² from {m["source_size"]}², '
              f'{m["steps_per_call"]} steps per timed call',
              f'  {"measurement":<52}{"images/s":>26}{"cpu":>7}']
    for row in m['measurements'].values():
      if 'skipped' in row:
        lines.append(f'  {row["label"]:<52}  skipped: {row["skipped"]}')
      else:
        lines.append(f'  {row["label"]:<52}{spread(row["images_per_sec"]):>26}'
                     f'{row["cpu_util"]["median"]:>7.2f}')
        if 'seconds_after_end' in row:
          lines.append(f'    {"returned after its last step (not counted), s":<50}'
                       f'{spread(row["seconds_after_end"]):>26}')
    lines.append(f'  {"ratio (each against the (a) samples around it)":<52}')
    for row in m['ratios'].values():
      if 'skipped' in row:
        lines.append(f'  {row["label"]:<52}  skipped: {row["skipped"]}')
      else:
        lines.append(f'  {row["label"]:<52}{spread(row, lambda v: f"{v:.3f}"):>26}')
    for key, o in m['fit_step_overhead'].items():
      lines.append(f'  {key}: {spread(o["extra_ms_per_step"], lambda v: f"{v:+.2f}")} ms per '
                   f'step beyond the custom loop\'s {o["custom_ms_per_step"]["median"]:.1f} ms')
    c = m['compute']
    lines.append(f'  compute: {m["train_gflop_per_image"]:.4g} GFLOP per training image '
                 f'(3 × 2 × {m["forward_macs_per_image"]:,} forward MACs); (a) achieves '
                 f'{c["achieved_gflops"]:.3g} GFLOP/s = {c["fraction_of_matmul"]:.1%} of the '
                 f'matmul, {c["fraction_of_conv3x3"]:.1%} of the conv ceiling, '
                 f'{c["fraction_of_conv3x3_train"]:.1%} of the conv with its gradients')
    mem = m['memory']
    if 'VmHWM' in mem['method']:
      lines.append(f'  memory: peak RSS {mem["peak_rss_mb"]:,.0f} MB while this model ran (RSS '
                   f'{mem["rss_start_mb"]:,.0f} MB at its start); process peak '
                   f'{mem["process_peak_rss_mb"]:,.0f} MB')
    else:
      lines.append(f'  memory: process peak RSS {mem["process_peak_rss_mb"]:,.0f} MB after this '
                   'model (not per model)')
  lines += ['', f'{results["wall_seconds"]:.0f}s in all; load average '
            f'{results["host"]["load_average_end"]:.1f} at the end.']
  return '\n'.join(line.rstrip() for line in lines)
