"""Concept labels of units from the spec's own annotations, network dissection (``ConceptsExtension``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reportgen.analysis.dissect import dissect, labels, stack_masks
from reportgen.analysis.wording import finding, listing, plural
from reportgen.load.annotations import concept_masks, load_annotations
from reportgen.core.cache import register
from reportgen.core.extension import RunContext
from reportgen.core.names import anchor_id, code, slug
from reportgen.render.unit_charts import detector_bars
from reportgen.extensions.unit_analysis import UnitAnalysis, find_layer, layer_maps, stacked_inputs, unit_page

NAME = "concepts"
PAGE = "concepts.md"


@dataclass
class RunConcepts:
    """One run's dissection: per layer a (U, C) IoU matrix over the concepts."""

    concepts: list[str] = field(default_factory=list)  # C names
    concept_share: np.ndarray | None = None  # (C,) share of the annotated images' pixels in each concept
    images: int = 0  # annotated images used
    layers: list[str] = field(default_factory=list)
    iou: list[np.ndarray] = field(default_factory=list)  # per layer (U, C)
    thresholds: list[np.ndarray] = field(default_factory=list)  # per layer (U,) T_k
    notes: list[str] = field(default_factory=list)


register(RunConcepts)


def label_unit_entries(report: dict, section: dict) -> None:
    """Copy each unit's ``concept`` and ``concept_iou`` into report["runs"][..]["layers"][..]
    ["units"]["units"][..] where the report has unit views of that run and layer: the unit
    pages show them on the unit cards. The one change an extension makes outside its own key."""
    for entry in section["runs"]:
        for lay in entry["layers"]:
            target = find_layer(report, entry["run"], lay["layer"])
            views = (target or {}).get("units")
            if not isinstance(views, dict):
                continue
            labels_by_unit = {u["index"]: u for u in lay["units"]}
            for u in views.get("units", []):
                got = labels_by_unit.get(u.get("index"))
                if got is not None:
                    u["concept"], u["concept_iou"] = got["concept"], got["concept_iou"]


def best_possible_iou(quantile: float, share: float) -> float:
    """The highest IoU a unit firing on a share ``quantile`` of the pixels can reach with a
    concept covering a share ``share``: min / max of the two (one inside the other)."""
    return min(quantile, share) / max(quantile, share) if share > 0 else 0.0


def _layer_of(section: dict, run: str, layer: str) -> dict | None:
    entry = next((r for r in section["runs"] if r["run"] == run), None)
    return next((x for x in entry["layers"] if x["layer"] == layer), None) if entry else None


def _unreachable(sec: dict) -> list[dict]:
    """Concepts no unit can detect at this quantile, whatever it computes: too large or too small."""
    runs = [r for r in sec["runs"] if r["max_iou"] is not None]
    if not runs:
        return []
    shares = np.array([r["concept_share"] for r in runs])
    best = np.array([r["max_iou"] for r in runs]).max(axis=0)
    found = {c for lay in sec["layers"] for j, c in enumerate(sec["concepts"]) if lay["runs_with"][j]}
    parts = [f"{c} (it covers {100 * np.median(shares[:, j]):.1f}% of the pixels: IoU at most {best[j]:.3f})"
             for j, c in enumerate(sec["concepts"]) if best[j] < sec["iou_threshold"] and c not in found]
    if not parts:
        return []
    q = sec["quantile"]
    text = (f"No unit detects {listing(parts, 4)}, and none could: a unit firing on its top {100 * q:g}% of "
            f"the pixels cannot reach IoU {sec['iou_threshold']:g} with a concept that size. A larger "
            "`analyses.concepts.quantile` lets units of large concepts count.")
    return [finding("info", text, None, None, PAGE, 0.0, kind="concepts", locations=[])]


