"""Fine-tuning: start a run from another run's model weights, and keep chosen blocks frozen.

`config.init_from` names a training run's workdir (its best checkpoint, else its latest) or one
checkpoint prefix. Only the model's weights come over: the new run starts at step 0 with a fresh
optimizer. A source trained on another number of classes gives everything but the classifier
head, which keeps its fresh initialisation. Another architecture is refused.

`config.freeze` names top-level blocks of the model's stack that are not trained.

Keras Applications' weight files (`keras:vgg16`, a .h5 path) are research/train/keras_weights.py's.
"""

import dataclasses
import json
import os

from absl import logging
import tensorflow as tf

from research import models
from research.core import checkpoints
from research.core import config as config_lib
from research.core import layout
from research.core.errors import UserError
from research.models import blocks
from research.train import keras_weights

# Model fields that may differ: the input size changes no weight by itself (a different input
# shape does, and the shape check below catches that).
_FREE_FIELDS = ('input_size',)


@dataclasses.dataclass
class Source:
  """The run to start from: its checkpoint, saved config and data info."""
  checkpoint: str
  workdir: str
  which: str  # 'best', 'latest' or 'given'
  config: object
  info: dict


def _run_dir(path):
  """The training run's workdir that holds `path` (itself or an ancestor), or None."""
  path = os.path.abspath(path)
  for _ in range(4):  # W, W/checkpoints, W/checkpoints/best, then the prefix's own directory
    if (os.path.isfile(layout.config_path(path))
        and os.path.isfile(layout.data_info_path(path))):
      return path
    path = os.path.dirname(path)
  return None


def resolve(init_from):
  """The Source `init_from` (a run's workdir or a checkpoint prefix) names; refuses anything
  else in one line."""
  fix = ('pass a training run\'s --workdir or a checkpoint prefix such as '
         'W/checkpoints/ckpt-350, or drop --config.init_from to train from scratch')
  if os.path.isdir(init_from):
    best = checkpoints.checkpoint_paths(layout.best_dir(layout.checkpoint_dir(init_from)))
    latest = checkpoints.trained(init_from)
    if best:
      path, which = best[-1], 'best'
    elif latest:
      path, which = latest[-1], 'latest'
    else:
      raise UserError(f'init_from {init_from!r} holds no checkpoint of a training run: {fix}')
  elif tf.io.gfile.exists(init_from + '.index'):
    path, which = init_from, 'given'
  else:
    raise UserError(f'init_from {init_from!r} is neither a directory nor a checkpoint: {fix}')
  workdir = _run_dir(init_from if which != 'given' else os.path.dirname(init_from))
  if workdir is None:
    raise UserError(f'init_from {init_from!r} is not inside a training run\'s workdir (no '
                    f'config.json and {layout.DATA_INFO} beside its checkpoints): {fix}')
  return Source(os.path.abspath(path), workdir, which, config_lib.load(workdir),
                layout.read_data_info(workdir))


def _model_fields(model_config):
  # A field the run's version did not have yet has its preset value (tuples and lists alike).
  preset = (models.default_config(model_config.name).to_dict()
            if model_config.name in models.names() else {})
  as_json = json.loads(json.dumps({**preset, **model_config.to_dict()}))
  return {k: v for k, v in as_json.items() if k not in _FREE_FIELDS}


def check_architecture(source, config):
  """Refuses a source whose model config differs in anything that shapes a weight."""
  old, new = _model_fields(source.config.model), _model_fields(config.model)
  changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
  if changed:
    diff = ', '.join(f'model.{k}={json.dumps(old.get(k))} there, {json.dumps(new.get(k))} here'
                     for k in changed)
    raise UserError(f'init_from {source.workdir!r} is another architecture ({diff}): give this '
                    'run the same model config (e.g. its config file), or drop '
                    '--config.init_from')


def prepare(config, workdir):
  """Checks init_from and freeze before anything is written; returns the Source to load, or
  None (no init_from, or the workdir already has a checkpoint to resume from). `workdir` None:
  the run starts over, whatever the workdir holds."""
  check_freeze(config)
  own = workdir and checkpoints.trained(workdir)
  if own:
    _check_same_freeze(config, workdir)
  if not config.init_from:
    return None
  if own:
    # Resuming: the run's own checkpoint already holds the fine-tuned weights.
    logging.info('Ignoring init_from %s: %s has its own checkpoint to resume from.',
                 config.init_from, workdir)
    return None
  if keras_weights.is_keras(config.init_from):
    source = keras_weights.resolve(config.init_from)
    keras_weights.check_config(source, config)
    return source
  source = resolve(config.init_from)
  check_architecture(source, config)
  return source


