"""The experiment config: one `ml_collections.ConfigDict` holds every setting of a run.

Config files under `configs/` start from `base()` and change what their experiment needs; entry
points apply command-line overrides (type-checked by ml_collections) and pass the result to the
library. The resolved config is saved in the workdir as JSON, which evaluate/predict read back.
"""

import importlib.util
import json
import os
import time

import ml_collections
from ml_collections import config_dict

import research
from research.core import layout
from research.core import presets
from research.core.errors import UserError

# The experiment files (configs/ beside this package in the repository).
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(research.__file__))),
                          'configs')

# The choices of config.strategy and config.mixed_precision (research/core/strategy.py and
# research/train/precision.py build them); named here so that a config is checked before
# TensorFlow loads.
STRATEGIES = ('default', 'one_device', 'mirrored', 'multi_worker_mirrored', 'tpu')
PRECISIONS = ('auto', 'float32', 'mixed_float16', 'mixed_bfloat16')

# dataset.name of an image folder: folder:DIR (research/data/folder.py).
FOLDER_PREFIX = 'folder:'

# The scale of augment.randaugment's magnitude: RandAugment's own, 10 each op's strongest.
RANDAUGMENT_MAX_MAGNITUDE = 10

# Datasets whose content has a handedness: never mirror them.
_DIGIT_DATASETS = ('mnist', 'emnist', 'kmnist', 'svhn_cropped')

# Fields that must agree between a run's saved config and a run resuming in the same workdir:
# they make it another experiment.
_IDENTITY_FIELDS = ('model.name', 'dataset.name', 'batch_size')

# Fields a resumed run may change (docs/resume.md): how long it trains, how often it reports and
# saves, where its data are read from and how it is spread over devices; none of them changes
# what a step computes beyond round-off. Every other field is the experiment's and changes only
# when named in accept_changes. Each change is recorded in config_changes.json with the step it
# took effect at.
RESUME_FREE_FIELDS = (
    'num_train_steps', 'num_epochs', 'steps_per_loop', 'log_every_steps', 'eval_every_epochs',
    'checkpoint_every_steps', 'keep_checkpoints', 'eval_batch_size', 'image_grid_size',
    'profile_steps', 'strategy', 'num_gpus', 'num_cpu_devices', 'cluster_timeout_seconds',
    'worker_lost_seconds', 'tpu', 'jit_compile', 'deterministic', 'dataset.data_dir',
    'dataset.download', 'dataset.manual_dir', 'dataset.memory_budget_gb', 'dataset.index_dir',
    'dataset.skip_bad_examples',
    'init_from')  # read at step 0 only: a resume restores its own checkpoint instead
# Fields refused on resume with their own reasons after check_resume, whatever accept says:
# freeze (the optimizer holds no slots for frozen blocks; init_from.py) and the streaming crop
# (the data fingerprint, which records it: another crop is other data; in-memory data ignore it).
_REFUSED_ELSEWHERE = ('freeze', 'dataset.crop_area', 'dataset.crop_aspect', 'dataset.eval_crop',
                      'dataset.fit')


def augment_preset(dataset):
  """Small affine jitter for digits; crop (as translation), flip and colour jitter otherwise.
  Image folders stream, and the host's random-resized crop already scales and translates.
  Digits never flip (a mirrored 2 is not a 2), and RandAugment draws only geometric ops for them
  (color_ops False): its colour ops are made for photographs."""
  if dataset in _DIGIT_DATASETS or dataset.startswith('mnist'):
    return dict(rotate=10.0, scale=0.1, translate=0.1, flip=False, brightness=0.0, contrast=0.0,
                color_ops=False)
  if dataset.startswith(FOLDER_PREFIX):
    return dict(rotate=0.0, scale=0.0, translate=0.0, flip=True, brightness=0.2, contrast=0.2,
                color_ops=True)
  return dict(rotate=0.0, scale=0.0, translate=0.125, flip=True, brightness=0.2, contrast=0.2,
              color_ops=True)


# Presets for an image folder by what its images show, picked by name as the third part of
# configs/default.py's argument (configs/default.py:cnn,folder:DIR,digits).
STYLES = ('photos', 'digits')


