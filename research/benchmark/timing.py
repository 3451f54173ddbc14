"""Timing of benchmarked variants, bracketed so the machine's drift cancels, and peak memory.

A Measurement times one variant (K steps inside one compiled call per sample); interleave warms a
group of them up and times them in turns, each variant that enters a ratio between two samples
of a reference; ratio and step_overhead read the result per round against those samples. The
peak-RSS helpers read what the kernel reports for this process.
"""

import platform
import resource
import statistics
import time

from absl import logging


def stats(values):
  return {'median': statistics.median(values), 'min': min(values), 'max': max(values),
          'samples': list(values)}


class Measurement:
  """One benchmarked variant: `call(n)` runs n steps in one compiled call and returns
  (images processed, mean loss or None[, end]); the first call (the warm-up) traces.

  `end`, if given, is (perf_counter, process_time) when the steps' work ended: whatever the call
  did after it is timed apart, in `after_end` (see models._fit), not counted against the steps.
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
    """The variant's row of the JSON, labelled by its key: the caller that knows what the
    key means relabels it."""
    out = {'label': self.key, 'steps_per_call': self.steps,
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


def ratio(a, b, reference):
  """Stats of measurement a's rate ÷ b's, one quotient per round; `reference` is the key of the
  measurement interleave bracketed both with (either may be that reference)."""
  # Each variant against the reference samples just around it (see interleave), so neither
  # side carries the machine's drift between their turns; a ratio of two variants is the
  # quotient of their relative rates within the round.
  rel_a = None if a.key == reference else a.relative()
  rel_b = None if b.key == reference else b.relative()
  rel_a, rel_b = rel_a or [1.0] * len(rel_b), rel_b or [1.0] * len(rel_a)
  return stats([x / y for x, y in zip(rel_a, rel_b)])


def step_overhead(measured, key, batch):
  """Milliseconds per step that `key` (a fit variant) spends beyond the custom loop, per round
  against the reference samples around it; and the custom loop's own step time. Their quotient
  bounds what any loop-level change can gain over fit: custom ÷ fit = 1 + extra ÷ custom step."""
  m = measured.get(key)
  if m is None or not m.around:
    return None
  custom = [1e3 * batch / ref for ref in m.around]
  extra = [1e3 * batch / rate - c for rate, c in zip(m.rates, custom)]
  return {'extra_ms_per_step': stats(extra), 'custom_ms_per_step': stats(custom)}


# ----------------------------------------------------------------------------------------------
# Memory.

def status_mb(field):
  """A size field of /proc/self/status (VmRSS, VmHWM) in MB; None where there is none."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return None


def reset_peak_rss():
  """Resets the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux ≥ 4.0); False if not
  possible, and the per-model figure is then only the process peak so far."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def process_peak_mb():
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  peak = peak / 2 ** 20 if platform.system() == 'Darwin' else peak / 1024  # bytes vs KiB
  # Linux folds the current high-water mark into ru_maxrss only now and then: take the larger.
  return max(peak, status_mb('VmHWM') or 0.0)
