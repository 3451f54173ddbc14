"""The whole benchmark run and its printed report: the ceiling probes, then each model in turn,
in float32 and in mixed_bfloat16; the results as JSON and as a table of median [min–max] over
rounds.
"""

import os
import platform
import time

from absl import logging
import keras
import tensorflow as tf

from research.benchmark import models
from research.benchmark import probes
from research.core import outputs
from research.core.errors import UserError


def run(names=None, quick=False, repeats=None, json_path=None, ceilings_only=False,
        smoke=False):
  """Benchmarks `names` (MODELS keys), or only the ceiling probes; writes JSON to `json_path` if
  given; returns the table. `smoke`: a quick run at the smallest sizes, which checks that every
  measurement runs and the report is whole; its figures mean nothing."""
  quick = quick or smoke
  names = [] if ceilings_only else list(
      names or (models.QUICK_MODELS if quick else models.DEFAULT_MODELS))
  unknown = [n for n in names if n not in models.MODELS]
  if unknown:
    raise UserError(f'unknown model(s) {", ".join(unknown)} for --models: choose from '
                    f'{", ".join(models.MODELS)}')
  repeats = repeats or (2 if quick else 3)
  if repeats < 1:
    raise UserError(f'--repeats={repeats}: need at least 1')
  if json_path:
    folder = os.path.dirname(os.path.abspath(json_path))
    if not os.path.isdir(folder):
      raise UserError(f'--json={json_path}: directory {folder} does not exist; create it first')

  start = time.time()
  results = {
      'quick': quick, 'smoke': smoke, 'repeats': repeats, 'models_requested': names,
      'precisions': list(models.PRECISIONS),
      'host': {'cpu_count': os.cpu_count(), 'cores_usable': len(os.sched_getaffinity(0)),
               'load_average_start': os.getloadavg()[0], 'platform': platform.platform(),
               'tensorflow': tf.__version__, 'keras': keras.__version__},
      'method': ('one process; every variant warmed up (traced), then timed in turns over '
                 'rounds, each variant in a ratio between two samples of the reference '
                 '(custom_synthetic in float32, also for the mixed_bfloat16 variants; the '
                 'float32 forward conv for the probes); K steps inside one '
                 'tf.function call per timing; medians and min–max over rounds; a ratio per '
                 'round against the mean of the reference samples around each variant'),
  }
  logging.info('Benchmark of %s, %d round(s)%s.', ', '.join(names) or 'the ceilings', repeats,
               ' (smoke)' if smoke else ' (quick)' if quick else '')
  results['ceilings'] = probes.ceilings(quick, repeats, smoke)
  real = models.RealData(models.SMOKE_EXAMPLES if smoke else None)
  results['models'] = {
      name: models.benchmark_model(name, quick, repeats, real, results['ceilings'], smoke)
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
      relative = (f' = {probe["over_float32"]:.2f} × the float32 forward rate'
                  if 'over_float32' in probe else '')
      lines.append(f'ceiling  {probe["label"]:<40} {spread(probe["gflops"]):>28} GFLOP/s'
                   + relative)
  for name, m in results['models'].items():
    lines += _model_lines(name, m)
  lines += ['', f'{results["wall_seconds"]:.0f}s in all; load average '
            f'{results["host"]["load_average_end"]:.1f} at the end.']
  return '\n'.join(line.rstrip() for line in lines)


def _model_lines(name, m):
  """One model's section of the table: its measurements, ratios, compute and memory."""
  lines = ['', f'{name}: {m["config"]} ({m["model"]}, {m["params"]:,} params), batch '
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
      bar = ''
      if 'meets_bar' in row:
        bar = '  custom ≥ fit: ' + ('met' if row['meets_bar'] else 'NOT MET')
      lines.append(f'  {row["label"]:<52}{spread(row, lambda v: f"{v:.3f}"):>26}{bar}')
  for key, o in m['fit_step_overhead'].items():
    lines.append(f'  {key}: {spread(o["extra_ms_per_step"], lambda v: f"{v:+.2f}")} ms per '
                 f'step beyond the custom loop\'s {o["custom_ms_per_step"]["median"]:.1f} ms')
  c = m['compute']['float32']
  lines.append(f'  compute: {m["train_gflop_per_image"]:.4g} GFLOP per training image '
               f'(3 × 2 × {m["forward_macs_per_image"]:,} forward MACs); (a) achieves '
               f'{c["achieved_gflops"]:.3g} GFLOP/s = {c["fraction_of_matmul"]:.1%} of the '
               f'matmul, {c["fraction_of_conv3x3"]:.1%} of the conv ceiling, '
               f'{c["fraction_of_conv3x3_train"]:.1%} of the conv with its gradients')
  c16 = m['compute'].get('mixed_bfloat16')
  if c16:
    lines.append(f'  compute in mixed_bfloat16: (a16) achieves {c16["achieved_gflops"]:.3g} '
                 f'GFLOP/s = {c16["fraction_of_ceiling"]:.1%} of the bfloat16 conv ceiling')
  else:
    lines.append('  compute in mixed_bfloat16: (a16) not measured')
  mem = m['memory']
  if 'VmHWM' in mem['method']:
    lines.append(f'  memory: peak RSS {mem["peak_rss_mb"]:,.0f} MB while this model ran (RSS '
                 f'{mem["rss_start_mb"]:,.0f} MB at its start); process peak '
                 f'{mem["process_peak_rss_mb"]:,.0f} MB')
  else:
    lines.append(f'  memory: process peak RSS {mem["process_peak_rss_mb"]:,.0f} MB after this '
                 'model (not per model)')
  return lines