def _check_same_freeze(config, workdir):
  """A resumed run must freeze what its checkpoint's run froze: the optimizer holds slots for
  the trained variables only, and another set would fail the restore less clearly."""
  saved = list(config_lib.load(workdir).get('freeze', ()))
  if saved != list(config.freeze):
    raise UserError(f'workdir {workdir!r} holds a run trained with freeze={tuple(saved)!r}, not '
                    f'{tuple(config.freeze)!r}: resume with --config.freeze="{tuple(saved)!r}", '
                    'or pass a new --workdir')


def _check_input(source, config, data):
  """Refuses data whose model input (size, channels) differs from the source's, which would
  give the first layers other shapes; before the workdir is written."""
  if isinstance(source, keras_weights.Source):
    return keras_weights.check_input(source, config, data)
  there = models.input_shape(source.config.model, source.info['image_shape'])
  here = models.input_shape(config.model, data.image_shape)
  if tuple(there) != tuple(here):
    raise UserError(f'init_from {source.workdir!r} was trained on {list(there)} inputs, this run '
                    f'feeds {list(here)}: match its input (--config.model.input_size, '
                    '--config.dataset.channels), or drop --config.init_from')


def _stack(model):
  return {layer.name: layer for layer in model.stack}


def load(source, config, data, model, strategy):
  """Copies the source's weights into `model` (built for `data`, under `strategy`) by top-level
  layer name; the head only when the class counts agree. Returns the checkpoint path. Data of
  another input than the source's is refused first."""
  _check_input(source, config, data)
  if isinstance(source, keras_weights.Source):
    return keras_weights.load(source, model, strategy)
  logging.info('Initialising from the %s checkpoint of %s: %s.', source.which, source.workdir,
               source.checkpoint)
  src, _ = models.build_model(source.config.model, source.info['num_classes'],
                              source.info['image_shape'])
  # The optimizer and step in the file are not wanted; every model weight must be there.
  checkpoints.restore_newest_readable(
      tf.train.Checkpoint(model=src), [source.checkpoint], strict=False,
      mismatch=lambda path, detail: UserError(
          f'checkpoint {path} does not match its own run\'s model ({detail}): pass '
          'another --config.init_from'),
      unreadable=lambda paths: UserError(
          f'checkpoint {paths[-1]} is unreadable: pass another --config.init_from'))
  old, new = _stack(src), _stack(model)
  pairs, loaded, fresh = [], [], []
  for name, layer in new.items():
    if not layer.weights:
      continue
    twin = old.get(name)
    shapes = [tuple(v.shape) for v in layer.weights]
    twin_shapes = [tuple(v.shape) for v in twin.weights] if twin is not None else None
    if isinstance(layer, blocks.Logits) and twin_shapes != shapes:
      fresh.append(name)  # another class count: this head is trained from scratch
      continue
    if twin_shapes != shapes:
      raise UserError(f'init_from {source.workdir!r} is another architecture: layer {name} has '
                      f'weights {twin_shapes} there, {shapes} here (another input shape or '
                      'channel count?): train on data of the source\'s image shape '
                      f'{source.info["image_shape"]}, or drop --config.init_from')
    pairs += zip(layer.weights, twin.weights)
    loaded.append(name)
  with strategy.scope():  # mirrored variables take the value on every replica
    for target, value in pairs:
      target.assign(value.numpy())
  logging.info('Loaded layers %s from %s%s.', ', '.join(loaded), source.checkpoint,
               f'; re-initialised {", ".join(fresh)} ({source.info["num_classes"]} classes '
               f'there, {new[fresh[0]].num_classes} here)' if fresh else '')
  return source.checkpoint


def check_freeze(config):
  """Refuses names in config.freeze that are no top-level block of the model (the model's
  layers exist from construction: nothing is built)."""
  if not config.freeze:
    return
  try:
    names = [layer.name for layer in models.build(config.model, 2).stack]
  except (TypeError, ValueError):
    return  # a model config that does not build: build_model says why, in its own words
  unknown = [n for n in config.freeze if n not in names]
  if unknown:
    raise UserError(f'freeze names {", ".join(map(repr, unknown))}, no block of model '
                    f'{config.model.name!r}: choose among {", ".join(names)} '
                    '(--config.freeze="(\'conv1\',)")')


def freeze(config, model):
  """Makes config.freeze's blocks untrainable (models.freeze); call before the optimizer is
  built, which then has no slots for them."""
  if not config.freeze:
    return
  frozen = models.freeze(model, config.freeze)
  logging.info('Frozen: %s (%s parameters not trained).', ', '.join(config.freeze),
               f'{frozen:,}')
