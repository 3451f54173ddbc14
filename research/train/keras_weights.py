"""Starting a run from Keras Applications' ImageNet weights: VGG16, VGG19 and ResNet50.

`config.init_from` takes `keras:vgg16` (the file keras.applications.VGG16(weights='imagenet')
caches in ~/.keras/models, or $KERAS_HOME/models), `keras:vgg16:PATH` (that file elsewhere) or
a PATH ending in .h5, whose kind is read from its layer names. Nothing is downloaded. The file
is Keras' HDF5 weight file (with or without the top); its weights are read by layer name and
copied into this project's model of the same name (research/models/vgg.py, resnet.py), whose
`preprocessing` must be 'caffe', the input the weights were trained on.

Layers whose shapes differ keep their fresh initialisation, as fine-tuning from a run does: the
head for another class count, VGG's fc1 at another input size, every dense layer when the
file has no top. A grey input takes the first conv's kernels summed over colour.
"""

import dataclasses
import os

from absl import logging
import h5py
import numpy as np

from research import models
from research.core.errors import UserError
from research.models import resnet

PREFIX = 'keras:'
KINDS = ('vgg16', 'vgg19', 'resnet50')
_CLASSES = {'vgg16': 'VGG16', 'vgg19': 'VGG19', 'resnet50': 'ResNet50'}
# A layer only this kind has, telling the kinds apart (VGG19 has VGG16's layers and more).
_MARKERS = (('resnet50', 'conv5_block3_3_conv'), ('vgg19', 'block5_conv4'),
            ('vgg16', 'block5_conv3'))
# Fields that shape no imported weight: the input size, the dropout and the widths of the
# layers that start fresh when they differ.
_FREE_FIELDS = ('input_size', 'dropout', 'dense_units', 'preprocessing')
_URL = 'https://storage.googleapis.com/tensorflow/keras-applications/'


@dataclasses.dataclass
class Source:
  """A Keras Applications weight file: its path, kind, and whether it has the top."""
  path: str
  kind: str
  top: bool

  @property
  def name(self):
    return f'{PREFIX}{self.kind}:{self.path}'


def is_keras(init_from):
  """Whether init_from names Keras weights rather than a run: the prefix, or an HDF5 file."""
  return init_from.startswith(PREFIX) or init_from.lower().endswith(('.h5', '.hdf5'))


def file_name(kind, top=True):
  """The name keras.applications caches `kind`'s ImageNet weights under."""
  return f'{kind}_weights_tf_dim_ordering_tf_kernels{"" if top else "_notop"}.h5'


def cache_dir():
  return os.path.join(os.environ.get('KERAS_HOME') or os.path.expanduser('~/.keras'), 'models')


def _where(kind):
  """The cached file of `kind`, with the top if both are there; one line when neither is."""
  for top in (True, False):
    path = os.path.join(cache_dir(), file_name(kind, top))
    if os.path.isfile(path):
      return path
  raise UserError(
      f'init_from keras:{kind}: no {file_name(kind)} (nor its _notop) in {cache_dir()}; nothing '
      f'is downloaded here: run keras.applications.{_CLASSES[kind]}(weights=\'imagenet\') where '
      f'there is internet (or fetch {_URL}{kind}/{file_name(kind)}) and copy the file there, or '
      f'pass --config.init_from=keras:{kind}:PATH')


def _layers(f):
  """The HDF5 group holding the layers (a whole saved model nests it) and their names."""
  if 'layer_names' not in f.attrs and 'model_weights' in f:
    f = f['model_weights']
  if 'layer_names' not in f.attrs:
    raise UserError(f'{f.file.filename} is no Keras HDF5 weight file (Keras 3\'s .weights.h5 '
                    'names no layers): pass the .h5 file keras.applications caches')
  return f, [_text(n) for n in f.attrs['layer_names']]


def _text(name):
  """Keras 2 wrote HDF5 names as bytes, Keras 3 as str."""
  return name.decode() if isinstance(name, bytes) else name


def resolve(init_from):
  """The Source init_from names; refuses a missing file, an unknown kind or a mismatch."""
  kind, path = None, init_from
  if init_from.startswith(PREFIX):
    kind, _, path = init_from[len(PREFIX):].partition(':')
    if kind not in KINDS:
      raise UserError(f'init_from {init_from!r} names no Keras Applications model we import: '
                      f'use keras:{"|".join(KINDS)}[:PATH]')
    path = path or _where(kind)
  if not os.path.isfile(path):
    raise UserError(f'init_from {init_from!r}: no file {path!r}: pass the path of a Keras '
                    'Applications weight file (.h5), or keras:KIND for the cached one')
  try:
    with h5py.File(path, 'r') as f:
      _, names = _layers(f)
  except OSError as e:
    raise UserError(f'init_from {init_from!r}: {path} is not an HDF5 file ({e}): pass the .h5 '
                    'file keras.applications caches') from None
  found = next((k for k, marker in _MARKERS if marker in names), None)
  if found is None or (kind and kind != found):
    raise UserError(f'init_from {init_from!r}: {path} holds {found or "no"} Keras Applications '
                    f'weights{"" if found else " we import (" + ", ".join(KINDS) + ")"}: pass '
                    'another file' + (f' or keras:{found}:PATH' if found else ''))
  return Source(os.path.abspath(path), found, 'predictions' in names)