def apply_style(c, style):
  """photos (base()'s folder defaults): Inception's random-resized crop, flips, colour jitter,
  a centre crop for evaluation. digits (digits, characters, documents, whose whole image and
  handedness matter): each image letterboxed whole in training and evaluation, grey, with the
  digit datasets' small rotation, scale and shift and no flip or colour op."""
  if style not in STYLES:
    raise UserError(f'unknown style {style!r}: use one of {", ".join(STYLES)}')
  if style == 'digits':
    c.dataset.fit = 'letterbox'
    c.dataset.channels = 1
    c.augment.update(augment_preset('mnist'))
  return c


def base(model='cnn', dataset='mnist'):
  """Every field a run reads, with defaults; the model section is the model's preset."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = presets.default_config(model)
  c.dataset = _dataset_section(dataset)
  c.augment = _augment_section(dataset)
  c.batch_size = 128  # global, across all replicas
  c.eval_batch_size = 1000
  c.num_epochs = 10.0
  c.num_train_steps = config_dict.placeholder(int)  # None: num_epochs decides
  # name: sgd, adam, adamw, lamb or lion; decay_kernels_only leaves biases and batch norm's
  # scale and offset undecayed (the papers' AlexNet and VGG decay every weight)
  c.optimizer = ml_collections.ConfigDict(dict(
      name='adamw', momentum=0.9, nesterov=False, weight_decay=1e-4, decay_kernels_only=False))
  c.schedule = ml_collections.ConfigDict(dict(
      name='cosine', learning_rate=1e-3, warmup_epochs=0.5, final_fraction=0.0,
      boundaries_epochs=(30.0, 60.0, 80.0), decay_factor=0.1))
  c.label_smoothing = 0.0
  # Training recipes (docs/recipes.md). ema_decay: an exponential moving average of the weights
  # with this decay per step (0 = none); ema_eval: with one, the best checkpoint, export, evaluate
  # and predict use the average (metrics of both are reported either way).
  c.ema_decay = 0.0
  c.ema_eval = True
  c.clip_global_norm = 0.0  # > 0 clips the gradient, summed over replicas, to this global norm
  # > 1 splits each replica's batch into this many micro-batches, their gradients summed before
  # the one update of the step: the same batch_size at less activation memory
  c.accumulate_steps = 1
  c.steps_per_loop = 50  # train steps per tf.function call; logging happens between calls
  c.log_every_steps = 100
  c.eval_every_epochs = 1.0
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.strategy = 'default'  # default, one_device, mirrored, multi_worker_mirrored or tpu
  c.num_gpus = -1  # GPUs per worker to use: -1 all visible, 0 none (the CPU)
  c.num_cpu_devices = 0  # > 0 splits the host CPU into N logical devices (tests, mirrored on CPU)
  c.cluster_timeout_seconds = 300.0  # multi-worker: all workers must connect within this
  # multi-worker: a worker that vanishes mid-run (killed, frozen, its node gone) makes the others
  # exit with the lost-worker status within this (docs/cluster.md)
  c.worker_lost_seconds = 30.0
  c.tpu = ''  # the TPU's name or grpc:// address for strategy=tpu; '' = the local TPU
  # auto (bfloat16 where the hardware has it, else float32), float32, mixed_float16 (dynamic loss
  # scaling) or mixed_bfloat16
  c.mixed_precision = 'auto'
  c.jit_compile = False  # XLA measured 0.55x on CPU for these nets
  c.deterministic = False  # op determinism: bitwise-repeatable runs, some ops slower
  c.image_grid_size = 64  # training inputs written as inputs.png; 0 to skip
  # (start, stop): a TensorBoard profile trace of steps start+1 .. stop in train/; (0, 0) = none
  c.profile_steps = (0, 0)
  # Fine-tuning (docs/finetune.md): another run's workdir or checkpoint prefix to take the model
  # weights from at step 0 ('' = from scratch), and top-level model blocks left untrained.
  c.init_from = ''
  c.freeze = ()
  return c


def _dataset_section(dataset):
  """base()'s dataset section: where the data are read from and how."""
  return ml_collections.ConfigDict(dict(
      name=dataset, data_dir='', download=True, manual_dir='',
      train_split='train', test_split='test',
      # The tail of train; image folders are often small, so they start without one.
      validation_size=0 if dataset.startswith(FOLDER_PREFIX) else 5000,
      pipeline='auto',  # auto, memory or stream (see research/data/datasets.py)
      memory_budget_gb=4.0,  # auto streams a fixed-size dataset whose decoded splits exceed it
      channels=0,  # 0: the dataset's own (image folders: 3); 1 or 3 converts every image
      # The streaming pipeline's host-side crop: a random-resized crop of this share of the area
      # and range of aspect ratios for training, the centre `eval_crop` of the shorter side for
      # evaluation, both resized to model.input_size.
      crop_area=(0.08, 1.0), crop_aspect=(0.75, 4 / 3), eval_crop=0.875,
      # crop: the crops above (photographs); letterbox: the whole image, aspect kept, on zero
      # padding, in training and evaluation (digits, documents: the device's augmentation then
      # jitters it). See STYLES.
      fit='crop',
      test_fraction=0.1,  # of an image folder's train/, held out when it has no test folder
      # Where image folders' indexes go (research/data/folder.py); '' = the user's cache,
      # $XDG_CACHE_HOME/tf-convnet-research/image-folders (~/.cache/...)
      index_dir='',
      # A streamed example that fails to read or decode: False stops the run naming it; True
      # trains on without it (weight 0 in its batches), counted in the log and results.
      skip_bad_examples=False))


