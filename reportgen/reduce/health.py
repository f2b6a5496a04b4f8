"""Filter health with scales pooled over every run of a model: a dead filter is judged
against the layer's median filter norm over all locations, so a location whose filters
all collapsed cannot hide it by collapsing its own median with them."""

from __future__ import annotations

from reportgen.analysis.filters import filter_health, pooled_scale
from reportgen.core.results import RunResult
from reportgen.load.spec import ReportSpec


def group_layers(results) -> dict[tuple[str, str], list]:
    """(model, layer) -> [(run result, layer result)] in run order."""
    groups: dict[tuple[str, str], list] = {}
    for r in results:
        for lr in r.layers:
            groups.setdefault((r.run.model.name, lr.name), []).append((r, lr))
    return groups


def pool_health(spec: ReportSpec, results: list[RunResult]) -> None:
    """Set each layer result's ``health`` (per-filter statistics and flags) and its pooled scale."""
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