class ConceptsExtension(UnitAnalysis):
    """Concept labels of units from the spec's own annotations (network dissection).

    Per run (``run_part``): the layers of ``analyses.concepts.layers`` are read on the run's
    annotated test images, and every unit's top-quantile masks are compared with the masks
    of the annotated concepts (boxes per category, keypoint discs, polygons, background;
    reportgen.analysis.dissect). ``reduce`` labels each unit with its best concept when the
    IoU reaches ``analyses.concepts.iou``, counts the detectors of each concept per location
    and says which concepts emerge at every location and which only at some.
    """

    name = NAME
    value_type = RunConcepts
    missing = "no concept labels"
    key_options = ("quantile", "threshold")

    def run_inputs(self, ctx: RunContext) -> tuple:
        return (ctx.run.annotations,)  # the annotation file by content (cache.digest hashes paths so)

    def analyse(self, ctx: RunContext, layers: list[str]) -> RunConcepts:
        """IoU of every unit of the covered layers with every annotated concept."""
        if ctx.run.annotations is None:
            return self.without("the run has no 'annotations'")
        ann = load_annotations(ctx.run.annotations, f"{ctx.spec.where(('annotations',))}: annotations")
        pairs = [(im, ann.get(im.path)) for im in ctx.images]
        pairs = [(im, a) for im, a in pairs if a is not None]
        if not pairs:
            return self.without(f"none of the run's {len(ctx.images)} images is in {ctx.run.annotations.name}")
        x, why = stacked_inputs([im for im, _ in pairs])
        if x is None:
            return self.without(why)
        size = tuple(x.shape[2:])
        names, masks = stack_masks([concept_masks(a, size) for _, a in pairs], size)
        maps = layer_maps(ctx.model, ctx.run, layers, x, ctx.device)
        out = RunConcepts(concepts=names, concept_share=masks.mean(axis=(0, 2, 3)).astype(np.float64),
                          images=len(pairs))
        for name in layers:
            if maps[name].ndim != 4:
                out.notes.append(f"{name}: no concept labels: its output has no height and width")
                continue
            opts = self.options(ctx.spec)
            d = dissect(maps[name], names, masks, opts.quantile, opts.threshold)
            out.layers.append(name)
            out.iou.append(d.iou)
            out.thresholds.append(d.thresholds)
        return out

    def reduce(self, spec, values: dict[str, RunConcepts], report: dict) -> dict:
        """report["concepts"]: per run and layer each unit's best concept, the detector counts, and
        per layer which concepts emerge at every location (docs/reference/report-json.md)."""
        opts = self.options(spec)
        concepts = list(dict.fromkeys(c for v in values.values() for c in v.concepts if c != "background"))
        if any("background" in v.concepts for v in values.values()):
            concepts.append("background")
        runs, by_layer = [], {}
        for key, v in values.items():
            share = ([float(v.concept_share[v.concepts.index(c)]) if c in v.concepts else 0.0 for c in concepts]
                     if v.concept_share is not None else None)
            entry = {"run": key, "images": v.images, "notes": list(v.notes), "layers": [], "concept_share": share,
                     "max_iou": [best_possible_iou(opts.quantile, s) for s in share] if share is not None else None}
            for layer, iou in zip(v.layers, v.iou):
                full = np.zeros((iou.shape[0], len(concepts)))  # aligned with the report-wide concept list
                for j, c in enumerate(v.concepts):
                    full[:, concepts.index(c)] = iou[:, j]
                best = labels(full, concepts, opts.iou)
                detectors = [sum(1 for c, _ in best if c == name) for name in concepts]
                entry["layers"].append({
                    "layer": layer, "units_total": len(best), "labelled": sum(detectors), "detectors": detectors,
                    "units": [{"index": i, "concept": c, "concept_iou": round(s, 4),
                               "iou": [round(float(x), 4) for x in full[i]]} for i, (c, s) in enumerate(best)]})
                by_layer.setdefault(layer, []).append((key, detectors, len(best)))
            runs.append(entry)
        layers = []
        for layer, items in by_layer.items():
            counts = np.array([d for _, d, _ in items]).reshape(len(items), len(concepts))
            with_any = (counts > 0).sum(axis=0)
            layers.append({"layer": layer, "runs": [k for k, _, _ in items], "detectors": counts.tolist(),
                           "runs_with": with_any.tolist(),
                           "everywhere": [c for c, n in zip(concepts, with_any) if n == len(items)],
                           "somewhere": [c for c, n in zip(concepts, with_any) if 0 < n < len(items)],
                           "runs_without": [k for k, d, _ in items if not any(d)]})
        section = {"quantile": opts.quantile, "threshold": opts.threshold, "iou_threshold": opts.iou, "concepts": concepts, "runs": runs,
                   "layers": layers}
        label_unit_entries(report, section)
        return section

    def pictures(self, spec, section: dict, values) -> dict[str, bytes]:
        out = {}
        for lay in section["layers"]:
            out[f"{slug(lay['layer'])}.png"] = detector_bars(
                lay["runs"], section["concepts"], np.array(lay["detectors"]),
                f"{lay['layer']}: units detecting each concept (IoU ≥ {section['iou_threshold']:g})")
        return out

    def pages(self, spec, report: dict, pics: dict[str, str]) -> dict[str, str]:
        from reportgen.render.pages import environment

        sec = report[NAME]
        concepts = sec["concepts"]
        reach = [max((r["max_iou"][j] for r in sec["runs"] if r["max_iou"]), default=0.0)
                 for j in range(len(concepts))]
        images = {r["run"]: r["images"] for r in sec["runs"]}
        layers = []
        for lay in sec["layers"]:
            layer, rows, units = lay["layer"], [], []
            for run, det in zip(lay["runs"], lay["detectors"]):
                entry = _layer_of(sec, run, layer)
                rows.append({"run": run, "images": images[run], "detectors": det,
                             "link": unit_page(report, run, layer) or f"locations/{run}.md#layer-{anchor_id(layer)}",
                             "unlabelled": entry["units_total"] - entry["labelled"], "total": entry["units_total"]})
                by_concept = [(c, sorted((u for u in entry["units"] if u["concept"] == c),
                                         key=lambda u: -u["concept_iou"])) for c in concepts]
                units.append((run, [(c, found) for c, found in by_concept if found]))
            layers.append({**lay, "rows": rows, "units": units})
        page = environment().get_template("concepts.md.j2").render(section=sec, layers=layers, reach=reach,
                                                                    pictures=pics)
        return {PAGE: page}

    def section_findings(self, sec: dict) -> list[dict]:
        """One finding per layer: which concepts its units detect, where, and where not."""
        out = []
        for lay in sec["layers"]:
            layer, n_runs = lay["layer"], len(lay["runs"])
            link = f"{PAGE}#{anchor_id(layer)}"
            counts = np.array(lay["detectors"]).reshape(n_runs, len(sec["concepts"]))
            if not counts.any():
                best = max(((u["concept_iou"], r, u) for r in lay["runs"] for u in _layer_of(sec, r, layer)["units"]),
                           key=lambda t: t[0], default=None)
                tail = (f"; the best IoU is {best[0]:.3f} ({best[1]} unit {best[2]['index']})" if best else "")
                out.append(finding("info", f"No {code(layer)} unit detects an annotated concept "
                                   f"(IoU ≥ {sec['iou_threshold']:g}) at any of {plural(n_runs, 'location')}{tail}.",
                                   None, layer, link, 0.0, kind="concepts", locations=list(lay["runs"])))
                continue
            per_run = []
            order = np.argsort(-counts.sum(axis=1), kind="stable")
            for i in order:
                if counts[i].sum():
                    total = _layer_of(sec, lay["runs"][i], layer)["units_total"]
                    what = ", ".join(f"{n} {c}" for c, n in zip(sec["concepts"], counts[i]) if n)
                    per_run.append(f"{lay['runs'][i]} {counts[i].sum()} of {total} ({what})")
            text = (f"{code(layer)} units detect annotated concepts (IoU ≥ {sec['iou_threshold']:g}) at "
                    f"{n_runs - len(lay['runs_without'])} of {plural(n_runs, 'location')}: {listing(per_run, 4)}")
            text += f"; none at {listing(lay['runs_without'])}." if lay["runs_without"] else "."
            if n_runs > 1:
                common = ", ".join(lay["everywhere"]) or "no concept"
                some = [f"{c} at {n}" for c, n in zip(sec["concepts"], lay["runs_with"]) if 0 < n < n_runs]
                text += f" Detected at every location: {common}"
                text += f"; only at some: {listing(some)}." if some else "."
            out.append(finding("info", text, None, layer, link, float((counts.sum(axis=1) > 0).mean()),
                               kind="concepts", locations=list(lay["runs"])))
        out += _unreachable(sec)
        return out
