"""What every entry point shares: the --config flag and turning UserError into one line."""

import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from research.core import config as config_lib
from research.core.errors import UserError
from research.infra import argv as argv_lib


def default_config_path(argv):
  """Without --config: configs/<model>_<dataset>.py if it exists, else configs/default.py
  parameterised by model and dataset (their presets)."""
  model = argv_lib.flag_value(argv, 'model') or 'cnn'
  dataset = argv_lib.flag_value(argv, 'dataset') or 'mnist'
  specific = os.path.join(config_lib.CONFIG_DIR, f'{model}_{dataset}.py')
  if os.path.exists(specific):
    return specific
  return os.path.join(config_lib.CONFIG_DIR, 'default.py') + f':{model},{dataset}'


# The --checkpoint help of evaluate, predict and export.
CHECKPOINT_HELP = ('Which checkpoint: best (the run\'s best by validation accuracy, else its '
                   'latest), latest, or a path (a checkpoint prefix like W/checkpoints/ckpt-350, '
                   'or a checkpoints directory).')


_CONFIG_ERRORS = (AttributeError, KeyError, TypeError, ValueError, OSError, UserError)


def _one_line(error):
  """ml_collections nests repr()s of KeyErrors and spreads messages over lines: keep the words,
  and say in the project's terms what a config file's own errors mean."""
  text = str(error)
  if 'Traceback (most recent call last)' in text:  # a config file raised: its last line says why
    text = text.strip().splitlines()[-1].split(': ', 1)[-1]
  for _ in range(3):
    text = text.replace('\\n', ' ').replace("\\'", "'").strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in '\'"':  # a repr()'s own quotes
      text = text[1:-1]
  text = ' '.join(text.split())
  if 'Did you mean' in text:
    return f'unknown config field {text.replace(" Did you mean", ": did you mean")}'
  if 'get_config() takes 0 positional arguments' in text:
    path, _, variant = (argv_lib.flag_value(sys.argv, 'config') or '').partition(':')
    return f'{path} has no variants: drop ":{variant}" from --config'
  return text


def _fail(message):
  logging.flush()
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def define_config_flag():
  """--config; ml_collections applies --config.* overrides while defining and parsing it."""
  try:
    return config_flags.DEFINE_config_file(
        'config', default_config_path(sys.argv),
        'Experiment config file (a configs/*.py); override any field with --config.<field>=v.')
  except (flags.Error,) + _CONFIG_ERRORS as e:
    _fail(f'bad --config or --config.* override: {_one_line(e)}')


def _check_tuple_overrides(config, argv):
  """ml_collections reads --config.model.filters=7 as the tuple (7,): a number given for a
  tuple field is refused rather than silently changing how many elements it has."""
  try:
    reference = config_lib.flatten(config_lib.base(config.model.name, config.dataset.name))
  except (UserError, KeyError):
    return  # an unknown model: check_types names it
  for arg in argv:
    name, eq, value = arg.partition('=')
    field = name[len('--config.'):]
    if not (eq and name.startswith('--config.')) or field not in reference:
      continue
    bare = not value.strip().startswith(('(', '[')) and ',' not in value
    if isinstance(reference[field], (tuple, list)) and bare:
      raise UserError(f'config field {field} is a tuple like {tuple(reference[field])!r}, but '
                      f'--config.{field}={value} gives no brackets: write '
                      f'--config.{field}="({value},)" for a one-element tuple')


def resolved_config(config_flag, **names):
  """The loaded config; `names` (model=..., dataset=...) are flag values that, when given, must
  agree with it: --model picks the config file only when --config is absent."""
  try:
    config = config_flag.value
    config.keys()  # a file that failed to load raises only when touched
  except _CONFIG_ERRORS as e:
    raise UserError(f'bad --config: {_one_line(e)}') from None
  _check_tuple_overrides(config, sys.argv[1:])
  for field, value in names.items():
    if value is not None and value != config[field].name:
      raise UserError(f'--{field}={value} disagrees with the config (its {field} is '
                      f'{config[field].name!r}): drop --{field} or --config')
  return config


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except (flags.Error,) + _CONFIG_ERRORS as e:
    _fail(f'{_one_line(e)} (see --helpshort)')


def _not_checkpoint_timing(record):
  """False for the INFO lines of TensorFlow's checkpoint writer (it logs through absl): every
  save logged how long its "sharding callback" took, lines that say nothing about the run."""
  return record.levelno >= std_logging.WARNING or record.filename != 'functional_saver.py'


def run(main, takes_paths=False, split_argv=None):
  """app.run(main) where bad flags or a UserError end as one line on stderr and exit status 2.

  `main` gets the positional arguments when `takes_paths`, else none are allowed.
  `split_argv(argv)` -> (flags to parse, positional arguments) replaces absl's own split.
  """
  def wrapped(argv):
    # TensorFlow gives its logger a stderr handler of its own when it is made before absl's
    # handler exists: every TensorFlow message came out twice. absl's handler alone remains.
    for handler in list(std_logging.getLogger('tensorflow').handlers):
      std_logging.getLogger('tensorflow').removeHandler(handler)
    logging.get_absl_logger().addFilter(_not_checkpoint_timing)
    try:
      if takes_paths:
        return main(argv[1:])
      if len(argv) > 1:
        raise UserError(f'unexpected arguments {argv[1:]}: settings are --flags, e.g. '
                        '--config.batch_size=256')
      return main()
    except UserError as e:
      _fail(e)

  def parse(argv):
    if split_argv is None:
      return _parse_flags(argv)
    try:
      to_parse, positional = split_argv(argv)
    except UserError as e:
      _fail(e)
    return _parse_flags(to_parse) + positional

  app.run(wrapped, flags_parser=parse)
