"""One run's layers: weights, activation statistics, maps and comparison features.

The model is loaded, and the images streamed through it, only for the layers whose
cached result is missing; each layer's result is cached under a digest of everything
it depends on (``layer`` entries).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from reportgen.analysis.activations import ChannelStats
from reportgen.analysis.filters import transposed_filters
from reportgen.analysis.evidence import image_evidence
from reportgen.analysis.locations import sample_positions
from reportgen.core.cache import Cache, digest, file_digest
from reportgen.core.errors import ModelLoadError, SpecError
from reportgen.core.results import LayerResult, RunResult
from reportgen.core.spill import NO_SPILL, Spill
from reportgen.load.images import LoadedImage
from reportgen.load.models import NO_HOOKS_NOTE, runs_python_hooks
from reportgen.load.spec import ReportSpec, Run
from reportgen.load.yamlsrc import format_key_path
from reportgen.run.chain import layer_chains
from reportgen.run.crossmodel import CROSS_GRID
from reportgen.run.hooks import (
    NO_ACTIVATION,
    LayerRecorder,
    apply_activation,
    find_activations,
    inference,
    resolve_activation,
)
from reportgen.run.model import LazyModel


def shared_images(spec: ReportSpec) -> dict[str, list[Path]]:
    """Per model, the images every one of its runs sees (in the first run's order)."""
    out: dict[str, list[Path]] = {}
    for model in spec.models:
        runs = [r for r in spec.runs if r.model.name == model.name]
        common = set(runs[0].images).intersection(*(set(r.images) for r in runs[1:]))
        out[model.name] = [p for p in runs[0].images if p in common]
    return out


def analyse_run(spec: ReportSpec, run: Run, device: torch.device, images: list[LoadedImage],
                shared: list[Path] = (), cache: Cache | None = None, cross: list[Path] = (),
                model: LazyModel | None = None, spill: Spill = NO_SPILL) -> RunResult:
    """Weights, activation statistics and maps of every layer of one run.

    Each layer's result is cached under a key of everything it depends on; the
    model is loaded, and the images run through it, only for the layers that miss.
    """
    cache = cache or Cache(None)
    model = model or LazyModel(spec, run, device)
    opts = spec.analyses.activations
    hookable = runs_python_hooks(run.model)
    with_acts = opts.enabled and bool(images) and hookable
    keys = {ls.name: _layer_key(spec, run, ls, images, shared, device, with_acts, cross) for ls in run.layers}
    found = {name: cache.get("layer", key) for name, key in keys.items()}
    for name, lr in found.items():
        if lr is not None and not spill.complete(lr):  # its spilled arrays are gone: compute it again
            found[name] = None
            cache.hits["layer"] -= 1
            cache.misses["layer"] += 1
    missing = [ls for ls in run.layers if found[ls.name] is None]
    source = run.checkpoint or run.torchscript or run.onnx or run.exported
    if missing:
        fresh = _compute_layers(spec, run, missing, device, images, shared, with_acts, cross, model)
        for lr in fresh:
            lr.key = keys[lr.name]
            spill.write(lr)  # the layer entry names its spilled arrays rather than holding them twice
            cache.put("layer", keys[lr.name], spill.stripped(lr))
            found[lr.name] = lr
    notes = []
    if opts.enabled and images and not hookable:
        notes.append(f"activation views skipped: {NO_HOOKS_NOTE}")
    return RunResult(
        run=run, layers=[found[ls.name] for ls in run.layers], images=images[: opts.max_images],
        n_images=len(images), checkpoint_sha256=file_digest(source) if source else None, notes=notes,
        shared_shown=[im for im in images if im.path in shared[:SHARED_MAPS]],
    )


# Bumped when what a layer entry holds changes (3: per-image channel counts and the evidence;
# the activation followed through bias adds, identities and clips).
LAYER_VERSION = 3


def _layer_key(spec: ReportSpec, run: Run, ls, images: list[LoadedImage], shared: list[Path],
               device: torch.device, with_acts: bool, cross: list[Path] = ()) -> str:
    """Everything one layer's weights, statistics and maps depend on."""
    model = run.model
    arch_file = None
    if model.arch and ":" in model.arch and model.arch.rsplit(":", 1)[0].endswith(".py"):
        arch_file = spec.base_dir / model.arch.rsplit(":", 1)[0]
    return digest(
        "layer", LAYER_VERSION, model.arch, model.arch_args, model.checkpoint_key, model.checkpoint_prefix,
        run.checkpoint, run.torchscript, run.onnx, run.exported, arch_file,  # paths hash by content
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
                    cross: list[Path] = (), lazy: LazyModel | None = None) -> list[LayerResult]:
    loaded = (lazy or LazyModel(spec, run, device)).get()
    model = loaded.module
    modules = dict(model.named_modules())
    found = find_activations(model, [ls.name for ls in layer_specs]) if loaded.hookable else {}
    layers, acts, problems = [], {}, []
    chains = (layer_chains(model, [ls.name for ls in layer_specs]) if loaded.hookable
              else {ls.name: (None, "TorchScript modules are not traced") for ls in layer_specs})
    for ls in layer_specs:
        m = modules[ls.name]
        try:
            weight, weights_note = layer_weight(m)
        except TypeError as exc:
            raise ModelLoadError(f"{_layer_where(spec, run, ls, None)}: layer '{ls.name}' of location "
                                 f"'{run.location}': {exc}") from None
        try:
            act = resolve_activation(model, ls.name, ls.activation, found.get(ls.name, NO_ACTIVATION))
        except ValueError as exc:
            problems.append(f"{_layer_where(spec, run, ls)}: {exc}")
            continue
        acts[ls.name] = act
        info = _layer_info(m)
        note = loaded.dequantized.get(f"{ls.name}.weight") or weights_note
        if note:
            info["weights_note"] = note
        if any(isinstance(modules.get(n), nn.modules.batchnorm._BatchNorm) for n in act.through):
            info["normalised_before_activation"] = True  # filter norms say little about the channel's size
        layers.append(LayerResult(name=ls.name, type=_type_name(m), info=info, weight=weight,
                                  relu_applied=act.kind in ("relu", "relu6") and not act.through, activation=act.kind,
                                  activation_source=act.source, activation_note=act.note,
                                  chain=chains[ls.name][0],
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


def _layer_where(spec: ReportSpec, run: Run, ls, key: str | None = "activation") -> str:
    """``file:line: key.path`` of a layer's ``activation`` (for errors found with the model
    loaded); with ``key=None``, of the layer's entry."""
    mi = [m.name for m in spec.models].index(run.model.name)
    kp = ("models", mi, "layers") if run.model.layers is not None else ("layers",)
    kp = kp + (list(run.layers).index(ls),)
    if key is not None:
        kp = kp + ("activation" if ls.relu is None else "relu",)
    return f"{spec.where(kp)}: {format_key_path(kp)}"


def layer_weight(m: nn.Module) -> tuple[np.ndarray | None, str | None]:
    """A layer's filters as float32 (N, ...), one row per output channel, and a note for the
    page when they were not read as stored; (None, None) for a layer without a weight matrix.

    - A transposed convolution stores (C_in, C_out / groups, k...): its filters are read along
      the second axis (analysis.filters.transposed_filters), so filter c is output channel c's.
    - A quantized layer (its ``weight()`` a quantized tensor) is dequantized: the values it
      computes with.
    - Weights that are not real floating point (integer, complex, bool) raise TypeError: no
      reading of them as filters would be faithful.
    """
    w = getattr(m, "weight", None)
    if callable(w) and not isinstance(w, torch.Tensor):  # torch.ao quantized modules: weight() unpacks
        try:
            w = w()
        except Exception:  # noqa: BLE001 - a method named weight that is something else
            return None, None
    if not isinstance(w, torch.Tensor) or w.ndim < 2:
        return None, None
    note = None
    if w.is_quantized:
        note = f"dequantized from {str(w.dtype).removeprefix('torch.')} ({_qscheme(w)}): the values the layer computes with"
        w = w.dequantize()
    elif not w.is_floating_point():
        raise TypeError(f"its weight is {str(w.dtype).removeprefix('torch.')}, not real floating point, so it "
                        "has no faithful picture as filters; leave the layer out, or save the model with float "
                        "weights (a quantized model's own modules are read dequantized)")
    weight = w.detach().float().cpu().numpy()
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        weight = transposed_filters(weight, int(m.groups))
        note = "of a transposed convolution, stored input channel first: filter c is the weight's slice " \
               "[:, c] (the kernel output channel c stamps), paired with channel c's statistics"
    return weight, note


def _qscheme(w: torch.Tensor) -> str:
    return ("per-channel scales" if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric,
                                                    torch.per_channel_affine_float_qparams)
            else f"scale {w.q_scale():.3g}, zero point {w.q_zero_point()}")


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
                stats[lr.name].update(a, saturated)
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
        lr.info["evidence"] = image_evidence(stats[lr.name].images, stats[lr.name].positions_per_image)
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


def _layer_info(m: nn.Module) -> dict:
    info = {}
    for key in ("kernel_size", "stride", "padding", "dilation", "groups", "in_features", "out_features"):
        v = getattr(m, key, None)
        if isinstance(v, (int, tuple, list)) and not isinstance(v, bool):
            info[key] = list(v) if isinstance(v, (tuple, list)) else v
    return info


def _type_name(m: nn.Module) -> str:
    return getattr(m, "original_name", None) or type(m).__name__
