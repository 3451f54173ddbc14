"""The benchmarked models and every measurement of one: configs, synthetic and real data, the
custom loop (under each strategy, on each input), Keras fit, the input pipeline alone; the custom
loop and fit again in mixed_bfloat16; their ratios, achieved GFLOP/s against the ceiling probe of
each precision, and peak RSS.
"""

import gc
import os
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from research import models as models_lib
from research.benchmark import flops
from research.benchmark import probes
from research.benchmark import timing
from research.core import config as config_lib
from research.core import strategy as strategy_lib
from research.core.errors import UserError
from research.data import datasets
from research.data import pipeline
from research.data import preprocess
from research.train import setup as setup_lib
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
# --smoke: a --quick run at this batch size, on this many real examples, to check that every
# measurement runs and the report is whole (its figures mean nothing).
SMOKE_BATCH = 16
SMOKE_EXAMPLES = 1024

# Every model trains in both, each precision explicit: `auto` would measure whatever this
# machine picks, and the bfloat16 ÷ float32 ratio says whether picking bfloat16 pays here.
PRECISIONS = ('float32', 'mixed_bfloat16')
BF16 = '_bf16'  # the key suffix of a measurement in mixed_bfloat16
# The measurements repeated in mixed_bfloat16: the custom loop and its reference, fit. The
# input pipeline, the resize and the strategies do not depend on the precision, and measuring
# them twice would double a run that takes hours.
IN_BF16 = ('custom_synthetic', 'fit', 'fit_spe25')

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
    'custom_synthetic_bf16': '(a16) as (a), mixed_bfloat16',
    'fit_bf16': 'fit() in mixed_bfloat16, same data',
    'fit_spe25_bf16': f'fit(steps_per_execution={FIT_SPE}) in mixed_bfloat16',
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
    'bf16_over_float32': ('custom_synthetic_bf16', 'custom_synthetic',
                          'a16/a  mixed_bfloat16 vs float32'),
    'custom_over_fit_bf16': ('custom_synthetic_bf16', 'fit_bf16',
                             'a16/fit  custom loop vs fit(), mixed_bfloat16'),
    'custom_over_fit_spe25_bf16': ('custom_synthetic_bf16', 'fit_spe25_bf16',
                                   f'a16/fit  custom loop vs fit(spe={FIT_SPE}), mixed_bfloat16'),
}
# The bar of the custom loop, in each precision: at least as fast as its reference, Keras fit
# (the loop exists to give control fit does not, and must not cost speed for it).
FIT_BARS = ('custom_over_fit', 'custom_over_fit_spe25', 'custom_over_fit_bf16',
            'custom_over_fit_spe25_bf16')


# ----------------------------------------------------------------------------------------------
# Configs, data and the measured variants.

def load_config(spec):
  """The config of 'file.py[:variant]' under configs/, loaded by path as config_flags does."""
  filename, _, variant = spec.partition(':')
  config = config_lib.load_file(os.path.join(config_lib.CONFIG_DIR, filename), variant)
  config.strategy = 'default'
  config.mixed_precision = 'float32'
  config_lib.check_types(config)
  return config


class RealData:
  """MNIST's train split from the tfds data dir, loaded once; never downloads (a benchmark must
  not spend minutes fetching), so without a prepared copy the real-data rows are skipped."""

  def __init__(self, examples=None):
    self._loaded = {}
    self.examples = examples  # only the first this many of the split, without a validation

  def get(self, dataset_config):
    """(train split, None) or (None, the reason it is unavailable)."""
    cfg = dataset_config.copy_and_resolve_references()
    cfg.download = False
    if self.examples:
      cfg.train_split = f'{cfg.train_split}[:{self.examples}]'
      cfg.validation_size = 0
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
  model, optimizer, _, step = setup_lib.build_state(config, strategy, NUM_CLASSES, SOURCE_SHAPE,
                                                    total, per_epoch)
  return model, optimizer, step


