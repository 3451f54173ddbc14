"""Entry points: each parses absl flags, builds a config and calls one library function."""

from research.infra import tf_startup

# First, before an entry point's imports load TensorFlow with every notice twice. Not at once:
# a bad config or a supervisor of local workers never needs it.
tf_startup.filter_tensorflow_import()
