"""Tasks, deterministic local training, aggregation rules."""