def _augment_section(dataset):
  """base()'s augment section: the dataset's preset (augment_preset) and the recipes, off."""
  return ml_collections.ConfigDict(dict(
      enabled=True, **augment_preset(dataset),
      invert=0.0,  # the probability of an example inverted (1 - x): robustness to polarity
      # The probability of an example having a random rectangle of erase_area (fractions of the
      # image) and erase_aspect (height / width) filled with a random grey: robustness to
      # occlusion; 0.0 = off
      erase=0.0, erase_area=(0.02, 0.33), erase_aspect=(0.3, 3.3),
      # (num_ops, magnitude): ops per image, strength on the 0-10 scale; (0, 0) = off
      randaugment=(0, 0),
      # Beta(alpha, alpha) mixing weights; 0.0 = off. Each example is mixed with probability
      # mix_prob; with both alphas on, by cutmix with probability switch_prob, else by mixup.
      mixup_alpha=0.0, cutmix_alpha=0.0, mix_prob=1.0, switch_prob=0.5))


def _leaves(d, prefix=''):
  for key, value in d.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


def flatten(config):
  """{'dataset.name': 'mnist', ...}: every field of the config by its dotted name."""
  return dict(_leaves(config))


def check_types(config):
  """Every field has the type of the base config's (ints pass for floats, lists for tuples).

  ml_collections type-checks scalars but lets an int replace a tuple (filters=7): catch that
  here, before any data is read.
  """
  reference = dict(_leaves(base(config.model.name, config.dataset.name)))
  for field, value in _leaves(config):
    ref = reference.get(field)
    if ref is None or value is None:
      continue
    ok = (isinstance(value, type(ref)) or (isinstance(ref, float) and isinstance(value, int))
          or (isinstance(ref, (tuple, list)) and isinstance(value, (tuple, list))))
    if not ok or isinstance(value, bool) != isinstance(ref, bool):
      raise UserError(f'config field {field}={value!r} should be a {type(ref).__name__} like '
                      f'{ref!r}: fix --config.{field}')


class _Range:
  """An interval a number must lie in, with the words that say so."""

  def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False, words=''):
    self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
    self.words = words or self._interval()

  def _interval(self):
    if self.hi is None:
      return f'{">" if self.lo_open else ">="} {self.lo}'
    return (f'in {"(" if self.lo_open else "["}{self.lo}, {self.hi}'
            f'{")" if self.hi_open else "]"}')

  def holds(self, v):
    return ((self.lo is None or v > self.lo or (v == self.lo and not self.lo_open))
            and (self.hi is None or v < self.hi or (v == self.hi and not self.hi_open)))


_POSITIVE_INT = _Range(1)
_FRACTION = _Range(0.0, 1.0)
_HALF_OPEN_FRACTION = _Range(0.0, 1.0, hi_open=True)
_NON_NEGATIVE = _Range(0)
_POSITIVE = _Range(0, lo_open=True)

