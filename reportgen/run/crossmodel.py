"""The per-run half of comparing the models of one report (reportgen.reduce.crossmodel):
which run of each model is compared, on which shared images, pooled to which grid."""

from __future__ import annotations

from pathlib import Path

CROSS_GRID = 4  # pooled grid side: rows per image for a pair of conv layers = CROSS_GRID ** 2


def cross_model_runs(spec) -> dict:
    """Model name -> the run compared with other models (analyses.compare.model_locations, else
    the model's first run). Empty unless the report has several models and compares them."""
    if len(spec.models) < 2 or not spec.analyses.compare.enabled or not spec.analyses.activations.enabled:
        return {}
    chosen = spec.analyses.compare.model_locations
    out = {}
    for model in spec.models:
        runs = [r for r in spec.runs if r.model.name == model.name]
        if model.torchscript is not None:
            continue  # no hooks, no activations
        out[model.name] = next((r for r in runs if r.location == chosen.get(model.name)), runs[0])
    return out if len(out) >= 2 else {}


def cross_shared_images(spec) -> list[Path]:
    """The images every compared model's run sees, in the first such run's order."""
    runs = list(cross_model_runs(spec).values())
    if not runs:
        return []
    common = set(runs[0].images).intersection(*(set(r.images) for r in runs[1:]))
    return [p for p in runs[0].images if p in common]
