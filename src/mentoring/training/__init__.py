"""Training: the loop (checkpoints, resume, determinism) and, later, the strategies."""
