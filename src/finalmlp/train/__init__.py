"""Training: the trainer, metrics, progress display and the config-driven run."""
