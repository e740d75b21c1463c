"""The training loop and what it drives: checkpoints, resuming, optimisers, recorders and loggers, the audit card."""
