"""The per-run task: load a run's model once and do every per-run analysis."""
