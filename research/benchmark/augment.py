"""The cost of on-device augmentation alone: preprocess (and mixing) on one batch, compiled;
and of the pad-resize, this codebase's against TensorFlow's.

Each variant runs K steps of augmentation inside one tf.function call, each step keyed by its own
seed as training keys them; rates are images/s, median [min–max] over rounds taken in turns.
"""

import statistics
import time

import numpy as np
import tensorflow as tf

from research.core import config as config_lib
from research.data import mixing
from research.data import preprocess
from research.train import steps as steps_lib

# (label, dataset whose augmentation preset applies, batch shape)
CASES = (('digits 128×28×28×1', 'mnist', (128, 28, 28, 1)),
         ('colour 32×224×224×3', 'folder:images', (32, 224, 224, 3)))
# (label, config.augment changes) on top of the dataset's preset
VARIANTS = (('preset', {}),
            ('preset + RandAugment(2, 9) + mixup 0.2',
             dict(randaugment=(2, 9), mixup_alpha=0.2)))

# The pad-resize of digits for AlexNet: (label, batch shape, output side), and the two resizes.
RESIZE_CASE = ('digits 128×28×28×1 → 227²', (128, 28, 28, 1), 227)
RESIZES = (('preprocess.pad_resize', preprocess.pad_resize),
           ('tf.image.resize_with_pad', lambda x, size: tf.image.resize_with_pad(x, size, size)))


def augment_fn(dataset, shape, changes):
  """run(n): n augmentation steps of a fixed uint8 batch of `shape`; returns images done."""
  cfg = config_lib.base(dataset=dataset).augment
  cfg.update(changes)
  images = tf.constant(np.random.default_rng(0).integers(0, 256, shape, np.uint8))
  labels = tf.zeros([shape[0]], tf.int32)

  @tf.function
  def run(n):
    total = tf.constant(0.0)
    for i in tf.range(n):
      seed = steps_lib.augment_seed(0, i)
      x = preprocess.preprocess(images, training=True, augment=cfg, seed=seed)
      x, _, _ = mixing.mix(x, labels, None, cfg, seed)
      total += x[0, 0, 0, 0]  # keeps every step's work alive
    return total

  return run


def resize_fn(resize, shape, size):
  """run(n): n resizes of a float batch of `shape` to `size`²; each step's input differs, so no
  step can be folded into a constant."""
  images = tf.constant(np.random.default_rng(0).uniform(0, 1, shape), tf.float32)

  @tf.function
  def run(n):
    total = tf.constant(0.0)
    for i in tf.range(n):
      total += resize(images + tf.cast(i, tf.float32), size)[0, size // 2, size // 2, 0]
    return total

  return run


def _rates(fns, batch, steps, rounds):
  """{label: [images/s per round]} of run(n) functions, traced first, taking turns each round."""
  for fn in fns.values():
    fn(tf.constant(1)).numpy()
  rates = {label: [] for label in fns}
  for _ in range(rounds):
    for label, fn in fns.items():
      start = time.perf_counter()
      fn(tf.constant(steps)).numpy()
      rates[label].append(batch * steps / (time.perf_counter() - start))
  return rates


def measure(steps=10, rounds=3, cases=CASES, variants=VARIANTS, resize_case=RESIZE_CASE):
  """{(case, variant): [images/s per round]}; the variants of a case take turns each round. The
  resize case's variants are RESIZES."""
  rates = {}
  for case, dataset, shape in cases:
    fns = {label: augment_fn(dataset, shape, changes) for label, changes in variants}
    rates.update({(case, label): r for label, r in _rates(fns, shape[0], steps, rounds).items()})
  if resize_case:
    case, shape, size = resize_case
    fns = {label: resize_fn(resize, shape, size) for label, resize in RESIZES}
    rates.update({(case, label): r for label, r in _rates(fns, shape[0], steps, rounds).items()})
  return rates


def report(quick=False):
  rates = measure(steps=3 if quick else 10, rounds=2 if quick else 5)
  lines = [f'{"batch":26} {"augmentation or resize":42} images/s median [min-max]']
  for (case, label), values in rates.items():
    lines.append(f'{case:26} {label:42} {statistics.median(values):9.0f} '
                 f'[{min(values):.0f}-{max(values):.0f}]')
  case = RESIZE_CASE[0]
  ours, theirs = (rates[(case, label)] for label, _ in RESIZES)
  ratios = [a / b for a, b in zip(ours, theirs)]
  lines.append(f'{case}: {RESIZES[0][0]} ÷ {RESIZES[1][0]} {statistics.median(ratios):.2f} '
               f'[{min(ratios):.2f}-{max(ratios):.2f}] (each round\'s pair)')
  return '\n'.join(lines)
