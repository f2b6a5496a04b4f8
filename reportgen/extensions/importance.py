"""Causal importance of units: ablate each unit, measure every output head, relate to health
(``ImportanceExtension``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from reportgen.run.ablation import ablate_units, ranking, relate_to_flags
from reportgen.analysis.wording import finding, listing, plural
from reportgen.core.cache import register
from reportgen.run.hooks import LayerRecorder, inference
from reportgen.core.extension import RunContext
from reportgen.core.names import anchor_id, code, slug
from reportgen.render.unit_charts import importance_bars
from reportgen.extensions.unit_analysis import UnitAnalysis, find_layer, stacked_inputs, unit_flags

NAME = "importance"
PAGE = "importance.md"
TOP = 5  # most important units listed per run and layer


@dataclass
class RunImportance:
    """One run's ablations: per layer the (U, H) effect of each unit on each head."""

    heads: list[str] = field(default_factory=list)
    images: int = 0
    layers: list[str] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)  # per layer: its channel count (U may be fewer)
    effect: list[np.ndarray] = field(default_factory=list)  # per layer (U, H)
    notes: list[str] = field(default_factory=list)


register(RunImportance)


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return None
    return float(stats.spearmanr(a[ok], b[ok]).statistic)


def _by_layer(sec: dict) -> dict[str, list[tuple[dict, dict]]]:
    out: dict[str, list[tuple[dict, dict]]] = {}
    for r in sec["runs"]:
        for lay in r["layers"]:
            out.setdefault(lay["layer"], []).append((r, lay))
    return out


def _finite(x) -> bool:
    """A number to print (report.json turns NaN into null)."""
    return isinstance(x, (int, float)) and bool(np.isfinite(x))


def _pct(x) -> str:
    return f"{100 * x:.1f}%" if _finite(x) else "–"


