"""The benchmark: its analytic FLOP count against hand arithmetic and the traced graph, its
precisions (the bfloat16 probe's dtypes, each precision's ceiling and ratios), and a --quick run
from the command line at the --smoke sizes (table and JSON complete and well formed; no speed
thresholds)."""

import json
import math
import os
import re
import statistics
import time

from absl.testing import parameterized
import keras
import tensorflow as tf

from research import benchmark
from research import models
from research.models import blocks
from research.models.alexnet import AlexNet
from research.models.cnn import SmallCNN
from research.models.vgg import VGG
from tests import helpers


def _graph_macs(model, input_shape):
  """Multiply-adds of the Conv2D and MatMul ops TensorFlow actually runs for one image: an
  independent count to hold the layer walk against."""
  forward = tf.function(lambda x: model(x, training=False))
  graph = forward.get_concrete_function(tf.TensorSpec((1, *input_shape))).graph
  total = 0
  for op in graph.get_operations():
    if op.type == 'Conv2D':
      kh, kw, cin, _ = op.inputs[1].shape
      total += math.prod(op.outputs[0].shape[1:]) * kh * kw * cin
    elif op.type == 'MatMul':
      (m, k), (_, n) = op.inputs[0].shape, op.inputs[1].shape
      total += m * k * n
  return total


class _Depthwise(blocks.LayerStack):

  def __init__(self):
    super().__init__()
    self.stack = (keras.layers.DepthwiseConv2D(3), keras.layers.Flatten(), blocks.Logits(10))


class FlopCountTest(tf.test.TestCase, parameterized.TestCase):

  def test_small_cnn_by_hand(self):
    model = SmallCNN(num_classes=10, filters=(4,), dense_units=(8,))
    rows = benchmark.flops.forward_macs(model, (8, 8, 1))
    # conv 3×3 valid: 6×6 positions × 4 filters × 9 taps × 1 channel; pool → 3×3×4 = 36 inputs
    # to fc1 (8 units); logits 8 → 10.
    self.assertEqual(rows, [('conv1', 6 * 6 * 4 * 9 * 1), ('pool1', 0), ('flatten', 0),
                            ('fc1', 36 * 8), ('logits', 8 * 10)])
    self.assertEqual(sum(m for _, m in rows), 1664)
    self.assertEqual(benchmark.flops.train_flops_per_image(1664), 3 * 2 * 1664)

  def test_vgg_block_by_hand(self):
    # Two `same` convs at 4×4 (1 → 2, then 2 → 2 channels), pool → 2×2×2, fc 8 → 4 → 4, logits.
    model = VGG(num_classes=10, conv_arch=((2, 2),), dense_units=4, dropout=0.0)
    rows = dict(benchmark.flops.forward_macs(model, (4, 4, 1)))
    self.assertEqual(rows['block1'], 4 * 4 * 2 * 9 * 1 + 4 * 4 * 2 * 9 * 2)
    self.assertEqual((rows['fc1'], rows['fc2'], rows['logits']), (8 * 4, 4 * 4, 4 * 10))

  def test_strided_alexnet_by_hand(self):
    # Widths ÷ 16: 6, 16, 24, 24, 16 channels, 256-unit FCs. Stages at 67: 15 → 7 → 3 → 1.
    model = AlexNet(num_classes=10, width_divisor=16)
    rows = dict(benchmark.flops.forward_macs(model, (67, 67, 1)))
    expected = {'conv1': 15 * 15 * 6 * 11 * 11 * 1, 'conv2': 7 * 7 * 16 * 5 * 5 * 6,
                'conv3': 3 * 3 * 24 * 9 * 16, 'conv4': 3 * 3 * 24 * 9 * 24,
                'conv5': 3 * 3 * 16 * 9 * 24, 'fc1': 16 * 256, 'fc2': 256 * 256,
                'logits': 256 * 10}
    self.assertEqual({k: v for k, v in rows.items() if v}, expected)

  @parameterized.parameters('cnn_mnist.py', 'alexnet_mnist.py:tiny', 'vgg16_mnist.py:cpu')
  def test_matches_the_traced_graph(self, spec):
    config = benchmark.models.load_config(spec)
    model, _ = models.build_model(config.model, 10, benchmark.models.SOURCE_SHAPE)
    shape = models.input_shape(config.model, benchmark.models.SOURCE_SHAPE)
    self.assertEqual(sum(m for _, m in benchmark.flops.forward_macs(model, shape)),
                     _graph_macs(model, shape))

  def test_refuses_a_layer_it_cannot_count(self):
    with self.assertRaisesRegex(ValueError, 'cannot count the multiply-adds'):
      benchmark.flops.forward_macs(_Depthwise(), (8, 8, 1))


