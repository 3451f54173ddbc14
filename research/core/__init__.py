"""The core every part of the library stands on: the experiment config and its checks, the
workdir's layout, checkpoints, the distribution strategy, atomic outputs, and the one-line
UserError."""
