"""Unit views of one run's selected layers (reportgen.units computes them)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from reportgen.cache import Cache, digest
from reportgen.images import LoadedImage
from reportgen.models import load_model, runs_python_hooks
from reportgen.results import RunResult
from reportgen.spec import ReportSpec

Log = Callable[[str], None]


def unit_runs(spec: ReportSpec) -> list[str]:
    """Run keys that get unit views: analyses.units.locations, else the comparison base or the first run."""
    opts = spec.analyses.units
    if not opts.layers:
        return []
    return list(opts.locations or [spec.analyses.compare.base or spec.runs[0].key])


def add_units(spec: ReportSpec, results: list[RunResult], device: torch.device, cache: Cache, log: Log,
               loaded_images: dict[Path, LoadedImage]) -> list[str]:
    """Unit views for the selected layers and runs, each cached under its layer's key."""
    from reportgen.units import compute_units

    opts = spec.analyses.units
    warnings = []
    wanted = set(unit_runs(spec))
    for r in results:
        if r.run.key not in wanted:
            continue
        images = [loaded_images[(p, r.run.input)] for p in r.run.images]
        if not images or not runs_python_hooks(r.run.model):
            warnings.append(f"{r.run.key}: unit views need test images and a model that runs Python hooks")
            continue
        if len({tuple(im.tensor.shape) for im in images}) > 1:
            warnings.append(f"{r.run.key}: unit views need test images of one size; set input.size")
            continue
        model = None
        for lr in r.layers:
            if lr.name not in opts.layers:
                continue
            key = digest("units", lr.key, opts.model_dump(), r.run.input.model_dump())
            views = cache.get("units", key)
            if views is None:
                log(f"units of {r.run.key} · {lr.name}")
                if model is None:
                    model = load_model(spec, r.run, device).module
                views = compute_units(model, lr.name, images, opts, lr.relu_applied, r.run.input.mean,
                                      r.run.input.std, device)
                cache.put("units", key, views)
            r.units[lr.name] = views
    return warnings

