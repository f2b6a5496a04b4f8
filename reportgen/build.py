"""The one place that runs the steps of a build in order.

load spec -> check layers -> per run: load model, read weights, stream images
through hooks -> pooled layer scales -> health -> findings -> pictures -> pages
-> publish (atomic). Everything between loading and publishing takes values
and returns values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from reportgen.analysis.filters import filter_health, pooled_scale
from reportgen.assemble import group_layers, render_report
from reportgen.cache import default_dir as default_cache_dir
from reportgen.cache import Cache
from reportgen.comparison import run_comparisons
from reportgen.crossmodel import cross_model_cka, cross_model_runs, cross_shared_images
from reportgen.errors import SpecError, StrictWarningsError
from reportgen.images import LoadedImage, load_image
from reportgen.models import resolve_device
from reportgen.results import RunResult
from reportgen.run.layers import activation_problems, analyse_run, shared_images
from reportgen.run.trace import add_traces
from reportgen.run.units import add_units
from reportgen.site import build_lock, publish
from reportgen.spec import ReportSpec, load_spec

Log = Callable[[str], None]


@dataclass
class BuildResult:
    out_dir: Path
    pages: int
    images: int
    seconds: float
    warnings: list[str]
    report: dict
    cache: Cache


def build(spec_path: str | Path, docs_dir: str | Path = "docs", device: str = "auto",
          strict: bool = False, log: Log = lambda msg: None,
          cache_dir: str | Path | None | bool = True) -> BuildResult:
    """Build the report of ``spec_path`` into ``docs_dir/<report>/``.

    ``cache_dir``: where results are cached between builds; True: the default
    (``$REPORTGEN_CACHE_DIR`` or ``.reportgen-cache``); None or False: no cache.
    """
    t0 = time.perf_counter()
    spec = load_spec(spec_path)
    dev = resolve_device(device)
    docs = Path(docs_dir)
    cache = Cache(default_cache_dir() if cache_dir is True else (cache_dir or None))
    with build_lock(docs, spec.report):
        check_layers(spec)
        results, warnings = analyse(spec, dev, log, cache)
        log("comparing locations")
        comp = run_comparisons(spec, results, dev, cache)
        comp.models = cross_model_cka(spec, results)
        warnings += comp.warnings
        if strict and warnings:
            raise StrictWarningsError(
                f"{len(warnings)} warning(s) and --strict was given: " + "; ".join(warnings)
            )
        log("drawing pictures and writing pages")
        files, report = render_report(spec, results, comp, dev, cache)
        out = publish(files, docs, spec.report)
    # A cache that could not be used is reported but never fails the build (not even --strict).
    warnings += cache.warnings
    return BuildResult(
        out_dir=out, pages=files.count(".md"), images=files.count(".png"),
        seconds=time.perf_counter() - t0, warnings=warnings, report=report, cache=cache,
    )


def check_layers(spec: ReportSpec) -> dict[str, dict[str, nn.Module]]:
    """Build each architecture once (no checkpoint), resolve every layer name and run
    a dry forward pass at the spec's input size (reportgen.preflight).

    Layer names and shapes depend on the architecture only, so one instance per
    model serves all its locations. Raises SpecError listing every problem.
    Returns model name -> {layer name: module} of that instance.
    """
    from reportgen.preflight import check_models

    problems, checks = check_models(spec)
    for name, c in checks.items():
        run = next(r for r in spec.runs if r.model.name == name)
        problems = list(problems) + activation_problems(spec, run, c.module)
    if problems:
        raise SpecError(problems)
    return {name: dict(c.module.named_modules()) for name, c in checks.items()}


def analyse(spec: ReportSpec, device: torch.device, log: Log,
            cache: Cache | None = None) -> tuple[list[RunResult], list[str]]:
    """Run every model over its images; health statistics use scales pooled per model."""
    cache = cache or Cache(None)
    loaded: dict[tuple[Path, object], LoadedImage] = {}  # (path, the model's input spec)
    warnings: list[str] = []
    results = []
    shared = shared_images(spec)
    representative = {r.key for r in cross_model_runs(spec).values()}
    cross = cross_shared_images(spec)
    for i, run in enumerate(spec.runs, 1):
        log(f"[{i}/{len(spec.runs)}] {run.key}")
        for p in run.images:
            if (p, run.input) not in loaded:  # shared images are read once per input spec
                loaded[(p, run.input)] = load_image(p, run.input)
        images = [loaded[(p, run.input)] for p in run.images]
        result = analyse_run(spec, run, device, images, shared.get(run.model.name, []), cache,
                             cross if run.key in representative else [])
        warnings += [f"{run.key}: {n}" for n in result.notes]
        results.append(result)
    _add_health(spec, results)
    warnings += add_units(spec, results, device, cache, log, loaded)
    warnings += add_traces(spec, results)
    return results, warnings


def _add_health(spec: ReportSpec, results: list[RunResult]) -> None:
    h = spec.analyses.health
    for items in group_layers(results).values():
        lrs = [lr for _, lr in items]
        ws = [lr.weight for lr in lrs if lr.weight is not None]
        if not ws:
            continue
        scale = pooled_scale(ws)
        for lr in lrs:
            if lr.weight is not None:
                lr.health = filter_health(lr.weight, scale, h.dead_norm_ratio, h.near_zero_ratio)
                lr.info["pooled_scale"] = {"median_norm": scale.median_norm, "rms": scale.rms}