def _conv_dtypes(measurement):
  """The dtypes of the Conv2D ops a probe's compiled loop runs (its while body included)."""
  concrete = measurement.loop.get_concrete_function(tf.TensorSpec([], tf.int32))
  graph = concrete.graph.as_graph_def()
  nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
  return [tf.dtypes.as_dtype(n.attr['T'].type) for n in nodes if n.op == 'Conv2D']


class PrecisionTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(('conv3x3', tf.float32), ('conv3x3_bf16', tf.bfloat16))
  def test_conv_probe_computes_in_its_dtype(self, key, dtype):
    probe = {m.key: m for m in benchmark.probes.probes(quick=True)}[key]
    x, w = probe.args
    self.assertEqual((x.dtype, w.dtype), (dtype, dtype))
    # The same conv shapes in both precisions, so their rates compare.
    self.assertEqual((x.shape, w.shape), (benchmark.probes.CONV_SHAPE, (3, 3, 128, 128)))
    self.assertEqual(benchmark.probes.conv(x, w).dtype, dtype)
    self.assertEqual(_conv_dtypes(probe), [dtype])

  def test_probe_labels_state_their_sizes(self):
    self.assertEqual(benchmark.probes.labels(), {
        'matmul': 'matmul 4096×4096 float32', 'conv3x3': 'conv 3×3, 32×56×56×128 → 128, float32',
        'conv3x3_train': 'the same conv, forward + both gradients',
        'conv3x3_bf16': 'the same conv, forward, bfloat16'})

  @parameterized.parameters(('float32', 'conv3x3', 0.1), ('mixed_bfloat16', 'conv3x3_bf16', 0.15))
  def test_fraction_uses_the_ceiling_of_its_precision(self, name, ceiling, fraction):
    ceilings = {key: {'gflops': {'median': rate}} for key, rate in (
        ('matmul', 100.0), ('conv3x3', 200.0), ('conv3x3_train', 150.0),
        ('conv3x3_bf16', 400.0))}
    # 2 GFLOP per image: float32 at 10 img/s achieves 20 GFLOP/s, 0.1 of its conv's 200;
    # bfloat16 at 30 img/s 60 GFLOP/s, 0.15 of its conv's 400 (0.3 of the float32 one).
    got = benchmark.models.compute({'float32': 10.0, 'mixed_bfloat16': 30.0}, 2.0,
                                   ceilings)[name]
    self.assertEqual(got['ceiling'], ceiling)
    self.assertAlmostEqual(got['fraction_of_ceiling'], fraction)
    self.assertAlmostEqual(got['fraction_of_ceiling'] * ceilings[ceiling]['gflops']['median'],
                           got['achieved_gflops'])

  @parameterized.parameters((1.5, 1.2, 1.25, True), (1.5, 2.0, 0.75, False))
  def test_bf16_ratios_and_the_fit_bar(self, bf16_speed, fit_speed, custom_over_fit, meets):
    # bfloat16 variants are bracketed by the float32 custom loop, under the same linear drift
    # as in RealDataTest: each ratio must come out as the quotient of the speeds.
    calls = []
    measured = {key: _DriftingMeasurement(key, speed, calls) for key, speed in (
        ('custom_synthetic', 1.0), ('custom_synthetic_bf16', bf16_speed),
        ('fit_bf16', fit_speed))}
    benchmark.timing.interleave('test', list(measured.values()), 1,
                                reference=measured['custom_synthetic'])
    ratio = benchmark.models.ratio_row(measured, 'bf16_over_float32', 'custom_synthetic')
    self.assertAlmostEqual(ratio['median'], bf16_speed)
    bf16 = measured['custom_synthetic_bf16']
    self.assertEqual(ratio['samples'], [r / a for r, a in zip(bf16.rates, bf16.around)])
    bar = benchmark.models.ratio_row(measured, 'custom_over_fit_bf16', 'custom_synthetic')
    self.assertAlmostEqual(bar['median'], custom_over_fit)
    self.assertIs(bar['meets_bar'], meets)
    self.assertNotIn('meets_bar', ratio)
    self.assertEqual([benchmark.models.precision_of(k) for k in measured],
                     ['float32', 'mixed_bfloat16', 'mixed_bfloat16'])


