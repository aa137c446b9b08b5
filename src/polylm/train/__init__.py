"""Pretraining: the typed config, the optimizer step, checkpoints and exact resume."""
