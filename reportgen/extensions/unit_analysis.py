"""What the concept and importance extensions share: ``UnitAnalysis``, an extension of the units
of the layers a spec lists under ``analyses.<name>``; which runs and layers it covers, the
activation a layer's maps are read after, and the health flags of a layer's units."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from reportgen.core.extension import Extension, RunContext
from reportgen.core.names import slug
from reportgen.run.hooks import NO_ACTIVATION, LayerRecorder, apply_activation, find_activations, inference, \
    resolve_activation

NO_HOOKS = "the model cannot run Python hooks (TorchScript/ONNX without 'arch')"


class UnitAnalysis(Extension):
    """An analysis of the units of the layers in ``analyses.<name>.layers`` (of the runs in
    ``analyses.<name>.locations``, or all): wanted when the spec lists layers, run on the runs
    that inspect one of them. Its per-run value is a ``value_type`` dataclass whose empty
    instance means "no layer covered", with a ``notes`` list that says why a run has none.

    A subclass sets ``value_type``, ``missing`` (how a note starts, e.g. "no ablation") and
    ``key_options`` (the options whose values change its per-run values), and implements
    ``analyse(ctx, layers)``.
    """

    value_type: ClassVar[type]
    missing: ClassVar[str]
    key_options: ClassVar[tuple[str, ...]] = ()

    def options(self, spec):
        """The spec's ``analyses.<name>``."""
        return getattr(spec.analyses, self.name)

    def covered(self, spec, run) -> list[str]:
        return covered(self.options(spec), run)

    def wanted(self, spec) -> bool:
        return bool(self.options(spec).layers)

    def run_wanted(self, spec, run) -> bool:
        return bool(self.covered(spec, run))

    def run_key(self, ctx: RunContext) -> tuple:
        opts = self.options(ctx.spec)
        return (*(getattr(opts, k) for k in self.key_options), self.covered(ctx.spec, ctx.run),
                *self.run_inputs(ctx), [im.digest for im in ctx.images])

    def run_inputs(self, ctx: RunContext) -> tuple:
        """Files the per-run part reads beyond the images, for the cache key (by content)."""
        return ()

    def run_part(self, ctx: RunContext) -> Any:
        layers = self.covered(ctx.spec, ctx.run)
        if not layers:
            return self.value_type()
        if ctx.model is None:
            return self.without(NO_HOOKS)
        return self.analyse(ctx, layers)

    def without(self, why: str) -> Any:
        """The per-run value of a run that has none, and why."""
        return self.value_type(notes=[f"{self.missing}: {why}"])

    def analyse(self, ctx: RunContext, layers: list[str]) -> Any:
        """The per-run value of the covered ``layers`` (the model is loaded)."""
        raise NotImplementedError

    def findings(self, report: dict, analyses) -> list[dict]:
        section = report.get(self.name)
        return self.section_findings(section) if section else []

    def section_findings(self, section: dict) -> list[dict]:
        """The findings of a report that has this extension's section."""
        return []


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
    lay = find_layer(report, run, layer)
    return f"units/{run}/{slug(layer)}.md" if lay and lay.get("units") else None
