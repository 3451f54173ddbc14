"""Trains a model: python -m launch.train --model=cnn --dataset=mnist --workdir=DIR.

Flags pick the experiment; the config file (--config, or configs/<model>_<dataset>.py) holds
every setting, each overridable as --config.<field>=value. Re-run with the same --workdir to
resume from its latest checkpoint.

Distributed: --strategy picks the tf.distribute strategy; multi_worker_mirrored takes its cluster
from TF_CONFIG or Slurm (srun), or --local_workers=N starts N workers here.
"""

import sys

from absl import flags

from launch import common
from research.core import config as config_lib
from research.core.errors import UserError
from research.infra import local_cluster
from research.infra import processes

_CONFIG = common.define_config_flag()
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and outputs.',
                               required=True)
_MODEL = flags.DEFINE_string('model', None, 'Model name (cnn, cnn_dropout, ...); must agree '
                             'with --config when both are given.')
_DATASET = flags.DEFINE_string('dataset', None, 'tfds dataset name (mnist, fashion_mnist, ...).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'tfds data dir; default: $TFDS_DATA_DIR, '
                                'else tfds\' own default (downloads on first use).')
_STRATEGY = flags.DEFINE_enum('strategy', None, config_lib.STRATEGIES,
                              'tf.distribute strategy (default: the config\'s).')
_NUM_GPUS = flags.DEFINE_integer('num_gpus', None, 'GPUs per worker: -1 all visible, 0 none '
                                 '(train on the CPU), N the first N.', lower_bound=-1)
_NUM_CPU_DEVICES = flags.DEFINE_integer(
    'num_cpu_devices', None, 'Split the CPU into N logical devices (mirrored without GPUs); '
    '0: one device.', lower_bound=0)
_LOCAL_WORKERS = flags.DEFINE_integer(
    'local_workers', 0, 'Start N workers on this machine as one multi_worker_mirrored cluster '
    '(each with its own TF_CONFIG) and supervise them instead of training here.',
    lower_bound=0)
_MIXED_PRECISION = flags.DEFINE_enum(
    'mixed_precision', None, config_lib.PRECISIONS, 'Compute precision; auto: bfloat16 where the '
    'hardware runs it natively, else float32 (default: the config\'s, auto).')
_DETERMINISTIC = flags.DEFINE_bool('deterministic', None, 'Op determinism: bitwise-repeatable '
                                   'runs and resumes (default: the config\'s, off).')
_START_OVER = flags.DEFINE_bool('start_over', False, 'When --workdir holds a run, move it to '
                                '<workdir>.replaced-<time> and start fresh instead of resuming '
                                '(or refusing another experiment).')
_ACCEPT_CHANGES = flags.DEFINE_list(
    'accept_changes', [], 'Config fields of the experiment (seed, schedule.learning_rate, or a '
    'whole section such as schedule) that a resumed run may change, from its current step on; '
    'recorded in config_changes.json. '
    'Steps, logging and checkpoint cadence, data location and devices may change without it.')
_JIT_COMPILE = flags.DEFINE_bool('jit_compile', None, 'XLA-compile the training step '
                                 '(default: the config\'s, off).')
_PREEMPTED_EXIT_CODE = flags.DEFINE_integer(
    'preempted_exit_code', 0, 'Exit status when a signal stopped the run and it was saved. '
    'Cluster jobs (launch.submit) use 143 so that the scheduler requeues or restarts them.',
    lower_bound=0, upper_bound=255)

# Flags that set the config field of the same name when given.
_FIELD_FLAGS = (_STRATEGY, _NUM_GPUS, _NUM_CPU_DEVICES, _MIXED_PRECISION, _JIT_COMPILE,
                _DETERMINISTIC)


def config_from_flags(args=None):
  """Flag values folded into the config; a flag that contradicts the config file is an error.
  `args`: take --config and its overrides from these flags instead (the other flags are this
  command line's), e.g. one run's of a sweep."""
  names = dict(model=_MODEL.value, dataset=_DATASET.value)
  config = (common.resolved_config(_CONFIG, **names) if args is None else
            common.config_for_args(args, **names))
  if _DATA_DIR.value is not None:
    config.dataset.data_dir = _DATA_DIR.value
  for flag in _FIELD_FLAGS:
    if flag.value is not None:
      config[flag.name] = flag.value
  if _LOCAL_WORKERS.value and config.strategy != 'multi_worker_mirrored':
    raise UserError(f'--local_workers={_LOCAL_WORKERS.value} starts a multi-worker cluster: '
                    f'add --strategy=multi_worker_mirrored (the strategy is {config.strategy!r})')
  return config


def main():
  config = config_from_flags()
  config_lib.validate(config)
  if _LOCAL_WORKERS.value:
    # The workers parse the same flags (TF_CONFIG tells each its place); this process only
    # supervises them.
    return local_cluster.run_local_workers(sys.argv[1:], _LOCAL_WORKERS.value,
                                           lost_seconds=config.worker_lost_seconds)
  # TensorFlow loads only now: a bad config is one line in a fraction of a second, and the
  # --local_workers supervisor above never loads it (each worker does).
  from research.core import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  from research.train import trainer  # pylint: disable=g-import-not-at-top
  try:
    results = trainer.train_and_evaluate(config, _WORKDIR.value, start_over=_START_OVER.value,
                                         accept=_ACCEPT_CHANGES.value)
  except strategy_lib.WorkerLostError as e:
    # A distinct status: schedulers restart the job (a lost node) rather than fail it (a bug).
    print(f'error: {e}', file=sys.stderr, flush=True)
    return processes.LOST_WORKER_EXIT_CODE
  # Every worker prints its own: equal digests show the workers' weights stayed in sync.
  print(f'weights digest {results["weights_digest"]}')
  if results['preempted']:  # a requeued job with the same command resumes
    print(f'stopped by {results["preempted"]} at step {results["step"]}, saved: re-run the same '
          'command to resume')
    return _PREEMPTED_EXIT_CODE.value
  print(f'test accuracy {results["test_accuracy"]:.4f} (top-5 '
        f'{results["test_top5_accuracy"]:.4f}, loss {results["test_loss"]:.4f}) after '
        f'{results["step"]} steps, {results["train_seconds"]:.0f}s of training')
  return 0


if __name__ == '__main__':
  common.run(main)
