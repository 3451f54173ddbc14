"""Training-throughput benchmark: where a step's time goes, measured in one process.

For each model (a config file, e.g. configs/alexnet_mnist.py) it times the real custom-loop train
function (research.train.steps.make_train_fn) fed from synthetic in-memory uint8 batches, from the
real tfds pipeline, and at the model's own input size (so the on-device pad-resize is left out);
Keras `fit` on the same model and data (and the milliseconds per step it spends beyond the custom
loop, which bound what a loop of our own can gain over it); the custom loop under the one_device
and single-replica mirrored strategies; and the input pipeline alone. Analytic FLOP counts turn
images/s into GFLOP/s, set against a matmul and a 3×3 conv ceiling measured in the same run; the
conv is also timed with its two gradients, as training runs it, whose rate ÷ the forward's shows
what TF's backward kernels cost. Precision is a dimension: the custom loop and fit also run in
mixed_bfloat16 in the same rounds, with their bfloat16 ÷ float32 ratio, the custom ≥ fit bar in
each precision, and GFLOP/s against a bfloat16 conv ceiling.

Every variant of a model is warmed up (traced) first, then the variants take turns, round after
round, each variant that enters a ratio bracketed by the reference variant (R A R B R ...: the
machine's speed drifts by ±20% within minutes, and only a sample's neighbours in time share its
conditions); the report gives the median and the min–max over rounds, and a ratio is taken per
round, each variant against the mean of the two reference samples around it, before its median.
Each timed call runs K steps inside ONE tf.function call: wall clock around it measures the
compiled loop, not Python.

The modules: models, the benchmarked configs and every measurement of one model; timing, a
measurement, the bracketed rounds, their ratios and peak RSS; flops, the analytic FLOP count;
probes, the matmul and conv ceilings (float32 and bfloat16); report, the whole run, its JSON and
its table. streaming benchmarks the streaming input path instead (JPEG files, decoded and cropped
on the host); augment, the on-device augmentation alone; scale, a rehearsal of an image folder
at ImageNet's shape. launch.benchmark calls run, or streaming.report with --streaming,
augment.report with --augment, scale.report with --scale.
"""

from research.benchmark import augment
from research.benchmark import scale
from research.benchmark import streaming
from research.benchmark.models import DEFAULT_MODELS
from research.benchmark.models import MODELS
from research.benchmark.models import QUICK_MODELS
from research.benchmark.report import run

__all__ = ['augment', 'DEFAULT_MODELS', 'MODELS', 'QUICK_MODELS', 'run', 'scale', 'streaming']
