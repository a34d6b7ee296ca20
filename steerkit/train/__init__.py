"""Training: BiPO (engines, loop, checkpoints; BipoConfig is THE training config), CAA, and LoRA-derived models."""