# Every numeric field whose range is plain, with it; a tuple's elements each lie in the range.
# Fields missing from a model's section are not checked. (ema_decay, clip_global_norm,
# accumulate_steps and the mixing fields are check_recipe's and check_augment's.)
_RANGES = {
    'seed': _NON_NEGATIVE,
    'batch_size': _POSITIVE_INT, 'eval_batch_size': _POSITIVE_INT,
    'num_epochs': _POSITIVE, 'num_train_steps': _Range(1, words='>= 1 (or None: num_epochs)'),
    'steps_per_loop': _POSITIVE_INT, 'log_every_steps': _POSITIVE_INT,
    'eval_every_epochs': _POSITIVE, 'checkpoint_every_steps': _POSITIVE_INT,
    'keep_checkpoints': _POSITIVE_INT, 'image_grid_size': _NON_NEGATIVE,
    'label_smoothing': _HALF_OPEN_FRACTION,
    'num_gpus': _Range(-1, words='>= -1 (-1: all)'), 'num_cpu_devices': _NON_NEGATIVE,
    'cluster_timeout_seconds': _POSITIVE, 'worker_lost_seconds': _POSITIVE,
    'optimizer.momentum': _HALF_OPEN_FRACTION, 'optimizer.weight_decay': _NON_NEGATIVE,
    'schedule.learning_rate': _POSITIVE, 'schedule.warmup_epochs': _NON_NEGATIVE,
    'schedule.final_fraction': _FRACTION, 'schedule.boundaries_epochs': _NON_NEGATIVE,
    'schedule.decay_factor': _Range(0.0, 1.0, lo_open=True),
    'model.input_size': _Range(0, words='>= 0 (0: the data\'s own size)'),
    'model.filters': _POSITIVE_INT, 'model.dense_units': _POSITIVE_INT,
    'model.kernel_size': _POSITIVE_INT, 'model.width_divisor': _POSITIVE_INT,
    'model.conv_arch': _POSITIVE_INT, 'model.dropout': _HALF_OPEN_FRACTION,
    'model.drop_path': _HALF_OPEN_FRACTION,
    'dataset.validation_size': _NON_NEGATIVE, 'dataset.memory_budget_gb': _NON_NEGATIVE,
    'dataset.crop_area': _Range(0.0, 1.0, lo_open=True),
    'dataset.crop_aspect': _POSITIVE, 'dataset.eval_crop': _Range(0.0, 1.0, lo_open=True),
    'dataset.test_fraction': _HALF_OPEN_FRACTION,
    'augment.rotate': _Range(0.0, 180.0), 'augment.scale': _HALF_OPEN_FRACTION,
    'augment.translate': _FRACTION, 'augment.brightness': _FRACTION,
    'augment.contrast': _FRACTION, 'augment.erase_area': _Range(0.0, 1.0, lo_open=True),
    'augment.erase_aspect': _POSITIVE,
}


def _numbers(value):
  if isinstance(value, (tuple, list)):
    for v in value:
      yield from _numbers(v)
  elif isinstance(value, (int, float)) and not isinstance(value, bool):
    yield value


def check_ranges(config):
  """Every numeric field lies in its range (_RANGES), and (low, high) pairs are ordered: one
  line naming the field before anything is read or written."""
  fields = flatten(config)
  for field, allowed in _RANGES.items():
    value = fields.get(field)
    if value is None:
      continue
    if not all(allowed.holds(v) for v in _numbers(value)):
      raise UserError(f'config field {field}={value!r} is out of range: make it {allowed.words}'
                      + (' (each element)' if isinstance(value, (tuple, list)) else ''))
  for field in ('dataset.crop_area', 'dataset.crop_aspect', 'augment.erase_area',
                'augment.erase_aspect'):
    low, high = fields[field]
    if low > high:
      raise UserError(f'config field {field}={tuple(fields[field])!r} is (low, high) with low > '
                      f'high: swap them')
  if fields['dataset.channels'] not in (0, 1, 3):
    raise UserError(f'config field dataset.channels={fields["dataset.channels"]!r} is not 0 (the '
                    'data\'s own), 1 (grey) or 3 (RGB)')