def custom(key, strategy, state, config, dataset_fn, steps):
  model, optimizer, step = state
  train = steps_lib.make_train_fn(strategy, model, optimizer, config, step,
                                  tf.Variable(0.0, trainable=False))
  iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))

  def call(n):
    totals = train(iterator, tf.constant(n))
    return float(totals['count']), totals['loss_sum'] / totals['count']

  return timing.Measurement(key, call, steps, max(1, steps // 4))


def _fit(key, model, optimizer, config, images, labels, steps, steps_per_execution):
  """Keras fit on float inputs preprocessed (and augmented, as the custom loop does on device)
  by the same preprocess(), mapped in tf.data, which overlaps it with the step."""
  augment = config.augment if config.augment.enabled else None

  def prep(step, batch):
    x, y = batch
    x = preprocess.preprocess(x, input_size=config.model.input_size, training=True,
                              augment=augment, seed=steps_lib.augment_seed(config.seed, step))
    return x, y

  dataset = pipeline.without_autotuning(
      tf.data.Dataset.from_tensors((images, labels)).repeat().enumerate()
      .map(prep, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
  model.compile(optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                steps_per_execution=steps_per_execution, jit_compile=config.jit_compile)

  class _End(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
      self.at = (time.perf_counter(), time.process_time())

  def call(n):
    # Each fit() starts a new iterator over the dataset, as each epoch of a real fit does. The
    # steps' time ends at on_train_end: with tf.data's autotuning on, fit() returned seconds
    # after it (the iterator's teardown waiting on the autotuning thread), which would have
    # measured that wait, not fit. Any time after on_train_end is reported apart.
    end = _End()
    history = model.fit(dataset, epochs=1, steps_per_epoch=n, verbose=0, callbacks=[end])
    return float(n * len(labels)), history.history['loss'][-1], end.at

  return timing.Measurement(key, call, steps, steps_per_execution if steps_per_execution > 1
                            else max(1, steps // 4))


def _spe_fit(key, config, strategy, images, labels, steps):
  """fit(steps_per_execution=FIT_SPE): it needs its own compiled model, hence its own copy."""
  model, optimizer, _ = _build(config, strategy)
  return _fit(key, model, optimizer, config, images, labels, -(-steps // FIT_SPE) * FIT_SPE,
              FIT_SPE)


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
  return timing.Measurement('pipeline_only', call, many, many // 4, bracket=False)


# ----------------------------------------------------------------------------------------------
# One model.

def _skip(key, reason):
  return {'label': MEASUREMENTS[key], 'skipped': reason}


def precision_of(key):
  """The precision a measurement key trains in."""
  return PRECISIONS[1] if key.endswith(BF16) else PRECISIONS[0]


def ratio_row(measured, key, reference):
  """The JSON row of ratio `key` (RATIOS) from the Measurements `measured` by key, each sample
  against the `reference` samples around it; a reason when one side was not measured, and
  whether the custom loop met its bar for the ratios against fit."""
  num, den, label = RATIOS[key]
  a, b = measured.get(num), measured.get(den)
  if a is None or b is None:
    missing = [k for k, m in ((num, a), (den, b)) if m is None]
    return {'label': label, 'skipped': f'{" and ".join(missing)} not measured'}
  row = {'label': label, **timing.ratio(a, b, reference)}
  if key in FIT_BARS:
    row['meets_bar'] = row['median'] >= 1.0  # custom loop ≥ fit, median over rounds
  return row


def compute(rates, train_gflop_per_image, ceiling):
  """Per precision in `rates` (its custom loop's median images/s): the achieved GFLOP/s, and
  that as a fraction of the conv ceiling of the same precision (probes.CONV_CEILING); float32
  also against the matmul and the conv with its gradients, which exist in float32 only."""
  out = {}
  for name, rate in rates.items():
    achieved = rate * train_gflop_per_image
    key = probes.CONV_CEILING[name]
    row = {'achieved_gflops': achieved, 'ceiling': key,
           'fraction_of_ceiling': achieved / ceiling[key]['gflops']['median']}
    if name == 'float32':
      # conv3x3_train is not a ceiling: a training step runs each conv forward and twice
      # backward, so it says how far the model is from what the backward kernels allow.
      row.update({f'fraction_of_{k}': achieved / ceiling[k]['gflops']['median']
                  for k in ('matmul', 'conv3x3', 'conv3x3_train')})
    out[name] = row
  return out


def benchmark_model(name, quick, repeats, real, ceiling, smoke=False):
  """Every measurement of one model, its ratios, GFLOP/s and peak RSS; `smoke`: at batch
  SMOKE_BATCH."""
  spec, full_steps, quick_steps = MODELS[name]
  steps = quick_steps if quick else full_steps
  config = load_config(spec)
  if smoke:
    config.batch_size = SMOKE_BATCH
  batch, size = config.batch_size, config.model.input_size or SOURCE_SHAPE[0]
  logging.info('Model %s (configs/%s): batch %d, input %d, %d steps per call.', name, spec,
               batch, size, steps)
  reset = timing.reset_peak_rss()
  rss_start = timing.status_mb('VmRSS')

  entry = {'config': f'configs/{spec}', 'model': config.model.name, 'batch_size': batch,
           'input_size': size, 'source_size': SOURCE_SHAPE[0], 'steps_per_call': steps}
  default = strategy_lib.build(config)
  state = _build(config, default)
  model, optimizer, _ = state
  entry['params'] = int(model.count_params())
  shape = models_lib.input_shape(config.model, SOURCE_SHAPE)
  macs = sum(m for _, m in flops.forward_macs(model, shape))
  entry['forward_macs_per_image'] = macs
  entry['train_gflop_per_image'] = flops.train_flops_per_image(macs) / 1e9

  todo, skipped = _variants(config, default, state, steps, quick, real)
  reference = todo[0]  # custom_synthetic: the denominator, or numerator, of every ratio
  timing.interleave(name, todo, repeats, reference)
  measured = {m.key: m for m in todo}
  entry.update(_rows(measured, skipped, reference.key, batch, entry['train_gflop_per_image'],
                     ceiling))
  entry['memory'] = {
      'rss_start_mb': rss_start,
      'peak_rss_mb': timing.status_mb('VmHWM') if reset else timing.process_peak_mb(),
      'process_peak_rss_mb': timing.process_peak_mb(),
      'method': ('peak RSS while this model ran: VmHWM reset at its start via '
                 '/proc/self/clear_refs; it includes what earlier models left resident'
                 if reset else 'process peak (ru_maxrss) after this model: not per model')}
  del todo, measured, model, optimizer, state
  keras.backend.clear_session()
  gc.collect()
  return entry


def _variants(config, default, state, steps, quick, real):
  """(the Measurements of one model, custom_synthetic first; {key: why it is skipped}) for the
  model `state` (model, optimizer, step) built under the `default` strategy."""
  batch, size = config.batch_size, config.model.input_size or SOURCE_SHAPE[0]
  resized = size != SOURCE_SHAPE[0]
  skipped = {}
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

  if quick and resized:
    why_quick = '--quick: resized models measure only the resize ratios (a, c, a0, c0)'
    for key in ('custom_pipeline', 'pipeline_only', 'fit', 'fit_spe25', 'one_device',
                'mirrored', *(key + BF16 for key in IN_BF16)):
      skipped[key] = why_quick
  else:
    todo += _other_variants(config, default, state, steps, quick, real, (images, labels),
                            skipped)
  return todo, skipped


def _other_variants(config, default, state, steps, quick, real, batch, skipped):
  """The Measurements beside the resize ones: mixed_bfloat16, the real pipeline, fit and the
  strategies, on the synthetic `batch` (images, labels); adds the reasons of those it skips to
  `skipped`."""
  images, labels = batch
  model, optimizer, _ = state
  # The same model built in mixed_bfloat16 (setup_lib.build_state builds it under the
  # precision's scope); fit in bfloat16 shares it, as fit in float32 shares the float32 one.
  config16 = config.copy_and_resolve_references()
  config16.mixed_precision = PRECISIONS[1]
  state16 = _build(config16, default)
  todo = [custom('custom_synthetic' + BF16, default, state16, config16,
                 synthetic_fn(images, labels), steps)]
  split, reason = real.get(config.dataset)
  if split is None:
    skipped['custom_pipeline'] = skipped['pipeline_only'] = reason
  else:
    todo.append(custom('custom_pipeline', default, state, config,
                       lambda ctx: pipeline.train_dataset(split, config.batch_size, config.seed,
                                                          input_context=ctx), steps))
    todo.append(_drain(split, config, steps))
  # fit shares the custom loop's model and optimizer (memory: VGG16 is 134M parameters).
  todo.append(_fit('fit', model, optimizer, config, images, labels, steps, 1))
  todo.append(_fit('fit' + BF16, *state16[:2], config16, images, labels, steps, 1))
  spe_keys = ('fit_spe25', 'fit_spe25' + BF16)
  if steps < FIT_SPE:
    for key in spe_keys:
      skipped[key] = (f'only {steps} step(s) per call for this slow model: '
                      f'steps_per_execution={FIT_SPE} would need {FIT_SPE}-step calls '
                      'to amortise per-step overhead of milliseconds')
  else:
    todo.append(_spe_fit('fit_spe25', config, default, images, labels, steps))
    if quick:  # CI runs --quick: one more model and bracketed variant would lengthen it
      skipped[spe_keys[1]] = '--quick: fit() alone is the mixed_bfloat16 reference'
    else:
      todo.append(_spe_fit(spe_keys[1], config16, default, images, labels, steps))
  for strategy_name in ('one_device', 'mirrored'):
    cfg = config.copy_and_resolve_references()
    cfg.strategy = strategy_name
    strategy = strategy_lib.build(cfg)
    todo.append(custom(strategy_name, strategy, _build(cfg, strategy), cfg,
                       synthetic_fn(images, labels), steps))
  return todo


def _rows(measured, skipped, reference, batch, train_gflop_per_image, ceiling):
  """A model's JSON rows of the Measurements `measured` (by key) and the `skipped` ones: each
  measurement, the ratios against `reference`, fit's overhead per step, the GFLOP/s."""
  rows = {'precisions': list(PRECISIONS)}
  rows['measurements'] = {key: ({**measured[key].result(), 'label': MEASUREMENTS[key]}
                                if key in measured else _skip(key, skipped[key]))
                          for key in MEASUREMENTS}
  for key, row in rows['measurements'].items():
    row['precision'] = precision_of(key)
  rows['ratios'] = {key: ratio_row(measured, key, reference) for key in RATIOS}
  overheads = {key: timing.step_overhead(measured, key, batch) for key in ('fit', 'fit_spe25')}
  rows['fit_step_overhead'] = {k: v for k, v in overheads.items() if v}
  rates = {precision_of(key): measured[key].result()['images_per_sec']['median']
           for key in ('custom_synthetic', 'custom_synthetic' + BF16) if key in measured}
  rows['compute'] = {
      **compute(rates, train_gflop_per_image, ceiling),
      'basis': ('(a) and (a16) median images/s × 3 × 2 × forward conv/dense multiply-adds per '
                'image, each against the conv ceiling of its precision')}
  return rows
