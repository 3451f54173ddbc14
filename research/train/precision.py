"""The precision a run computes in: bfloat16 where the hardware runs it natively, else float32.

`auto` (the default) resolves from what the strategy trains on: a TPU, a GPU of compute
capability 8.0 or newer (Ampere, Hopper) or a CPU with AMX or AVX512-BF16 instructions compute
in bfloat16 at up to several times float32's speed, with float32's range, so no loss scaling.
Everything else stays float32: float16 (older GPUs) needs loss scaling and stays an explicit
choice. Under any mixed policy the variables, the logits, the loss and the batch-norm statistics
are float32.
"""

import contextlib
import dataclasses

import keras
import tensorflow as tf

from research.core import config as config_lib
from research.core.errors import UserError

AUTO = config_lib.PRECISIONS[0]

# /proc/cpuinfo flags of CPUs with native bfloat16 matrix instructions (oneDNN uses them).
BF16_CPU_FLAGS = ('amx_bf16', 'avx512_bf16')
BF16_MIN_COMPUTE_CAPABILITY = (8, 0)


@dataclasses.dataclass(frozen=True)
class Hardware:
  """What a run computes on, as far as the precision is concerned."""
  device: str  # 'CPU', 'GPU' or 'TPU': the strategy's replicas' device type
  cpu_flags: frozenset = frozenset()
  gpu_compute_capabilities: tuple = ()  # (major, minor) per GPU the run uses


def choose(hardware):
  """(precision, reason) for `auto` on `hardware`."""
  if hardware.device == 'TPU':
    return 'mixed_bfloat16', 'TPUs compute in bfloat16 natively'
  if hardware.device == 'GPU':
    capabilities = hardware.gpu_compute_capabilities
    if capabilities and min(capabilities) >= BF16_MIN_COMPUTE_CAPABILITY:
      return 'mixed_bfloat16', (f'every GPU has compute capability '
                                f'{".".join(map(str, min(capabilities)))} or newer (≥ 8.0)')
    return 'float32', (f'GPU compute capability {_capability_text(capabilities)} is below 8.0 '
                       '(no native bfloat16; --mixed_precision=mixed_float16 is an option)')
  found = [flag for flag in BF16_CPU_FLAGS if flag in hardware.cpu_flags]
  if found:
    return 'mixed_bfloat16', f'the CPU has {" and ".join(found)}'
  return 'float32', f'the CPU has none of {", ".join(BF16_CPU_FLAGS)}'


def _capability_text(capabilities):
  return ', '.join('.'.join(map(str, c)) for c in capabilities) or 'unknown'


def cpu_flags(cpuinfo='/proc/cpuinfo'):
  """The CPU's feature flags (Linux); empty where /proc/cpuinfo does not exist."""
  try:
    with open(cpuinfo) as f:
      for line in f:
        if line.startswith('flags'):
          return frozenset(line.split(':', 1)[1].split())
  except OSError:
    pass
  return frozenset()


def detect(strategy):
  """The Hardware that `strategy`'s replicas run on."""
  try:
    devices = strategy.extended.worker_devices
  except RuntimeError:  # the default strategy: TensorFlow places ops on the first GPU, if any
    devices = [d.name for d in tf.config.list_logical_devices('GPU')[:1]] or ['/device:CPU:0']
  kinds = {tf.DeviceSpec.from_string(d).device_type for d in devices}
  device = 'TPU' if 'TPU' in kinds else 'GPU' if 'GPU' in kinds else 'CPU'
  capabilities = ()
  if device == 'GPU':
    capabilities = tuple(
        tuple(tf.config.experimental.get_device_details(gpu).get('compute_capability', (0, 0)))
        for gpu in tf.config.get_visible_devices('GPU'))
  return Hardware(device, cpu_flags(), capabilities)


def resolve(requested, hardware, saved=None):
  """(precision, reason): an explicit choice as given; `auto` keeps a resumed run's precision
  (`saved`, from its config.json) and otherwise follows `choose`."""
  if requested not in config_lib.PRECISIONS:
    raise UserError(f'unknown mixed_precision {requested!r}: use one of '
                    f'{", ".join(config_lib.PRECISIONS)}')
  if requested != AUTO:
    return requested, 'given'
  if saved not in (None, AUTO):
    return saved, 'auto: the resumed run\'s precision'
  precision, reason = choose(hardware)
  return precision, f'auto: {reason}'


@contextlib.contextmanager
def scope(name):
  """Layers built inside compute in `name` (a resolved precision), with float32 variables.

  Keras reads the global dtype policy when a layer is made, so setting it around the build is
  enough; it is restored after, so later models (evaluation, tests) are float32 again. The
  models' logits layer is float32 in every policy: softmax and the loss stay in float32.
  """
  if name not in config_lib.PRECISIONS or name == AUTO:
    raise UserError(f'unknown mixed_precision {name!r}: use one of '
                    f'{", ".join(config_lib.PRECISIONS[1:])} '
                    '(auto is resolved before the model is built)')
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(name)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)
