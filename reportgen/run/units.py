"""Unit views of one run's selected layers (reportgen.run.unit_views computes them)."""

from __future__ import annotations

from typing import Callable

import torch

from reportgen.core.cache import Cache, digest
from reportgen.core.results import RunResult
from reportgen.load.images import LoadedImage
from reportgen.load.models import runs_python_hooks
from reportgen.load.spec import ReportSpec
from reportgen.run.model import LazyModel

Log = Callable[[str], None]


def unit_runs(spec: ReportSpec) -> list[str]:
    """Run keys that get unit views: analyses.units.locations, else the comparison base or the first run."""
    opts = spec.analyses.units
    if not opts.layers:
        return []
    return list(opts.locations or [spec.analyses.compare.base or spec.runs[0].key])


def run_units(spec: ReportSpec, result: RunResult, images: list[LoadedImage], model: LazyModel,
              device: torch.device, cache: Cache, log: Log) -> list[str]:
    """Unit views of the run's selected layers into ``result.units``, each cached under its
    layer's key; returns warnings. The model is loaded only when a view is missing."""
    from reportgen.run.unit_views import compute_units

    opts = spec.analyses.units
    r = result
    if r.run.key not in set(unit_runs(spec)):
        return []
    if not images or not runs_python_hooks(r.run.model):
        return [f"{r.run.key}: unit views need test images and a model that runs Python hooks"]
    if len({tuple(im.tensor.shape) for im in images}) > 1:
        return [f"{r.run.key}: unit views need test images of one size; set input.size"]
    for lr in r.layers:
        if lr.name not in opts.layers:
            continue
        key = digest("units", lr.key, opts.model_dump(), r.run.input.model_dump())
        views = cache.get("units", key)
        if views is None:
            log(f"units of {r.run.key} · {lr.name}")
            views = compute_units(model.get().module, lr.name, images, opts, lr.relu_applied, r.run.input.mean,
                                  r.run.input.std, device)
            cache.put("units", key, views)
        r.units[lr.name] = views
    return []