def check_config(source, config):
  """Refuses a model config other than the weights' architecture, or one that feeds them
  another input than they were trained on; before anything is written."""
  fix = ('give this run the architecture\'s own model config (its preset), or drop '
         '--config.init_from')
  if config.model.name != source.kind:
    raise UserError(f'init_from {source.name!r} holds {source.kind} weights, this run trains '
                    f'{config.model.name}: pass --model={source.kind}, or drop '
                    '--config.init_from')
  preset = models.default_config(source.kind)
  changed = sorted(k for k in set(preset.keys()) | set(config.model.keys())
                   if k not in _FREE_FIELDS and _plain(preset.get(k)) != _plain(
                       config.model.get(k)))
  if changed:
    diff = ', '.join(f'model.{k}={config.model.get(k)!r} here, {preset.get(k)!r} there'
                     for k in changed)
    raise UserError(f'init_from {source.name!r} is another architecture ({diff}): {fix}')
  if config.model.get('preprocessing') != 'caffe':
    raise UserError(f'init_from {source.name!r} holds weights trained on caffe-style input (BGR, '
                    'ImageNet mean subtracted), this run normalises to [-1, 1]: add '
                    '--config.model.preprocessing=caffe (evaluation, prediction and export '
                    'then apply it too), or drop --config.init_from')


def _plain(value):
  """Tuples and lists alike, as a config read back from JSON has them."""
  if isinstance(value, (tuple, list)):
    return tuple(_plain(v) for v in value)
  return value


def check_input(source, config, data):
  """Refuses data with other than 1 or 3 channels (the first conv takes RGB, or grey with its
  kernels summed); before the workdir is written."""
  channels = models.input_shape(config.model, data.image_shape)[-1]
  if channels not in (1, 3):
    raise UserError(f'init_from {source.name!r} takes RGB or grey images, this run feeds '
                    f'{channels} channels: set --config.dataset.channels=3 (or 1)')


def _vgg_pairs(model):
  """(our top-level block, its layer, Keras layer name) of every weighted layer of a VGG."""
  stack = {layer.name: layer for layer in model.stack}
  pairs = [(block.name, conv.conv, f'{block.name}_conv{j + 1}')
           for block in model.stack if block.name.startswith('block')
           for j, conv in enumerate(block.convs)]
  return pairs + [('fc1', stack['fc1'].dense, 'fc1'), ('fc2', stack['fc2'].dense, 'fc2'),
                  ('logits', stack['logits'].dense, 'predictions')]


def _resnet_pairs(model):
  """(our top-level block, its layer, Keras layer name) of every weighted layer of a ResNet
  in Keras' layout."""
  stack = {layer.name: layer for layer in model.stack}
  pairs = [('stem', stack['stem'].conv, 'conv1_conv'), ('stem', stack['stem'].norm, 'conv1_bn')]
  for s in range(len(resnet.STAGE_FILTERS)):
    stage = f'stage{s + 1}'
    for b, block in enumerate(stack[stage].blocks):
      prefix = f'conv{s + 2}_block{b + 1}'
      layers = [(f'_{k + 1}', conv, norm) for k, (conv, norm) in
                enumerate(zip(block.convs, block.norms))]
      if block.shortcut:
        layers.append(('_0', *block.shortcut))
      for suffix, conv, norm in layers:
        pairs += [(stage, conv, f'{prefix}{suffix}_conv'), (stage, norm, f'{prefix}{suffix}_bn')]
  return pairs + [('logits', stack['logits'].dense, 'predictions')]


def _read(path):
  """{Keras layer name: [arrays in the layer's weight order]}."""
  with h5py.File(path, 'r') as f:
    group, names = _layers(f)
    return {name: [np.asarray(group[name][_text(w)]) for w in group[name].attrs['weight_names']]
            for name in names if len(group[name].attrs.get('weight_names', []))}


def _adapt(values, target, first):
  """The file's arrays for `target`, a grey first conv's kernels summed over colour; None when
  the shapes differ (a layer that starts fresh)."""
  shapes = [tuple(v.shape) for v in target.weights]
  if first and shapes[0][2] == 1 and values[0].shape[2] == 3:
    values = [values[0].sum(axis=2, keepdims=True), *values[1:]]
  return values if [v.shape for v in values] == shapes else None


def load(source, model, strategy):
  """Copies the file's weights into `model` (built, under `strategy`): every conv and norm,
  and each dense layer whose shape agrees. Returns what the run records as its init_from."""
  logging.info('Initialising from Keras Applications %s weights%s: %s.', source.kind,
               '' if source.top else ' without the top', source.path)
  weights = _read(source.path)
  pairs = _resnet_pairs(model) if source.kind == 'resnet50' else _vgg_pairs(model)
  assign, fresh, loaded = [], [], []
  for i, (top, layer, name) in enumerate(pairs):
    values = _adapt(weights[name], layer, i == 0) if name in weights else None
    dense = name in ('fc1', 'fc2', 'predictions')
    if values is None and not dense:
      raise UserError(f'{source.path} does not fit {model.name}: layer {name} has '
                      f'{[v.shape for v in weights.get(name, [])]} there, '
                      f'{[tuple(v.shape) for v in layer.weights]} here: pass a file of '
                      f'keras.applications.{_CLASSES[source.kind]}')
    if values is None:
      fresh.append(top)
      continue
    assign += zip(layer.weights, values)
    loaded += [top] if top not in loaded else []
  with strategy.scope():  # mirrored variables take the value on every replica
    for target, value in assign:
      target.assign(value)
  grey = tuple(pairs[0][1].weights[0].shape)[2] == 1
  logging.info('Loaded %s from %s%s; re-initialised %s.', ', '.join(loaded), source.path,
               ' (the first conv\'s kernels summed over colour for grey input)' if grey else '',
               ', '.join(fresh) or 'nothing')
  return source.name
