"""Ceiling probes: the GFLOP/s this machine reaches on a large matmul and a 3×3 conv, measured in
the same run as the models so that a model's achieved GFLOP/s reads as a fraction of them; the
conv is also timed with its two gradients, to show what TF's backward kernels cost.
"""

import statistics

import tensorflow as tf

from research.benchmark import timing


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

  return timing.Measurement(key, call, iterations, 1, unit='GFLOP/s', bracket=bracket)


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
  timing.interleave('ceilings', probes, repeats, reference=forward)
  labels = {'matmul': 'matmul 4096×4096 float32',
            'conv3x3': 'conv 3×3, 32×56×56×128 → 128, float32',
            'conv3x3_train': 'the same conv, forward + both gradients'}
  results = {p.key: {'label': labels[p.key], 'gflops': timing.stats(p.rates),
                     'cpu_util': timing.stats(p.cpu_util)} for p in probes}
  results['conv3x3_train'].update(reference_around=list(train.around),
                                  over_forward=statistics.median(train.relative()))
  return results
