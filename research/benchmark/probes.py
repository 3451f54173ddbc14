"""Ceiling probes: the GFLOP/s this machine reaches on a large matmul and a 3×3 conv, measured in
the same run as the models so that a model's achieved GFLOP/s reads as a fraction of them; the
conv is also timed with its two gradients, to show what TF's backward kernels cost, and in
bfloat16, the ceiling of the models trained in mixed_bfloat16.
"""

import statistics

import tensorflow as tf

from research.benchmark import timing

# The probe each precision's models are set against: a model's conv-heavy training step is
# bounded by the conv kernels of the dtype it computes in, not by float32's.
CONV_CEILING = {'float32': 'conv3x3', 'mixed_bfloat16': 'conv3x3_bf16'}
CONV_SHAPE = (32, 56, 56, 128)  # batch, height, width, channels in (= channels out)
MATMUL_SIZE = 4096
# --smoke: the same probes at sizes that take milliseconds (their figures mean nothing).
SMOKE_CONV_SHAPE = (2, 14, 14, 16)
SMOKE_MATMUL_SIZE = 256


def labels(matmul_size=MATMUL_SIZE, conv_shape=CONV_SHAPE):
  """Probe key -> its row label in the table, which states the sizes."""
  batch, height, width, channels = conv_shape
  return {'matmul': f'matmul {matmul_size}×{matmul_size} float32',
          'conv3x3': f'conv 3×3, {batch}×{height}×{width}×{channels} → {channels}, float32',
          'conv3x3_train': 'the same conv, forward + both gradients',
          'conv3x3_bf16': 'the same conv, forward, bfloat16'}


# Probe -> the ratio its rate ÷ the float32 forward conv's (which brackets it) is reported as.
RELATIVE = {'conv3x3_train': 'over_forward', 'conv3x3_bf16': 'over_float32'}


def _probe(key, fn, args, flops_per_iteration, iterations, bracket=True):
  """A measurement whose 'images' are FLOPs: its rate, divided by 1e9, is GFLOP/s. It keeps
  `args` and its compiled `loop`, so that what it computes can be inspected."""

  @tf.function
  def loop(n):
    # Every iteration feeds the returned sum, so none can be pruned; summed in float32 so that
    # a bfloat16 output's sum neither rounds away nor changes the accumulator's dtype.
    acc = tf.zeros([])
    for _ in tf.range(n):
      for out in tf.nest.flatten(fn(*args)):
        acc += tf.cast(tf.reduce_sum(out[..., :1]), tf.float32)
    return acc

  def call(n):
    loop(tf.constant(n)).numpy()
    return n * flops_per_iteration / 1e9, None

  m = timing.Measurement(key, call, iterations, 1, unit='GFLOP/s', bracket=bracket)
  m.args, m.loop = args, loop
  return m


def conv(x, w):
  """The probes' 3×3 conv, stride 1, same padding."""
  return tf.nn.conv2d(x, w, 1, 'SAME')


def conv_train(x, w):
  """A 3×3 conv as a training step runs it: forward, then TF's gradients of its input and of its
  filter from the output's gradient (here the output itself, so both wait for the forward)."""
  with tf.GradientTape() as tape:
    tape.watch([x, w])
    y = tf.nn.conv2d(x, w, 1, 'SAME')
  return tape.gradient(y, [x, w], output_gradients=y)


def conv_operands(dtype=tf.float32, shape=CONV_SHAPE):
  """The probes' conv input and 3×3 filter, in `dtype`: the same values rounded in bfloat16."""
  channels = shape[-1]
  x = tf.random.stateless_normal(shape, seed=[0, 3])
  w = tf.random.stateless_normal([3, 3, channels, channels], seed=[0, 4]) * 0.03
  return tf.cast(x, dtype), tf.cast(w, dtype)


def probes(quick, smoke=False):
  """The probes' Measurements, the float32 forward conv (their reference) second; `smoke`: at
  the smoke sizes."""
  n = SMOKE_MATMUL_SIZE if smoke else MATMUL_SIZE
  shape = SMOKE_CONV_SHAPE if smoke else CONV_SHAPE
  a = tf.random.stateless_normal([n, n], seed=[0, 1])
  b = tf.random.stateless_normal([n, n], seed=[0, 2])
  batch, height, width, channels = shape
  conv_flops = 2 * batch * height * width * channels * channels * 9
  return [
      _probe('matmul', tf.matmul, (a, b), 2 * n ** 3, 1 if quick else 3, bracket=False),
      _probe('conv3x3', conv, conv_operands(shape=shape), conv_flops, 2 if quick else 8),
      _probe('conv3x3_train', conv_train, conv_operands(shape=shape), 3 * conv_flops,
             1 if quick else 3),
      _probe('conv3x3_bf16', conv, conv_operands(tf.bfloat16, shape), conv_flops,
             2 if quick else 8),
  ]


def ceilings(quick, repeats, smoke=False):
  """GFLOP/s of a 4096² float32 matmul and of a 3×3 conv (batch 32, 56×56×128 → 128) in float32
  and in bfloat16; the float32 conv also as training runs it (forward + both gradients, 3× the
  FLOPs), and the training and bfloat16 rates ÷ the float32 forward's.

  The ceilings are the matmul and the forward convs. The training conv is not one: its rate
  depends on the shapes far more than the forward's (AlexNet-227's convs train faster than this
  one), but the ratio shows how much of the gap between a model's training GFLOP/s and the
  forward-conv ceiling comes from TF's backward conv kernels, which no model code changes.
  `smoke`: the same at the smoke sizes.
  """
  measured = probes(quick, smoke)
  forward = measured[1]
  timing.interleave('ceilings', measured, repeats, reference=forward)
  names = labels(SMOKE_MATMUL_SIZE, SMOKE_CONV_SHAPE) if smoke else labels()
  results = {p.key: {'label': names[p.key], 'gflops': timing.stats(p.rates),
                     'cpu_util': timing.stats(p.cpu_util),
                     'dtype': p.args[0].dtype.name} for p in measured}
  for p in measured:
    if p.key in RELATIVE:
      results[p.key].update({'reference_around': list(p.around),
                             RELATIVE[p.key]: statistics.median(p.relative())})
  return results
