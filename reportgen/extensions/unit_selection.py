"""What the concept and importance extensions share: which runs and layers they cover, the
activation a layer's maps are read after, and the health flags of a layer's units."""

from __future__ import annotations

import numpy as np
import torch

from reportgen.run.hooks import NO_ACTIVATION, LayerRecorder, apply_activation, find_activations, inference, \
    resolve_activation


def covered(opts, run) -> list[str]:
    """The layers of ``opts.layers`` that ``run`` inspects, when ``opts.locations`` admits it."""
    if not opts.layers or (opts.locations is not None and run.key not in opts.locations):
        return []
    mine = {ls.name for ls in run.layers}
    return [name for name in opts.layers if name in mine]


def stacked_inputs(images) -> tuple[torch.Tensor | None, str | None]:
    """(N, C, H, W) of the run's images, or None and why not."""
    if not images:
        return None, "the run has no test images"
    if len({tuple(im.tensor.shape) for im in images}) > 1:
        return None, "the run's images differ in size; set input.size"
    return torch.stack([im.tensor for im in images]), None


def layer_maps(model, run, layers: list[str], x: torch.Tensor, device, batch: int = 16) -> dict[str, np.ndarray]:
    """(N, U, h, w) float32 outputs of ``layers`` after the activation the spec gives each
    (as the layer statistics read them: 'auto' finds the ReLU that follows a conv)."""
    specs = {ls.name: ls for ls in run.layers}
    found = find_activations(model, layers)
    acts = {}
    for name in layers:
        try:
            acts[name] = resolve_activation(model, name, specs[name].activation, found.get(name, NO_ACTIVATION))
        except ValueError:  # the build reports a bad 'activation' elsewhere; read the raw output here
            acts[name] = NO_ACTIVATION
    modules = dict(model.named_modules())
    out: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    with inference(model), LayerRecorder(model, layers) as rec:
        for start in range(0, len(x), batch):
            got = rec.run(x[start:start + batch].to(device))
            for name in layers:
                a = apply_activation(acts[name], modules, got[name].float())
                out[name].append(a.cpu().numpy().astype(np.float32))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def find_layer(report: dict, run: str, layer: str) -> dict | None:
    """The report.json entry of ``layer`` in run ``run``."""
    entry = next((r for r in report.get("runs", []) if r["key"] == run), None)
    return next((lay for lay in entry["layers"] if lay["name"] == layer), None) if entry else None


def unit_flags(lay: dict | None, n: int) -> dict[str, np.ndarray]:
    """(n,) bool arrays 'dead', 'never_active', 'duplicate' of a layer's first n units, from
    report.json's ``filters`` and ``channels`` (False where a list is missing)."""
    filters = (lay or {}).get("filters") or []
    channels = (lay or {}).get("channels") or []

    def pick(items: list[dict], test) -> np.ndarray:
        return np.array([bool(test(items[i])) if i < len(items) else False for i in range(n)], dtype=bool)

    return {"dead": pick(filters, lambda f: f.get("dead")),
            "never_active": pick(channels, lambda c: c.get("never_active")),
            "duplicate": pick(filters, lambda f: f.get("duplicate_of") is not None)}


def unit_page(report: dict, run: str, layer: str) -> str | None:
    """Path of the run's unit page for ``layer`` when the report has one (analyses.units)."""
    from reportgen.core.names import slug

    lay = find_layer(report, run, layer)
    return f"units/{run}/{slug(layer)}.md" if lay and lay.get("units") else None