def _num(x, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "–"


def _least(f: dict) -> str:
    quarter = -(-f["units"] // 4)
    tied = " (with ties)" if f["least_important"] > quarter else ""
    verb = "includes" if f["least_important"] == 1 else "include"
    return f"{plural(f['least_important'], 'least important unit')}{tied} {verb}"


def _p(p) -> str:
    return f", p = {p:.2g}" if _finite(p) else ""


def _sort_p(p) -> float:
    return p if _finite(p) else 2.0


def _no_effect(items: list[tuple[dict, dict]]) -> str:
    """How many units silent on the test images, and how many others, change nothing when ablated."""
    units = [u for _, lay in items for u in lay["units"]]
    silent = [u for u in units if u["never_active"]]
    silent_none = sum(u["overall"] == 0 for u in silent)
    other_none = sum(u["overall"] == 0 for u in units if not u["never_active"])
    text = ""
    if silent:
        why = " (as they must: their channel is zero on every image)" if silent_none == len(silent) else ""
        text += f" Ablating a unit silent on every test image changes no output at all for {silent_none} of {len(silent)}{why}"
        text += f"; so does ablating {plural(other_none, 'other unit')}." if other_none else "."
    elif other_none:
        text += f" Ablating {plural(other_none, 'unit')} changes no output at all."
    return text


def _still_matter(with_flags: list[tuple[dict, dict]]) -> str:
    """Dead or duplicate units that are active and more important than the layer's median unit:
    a dead filter's bias can still feed the next layer a constant channel."""
    matter, candidates = [], 0
    for r, lay in with_flags:
        med = float(np.median([u["overall"] for u in lay["units"]]))
        for u in lay["units"]:
            if (u["dead"] or u["duplicate"]) and not u["never_active"]:
                candidates += 1
                if u["overall"] > max(med, 0.0):
                    matter.append(f"{r['run']} unit {u['index']} ({_flag_words(u)}, rank {u['rank']} of "
                                  f"{len(lay['units'])})")
    if not candidates:
        return ""
    if not matter:
        return f" None of the {plural(candidates, 'active dead or duplicate unit')} is more important than the median unit."
    return (f" {len(matter)} of the {plural(candidates, 'dead or duplicate unit')} that still fire (a dead filter's "
            f"bias makes a constant channel) matter more than the median unit: {listing(matter, 4)}.")


def _flag_words(u: dict) -> str:
    return "/".join(w for w, k in (("dead", "dead"), ("silent", "never_active"), ("duplicate", "duplicate"))
                    if u[k])


class ImportanceExtension(UnitAnalysis):
    """Causal importance of units: ablate each unit, measure every output head, relate to health.

    Per run (``run_part``): for the layers of ``analyses.importance.layers``, each of the first
    ``max_units`` units is zeroed in turn (reportgen.run.ablation) and the relative change
    of every output head on the run's test images is kept. ``reduce`` ranks the units and asks
    whether the units the health rules flag (dead filters, never-active channels,
    near-duplicate filters, from report["runs"]) are the unimportant ones.
    """

    name = NAME
    value_type = RunImportance
    missing = "no ablation"
    key_options = ("max_units",)

    def analyse(self, ctx: RunContext, layers: list[str]) -> RunImportance:
        """Ablate the first ``max_units`` units of each covered layer on all of the run's images."""
        x, why = stacked_inputs(ctx.images)
        if x is None:
            return self.without(why)
        x = x.to(ctx.device)
        with inference(ctx.model), LayerRecorder(ctx.model, layers) as rec:
            shapes = {k: tuple(v.shape) for k, v in rec.run(x[:1]).items()}
        out = RunImportance(images=len(x))
        for name in layers:
            if len(shapes[name]) < 2:
                out.notes.append(f"{name}: no ablation: its output has no channels")
                continue
            units = list(range(min(shapes[name][1], self.options(ctx.spec).max_units)))
            res = ablate_units(ctx.model, name, x, units)
            out.heads = list(res.heads)
            out.layers.append(name)
            out.channels.append(shapes[name][1])
            out.effect.append(res.effect)
        return out

    def reduce(self, spec, values: dict[str, RunImportance], report: dict) -> dict:
        """report["importance"]: per run and layer each unit's effect per head, its rank and flags, and
        how the flags relate to importance (docs/reference/report-json.md)."""
        runs = []
        for key, v in values.items():
            entry = {"run": key, "images": v.images, "heads": list(v.heads), "notes": list(v.notes), "layers": []}
            for layer, channels, effect in zip(v.layers, v.channels, v.effect):
                overall = effect.mean(axis=1) if effect.size else np.zeros(len(effect))
                order = ranking(overall)
                rank = np.empty(len(order), dtype=int)
                rank[order] = np.arange(1, len(order) + 1)
                lay = find_layer(report, key, layer)
                flags = unit_flags(lay, len(overall))
                flagged = flags["dead"] | flags["never_active"] | flags["duplicate"]
                norms = np.array([f.get("l2_norm") if f.get("l2_norm") is not None else np.nan
                                  for f in (lay or {}).get("filters", [])[:len(overall)]], dtype=np.float64)
                entry["layers"].append({
                    "layer": layer, "channels": channels, "units_ablated": len(overall),
                    "order": order.tolist(),
                    "top": [{"head": h, "unit": int(np.nanargmax(effect[:, j])) if np.isfinite(effect[:, j]).any()
                             else None, "effect": float(np.nanmax(effect[:, j])) if np.isfinite(effect[:, j]).any()
                             else None} for j, h in enumerate(v.heads)],
                    "flags": relate_to_flags(overall, flagged),
                    "spearman_norm": _spearman(overall, norms) if len(norms) == len(overall) else None,
                    "units": [{"index": i, "effect": [float(e) for e in effect[i]], "overall": float(overall[i]),
                               "rank": int(rank[i]), "dead": bool(flags["dead"][i]),
                               "never_active": bool(flags["never_active"][i]),
                               "duplicate": bool(flags["duplicate"][i])} for i in range(len(overall))]})
            runs.append(entry)
        return {"max_units": self.options(spec).max_units, "runs": runs}

    def pictures(self, spec, section: dict, values) -> dict[str, bytes]:
        out = {}
        for layer, items in _by_layer(section).items():
            panels = []
            for r, lay in items:
                units = [lay["units"][i] for i in lay["order"]]
                panels.append((r["run"], np.array([u["overall"] for u in units]),
                               np.array([u["dead"] or u["never_active"] or u["duplicate"] for u in units])))
            out[f"{slug(layer)}.png"] = importance_bars(
                panels, f"{layer}: effect of ablating each unit, most important first\n"
                "(mean relative change over heads; red: dead, silent on the test images or duplicate)")
        return out

    def pages(self, spec, report: dict, pics: dict[str, str]) -> dict[str, str]:
        from reportgen.render.pages import environment

        page = environment().get_template("importance.md.j2").render(
            section=report[NAME], layers=list(_by_layer(report[NAME]).items()), pictures=pics, top=TOP,
            pct=_pct, num=_num, p_cell=lambda p: _p(p).removeprefix(", p = ") or "–")
        return {PAGE: page}

    def section_findings(self, sec: dict) -> list[dict]:
        """Per layer: are the flagged units the unimportant ones, and which units matter most."""
        out = []
        for layer, items in _by_layer(sec).items():
            link = f"{PAGE}#{anchor_id(layer)}"
            with_flags = [(r, lay) for r, lay in items if lay["flags"]["flagged"]]
            if with_flags:
                above = [(r, lay) for r, lay in with_flags
                         if lay["flags"]["flagged_in_least"] > lay["flags"]["expected_in_least"]]
                verdict = ("mostly the unimportant ones" if len(above) > len(with_flags) / 2
                           else "not especially the unimportant ones")
                examples = [f"{r['run']}: its {_least(lay['flags'])} {lay['flags']['flagged_in_least']} of its "
                            f"{lay['flags']['flagged']} flagged ones ({lay['flags']['expected_in_least']:.1f} "
                            f"expected by chance{_p(lay['flags']['p_value'])})"
                            for r, lay in sorted(with_flags, key=lambda t: _sort_p(t[1]["flags"]["p_value"]))]
                text = (f"Dead, silent and duplicate {code(layer)} units are {verdict} (ablation): at "
                        f"{len(above)} of {len(with_flags)} locations with such units the least important quarter "
                        f"holds more of them than chance, e.g. {listing(examples, 2)}.")
                text += _no_effect(items) + _still_matter(with_flags)
                # Ranked by the share of flagged units that still fire: that never-active units change
                # nothing is a given, whether dead or duplicate filters matter is the news.
                flagged = [u for _, lay in with_flags for u in lay["units"] if u["dead"] or u["duplicate"]
                           or u["never_active"]]
                firing = sum(not u["never_active"] for u in flagged) / len(flagged) if flagged else 0.0
                out.append(finding("info", text, None, layer, link, float(firing), kind="importance",
                                   locations=[r["run"] for r, _ in with_flags]))
            tops = []
            for r, lay in items:
                if not lay["order"]:
                    continue
                i = lay["order"][0]
                per_head = ", ".join(f"{h} {_pct(e)}" for h, e in zip(r["heads"], lay["units"][i]["effect"]))
                tops.append(f"{r['run']} unit {i} ({per_head})")
            if tops:
                out.append(finding("info", f"The {code(layer)} unit whose ablation changes the outputs most: "
                                   f"{listing(tops, 4)}.", None, layer, link, 0.0, kind="importance",
                                   locations=[r["run"] for r, _ in items]))
        return out