class _DriftingMeasurement(benchmark.timing.Measurement):
  """A variant of a given speed on a machine that slows by 10% per call (warm-ups included);
  its rate comes from the call count, not a clock."""

  def __init__(self, key, speed, calls, bracket=True):
    def call(n):
      calls.append(key)
      return speed * (1 - 0.1 * len(calls)), None
    super().__init__(key, call, 1, 1, bracket=bracket)

  def time_once(self):
    self.rates.append(self.call(1)[0])
    self.cpu_util.append(2.0)
    return 1.0


class RealDataTest(tf.test.TestCase):

  def test_training_conv_probe_returns_both_gradients(self):
    # The probe claims 3× a forward conv's FLOPs: it must return (so run) the input and the
    # filter gradients training needs, from dy = the forward's output.
    x = tf.random.stateless_normal([2, 7, 7, 3], seed=[1, 2])
    w = tf.random.stateless_normal([3, 3, 3, 4], seed=[3, 4])
    y = tf.nn.conv2d(x, w, 1, 'SAME')
    dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=w, out_backprop=y,
                                        strides=[1, 1, 1, 1], padding='SAME')
    dw = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(w), out_backprop=y,
                                         strides=[1, 1, 1, 1], padding='SAME')
    got = benchmark.probes.conv_train(x, w)
    self.assertLen(got, 2)
    self.assertAllClose(got[0], dx, rtol=1e-5, atol=1e-5)
    self.assertAllClose(got[1], dw, rtol=1e-5, atol=1e-5)

  def test_time_after_the_end_is_reported_not_counted(self):
    # fit() can return seconds after its last step; that wait must not count as step time.
    def call(n):
      time.sleep(0.2)
      end = (time.perf_counter(), time.process_time())
      time.sleep(0.3)
      return 100.0, None, end

    m = benchmark.timing.Measurement('fit', call, 1, 1)
    m.time_once()
    self.assertBetween(m.rates[0], 100 / 0.3, 100 / 0.2)
    self.assertBetween(m.after_end[0], 0.3, 0.45)
    self.assertIn('seconds_after_end', m.result())

  def test_bracketing_cancels_a_linear_drift(self):
    # The machine slows by 10% per call (warm-ups included). A variant as fast as the reference
    # must come out at exactly 1.0 against it (against the reference's first sample of the
    # round it would read 0.8), one twice as fast at 2.0; the unbracketed one runs first.
    calls = []
    ref, same, faster, drain = (_DriftingMeasurement('custom_synthetic', 1.0, calls),
                                _DriftingMeasurement('one_device', 1.0, calls),
                                _DriftingMeasurement('fit', 2.0, calls),
                                _DriftingMeasurement('pipeline_only', 5.0, calls, False))
    benchmark.timing.interleave('test', [ref, same, faster, drain], 1, reference=ref)
    self.assertEqual(calls[4:], ['pipeline_only', 'custom_synthetic', 'one_device',
                                 'custom_synthetic', 'fit', 'custom_synthetic'])
    self.assertLen(ref.rates, 3)
    self.assertEqual(drain.around, [])
    measured = {m.key: m for m in (ref, same, faster)}
    for key, expected in (('one_device_over_default', 1.0), ('custom_over_fit', 0.5)):
      row = benchmark.models.ratio_row(measured, key, 'custom_synthetic')
      self.assertAlmostEqual(row['median'], expected)
    # fit at twice the custom loop's rate spends half a custom step less per step, measured
    # against the same bracketing samples (rates in images/s; 10 images per step here).
    overhead = benchmark.timing.step_overhead(measured, 'fit', batch=10)
    custom_ms = overhead['custom_ms_per_step']['median']
    self.assertAlmostEqual(custom_ms, 1e4 / faster.around[0])
    self.assertAlmostEqual(overhead['extra_ms_per_step']['median'], -custom_ms / 2)
    self.assertIsNone(benchmark.timing.step_overhead(measured, 'fit_spe25', batch=10))

  def test_missing_data_is_a_reason_not_a_crash(self):
    empty = self.create_tempdir().full_path
    config = benchmark.models.load_config('cnn_mnist.py')
    old = os.environ.get('TFDS_DATA_DIR')
    os.environ['TFDS_DATA_DIR'] = empty
    try:
      split, reason = benchmark.models.RealData().get(config.dataset)
    finally:
      if old is None:
        del os.environ['TFDS_DATA_DIR']
      else:
        os.environ['TFDS_DATA_DIR'] = old
    self.assertIsNone(split)
    self.assertStartsWith(reason, 'no real data:')
    self.assertIn('not prepared', reason)


