"""Benchmarks training throughput: python -m launch.benchmark [--models=cnn,alexnet,vgg16,vgg16_cpu]
[--quick] [--smoke] [--json=PATH] [--repeats=N] [--ceilings_only] [--streaming] [--augment]
[--scale [--scale_files=N] [--scale_dir=DIR]] [--soak=STEPS].

Prints a table of images/s (median [min–max] over interleaved rounds) per model and measurement:
the custom loop on synthetic and on real data, with and without the on-device resize, against
Keras fit and under each strategy; the custom loop and fit again in mixed_bfloat16; the ratios
between them (bfloat16 ÷ float32, and custom ÷ fit in each precision against the bar ≥ 1);
achieved GFLOP/s against a matmul and a conv ceiling of each precision; peak RSS.
--quick (cnn, and AlexNet-tiny's resize ratio) takes a few minutes on 2 idle CPU cores; the full
run takes far longer (VGG16-224 trains at ~1–2 img/s there). --smoke is --quick at the smallest
sizes: it checks that everything runs and the report is whole, its figures meaningless.
--ceilings_only measures the probes alone (with ONEDNN_VERBOSE=1 set, the log shows which
kernels they run).
--streaming measures the streaming input path instead (research/benchmark/streaming.py).
--augment measures the on-device augmentation and pad-resize alone instead
(research/benchmark/augment.py).
--scale rehearses a folder of N images in 1000 classes at ImageNet's shape: listing, index, start,
resume, two workers, evaluation, steady input against a bare decode loop, peak RSS, and the
extrapolation to 1.28M files (research/benchmark/scale.py); --soak=STEPS trains that many
streamed steps and compares resident memory at 10% and 90% of the run.
"""

from absl import flags

from launch import common
from research import benchmark

_MODELS = flags.DEFINE_list(
    'models', None, f'Models to benchmark, from {", ".join(benchmark.MODELS)}; default '
    f'{",".join(benchmark.DEFAULT_MODELS)} ({",".join(benchmark.QUICK_MODELS)} with --quick).')
_QUICK = flags.DEFINE_bool('quick', False, 'Few steps and rounds; resized models measure only '
                           'the resize ratio.')
_SMOKE = flags.DEFINE_bool('smoke', False, 'A --quick run at the smallest sizes (batch 16, small '
                           'probes, 1,024 real examples; with --streaming 32 files, 8 steps a '
                           'call): checks that every measurement runs and the report is whole in '
                           'a fraction of the time; its figures mean nothing.')
_JSON = flags.DEFINE_string('json', None, 'Also write every number to this JSON file.')
_STREAMING = flags.DEFINE_bool('streaming', False, 'Benchmark the streaming input path instead: '
                               'pipeline alone vs a bare decode-and-crop loop, and AlexNet fed '
                               'by it vs synthetic batches.')
_AUGMENT = flags.DEFINE_bool('augment', False, 'Benchmark the on-device augmentation alone '
                             'instead: images/s of the presets with and without RandAugment '
                             'and mixup, and of the pad-resize against TF\'s.')
_SCALE = flags.DEFINE_bool('scale', False, 'Rehearse a folder of --scale_files images at '
                           'ImageNet\'s shape instead (research/benchmark/scale.py).')
_SCALE_FILES = flags.DEFINE_integer('scale_files', 100_000, 'Train images of the --scale folder '
                                    '(val/ gets 1 in 25 more).', lower_bound=1000)
_SCALE_DIR = flags.DEFINE_string('scale_dir', None, 'Where to build the --scale folder, kept and '
                                 'reused by the next run with the same --scale_files; default: a '
                                 'temporary folder, removed at the end.')
_SOAK = flags.DEFINE_integer('soak', None, 'Train this many streamed steps instead and report '
                             'resident memory at 10% and 90% of the run '
                             '(research/benchmark/scale.py soak).', lower_bound=2000)
_CEILINGS_ONLY = flags.DEFINE_bool('ceilings_only', False, 'Measure only the matmul and conv '
                                   'ceiling probes, no model.')
_REPEATS = flags.DEFINE_integer('repeats', None, 'Interleaved rounds per measurement; default 3 '
                                '(2 with --quick).', lower_bound=1)


def main():
  if _SOAK.value:
    print(benchmark.scale.soak_report(_SOAK.value, _SCALE_DIR.value, _JSON.value))
    return
  if _SCALE.value:
    print(benchmark.scale.report(_SCALE_FILES.value, _SCALE_DIR.value, _REPEATS.value,
                                 _JSON.value))
    return
  if _AUGMENT.value:
    print(benchmark.augment.report(_QUICK.value))
    return
  if _STREAMING.value:
    print(benchmark.streaming.report(_QUICK.value, _REPEATS.value, _JSON.value, _SMOKE.value))
    return
  print(benchmark.run(_MODELS.value, quick=_QUICK.value, repeats=_REPEATS.value,
                      json_path=_JSON.value, ceilings_only=_CEILINGS_ONLY.value,
                      smoke=_SMOKE.value))


if __name__ == '__main__':
  common.run(main)
