"""Running processes: the workdir's lock, preemption signals, process identity, local
multi-worker clusters, a quiet TensorFlow start, and argv handling for the entry points."""
