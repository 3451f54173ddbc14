"""Shared test setup: quiet TensorFlow, and helpers for mock and real data."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# Before any test module imports TensorFlow: the package turns oneDNN on (1.6x here).
import research  # noqa: E402,F401


def pytest_collection_modifyitems(config, items):
  """tf.test.TestCase has a `test_session` helper that pytest collects and skips: drop it."""
  del config
  items[:] = [item for item in items if item.name != 'test_session']


def pytest_configure(config):
  """absl's test helpers (create_tempdir, ...) read flags; pytest never parses them."""
  del config
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
