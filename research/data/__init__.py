"""Data: tfds loading into uint8 arrays, tf.data pipelines, and the on-device preprocessing."""
