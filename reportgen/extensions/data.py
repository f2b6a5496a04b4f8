"""The "data" extension: what each location's frames look like, and whether the networks'
differences follow the data's (``DataExtension``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from reportgen.core import cache
from reportgen.analysis import datastats as ds
from reportgen.analysis.mantel import PERMUTATIONS, complete_subset, holm, leave_one_out, mantel
from reportgen.core.extension import Extension, RunContext

cache.register(ds.LocationData)

NAME = "data"
SEED = 0
ALPHA = 0.05
MIN_LOCATIONS = 4  # below this a Mantel test cannot reach p < 0.05 (3! = 6 relabellings)
MAX_FRAMES = 256  # frames per location kept for the statistics (evenly spaced) to bound memory
NETWORK = {"weights": ("weight_similarity", "1 − matched |cos| of the weights (aligned through the network)"),
           "cka": ("cka", "1 − linear CKA of the activations on the shared images")}


# -- which frames -------------------------------------------------------------------------


def _model_runs(spec, run) -> list:
    return [r for r in spec.runs if r.model.name == run.model.name]


def shared_images(spec, run) -> set[Path]:
    """Images every run of the run's model sees: they say nothing about one location."""
    runs = _model_runs(spec, run)
    if len(runs) < 2:
        return set()
    return set.intersection(*(set(r.images) for r in runs))


def own_frames(spec, run) -> list[Path]:
    shared = shared_images(spec, run)
    return [p for p in run.images if p not in shared] + list(run.extra_frames)


# -- per run ------------------------------------------------------------------------------


def _frames(ctx: RunContext) -> tuple[np.ndarray, int, list[Path]]:
    """(N, H, W, 3) float32 frames in [0, 1], how many are extra frames, their paths."""
    from reportgen.load.images import load_image

    shared = shared_images(ctx.spec, ctx.run)
    own = [im for im in ctx.images if im.path not in shared]
    extra = [load_image(p, ctx.run.input) for p in ctx.run.extra_frames]
    loaded = own + extra
    if len(loaded) > MAX_FRAMES:
        keep = np.linspace(0, len(loaded) - 1, MAX_FRAMES).round().astype(int)
        loaded = [loaded[i] for i in keep]
    pix = [im.pixels.astype(np.float32) / 255.0 for im in loaded]
    size = pix[0].shape[:2]  # without an input size frames may differ: all take the first one's
    pix = [p if p.shape[:2] == size else ds.resize(p, size).astype(np.float32) for p in pix]
    extra_paths = set(ctx.run.extra_frames)
    n_extra = sum(1 for im in loaded if im.path in extra_paths)
    return np.stack(pix), n_extra, [im.path for im in loaded]


def _ann_where(spec, run) -> str:
    mi = next(i for i, m in enumerate(spec.schema.models) if m.name == run.model.name)
    kp = ("models", mi, "annotations") if run.model.annotations is not None else ("annotations",)
    return f"{spec.where(kp)}: {'.'.join(map(str, kp))}"


# -- reduce -------------------------------------------------------------------------------


def _finite_list(x) -> list | None:
    return None if x is None else [v if isinstance(v, (int, float)) and math.isfinite(v) else None
                                   for v in np.asarray(x, dtype=np.float64).ravel().tolist()]


def _location_entry(key: str, run, v: ds.LocationData, n_shared: int) -> dict:
    with np.errstate(divide="ignore"):
        log_power = np.log10(v.spectrum)
    return {"run": key, "model": run.model.name, "location": run.location, "frames": v.frames,
            "extra_frames": v.extra_frames, "shared_left_out": n_shared,
            "colour_mean": _finite_list(v.colour_mean), "colour_sd": _finite_list(v.colour_sd),
            "log10_power": _finite_list(log_power),
            "spectrum_slope": v.spectrum_slope if math.isfinite(v.spectrum_slope) else None,
            "annotated_frames": v.annotated_frames, "boxes": v.boxes,
            "scale_histogram": _finite_list(v.scale_hist), "foot_row_histogram": _finite_list(v.foot_hist),
            "centre_column_histogram": _finite_list(v.centre_hist)}


def _matrix(rows) -> np.ndarray:
    return np.array([[np.nan if x is None else x for x in row] for row in rows], dtype=np.float64)


def data_distances(keys: list[str], values: dict[str, ds.LocationData]) -> dict[str, np.ndarray]:
    """measure -> (K, K) distances among ``keys``; object measures only when some location has boxes."""
    data = [values[k] for k in keys]
    has_boxes = any(v.scale_hist is not None and v.boxes > 0 for v in data)
    return {m: ds.distance_matrix(m, data) for m in ds.MEASURES if has_boxes or m not in ds.OBJECT_MEASURES}


