"""The one place that runs the steps of a build in order.

load spec -> check layers -> per run: load model, read weights, stream images
through hooks -> pooled layer scales -> health -> findings -> pictures -> pages
-> publish (atomic). Everything between loading and publishing takes values
and returns values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from reportgen.analysis.activations import ChannelStats
from reportgen.analysis.filters import filter_health, pooled_scale
from reportgen.analysis.locations import sample_positions
from reportgen.capture import (NO_ACTIVATION, LayerRecorder, apply_activation, find_activations, inference,
                               resolve_activation)
from reportgen.chain import layer_chains
from reportgen.assemble import group_layers, render_report
from reportgen.cache import default_dir as default_cache_dir
from reportgen.cache import Cache, digest, file_digest, register
from reportgen.comparison import run_comparisons
from reportgen.crossmodel import CROSS_GRID, cross_model_cka, cross_model_runs, cross_shared_images
from reportgen.errors import SpecError, StrictWarningsError
from reportgen.images import LoadedImage, load_image
from reportgen.models import NO_HOOKS_NOTE, load_model, resolve_device, runs_python_hooks
from reportgen.site import build_lock, publish
from reportgen.spec import ReportSpec, Run, load_spec
from reportgen.uptodate import build_key, stamp
from reportgen.yamlsrc import format_key_path

Log = Callable[[str], None]


@dataclass
class LayerResult:
    name: str
    type: str
    info: dict  # kernel_size, stride, padding, output_shape, ... (JSON-ready)
    weight: np.ndarray | None  # (N, ...) float32 on the CPU
    relu_applied: bool  # the activation is a ReLU or ReLU6 (unit views rectify only then)
    stats: dict[str, np.ndarray] | None = None  # ChannelStats.result()
    maps: list[np.ndarray] = field(default_factory=list)  # (C, H, W) per shown image
    health: dict[str, np.ndarray] | None = None
    features: np.ndarray | None = None  # (S, C) sampled positions of the shared images
    key: str = ""  # cache key: a digest of everything this result depends on
    shared_maps: list[np.ndarray] = field(default_factory=list)  # (C, H, W) of the first shared images
    activation: str = "none"  # the activation kind the statistics and maps come after
    activation_source: str = ""  # how it was found, e.g. "module 'act1'", "F.silu in forward"
    cross_pooled: np.ndarray | None = None  # (N, C, G, G) images all models see, pooled to a G x G grid
    cross_mean: np.ndarray | None = None  # (N, C) the same images' spatial means
    feature_images: np.ndarray | None = None  # (S,) int: the shared image each row of ``features`` comes from
    chain: list[dict] | None = None  # weighted layers from the input to this one (reportgen.chain), for alignment
    chain_note: str | None = None  # why there is no chain (a residual add, a model fx cannot trace, ...)


register(LayerResult)  # cached per layer ("layer" entries)


@dataclass
class RunResult:
    run: Run
    layers: list[LayerResult]
    images: list[LoadedImage]  # the images shown (first max_images)
    n_images: int
    checkpoint_sha256: str | None
    notes: list[str] = field(default_factory=list)
    shared_shown: list[LoadedImage] = field(default_factory=list)  # first shared images (stages view)
    units: dict = field(default_factory=dict)  # layer -> units.UnitViews (analyses.units)
    trace: dict | None = None  # {"trace": analysis.trace.Trace, "fd_error": float, "names": [...]}


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
    key = build_key(spec, str(dev))  # before any input is read: a file changed meanwhile rebuilds next time
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
        stamp(files, key, warnings, report)  # lets the next build see that nothing changed (reportgen.uptodate)
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
    warnings += _add_units(spec, results, device, cache, log, loaded)
    warnings += _add_traces(spec, results)
    return results, warnings


def _add_traces(spec: ReportSpec, results: list[RunResult]) -> list[str]:
    """Forward and backward pass of each run's network on the spec's trace batch (tiny dense nets)."""
    import json

    from reportgen.analysis.trace import finite_difference_check, trace_mlp

    if not spec.analyses.trace.batch:
        return []
    path = spec.base_dir / spec.analyses.trace.batch
    try:
        batch = json.loads(path.read_text())
        x, y, loss = batch["inputs"], batch["labels"], batch.get("loss", "mse")
    except (ValueError, KeyError, TypeError) as exc:
        raise SpecError(f"{spec.where(('analyses', 'trace', 'batch'))}: analyses.trace.batch: {path} must be JSON "
                        f"with 'inputs', 'labels' and optionally 'loss' ({type(exc).__name__}: {exc})") from None
    warnings = []
    for r in results:
        model = load_model(spec, r.run, "cpu").module
        try:
            trace = trace_mlp(model, x, y, loss)
        except (ValueError, TypeError) as exc:
            warnings.append(f"{r.run.key}: no numeric trace: {exc}")
            continue
        r.trace = {"trace": trace, "fd_error": finite_difference_check(model, x, y, loss),
                   "names": _batch_names(batch)}
    return warnings


def _batch_names(batch: dict) -> list[str] | None:
    """Optional example names: 'names' (strings) or 'colours' (objects with a 'name')."""
    names = batch.get("names") or [c.get("name") for c in batch.get("colours", []) if isinstance(c, dict)]
    return [str(n) for n in names] if names and len(names) == len(batch["inputs"]) else None


def unit_runs(spec: ReportSpec) -> list[str]:
    """Run keys that get unit views: analyses.units.locations, else the comparison base or the first run."""
    opts = spec.analyses.units
    if not opts.layers:
        return []
    return list(opts.locations or [spec.analyses.compare.base or spec.runs[0].key])


def _add_units(spec: ReportSpec, results: list[RunResult], device: torch.device, cache: Cache, log: Log,
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


def shared_images(spec: ReportSpec) -> dict[str, list[Path]]:
    """Per model, the images every one of its runs sees (in the first run's order)."""
    out: dict[str, list[Path]] = {}
    for model in spec.models:
        runs = [r for r in spec.runs if r.model.name == model.name]
        common = set(runs[0].images).intersection(*(set(r.images) for r in runs[1:]))
        out[model.name] = [p for p in runs[0].images if p in common]
    return out


def analyse_run(spec: ReportSpec, run: Run, device: torch.device, images: list[LoadedImage],
                shared: list[Path] = (), cache: Cache | None = None, cross: list[Path] = ()) -> RunResult:
    """Weights, activation statistics and maps of every layer of one run.

    Each layer's result is cached under a key of everything it depends on; the
    model is loaded, and the images run through it, only for the layers that miss.
    """
    cache = cache or Cache(None)
    opts = spec.analyses.activations
    hookable = runs_python_hooks(run.model)
    with_acts = opts.enabled and bool(images) and hookable
    keys = {ls.name: _layer_key(spec, run, ls, images, shared, device, with_acts, cross) for ls in run.layers}
    found = {name: cache.get("layer", key) for name, key in keys.items()}
    missing = [ls for ls in run.layers if found[ls.name] is None]
    source = run.checkpoint or run.torchscript or run.onnx
    if missing:
        fresh = _compute_layers(spec, run, missing, device, images, shared, with_acts, cross)
        for lr in fresh:
            lr.key = keys[lr.name]
            cache.put("layer", keys[lr.name], lr)
            found[lr.name] = lr
    notes = []
    if opts.enabled and images and not hookable:
        notes.append(f"activation views skipped: {NO_HOOKS_NOTE}")
    return RunResult(
        run=run, layers=[found[ls.name] for ls in run.layers], images=images[: opts.max_images],
        n_images=len(images), checkpoint_sha256=file_digest(source) if source else None, notes=notes,
        shared_shown=[im for im in images if im.path in shared[:SHARED_MAPS]],
    )


def _layer_key(spec: ReportSpec, run: Run, ls, images: list[LoadedImage], shared: list[Path],
               device: torch.device, with_acts: bool, cross: list[Path] = ()) -> str:
    """Everything one layer's weights, statistics and maps depend on."""
    model = run.model
    arch_file = None
    if model.arch and ":" in model.arch and model.arch.rsplit(":", 1)[0].endswith(".py"):
        arch_file = spec.base_dir / model.arch.rsplit(":", 1)[0]
    return digest(
        "layer", model.arch, model.arch_args, model.checkpoint_key, model.checkpoint_prefix,
        run.checkpoint, run.torchscript, run.onnx, arch_file,  # paths hash by content
        ls.name, ls.activation, device.type, with_acts,
        run.input.model_dump() if with_acts else None,
        [im.digest for im in images] if with_acts else None,
        [str(p) in {str(q) for q in shared} for p in (im.path for im in images)] if with_acts else None,
        spec.analyses.activations.model_dump(), spec.analyses.health.saturated_fraction,
        spec.analyses.compare.max_samples,
        [str(p) for p in cross] if with_acts else None,
    )


def _compute_layers(spec: ReportSpec, run: Run, layer_specs: list, device: torch.device,
                    images: list[LoadedImage], shared: list[Path], with_acts: bool,
                    cross: list[Path] = ()) -> list[LayerResult]:
    loaded = load_model(spec, run, device)
    model = loaded.module
    modules = dict(model.named_modules())
    found = find_activations(model, [ls.name for ls in layer_specs]) if loaded.hookable else {}
    layers, acts, problems = [], {}, []
    chains = (layer_chains(model, [ls.name for ls in layer_specs]) if loaded.hookable
              else {ls.name: (None, "TorchScript modules are not traced") for ls in layer_specs})
    for ls in layer_specs:
        m = modules[ls.name]
        w = getattr(m, "weight", None)
        weight = w.detach().float().cpu().numpy() if isinstance(w, torch.Tensor) and w.ndim >= 2 else None
        try:
            act = resolve_activation(model, ls.name, ls.activation, found.get(ls.name, NO_ACTIVATION))
        except ValueError as exc:
            problems.append(f"{_layer_where(spec, run, ls)}: {exc}")
            continue
        acts[ls.name] = act
        layers.append(LayerResult(name=ls.name, type=_type_name(m), info=_layer_info(m), weight=weight,
                                  relu_applied=act.kind in ("relu", "relu6") and not act.through, activation=act.kind,
                                  activation_source=act.source, chain=chains[ls.name][0],
                                  chain_note=chains[ls.name][1]))
    if problems:
        raise SpecError(problems)
    if with_acts:
        opts = spec.analyses.activations
        _stream_activations(model, layers, images, device, opts.batch_size, opts.max_images,
                            spec.analyses.health.saturated_fraction, shared,
                            spec.analyses.compare.max_samples, acts, list(cross))
    return layers


def activation_problems(spec: ReportSpec, run: Run, module: nn.Module) -> list[str]:
    """Layers whose spec'd ``activation`` this architecture cannot apply (found before any run)."""
    names = dict(module.named_modules())
    given = [ls for ls in run.layers if ls.name in names and ls.activation not in ("auto", "none")]
    if not given or isinstance(module, torch.jit.ScriptModule):
        return []
    found = find_activations(module, [ls.name for ls in given])
    problems = []
    for ls in given:
        try:
            resolve_activation(module, ls.name, ls.activation, found[ls.name])
        except ValueError as exc:
            problems.append(f"{_layer_where(spec, run, ls)}: {exc}")
    return problems


def _layer_where(spec: ReportSpec, run: Run, ls) -> str:
    """``file:line: key.path`` of a layer's ``activation`` (for errors found with the model loaded)."""
    mi = [m.name for m in spec.models].index(run.model.name)
    kp = ("models", mi, "layers") if run.model.layers is not None else ("layers",)
    kp = kp + (list(run.layers).index(ls), "activation" if ls.relu is None else "relu")
    return f"{spec.where(kp)}: {format_key_path(kp)}"


SHARED_MAPS = 2  # shared images whose maps are kept for the stages view


def _stream_activations(model: nn.Module, layers: list[LayerResult], images: list[LoadedImage],
                        device: torch.device, batch_size: int, keep: int, saturated: float,
                        shared: list[Path], max_samples: int, acts: dict | None = None,
                        cross: list[Path] = ()) -> None:
    acts = acts or {}
    modules = dict(model.named_modules())
    stats: dict[str, ChannelStats] = {}
    feats: dict[str, list[np.ndarray]] = {lr.name: [] for lr in layers}
    pooled: dict[str, list[torch.Tensor]] = {lr.name: [] for lr in layers}
    feat_images: dict[str, list[np.ndarray]] = {lr.name: [] for lr in layers}
    shared_rank = {p: i for i, p in enumerate(shared)}
    cross_set = set(cross)
    with inference(model), LayerRecorder(model, [lr.name for lr in layers]) as rec:
        for start, batch in _batches(images, batch_size):
            x = torch.stack([im.tensor for im in batch]).to(device)
            outs = rec.run(x)
            for lr in layers:
                a = apply_activation(acts.get(lr.name, NO_ACTIVATION), modules, outs[lr.name].float())
                if lr.name not in stats:
                    stats[lr.name] = ChannelStats(a.shape[1], lr.activation)
                    lr.info["output_shape"] = list(a.shape[1:])
                stats[lr.name].update(a)
                for j, im in enumerate(batch):
                    if start + j < keep:
                        lr.maps.append(a[j].cpu().numpy())
                    rank = shared_rank.get(im.path)
                    if rank is not None:
                        feats[lr.name].append(_sample_features(a[j], len(shared), max_samples))
                        feat_images[lr.name].append(np.full(len(feats[lr.name][-1]), rank))
                        if rank < SHARED_MAPS:
                            lr.shared_maps.append(a[j].cpu().numpy())
                    if im.path in cross_set:
                        pooled[lr.name].append(a[j].cpu())
    for lr in layers:
        lr.stats = stats[lr.name].result(saturated)
        if feats[lr.name] and len(feats[lr.name]) == len(shared):
            lr.features = np.concatenate(feats[lr.name]).astype(np.float64)
            lr.feature_images = np.concatenate(feat_images[lr.name])
        if pooled[lr.name]:
            lr.cross_pooled, lr.cross_mean = _cross_features(pooled[lr.name], images, cross)


def _cross_features(maps: list[torch.Tensor], images: list[LoadedImage],
                    cross: list[Path]) -> tuple[np.ndarray | None, np.ndarray]:
    """Per image all models see, in ``cross`` order: (C, H, W) maps pooled to a fixed grid, so
    that models with different input sizes give rows for the same image regions, and their
    spatial means. Returns ((N, C, G, G) or None for (C,) outputs, (N, C))."""
    order = [im.path for im in images if im.path in set(cross)]
    by_path = dict(zip(order, maps))
    stacked = torch.stack([by_path[p] for p in cross]).double()
    mean = stacked.reshape(*stacked.shape[:2], -1).mean(dim=2)
    if stacked.ndim != 4:
        return None, mean.numpy()
    grid = torch.nn.functional.adaptive_avg_pool2d(stacked, CROSS_GRID)
    return grid.numpy(), mean.numpy()


def _sample_features(a: torch.Tensor, n_images: int, max_samples: int) -> np.ndarray:
    """(C, H, W) or (C,) activations of one image -> (P, C) at positions sampled the same way
    for every run, so runs can be compared sample by sample."""
    if a.ndim == 1:
        return a[None].cpu().numpy()
    flat = a.reshape(a.shape[0], -1)
    pos = sample_positions(flat.shape[1], n_images, max_samples)
    return flat[:, torch.from_numpy(pos).to(flat.device)].T.cpu().numpy()


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


def _layer_info(m: nn.Module) -> dict:
    info = {}
    for key in ("kernel_size", "stride", "padding", "dilation", "groups", "in_features", "out_features"):
        v = getattr(m, key, None)
        if isinstance(v, (int, tuple, list)) and not isinstance(v, bool):
            info[key] = list(v) if isinstance(v, (tuple, list)) else v
    return info


def _type_name(m: nn.Module) -> str:
    return getattr(m, "original_name", None) or type(m).__name__