def validate(config, num_replicas=1):
  """Every check of a config on its own, in one place, before anything is built or written:
  types, ranges, the training recipe and the augmentation (with `num_replicas`, once known)."""
  check_types(config)
  check_ranges(config)
  check_strategy(config)
  check_recipe(config, num_replicas)
  check_augment(config, num_replicas)


def check_strategy(config):
  """config.strategy is one there is, and takes the devices asked for."""
  if config.strategy not in STRATEGIES:
    raise UserError(f'unknown strategy {config.strategy!r}: use one of '
                    f'{", ".join(STRATEGIES)}')
  if config.strategy == 'multi_worker_mirrored' and config.num_cpu_devices > 0:
    raise UserError(f'num_cpu_devices={config.num_cpu_devices} does not apply to '
                    'multi_worker_mirrored (one CPU replica per worker): set it to 0')


def check_recipe(config, num_replicas=1):
  """The training recipe's fields are in range and the batch splits over the replicas and into
  micro-batches: one line before anything is written."""
  if not 0.0 <= config.ema_decay < 1.0:
    raise UserError(f'config.ema_decay={config.ema_decay!r} is outside [0, 1): give 0 for no '
                    'average, or a decay such as 0.999')
  if config.clip_global_norm < 0:
    raise UserError(f'config.clip_global_norm={config.clip_global_norm!r} is negative: give 0 '
                    'for no clipping, or the largest global gradient norm to allow')
  if config.batch_size % num_replicas:
    raise UserError(f'batch_size {config.batch_size} does not divide over {num_replicas} '
                    f'replicas: make it a multiple of {num_replicas}')
  k = config.accumulate_steps
  if k < 1:
    raise UserError(f'config.accumulate_steps={k!r} must be at least 1 (1: no accumulation)')
  if config.batch_size % (k * num_replicas):
    raise UserError(f'config.batch_size={config.batch_size} does not split into '
                    f'accumulate_steps={k} micro-batches on each of {num_replicas} '
                    f'replica{"" if num_replicas == 1 else "s"}: make it a multiple of '
                    f'{k * num_replicas}')


def check_augment(config, num_replicas=1):
  """Refuses augmentation settings out of range, and an odd per-replica batch with mixing on
  (examples mix in pairs within a replica), in one line naming the field."""
  a = config.augment
  for field in ('mixup_alpha', 'cutmix_alpha'):
    if a[field] < 0:
      raise UserError(f'config field augment.{field}={a[field]} is negative: make it 0.0 (off) '
                      'or positive')
  for field in ('mix_prob', 'switch_prob', 'invert', 'erase'):
    if not 0.0 <= a[field] <= 1.0:
      raise UserError(f'config field augment.{field}={a[field]} is a probability: make it '
                      'between 0 and 1')
  num_ops, magnitude = (tuple(a.randaugment) + (None, None))[:2]
  numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                for v in (num_ops, magnitude))
  if (len(a.randaugment) != 2 or not numbers or int(num_ops) != num_ops or num_ops < 0
      or not 0 <= magnitude <= RANDAUGMENT_MAX_MAGNITUDE):
    raise UserError(f'config field augment.randaugment={tuple(a.randaugment)} should be '
                    f'(num_ops >= 0, magnitude in [0, {RANDAUGMENT_MAX_MAGNITUDE}]), e.g. (2, 9)')
  per_replica = config.batch_size // num_replicas
  if a.enabled and (a.mixup_alpha or a.cutmix_alpha) and per_replica % 2:
    raise UserError(f'mixup/cutmix mix examples in pairs within a replica, but the batch per '
                    f'replica is {per_replica}: make batch_size an even multiple of '
                    f'{num_replicas} replica(s)')


def load_file(path, variant=''):
  """get_config(variant) of a config file, loaded by path as ml_collections' config_flags does
  (for code that has no --config flag: benchmarks, tests)."""
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def to_json(config):
  return config.to_json_best_effort(indent=2, sort_keys=True)


def save(config, workdir):
  """Writes config.json, the run's config as it starts (never rewritten once a checkpoint
  exists); a fresh start drops earlier changes."""
  layout.write_config(workdir, _as_json(config))


def _as_json(config):
  return json.loads(to_json(config))