def _numbers(tree, path=''):
  """(path, value) of every number in a JSON tree."""
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from _numbers(value, f'{path}.{key}')
  elif isinstance(tree, list):
    for i, value in enumerate(tree):
      yield from _numbers(value, f'{path}[{i}]')
  elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
    yield path, tree


class QuickRunTest(tf.test.TestCase):

  def test_quick_run_writes_table_and_json(self):
    # --smoke: the --quick run's every measurement, ratio and row, at sizes that take seconds.
    real = helpers.real_data_dir()
    # Without prepared MNIST, point tfds at an empty dir: the real-data rows must then be
    # skipped with a reason, whatever tfds' default dir happens to hold.
    env = {'TFDS_DATA_DIR': real or self.create_tempdir().full_path}
    path = os.path.join(self.create_tempdir().full_path, 'bench.json')
    # One round: each ratio is still bracketed by its reference; more rounds add only samples.
    proc = helpers.run_cli('launch.benchmark', '--smoke', '--repeats=1', f'--json={path}', env=env,
                           timeout=600)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(path) as f:
      results = json.load(f)
    self.check_run(results, proc.stdout, real)

  def check_run(self, results, table, real):
    """The JSON of a --quick run and its printed table, complete and consistent."""
    rounds = results['repeats']
    self.assertEqual(rounds, 1)
    self.assertTrue(results['quick'])
    self.assertTrue(results['smoke'])
    self.assertEqual(results['precisions'], ['float32', 'mixed_bfloat16'])
    self.assertCountEqual(results['ceilings'],
                          ['matmul', 'conv3x3', 'conv3x3_train', 'conv3x3_bf16'])
    self.assertEqual({k: p['dtype'] for k, p in results['ceilings'].items()},
                     {'matmul': 'float32', 'conv3x3': 'float32', 'conv3x3_train': 'float32',
                      'conv3x3_bf16': 'bfloat16'})
    # The training and the bfloat16 convs each ran between two float32 forward samples each
    # round (3 forward samples a round; the matmul is in no ratio), each ratio against the
    # mean of the two around it.
    self.assertLen(results['ceilings']['conv3x3']['gflops']['samples'], 3 * rounds)
    for key, field in (('conv3x3_train', 'over_forward'), ('conv3x3_bf16', 'over_float32')):
      probe = results['ceilings'][key]
      self.assertAlmostEqual(probe[field], statistics.median(
          t / f for t, f in zip(probe['gflops']['samples'], probe['reference_around'])), msg=key)
    self.assertCountEqual(results['models'], benchmark.QUICK_MODELS)
    for path_, value in _numbers(results):
      self.assertTrue(math.isfinite(value), path_)
      if not any(k in path_ for k in ('load_average', 'final_loss', 'extra_ms_per_step')):
        self.assertGreater(value, 0, path_)

    # The custom loop and fit in both precisions; --quick leaves fit(spe=25) to float32, and
    # the resized model to its float32 resize ratios.
    always = {'custom_synthetic', 'fit', 'fit_spe25', 'one_device', 'mirrored',
              'custom_synthetic_bf16', 'fit_bf16'}
    real_rows = {'custom_pipeline', 'pipeline_only'}
    resize = {'custom_input_size', 'custom_synthetic_no_augment', 'custom_input_size_no_augment'}
    expected_measured = {'cnn': always | (real_rows if real else set()),
                         'alexnet_tiny': {'custom_synthetic'} | resize}
    for name, model in results['models'].items():
      for key in ('config', 'model', 'batch_size', 'input_size', 'params',
                  'forward_macs_per_image', 'train_gflop_per_image', 'compute', 'memory'):
        self.assertIn(key, model, name)
      self.assertEqual(model['batch_size'], benchmark.models.SMOKE_BATCH)
      # Each precision's achieved GFLOP/s is its own custom loop's rate, as a fraction of the
      # conv ceiling of the same precision; float32 also of the float32-only probes.
      rows = model['measurements']
      computed = [p for p in ('float32', 'mixed_bfloat16') if p in model['compute']]
      self.assertEqual(computed, ['float32', 'mixed_bfloat16'] if name == 'cnn' else ['float32'])
      for precision, key, ceiling in (('float32', 'custom_synthetic', 'conv3x3'),
                                      ('mixed_bfloat16', 'custom_synthetic_bf16',
                                       'conv3x3_bf16'))[:len(computed)]:
        compute = model['compute'][precision]
        self.assertEqual(rows[key]['precision'], precision)
        self.assertAlmostEqual(compute['achieved_gflops'],
                               rows[key]['images_per_sec']['median']
                               * model['train_gflop_per_image'], places=6)
        self.assertEqual(compute['ceiling'], ceiling)
        self.assertAlmostEqual(
            compute['fraction_of_ceiling'] * results['ceilings'][ceiling]['gflops']['median'],
            compute['achieved_gflops'], places=6, msg=f'{name} {precision}')
      for probe in ('matmul', 'conv3x3', 'conv3x3_train'):
        self.assertAlmostEqual(
            model['compute']['float32'][f'fraction_of_{probe}']
            * results['ceilings'][probe]['gflops']['median'],
            model['compute']['float32']['achieved_gflops'], places=6, msg=f'{name} {probe}')
      for key, row in model['ratios'].items():
        self.assertEqual('meets_bar' in row,
                         key in benchmark.models.FIT_BARS and 'skipped' not in row, key)
        if 'meets_bar' in row:
          self.assertEqual(row['meets_bar'], row['median'] >= 1.0)
      for key in ('rss_start_mb', 'peak_rss_mb', 'process_peak_rss_mb', 'method'):
        self.assertIn(key, model['memory'])
      self.assertCountEqual(model['measurements'], benchmark.models.MEASUREMENTS)
      self.assertCountEqual(model['ratios'], benchmark.models.RATIOS)
      measured = {k for k, row in model['measurements'].items() if 'skipped' not in row}
      self.assertEqual(measured, expected_measured[name])
      for key, row in model['measurements'].items():
        self.assertEqual(row['precision'],
                         'mixed_bfloat16' if key.endswith('_bf16') else 'float32', key)
        if 'skipped' in row:
          self.assertNotEmpty(row['skipped'])
        else:
          self.assertCountEqual(row['images_per_sec'], ['median', 'min', 'max', 'samples'])
          # The reference runs before and after each of the variants in a ratio, per round.
          in_ratio = measured - {'custom_synthetic', 'pipeline_only'}
          self.assertLen(row['images_per_sec']['samples'],
                         rounds * (1 + len(in_ratio)) if key == 'custom_synthetic' else rounds)
          self.assertEqual('reference_around' in row, key in in_ratio, (name, key))
          stats = row['images_per_sec']
          self.assertBetween(stats['median'], stats['min'], stats['max'])
      for key, row in model['ratios'].items():
        num, den, _ = benchmark.models.RATIOS[key]
        self.assertEqual('skipped' not in row, {num, den} <= measured, (name, key))
    cnn = results['models']['cnn']['measurements']
    for key in ('fit', 'fit_spe25', 'fit_bf16'):  # fit's steps end at on_train_end, the rest apart
      self.assertLen(cnn[key]['seconds_after_end']['samples'], rounds)
    self.assertNotIn('seconds_after_end', cnn['custom_synthetic'])
    # fit's extra time per step and the custom step time restate the custom ÷ fit ratio:
    # per round, ratio = 1 + extra ÷ custom step.
    overheads = results['models']['cnn']['fit_step_overhead']
    self.assertCountEqual(overheads, ['fit', 'fit_spe25'])
    self.assertEqual(results['models']['alexnet_tiny']['fit_step_overhead'], {})
    for key, ratio in (('fit', 'custom_over_fit'), ('fit_spe25', 'custom_over_fit_spe25')):
      o = overheads[key]
      for r, extra, step in zip(results['models']['cnn']['ratios'][ratio]['samples'],
                                o['extra_ms_per_step']['samples'],
                                o['custom_ms_per_step']['samples']):
        self.assertAlmostEqual(r, 1 + extra / step, places=6)
    if not real:
      self.assertStartsWith(cnn['custom_pipeline']['skipped'], 'no real data:')
    # bfloat16 ÷ float32 is, per round, the bfloat16 loop against the float32 samples around
    # it; custom ÷ fit in bfloat16 the quotient of both variants' rates relative to those.
    bf16 = cnn['custom_synthetic_bf16']
    self.assertAllClose(results['models']['cnn']['ratios']['bf16_over_float32']['samples'], [
        r / a for r, a in zip(bf16['images_per_sec']['samples'], bf16['reference_around'])])
    relative = {key: [r / a for r, a in zip(cnn[key]['images_per_sec']['samples'],
                                            cnn[key]['reference_around'])]
                for key in ('custom_synthetic_bf16', 'fit_bf16')}
    for r, custom, fit in zip(results['models']['cnn']['ratios']['custom_over_fit_bf16'][
        'samples'], relative['custom_synthetic_bf16'], relative['fit_bf16']):
      self.assertAlmostEqual(r, custom / fit, places=9)

    labels = benchmark.probes.labels(benchmark.probes.SMOKE_MATMUL_SIZE,
                                     benchmark.probes.SMOKE_CONV_SHAPE)
    self.assertEqual({k: p['label'] for k, p in results['ceilings'].items()}, labels)
    self.assertIn(f'ceiling  {labels["matmul"]}', table)
    self.assertRegex(table, r'ceiling +the same conv, forward, bfloat16 .* GFLOP/s = \d\.\d\d × '
                     'the float32 forward rate')
    # The custom ≥ fit bar, read per measured ratio against fit, in each precision.
    self.assertRegex(table, r'a/fit  custom loop vs fit\(\) .* custom ≥ fit: (met|NOT MET)')
    self.assertRegex(table, r'a16/fit  custom loop vs fit\(\), mixed_bfloat16 .* custom ≥ fit: '
                     '(met|NOT MET)')
    self.assertEqual(table.count('custom ≥ fit: '), 3)  # cnn: fit, fit(spe), fit in bf16
    self.assertRegex(table, r'a16/a  mixed_bfloat16 vs float32 +\d\.\d{3} \[')
    self.assertLen(re.findall(r'compute in mixed_bfloat16: \(a16\) achieves [\d.]+ GFLOP/s = '
                              r'[\d.]+% of the bfloat16 conv ceiling', table), 1)  # the cnn
    self.assertRegex(table, r'probe +the same conv, forward \+ both gradients .* GFLOP/s = '
                     r'\d\.\d\d × the forward rate')
    for name, model in results['models'].items():
      self.assertIn(f'{name}: {model["config"]}', table)
    for label in benchmark.models.MEASUREMENTS.values():
      self.assertEqual(table.count(label), len(benchmark.QUICK_MODELS), label)
    self.assertIn('a/c  with pad-resize vs without', table)
    self.assertIn('preprocess mapped in tf.data', table)
    self.assertEqual(table.count('returned after its last step (not counted)'), 3)
    self.assertRegex(table, r'fit_spe25: [+-]\d+\.\d\d \[.*\] ms per step beyond the custom '
                     r"loop's \d+\.\d ms")
    pipeline_row = next(line for line in table.splitlines()
                        if benchmark.models.MEASUREMENTS['custom_pipeline'] in line)
    self.assertEqual('skipped: no real data' in pipeline_row, not real, pipeline_row)


