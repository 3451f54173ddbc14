"""The core every part of the library stands on: the experiment config and its checks, the
workdir's layout, checkpoints, the distribution strategy, atomic outputs, the pictures written
beside them (training and evaluation summaries, the table across runs), and the one-line
UserError."""
