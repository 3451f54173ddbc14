"""Data: loading (in memory or streamed), random-access sources, tf.data pipelines, host-side
decoding for streamed images, and the on-device preprocessing."""