def _set(tree, dotted, value):
  *parents, key = dotted.split('.')
  for name in parents:
    tree = tree[name]
  tree[key] = value


def load(workdir, original=False):
  """The config the run trains with now: config.json as it started with every recorded change
  applied (`original`: without them). Lists stand where tuples were."""
  tree = layout.read_config(workdir)
  if tree is None:
    raise UserError(f'{workdir!r} holds no config.json: pass the --workdir of a training run')
  if (tree.get('num_train_steps') or 0) < 0:
    tree['num_train_steps'] = None  # how runs before the placeholder said "num_epochs decides"
  for change in [] if original else layout.read_config_changes(workdir):
    for field, (_, new) in change['fields'].items():
      _set(tree, field, new)
  return ml_collections.ConfigDict(tree)


def history(workdir, field):
  """[(step, value), ...]: `field`'s value from each step on, the first from step 0."""
  steps = [(0, _get(load(workdir, original=True), field))]
  for change in layout.read_config_changes(workdir):
    if field in change['fields']:
      steps.append((change['step'], change['fields'][field][1]))
  return steps


def _get(config, dotted):
  for key in dotted.split('.'):
    config = config[key]
  return config


def check_compatible(saved, config, workdir):
  """Refuses to resume a run in a workdir whose saved run is another experiment."""
  for field in _IDENTITY_FIELDS:
    old, new = _get(saved, field), _get(config, field)
    if old != new:
      raise UserError(f'workdir {workdir!r} holds a run with {field}={old!r}, not {new!r}: '
                      'pass a new --workdir, or --start_over to move the old run aside '
                      '(nothing was changed)')
  # The moving averages are optimizer variables: a run cannot gain or lose them midway.
  old = saved.get('ema_decay', 0.0)
  if bool(old) != bool(config.ema_decay):
    raise UserError(f'workdir {workdir!r} holds a run with ema_decay={old!r}, not '
                    f'{config.ema_decay!r}: an EMA cannot start or stop midway; pass a new '
                    '--workdir, or --start_over to move the old run aside (nothing was changed)')


def differences(saved, config):
  """{field: [saved value, new value]} of every field `config` sets otherwise than the run's
  `saved` config, as JSON values. Fields the saved run did not have yet (a newer version added
  them) and `auto` precision (which keeps the saved one) are no difference."""
  old, new = flatten(_as_json(saved)), flatten(_as_json(config))
  diff = {k: [old[k], v] for k, v in new.items() if k in old and old[k] != v}
  if config.mixed_precision == 'auto':
    diff.pop('mixed_precision', None)
  return diff


def check_resume(saved, config, workdir, accept=()):
  """The changes a run resuming in `workdir` makes to its `saved` config; refuses another
  experiment, and a change of the experiment's own settings not named in `accept`, in one line
  naming each field with both values, before anything is written."""
  check_compatible(saved, config, workdir)

  def named(field, name):  # a field, or a section such as schedule for all of its fields
    return field == name or field.startswith(name + '.')

  known = flatten(config)
  unknown = [a for a in accept if not any(named(f, a) for f in known)]
  if unknown:
    raise UserError(f'--accept_changes names {", ".join(unknown)}, not config fields: give '
                    'dotted names such as schedule.learning_rate, or a section such as schedule')
  diff = differences(saved, config)
  refused = [f for f in diff if f not in RESUME_FREE_FIELDS + _REFUSED_ELSEWHERE
             and not any(named(f, a) for a in accept)]
  if refused:
    said = ', '.join(f'{f}={json.dumps(diff[f][0])} (now {json.dumps(diff[f][1])})'
                     for f in refused)
    raise UserError(f'workdir {workdir!r} holds a run with {said}: a resumed run keeps its '
                    f'experiment\'s settings; pass --accept_changes={",".join(refused)} to change '
                    'them from its current step on (recorded in config_changes.json), a new '
                    '--workdir, or --start_over (nothing was changed)')
  return diff


def record_changes(workdir, step, diff):
  """Appends a resume's changes, taking effect at `step`, to config_changes.json."""
  if diff:
    entry = {'step': int(step), 'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'fields': diff}
    layout.write_config_changes(workdir, layout.read_config_changes(workdir) + [entry])
