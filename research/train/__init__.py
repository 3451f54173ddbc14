"""Training: optimizers and schedules, the custom loop, checkpoints and run outputs."""
