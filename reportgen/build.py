"""The one place that runs the steps of a build in order.

load spec -> check layers -> per run: load model, read weights, stream images
through hooks -> pooled layer scales -> health -> findings -> pictures -> pages
-> publish (atomic). Everything between loading and publishing takes values
and returns values.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from reportgen import __version__
from reportgen.analysis.activations import ChannelStats
from reportgen.analysis.filters import filter_health, pooled_scale
from reportgen.analysis.findings import findings as make_findings
from reportgen.capture import LayerRecorder, inference, relu_follows
from reportgen.errors import SpecError, StrictWarningsError
from reportgen.images import LoadedImage, load_image
from reportgen.models import load_model, resolve_arch, resolve_device, resolve_layers
from reportgen.pages import render_pages
from reportgen.render.charts import norms_by_run
from reportgen.render.colour import encode_png
from reportgen.render.tiles import layer_scale
from reportgen.render.views import activation_grid, filter_views
from reportgen.report_json import SCHEMA_VERSION, to_json
from reportgen.site import ReportFiles, build_lock, publish
from reportgen.spec import ReportSpec, Run, load_spec

Log = Callable[[str], None]


@dataclass
class LayerResult:
    name: str
    type: str
    info: dict  # kernel_size, stride, padding, output_shape, ... (JSON-ready)
    weight: np.ndarray | None  # (N, ...) float32 on the CPU
    relu_applied: bool
    stats: dict[str, np.ndarray] | None = None  # ChannelStats.result()
    maps: list[np.ndarray] = field(default_factory=list)  # (C, H, W) per shown image
    health: dict[str, np.ndarray] | None = None


@dataclass
class RunResult:
    run: Run
    layers: list[LayerResult]
    images: list[LoadedImage]  # the images shown (first max_images)
    n_images: int
    checkpoint_sha256: str | None
    notes: list[str] = field(default_factory=list)


@dataclass
class BuildResult:
    out_dir: Path
    pages: int
    images: int
    seconds: float
    warnings: list[str]
    report: dict


def build(spec_path: str | Path, docs_dir: str | Path = "docs", device: str = "auto",
          strict: bool = False, log: Log = lambda msg: None) -> BuildResult:
    """Build the report of ``spec_path`` into ``docs_dir/<report>/``."""
    t0 = time.perf_counter()
    spec = load_spec(spec_path)
    dev = resolve_device(device)
    docs = Path(docs_dir)
    with build_lock(docs, spec.report):
        check_layers(spec)
        results, warnings = analyse(spec, dev, log)
        if strict and warnings:
            raise StrictWarningsError(
                f"{len(warnings)} warning(s) and --strict was given: " + "; ".join(warnings)
            )
        files, report = render_report(spec, results, dev)
        out = publish(files, docs, spec.report)
    return BuildResult(
        out_dir=out, pages=files.count(".md"), images=files.count(".png"),
        seconds=time.perf_counter() - t0, warnings=warnings, report=report,
    )


def check_layers(spec: ReportSpec) -> dict[str, dict[str, nn.Module]]:
    """Build each architecture once (no checkpoint) and resolve every layer name.

    Layer names depend on the architecture only, so one instance per model
    serves all its locations. Raises SpecError listing every unknown layer.
    Returns model name -> {layer name: module} of that instance.
    """
    problems: list[str] = []
    found: dict[str, dict[str, nn.Module]] = {}
    for run in spec.runs:
        if run.model.name in found:
            continue
        if run.model.torchscript:
            module = load_model(spec, run, "cpu").module
        else:
            mi = [m.name for m in spec.models].index(run.model.name)
            factory = resolve_arch(run.model.arch or "", spec.base_dir, spec.where(("models", mi, "arch")))
            module = factory(**run.model.arch_args)
        problems += resolve_layers(spec, run, module)
        found[run.model.name] = dict(module.named_modules())
    if problems:
        raise SpecError(problems)
    return found


def analyse(spec: ReportSpec, device: torch.device, log: Log) -> tuple[list[RunResult], list[str]]:
    """Run every model over its images; health statistics use scales pooled per model."""
    cache: dict[Path, LoadedImage] = {}
    warnings: list[str] = []
    results = []
    for i, run in enumerate(spec.runs, 1):
        log(f"[{i}/{len(spec.runs)}] {run.key}")
        for p in run.images:
            if p not in cache:  # shared images are read once for all runs
                cache[p] = load_image(p, spec.input)
        images = [cache[p] for p in run.images]
        result = analyse_run(spec, run, device, images)
        warnings += [f"{run.key}: {n}" for n in result.notes]
        results.append(result)
    _add_health(spec, results)
    return results, warnings


def analyse_run(spec: ReportSpec, run: Run, device: torch.device, images: list[LoadedImage]) -> RunResult:
    loaded = load_model(spec, run, device)
    model = loaded.module
    modules = dict(model.named_modules())
    layers = []
    for ls in run.layers:
        m = modules[ls.name]
        w = getattr(m, "weight", None)
        weight = w.detach().float().cpu().numpy() if isinstance(w, torch.Tensor) and w.ndim >= 2 else None
        relu = ls.relu == "yes" or (ls.relu == "auto" and loaded.hookable and relu_follows(model, ls.name))
        layers.append(LayerResult(name=ls.name, type=_type_name(m), info=_layer_info(m), weight=weight,
                                  relu_applied=relu))
    notes = []
    opts = spec.analyses.activations
    if opts.enabled and images and not loaded.hookable:
        notes.append("activation views skipped: TorchScript modules do not run forward hooks; "
                     "give the architecture and a state_dict to see activations")
    elif opts.enabled and images:
        _stream_activations(model, layers, images, device, opts.batch_size, opts.max_images,
                            spec.analyses.health.saturated_fraction)
    return RunResult(
        run=run, layers=layers, images=images[: opts.max_images], n_images=len(images),
        checkpoint_sha256=_sha256(loaded.source) if loaded.source else None, notes=notes,
    )


def _stream_activations(model: nn.Module, layers: list[LayerResult], images: list[LoadedImage],
                        device: torch.device, batch_size: int, keep: int, saturated: float) -> None:
    stats: dict[str, ChannelStats] = {}
    with inference(model), LayerRecorder(model, [lr.name for lr in layers]) as rec:
        for start, batch in _batches(images, batch_size):
            x = torch.stack([im.tensor for im in batch]).to(device)
            outs = rec.run(x)
            for lr in layers:
                a = outs[lr.name].float()
                if lr.relu_applied:
                    a = torch.relu(a)
                if lr.name not in stats:
                    stats[lr.name] = ChannelStats(a.shape[1])
                    lr.info["output_shape"] = list(a.shape[1:])
                stats[lr.name].update(a)
                for j in range(len(batch)):
                    if start + j < keep:
                        lr.maps.append(a[j].cpu().numpy())
    for lr in layers:
        lr.stats = stats[lr.name].result(saturated)


def _batches(images: list[LoadedImage], size: int):
    """Consecutive runs of equal-shaped images, at most ``size`` long, with start indices."""
    start = 0
    while start < len(images):
        shape = images[start].tensor.shape
        end = start
        while end < len(images) and end - start < size and images[end].tensor.shape == shape:
            end += 1
        yield start, images[start:end]
        start = end


def _add_health(spec: ReportSpec, results: list[RunResult]) -> None:
    h = spec.analyses.health
    for (_model, _layer), lrs in _group_layers(results).items():
        ws = [lr.weight for lr in lrs if lr.weight is not None]
        if not ws:
            continue
        scale = pooled_scale(ws)
        for lr in lrs:
            if lr.weight is not None:
                lr.health = filter_health(lr.weight, scale, h.dead_norm_ratio, h.near_zero_ratio)
                lr.info["pooled_scale"] = {"median_norm": scale.median_norm, "rms": scale.rms}


def _group_layers(results: list[RunResult]) -> dict[tuple[str, str], list[LayerResult]]:
    groups: dict[tuple[str, str], list[LayerResult]] = {}
    for r in results:
        for lr in r.layers:
            groups.setdefault((r.run.model.name, lr.name), []).append(lr)
    return groups


def render_report(spec: ReportSpec, results: list[RunResult], device: torch.device) -> tuple[ReportFiles, dict]:
    """All pictures, report.json and pages of a report, in memory."""
    files = ReportFiles()
    images: dict[tuple[str, str], dict[str, str]] = {}  # (run key, layer) -> view -> path
    charts: dict[str, list[tuple[str, str]]] = {}  # layer -> [(model, path)]
    h = spec.analyses.health
    for (model, layer), lrs in _group_layers(results).items():
        ws = [lr.weight for lr in lrs if lr.weight is not None]
        shared = max((layer_scale(w) for w in ws), default=0.0)
        runs = [r for r in results if r.run.model.name == model]
        norms = {}
        for r, lr in zip(runs, lrs):
            paths = images.setdefault((r.run.key, layer), {})
            if lr.weight is not None:
                dead = lr.health["dead"] if lr.health else None
                for view, img in filter_views(lr.weight, dead, shared, spec.analyses.filters.tile_px).items():
                    paths[view] = files.add(f"img/{r.run.key}/{layer}/{view}.png", encode_png(img))
                norms[r.run.key] = lr.health["l2_norm"]
            for k, maps in enumerate(lr.maps):
                grid_img, order = activation_grid(maps)
                paths[f"act_{k}"] = files.add(f"img/{r.run.key}/{layer}/activations_{k}.png", encode_png(grid_img))
                paths[f"act_{k}_order"] = ",".join(map(str, order[:8]))
        if norms:
            median = lrs[0].info["pooled_scale"]["median_norm"]
            png = norms_by_run(norms, h.dead_norm_ratio * median, f"{layer}: filter norms by location")
            charts.setdefault(layer, []).append((model, files.add(f"img/{model}/{layer}/norms.png", png)))
    for r in results:
        for k, im in enumerate(r.images):
            files.add(f"img/{r.run.key}/input_{k}.png", encode_png(im.pixels))
    report = report_dict(spec, results, device)
    report["findings"] = make_findings(report, spec.analyses.health)
    files.add("report.json", to_json(report))
    for rel, text in render_pages(spec, report, images, charts).items():
        files.add(rel, text)
    return files, report


def report_dict(spec: ReportSpec, results: list[RunResult], device: torch.device) -> dict:
    """The machine-readable report (documented in docs/reference/report-json.md)."""
    runs = []
    for r in results:
        layers = []
        for lr in r.layers:
            entry = {
                "name": lr.name,
                "type": lr.type,
                "weight_shape": list(lr.weight.shape) if lr.weight is not None else None,
                "relu_applied": lr.relu_applied,
                **lr.info,
                "filters": _rows(lr.health, ["l2_norm", "max_abs", "near_zero_fraction", "dead", "nonfinite"]),
                "channels": _rows(lr.stats, ["mean", "max", "active_fraction", "never_active", "saturated"]),
            }
            entry["summary"] = _summary(entry)
            layers.append(entry)
        runs.append({
            "key": r.run.key,
            "model": r.run.model.name,
            "location": r.run.location,
            "checkpoint": _display_path(r.run.checkpoint or r.run.torchscript, spec),
            "checkpoint_sha256": r.checkpoint_sha256,
            "images": [_display_path(p, spec) for p in r.run.images],
            "layers": layers,
        })
    return {
        "schema_version": SCHEMA_VERSION,
        "report": spec.report,
        "title": spec.title,
        "spec": _display_path(spec.path.resolve(), spec),
        "spec_sha256": _sha256(spec.path),
        "versions": {"reportgen": __version__, "torch": torch.__version__, "numpy": np.__version__},
        "device": str(device),
        "thresholds": spec.analyses.health.model_dump(),
        "runs": runs,
    }


def _rows(arrays: dict[str, np.ndarray] | None, keys: list[str]) -> list[dict]:
    if not arrays:
        return []
    n = len(arrays[keys[0]])
    return [{"index": i, **{k: _py(arrays[k][i]) for k in keys}} for i in range(n)]


def _py(v):
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    f = float(v)
    return f if np.isfinite(f) else None  # JSON has no NaN; null means "not a number"


def _summary(layer: dict) -> dict:
    f, c = layer["filters"], layer["channels"]
    norms = [x["l2_norm"] for x in f if x["l2_norm"] is not None]
    return {
        "filters": len(f),
        "dead": sum(x["dead"] for x in f),
        "nonfinite": sum(x["nonfinite"] for x in f),
        "median_l2_norm": float(np.median(norms)) if norms else None,
        "near_zero_fraction": float(np.mean([x["near_zero_fraction"] for x in f
                                             if x["near_zero_fraction"] is not None])) if f else None,
        "channels": len(c),
        "never_active": sum(x["never_active"] for x in c),
        "saturated": sum(x["saturated"] for x in c),
    }


def _layer_info(m: nn.Module) -> dict:
    info = {}
    for key in ("kernel_size", "stride", "padding", "dilation", "groups", "in_features", "out_features"):
        v = getattr(m, key, None)
        if isinstance(v, (int, tuple, list)) and not isinstance(v, bool):
            info[key] = list(v) if isinstance(v, (tuple, list)) else v
    return info


def _type_name(m: nn.Module) -> str:
    return getattr(m, "original_name", None) or type(m).__name__


def _sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _display_path(p: Path | None, spec: ReportSpec) -> str | None:
    if p is None:
        return None
    p = Path(p).resolve()
    for base in (Path.cwd(), spec.base_dir):
        try:
            return p.relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
    return p.as_posix()