class StreamingQuickRunTest(tf.test.TestCase):

  def test_quick_streaming_run_writes_table_and_json(self):
    path = os.path.join(self.create_tempdir().full_path, 'stream.json')
    proc = helpers.run_cli('launch.benchmark', '--streaming', '--smoke', '--repeats=1',
                           f'--json={path}', timeout=600)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(path) as f:
      result = json.load(f)
    self.assertCountEqual(result['measurements'], benchmark.streaming.LABELS)
    for key, row in result['measurements'].items():
      self.assertGreater(row['images_per_sec']['median'], 0, key)
    # each ratio is the variant against the reference samples around it, from the same rows
    for ratio, (key, _) in (('pipeline_over_bare', ('stream_pipeline_only', 0)),
                            ('stream_over_synthetic', ('custom_stream', 0))):
      row = result['measurements'][key]
      self.assertLen(row['reference_around'], 1)
      self.assertAlmostEqual(result['ratios'][ratio]['median'],
                             row['images_per_sec']['median'] / row['reference_around'][0])
    self.assertEqual(result['crop_size'], 67)
    self.assertTrue(result['smoke'])
    self.assertEqual(result['files'], benchmark.streaming.SETUPS['smoke'][1])
    for label in benchmark.streaming.LABELS.values():
      self.assertIn(label, proc.stdout)
    self.assertIn('streaming pipeline / bare decode-and-crop loop', proc.stdout)


class AugmentRunTest(tf.test.TestCase):

  def test_every_variant_of_every_case_is_timed(self):
    cases = (('digits', 'mnist', (4, 8, 8, 1)), ('colour', 'cifar10', (4, 8, 8, 3)))
    resize_case = ('digits 8² → 16²', (4, 8, 8, 1), 16)
    rates = benchmark.augment.measure(steps=1, rounds=2, cases=cases, resize_case=resize_case)
    labels = [label for label, _ in benchmark.augment.VARIANTS]
    resizes = [(resize_case[0], label) for label, _ in benchmark.augment.RESIZES]
    self.assertCountEqual(rates, [(case, label) for case, _, _ in cases for label in labels]
                          + resizes)
    for values in rates.values():
      self.assertLen(values, 2)
      self.assertTrue(all(v > 0 for v in values))


if __name__ == '__main__':
  tf.test.main()