def mantel_tests(comparisons: list[dict], distances: dict[str, dict], permutations: int = PERMUTATIONS,
                 seed: int = SEED) -> list[dict]:
    """One entry per (model, layer, network measure, data measure); Holm-adjusted over all.

    distances: model -> {"runs": [...], measure: (K, K)}. Locations missing from a layer's
    comparison or with a non-finite distance in either matrix are left out (named in
    ``left_out``); with fewer than MIN_LOCATIONS left, r and p are null.
    """
    out = []
    for c in comparisons:
        d = distances.get(c["model"])
        if d is None:
            continue
        for net, (key, _) in NETWORK.items():
            if c.get(key) is None:
                continue
            sim = _matrix(c[key])
            for measure in ds.MEASURES:
                if measure not in d:
                    continue
                runs = [r for r in c["runs"] if r in d["runs"]]
                ci = [c["runs"].index(r) for r in runs]
                di = [d["runs"].index(r) for r in runs]
                net_d = 1.0 - sim[np.ix_(ci, ci)]
                data_d = d[measure][np.ix_(di, di)]
                keep = complete_subset([net_d, data_d]) if runs else []
                entry = {"model": c["model"], "layer": c["layer"], "network": net, "data": measure,
                         "runs": [runs[i] for i in keep],
                         "left_out": sorted(set(c["runs"]) - {runs[i] for i in keep}),
                         "n": len(keep), "r": None, "p": None, "spearman_r": None, "spearman_p": None,
                         "smallest_p": None, "exact": None, "null_r_95": None, "r_leave_one_out": None}
                if len(keep) >= MIN_LOCATIONS:
                    a, b = net_d[np.ix_(keep, keep)], data_d[np.ix_(keep, keep)]
                    pr = mantel(a, b, "pearson", permutations, seed)
                    sr = mantel(a, b, "spearman", permutations, seed)
                    loo = leave_one_out(a, b)
                    entry.update(r=_num(pr.r), p=pr.p, spearman_r=_num(sr.r), spearman_p=sr.p,
                                 smallest_p=pr.smallest_p, exact=pr.exact, null_r_95=_num(pr.null_r_95),
                                 r_leave_one_out=[_num(float(np.nanmin(loo))), _num(float(np.nanmax(loo)))]
                                 if np.isfinite(loo).any() else None)
                out.append(entry)
    adjusted = holm([e["p"] for e in out])
    for e, q in zip(out, adjusted):
        e["p_holm"] = q
        e["survives"] = q is not None and q <= ALPHA
    return out


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None




class DataExtension(Extension):
    """What each location's frames look like, and whether the networks' differences follow the data's.

    Per run (``run_part``, no model needed): the location's own frames (its test images
    minus those every location of the model sees, plus ``extra_frames``) become a
    ``LocationData`` (reportgen.analysis.datastats). The reduce step builds a distance
    matrix per data measure and per network measure and layer (1 - matched weight
    similarity, 1 - CKA, from report["comparisons"]), and runs a Mantel test for each
    (data measure x network measure x layer), with Holm's correction over all of them.
    """

    name = NAME
    version = 1

    def wanted(self, spec) -> bool:
        models: dict[str, int] = {}
        for r in spec.runs:
            if own_frames(spec, r):
                models[r.model.name] = models.get(r.model.name, 0) + 1
        return any(n >= 2 for n in models.values())

    def run_wanted(self, spec, run) -> bool:
        return bool(own_frames(spec, run))

    def run_key(self, ctx: RunContext) -> tuple:
        shared = shared_images(ctx.spec, ctx.run)
        own = tuple(im.digest for im in ctx.images if im.path not in shared)
        extra = tuple(cache.file_digest(p) for p in ctx.run.extra_frames)
        ann = cache.file_digest(ctx.run.annotations) if ctx.run.annotations is not None else None
        return ("data", own, extra, ann, MAX_FRAMES, repr(ctx.run.input))

    def run_part(self, ctx: RunContext) -> ds.LocationData | None:
        from reportgen.load.annotations import load_annotations

        if not own_frames(ctx.spec, ctx.run):
            return None
        frames, n_extra, paths = _frames(ctx)
        boxes, annotated = None, 0
        if ctx.run.annotations is not None:
            ann = load_annotations(ctx.run.annotations, _ann_where(ctx.spec, ctx.run))
            boxes = []
            for p in paths:
                a = ann.get(p)
                if a is not None:
                    annotated += 1
                    boxes += [(*o.box, a.width, a.height) for o in a.objects]
        return ds.location_data(frames, extra=n_extra, boxes=boxes, annotated_frames=annotated)

    def reduce(self, spec, values: dict, report: dict) -> dict | None:
        runs = {r.key: r for r in spec.runs}
        present = {k: v for k, v in values.items() if v is not None}
        if not present:
            return None
        locations = [_location_entry(k, runs[k], v, len(shared_images(spec, runs[k])))
                     for k, v in present.items()]
        distances = {}
        for model in dict.fromkeys(runs[k].model.name for k in present):
            keys = [k for k in present if runs[k].model.name == model]
            if len(keys) >= 2:
                distances[model] = {"runs": keys, **data_distances(keys, present)}
        tests = mantel_tests(report.get("comparisons", []), distances)
        counted = [t for t in tests if t["p"] is not None]
        return {
            "colour_space": ds.COLOUR_SPACE,
            "spectrum_frequencies": ds.spectrum_centres().tolist(),
            "slope_range": list(ds.SLOPE_RANGE),
            "histogram_edges": ds.HIST_EDGES.tolist(),
            "measures": {m: ds.DISTANCES[m] for m in ds.MEASURES
                         if any(m in d for d in distances.values())},
            "network_measures": {k: v[1] for k, v in NETWORK.items()},
            "locations": locations,
            "distances": [{"model": m, "runs": d["runs"],
                           "matrices": {k: [_finite_list(row) for row in v] for k, v in d.items() if k != "runs"}}
                          for m, d in distances.items()],
            "mantel": {"permutations": PERMUTATIONS, "seed": SEED, "alpha": ALPHA, "correction": "holm",
                       "tests": len(counted), "results": tests},
        }

    def findings(self, report: dict, analyses) -> list[dict]:
        from reportgen.extensions.data_text import findings

        return findings(report)

    def pictures(self, spec, section: dict | None, values: dict) -> dict[str, bytes]:
        from reportgen.render.data import data_pictures

        if not section:
            return {}
        return data_pictures(section, {k: v for k, v in values.items() if v is not None})

    def pages(self, spec, report: dict, pictures: dict[str, str]) -> dict[str, str]:
        from reportgen.extensions.data_text import PAGE, page

        return {PAGE: page(report, pictures)} if report.get(NAME) else {}
