"""Shared test setup: quiet TensorFlow, and helpers for mock and real data."""

import os

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def _private_cache():
  """A cache dir of the test run's own (image folder indexes go there, research/data/folder.py),
  shared by the processes the tests start and removed at exit."""
  import atexit  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  path = tempfile.mkdtemp(prefix='test-cache-')
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  return path


os.environ['XDG_CACHE_HOME'] = _private_cache()

# Before any test module imports TensorFlow: the package turns oneDNN on (1.6x here).
import research  # noqa: E402,F401


def pytest_collection_modifyitems(config, items):
  """tf.test.TestCase has a helper method named like a test, which pytest collects and skips:
  drop the items named after tf.test.TestCase's own test-like methods."""
  del config
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  helpers = {name for name in vars(tf.test.TestCase) if name.startswith('test')}
  items[:] = [item for item in items if item.name not in helpers]


def pytest_xdist_auto_num_workers(config):
  """Workers for pytest -n auto (setup.cfg, whose --dist=loadscope gives each worker whole test
  classes, so that a class's shared reference run is paid once): one more than the cores, as a
  test spends part of its time waiting for the processes it starts and the extra worker fills
  those gaps; at most 4, which keeps the runs they start (a GB or two each) in a small memory."""
  del config
  return min(len(os.sched_getaffinity(0)) + 1, 4)


def pytest_configure(config):
  """absl's test helpers (create_tempdir, ...) read flags; pytest never parses them."""
  del config
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()


@pytest.fixture(autouse=True)
def _no_op_determinism_left_behind():
  """A run with config.deterministic turns op determinism on for the whole process, and XLA
  (jit_compile) then refuses ops it has no deterministic kernel for: each test ends with it off
  again, so no test depends on the order the suite runs in."""
  yield
  from tensorflow.python.framework import config as tf_config  # pylint: disable=g-import-not-at-top
  if tf_config.is_op_determinism_enabled():
    tf_config.disable_op_determinism()
