"""Results -> the report's files, in memory: pictures, report.json and pages.

Paths inside a report (all relative to docs/<report>/):
  img/{run}/{layer}/{view}.png      filter views and activations of one run
                                    ({layer}: names.slug of the module name)
  img/{run}/input_{k}.png           the images shown
  img/{run}/stages_{k}.png          shared image k through every layer
  img/{model}/{layer}/*.png         charts and comparisons of a layer across runs
  img/shared_{k}.png                a shared image (img/{model}/shared_{k}.png with several models)
  img/cross-model/{a}_vs_{b}.png    layer-by-layer CKA of two models (several models)
  img/reference/*.png               the reference model's filters
Pages: layers/{layer}.md per layer, or layers/{model}/{layer}.md when the report has several
models (pages.layer_page); models.md compares the models.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from reportgen import __version__
from reportgen.analysis.findings import Z_ABOVE_CHANCE, rank_key
from reportgen.analysis.findings import findings as make_findings
from reportgen.analysis.locations import best_matches
from reportgen.core.cache import Cache, digest
from reportgen.reduce.compare import GABOR_MIN_LIVE, Comparisons, gabor_summary
from reportgen.core.names import slug
from reportgen.render.pages import render_pages
from reportgen.reduce.extensions import add_extension_files, reduce_extensions, with_extension_findings
from reportgen.render.charts import norms_by_run, similarity_heatmap, weight_histograms
from reportgen.render.colour import display_width, encode_png
from reportgen.render.tiles import health_marks, layer_scale
from reportgen.render.views import activation_grid, across_locations, filter_views, gabor_triplets, stage_strip
from reportgen.core.report_json import SCHEMA_VERSION, to_json
from reportgen.publish.site import ReportFiles
from reportgen.load.spec import ReportSpec
from reportgen.core.spill import NO_SPILL, Spill

FILTER_KEYS = ["l2_norm", "norm_over_init", "max_abs", "near_zero_fraction", "dead", "nonfinite",
               "duplicate_of", "opposite_of", "gabor_score"]
CHANNEL_KEYS = ["mean", "max", "active_fraction", "never_active", "saturated"]


def group_layers(results) -> dict[tuple[str, str], list]:
    """(model, layer) -> [(run result, layer result)] in run order."""
    groups: dict[tuple[str, str], list] = {}
    for r in results:
        for lr in r.layers:
            groups.setdefault((r.run.model.name, lr.name), []).append((r, lr))
    return groups


def render_report(spec: ReportSpec, results, comp: Comparisons, device: torch.device,
                  cache: Cache | None = None, spill: Spill = NO_SPILL) -> tuple[ReportFiles, dict]:
    """All pictures, report.json and pages of a report.

    Every picture is cached under a digest of the arrays and options it is drawn
    from, so an unchanged layer is not drawn again. Spilled maps (reportgen.core.spill) are
    loaded one run and layer at a time.
    """
    cache = cache or Cache(None)

    def png(tag: str, inputs: tuple, draw) -> bytes:
        return cache.memo_bytes("png", digest("png", tag, inputs), lambda: encode_png(draw()))

    def chart(tag: str, inputs: tuple, draw) -> bytes:
        return cache.memo_bytes("png", digest("chart", tag, inputs), draw)

    files = ReportFiles()
    images: dict[tuple[str, str], dict[str, str]] = {}  # (run key, layer) -> view -> path
    # (model, layer) -> kind -> [(model, path)]
    layer_imgs: dict[tuple[str, str], dict[str, list[tuple[str, str]]]] = {}
    h = spec.analyses.health
    for (model, layer), items in group_layers(results).items():
        ws = [lr.weight for _, lr in items if lr.weight is not None]
        shared = max((layer_scale(w) for w in ws), default=0.0)
        per_layer = layer_imgs.setdefault((model, layer), {})

        def add_layer_img(kind: str, name: str, png: bytes) -> None:
            per_layer.setdefault(kind, []).append((model, files.add(f"img/{model}/{slug(layer)}/{name}.png", png)))

        for r, lr in items:
            paths = images.setdefault((r.run.key, layer), {})
            if lr.weight is not None and spec.analyses.filters.enabled:
                marks = health_marks(lr.health)
                views = cache.memo("png", digest("filter-views", lr.weight, marks, shared, spec.analyses.filters.tile_px),
                                   lambda: {v: encode_png(img) for v, img in filter_views(
                                       lr.weight, marks, shared, spec.analyses.filters.tile_px).items()})
                for view, data in views.items():
                    paths[view] = files.add(f"img/{r.run.key}/{slug(layer)}/{view}.png", data)
            fits = comp.gabor.get((r.run.key, layer))
            if fits:
                paths["gabor"] = files.add(f"img/{r.run.key}/{slug(layer)}/gabor.png", png(
                    "gabor", (lr.weight, [f.fitted for f in fits], [f.score for f in fits]),
                    lambda: gabor_triplets(lr.weight, fits)))
            # Spilled maps are read only when a picture is not cached: there is one per shown image.
            layer_maps = _Once(lambda lr=lr: spill.load(lr, "maps"))
            for k in range(len(r.images) if "maps" in lr.spilled else len(lr.maps)):
                # The layer's key already digests everything the maps come from.
                act_key = digest("activations", lr.key, k) if lr.key else digest("activations", lr.maps[k])
                data, order = cache.memo("png", act_key, lambda k=k, m=layer_maps: _act_png(m()[k]))
                paths[f"act_{k}"] = files.add(f"img/{r.run.key}/{slug(layer)}/activations_{k}.png", data)
                paths[f"act_{k}_order"] = ",".join(map(str, order[:8]))
        if ws:
            norms = {r.run.key: lr.health["l2_norm"] for r, lr in items if lr.weight is not None}
            median = items[0][1].info["pooled_scale"]["median_norm"]
            threshold = h.dead_norm_ratio * median
            add_layer_img("norms", "norms", chart("norms", (list(norms), list(norms.values()), threshold, layer),
                                                  lambda: norms_by_run(norms, threshold,
                                                                       f"{layer}: filter L2 norms by location")))
            named = {r.run.key: lr.weight for r, lr in items if lr.weight is not None}
            add_layer_img("histograms", "histograms", chart(
                "hist", (list(named), list(named.values()), layer),
                lambda: weight_histograms(named, f"{layer}: weight values")))
        cmp = comp.layers.get((model, layer))
        if cmp is not None:
            for kind, mat, title in (("weights", cmp.weights, "matched |cos| of filter weights"),
                                     ("activations", cmp.activations, "matched activation correlation"),
                                     ("cka", cmp.cka, "linear CKA of activations")):
                if mat is not None:
                    add_layer_img(f"sim_{kind}", f"similarity_{kind}", chart(
                        "sim", (mat, cmp.runs, layer, title),
                        lambda mat=mat, title=title: similarity_heatmap(mat, cmp.runs, f"{layer}: {title}")))
            wts = [lr.weight for _, lr in items]
            if cmp.weights is not None and wts[0].ndim == 4:
                base_i = _base_index(spec, [r.run.key for r, _ in items])
                others = [w for i, w in enumerate(wts) if i != base_i]
                add_layer_img("across", "across_locations", png(
                    "across", (wts[base_i], others, shared, [m for pair in cmp.matched_to(base_i) if pair
                                                             for m in pair]),
                    lambda: across_locations(wts[base_i], others,
                                             best_matches(wts[base_i], others, cmp.matched_to(base_i)), shared)))
                per_layer["across_order"] = [(model, ",".join(
                    [items[base_i][0].run.key] + [r.run.key for i, (r, _) in enumerate(items) if i != base_i]))]
    for r in results:
        for k, im in enumerate(r.images):
            files.add(f"img/{r.run.key}/input_{k}.png", png("input", (im.pixels,), lambda im=im: im.pixels))
        # One stage map per shared image shown (r.shared_shown), read only to draw a missing picture.
        stage_maps = _Once(lambda r=r: [spill.load(lr, "shared_maps") for lr in r.layers])
        n_stages = min((len(r.shared_shown) if "shared_maps" in lr.spilled else len(lr.shared_maps)
                        for lr in r.layers), default=0)
        for k in range(n_stages):
            keyed = all(lr.key for lr in r.layers)
            stage_inputs = tuple(lr.key for lr in r.layers) if keyed else tuple(m[k] for m in stage_maps())
            images.setdefault((r.run.key, "__stages__"), {})[str(k)] = files.add(
                f"img/{r.run.key}/stages_{k}.png", png("stages", (stage_inputs, k),
                                                        lambda k=k, m=stage_maps: stage_strip([x[k] for x in m()])))
    shared_inputs = _shared_inputs(spec, results, files, png)
    cross_imgs = {}
    for pair in comp.models:
        a, b = pair.models
        cross_imgs[f"{a}|{b}"] = files.add(f"img/cross-model/{a}_vs_{b}.png", chart(
            "cross-model", (pair.cka, pair.layers, pair.models),
            lambda pair=pair, a=a, b=b: similarity_heatmap(
                pair.cka, [f"{a}: {n}" for n in pair.layers[0]], f"linear CKA, {a} (rows) vs {b} (columns)",
                col_names=[f"{b}: {n}" for n in pair.layers[1]])))
    if comp.reference_weight is not None:
        ref_w, tile_px = comp.reference_weight, spec.analyses.filters.tile_px
        ref_views = cache.memo("png", digest("filter-views", ref_w, None, None, tile_px), lambda: {
            v: encode_png(img) for v, img in filter_views(ref_w, None, None, tile_px).items()})
        for view, data in ref_views.items():
            images.setdefault(("reference", "__ref__"), {})[view] = files.add(f"img/reference/{view}.png", data)
        if comp.reference_fits:
            fits = comp.reference_fits
            images[("reference", "__ref__")]["gabor"] = files.add("img/reference/gabor.png", png(
                "gabor", (ref_w, [f.fitted for f in fits], [f.score for f in fits]),
                lambda: gabor_triplets(ref_w, fits)))
    unit_pages = _unit_pictures(results, files, cache)
    filter_pages = _filter_pictures(results, comp, files, cache, spill)
    report = report_dict(spec, results, comp, device)
    done = reduce_extensions(spec, results, report)
    report["findings"] = with_extension_findings(model_findings(report, spec.analyses), done, report, spec.analyses)
    files.add("report.json", to_json(report))
    add_extension_files(spec, done, report, files)
    widths = {rel: w for rel, data in files.items() if rel.endswith(".png") and (w := display_width(data))}
    for rel, text in render_pages(spec, report, images, layer_imgs, shared_inputs, unit_pages,
                                  cross_imgs, widths, filter_pages).items():
        files.add(rel, text)
    return files, report


class _Once:
    """``make()`` called on first use only, then remembered."""

    def __init__(self, make):
        self.make, self.value, self.done = make, None, False

    def __call__(self):
        if not self.done:
            self.value, self.done = self.make(), True
        return self.value


def _shared_inputs(spec: ReportSpec, results, files: ReportFiles, png) -> dict[str, list[str]]:
    """Model -> paths of its shared images as that model sees them (its own input size)."""
    out: dict[str, list[str]] = {}
    multi = len(spec.models) > 1
    for r in results:
        model = r.run.model.name
        if model in out:
            continue
        prefix = f"img/{model}/shared_" if multi else "img/shared_"
        out[model] = [files.add(f"{prefix}{k}.png", png("input", (im.pixels,), lambda im=im: im.pixels))
                      for k, im in enumerate(r.shared_shown)]
    return out


def model_findings(report: dict, analyses) -> list[dict]:
    """Findings of a one-model report as they are; with several models, each model's findings
    from its own runs and comparisons, said of that model and linked to its layer pages."""
    models = list(dict.fromkeys(r["model"] for r in report["runs"]))
    if len(models) < 2:
        return [{**f, "model": models[0] if models else None} for f in make_findings(report, analyses)]
    out = []
    ref = report.get("reference")
    for model in models:
        runs = [r for r in report["runs"] if r["model"] == model]
        keys = {r["key"] for r in runs}
        sub = {**report, "runs": runs,
               "comparisons": [c for c in report.get("comparisons", []) if c["model"] == model],
               "reference": ref if ref and any(p["run"] in keys for p in ref["per_run"]) else None}
        for f in make_findings(sub, analyses):
            text = relink_layers(f["text"], model)
            link = relink_layers(f"]({f['link']})", model)[2:-1] if f["link"] else None
            said = text if text.startswith(f"**{model}") else f"Model **{model}**: {text}"
            out.append({**f, "text": said, "link": link, "model": model})
    # Ranked findings of all models together; each model's overview and next step after them.
    tail = ("overview", "next_step")
    out = (sorted((f for f in out if f.get("kind") not in tail), key=rank_key)
           + [f for f in out if f.get("kind") == "overview"] + [f for f in out if f.get("kind") == "next_step"])
    if not report.get("model_comparisons") and analyses.compare.enabled and analyses.activations.enabled:
        out.append({"severity": "info", "kind": "next_step", "text": "Suggested next step: list test images "
                    "that every model sees (the same files in each model's images) to compare the models "
                    "with CKA.", "location": None, "locations": [], "layer": None, "link": None, "value": 0.0,
                    "model": None})
    return out


def relink_layers(text: str, model: str) -> str:
    """Point links to ``layers/<layer>.md`` at the model's own ``layers/<model>/<layer>.md``."""
    return text.replace("](layers/", f"](layers/{model}/")


def _base_index(spec: ReportSpec, keys: list[str]) -> int:
    base = spec.analyses.compare.base
    return keys.index(base) if base in keys else 0


def _unit_pictures(results, files: ReportFiles, cache: Cache) -> dict[tuple[str, str], dict]:
    """Grids and per-unit cards of every (run, layer) with unit views; returns their paths."""
    from reportgen.render.tiles import mapped_tiles, per_layer
    from reportgen.render.unit_cards import CARD_TILE, card_legend, unit_cards, unit_grids

    pages = {}
    for r in results:
        for layer, u in r.units.items():
            lr = next(x for x in r.layers if x.name == layer)
            key = digest("unit-pictures-named", CARD_TILE, u.plain, u.fourier, u.decoded, u.nf, u.patches, u.deconv, u.guided,
                         u.stuck, lr.weight, getattr(u, "inactive", None))

            def draw(u=u, lr=lr) -> dict:
                w_tiles = None
                if lr.weight is not None and lr.weight.ndim == 4:
                    mean = lr.weight.mean(axis=1)
                    w_tiles = mapped_tiles(per_layer(mean), "gray")
                grids = {name: encode_png(img) for name, img in unit_grids(u).items()}
                cards = [encode_png(card) for card in unit_cards(u, w_tiles)]
                return {"grids": grids, "cards": cards, "legend": card_legend(u, w_tiles is not None)}

            pics = cache.memo("png", key, draw)
            base = f"img/{r.run.key}/{slug(layer)}/units"
            pages[(r.run.key, layer)] = {
                "grids": {name: files.add(f"{base}/{name}.png", data) for name, data in pics["grids"].items()},
                "cards": [files.add(f"{base}/unit_{i}.png", data) for i, data in enumerate(pics["cards"])],
                "legend": pics["legend"],
            }
    return pages


def _filter_pictures(results, comp: Comparisons, files: ReportFiles, cache: Cache,
                     spill: Spill = NO_SPILL) -> dict[tuple[str, str], dict]:
    """Each conv filter's own pictures (filter pages) and its match at every other location.

    Returns (run key, layer) -> {"tiles", "inputs", "maps": [path or None per filter],
    "matches": per filter [{"run", "index", "sign", "score"}]}: the comparison's matching
    (aligned through the network where it was) with |cos| in each run's own input order.
    """
    from reportgen.render.views import one_filter_pictures

    out = {}
    for (model, layer), items in group_layers(results).items():
        ws = [lr.weight for _, lr in items]
        if any(w is None or w.ndim != 4 for w in ws):
            continue
        shared = max(layer_scale(w) for w in ws)
        cmp = comp.layers.get((model, layer))
        keys = [r.run.key for r, _ in items]
        same = len({w.shape for w in ws}) == 1 and cmp is not None and cmp.weights is not None and cmp.runs == keys
        for b, (r, lr) in enumerate(items):
            maps = list(spill.load(lr, "maps"))  # one run's maps at a time (reportgen.core.spill)
            key = digest("filter-pictures", lr.weight, shared, lr.key or tuple(maps))
            pics = cache.memo("png", key, lambda lr=lr, maps=maps: [
                {k: encode_png(v) for k, v in p.items()} for p in one_filter_pictures(lr.weight, shared, maps)])
            base = f"img/{r.run.key}/{slug(layer)}/filter"
            entry = {kind: [files.add(f"{base}/{kind}_{i}.png", p[kind]) if kind in p else None
                            for i, p in enumerate(pics)] for kind in ("tile", "inputs", "maps")}
            entry["tiles"] = entry.pop("tile")
            matches: list[list[dict]] = [[] for _ in pics]
            if same:
                others = [j for j in range(len(items)) if j != b]
                found = best_matches(ws[b], [ws[j] for j in others], cmp.matched_to(b))
                for j, (idx, sign, score) in zip(others, found):
                    for i in range(len(pics)):
                        if idx[i] >= 0:
                            matches[i].append({"run": keys[j], "index": int(idx[i]), "sign": int(sign[i]),
                                               "score": _py("", score[i])})
            entry["matches"] = matches
            entry["n_maps"] = sum(1 for m in maps if np.ndim(m) == 3 and len(m) == len(pics))
            out[(r.run.key, layer)] = entry
    return out


def _units_json(u) -> dict:
    n = len(u.patches)

    def val(a, i):
        return None if a is None else _py("", a[i])

    def field(name):  # fields missing from views cached before they existed
        return getattr(u, name, None)

    inactive, fidelity = field("inactive"), field("fidelity")
    return {
        "receptive_field": list(u.rf_size), "jump": list(u.rf_jump), "image_size": list(u.image_size),
        "decoded": u.decoded is not None, "decode_note": u.decode_note, "pooling": field("pooling"),
        "top_n": int(u.patches.shape[1]),
        "inactive_count": None if inactive is None else int(np.sum(inactive)),
        "median_fidelity": None if fidelity is None or not np.isfinite(fidelity).any()
        else float(np.nanmedian(fidelity)),
        "units": [{"index": i, "inactive": val(inactive, i), "max_activation": val(field("max_activation"), i),
                   "plain_loss": val(u.plain_loss, i), "stuck": val(u.stuck, i),
                   "plain_outside": val(field("plain_outside"), i),
                   "plain_clipped_loss": val(field("plain_clipped"), i),
                   "fourier_loss": val(u.fourier_loss, i),
                   "fourier_outside": val(field("fourier_outside"), i),
                   "fourier_clipped_loss": val(field("fourier_clipped"), i),
                   "fidelity": val(fidelity, i),
                   "colour_selectivity": _py("", u.colour_index[i]),
                   "top_values": [_py("", v) for v in u.patch_values[i] if np.isfinite(v)],
                   "top_images": [int(j) for j in u.patch_images[i] if j >= 0],
                   "top_positions": [] if field("patch_positions") is None
                   else [[int(p) for p in pos] for pos in u.patch_positions[i] if pos[0] >= 0]}
                  for i in range(n)],
    }


def _act_png(maps: np.ndarray) -> tuple[bytes, np.ndarray]:
    img, order = activation_grid(maps)
    return encode_png(img), order


def report_dict(spec: ReportSpec, results, comp: Comparisons, device: torch.device) -> dict:
    """The machine-readable report (documented in docs/reference/report-json.md)."""
    min_score = spec.analyses.gabor.min_score
    runs = []
    for r in results:
        layers = []
        for lr in r.layers:
            entry = {
                "name": lr.name,
                "type": lr.type,
                "weight_shape": list(lr.weight.shape) if lr.weight is not None else None,
                "relu_applied": lr.relu_applied,
                "activation": lr.activation,
                "activation_source": lr.activation_source,
                **lr.info,
                "filters": _rows(lr.health, FILTER_KEYS),
                "channels": _rows(lr.stats, CHANNEL_KEYS),
            }
            fits = comp.gabor.get((r.run.key, lr.name))
            if fits:
                entry["gabor"] = gabor_summary(fits, min_score)
            if lr.name in r.units:
                entry["units"] = _units_json(r.units[lr.name])
            if r.trace:
                lt = next((t for t in r.trace["trace"].layers if t.name == lr.name), None)
                if lt is not None:
                    entry["trace"] = {k: getattr(lt, k).tolist() for k in
                                      ("Z", "A", "dZ", "grad_weight", "grad_bias", "weight", "bias")}
                    entry["trace"]["activation"] = lt.activation_kind
            entry["summary"] = _summary(entry)
            layers.append(entry)
        trace = None
        if r.trace:
            t = r.trace["trace"]
            trace = {"inputs": t.x.tolist(), "targets": t.y.tolist(), "output": t.output.tolist(),
                     "loss": t.loss, "loss_kind": t.loss_kind, "finite_difference_max_error": r.trace["fd_error"],
                     "names": r.trace["names"], "layers": [lt.name for lt in t.layers]}
        runs.append({
            "key": r.run.key,
            **({"trace": trace} if trace else {}),
            "model": r.run.model.name,
            "location": r.run.location,
            "checkpoint": _display_path(r.run.checkpoint or r.run.torchscript or r.run.onnx, spec),
            "checkpoint_sha256": r.checkpoint_sha256,
            "notes": list(getattr(r, "notes", [])),
            "images": [_display_path(p, spec) for p in r.run.images],
            "input": r.run.input.model_dump(mode="json"),
            "layers": layers,
        })
    comparisons = [{"model": model, "layer": layer, **c.to_dict()} for (model, layer), c in comp.layers.items()]
    reference = dict(comp.reference) if comp.reference else None
    if reference:
        reference["checkpoint"] = _display_path(Path(reference["checkpoint"]), spec) if reference["checkpoint"] else None
    return {
        "schema_version": SCHEMA_VERSION,
        "report": spec.report,
        "title": spec.title,
        "spec": _display_path(spec.path.resolve(), spec),
        "spec_sha256": sha256(spec.path),
        "versions": {"reportgen": __version__, "torch": torch.__version__, "numpy": np.__version__},
        "device": str(device),
        "thresholds": {**spec.analyses.health.model_dump(), "gabor_min_score": min_score,
                       "gabor_min_live": GABOR_MIN_LIVE, "similar": spec.analyses.compare.similar,
                       "above_chance_sd": Z_ABOVE_CHANCE},
        "runs": runs,
        "comparisons": comparisons,
        "reference": reference,
        "model_comparisons": [pair.to_dict() for pair in comp.models],
    }


def _rows(arrays: dict[str, np.ndarray] | None, keys: list[str]) -> list[dict]:
    if not arrays:
        return []
    keys = [k for k in keys if k in arrays]
    n = len(arrays[keys[0]])
    return [{"index": i, **{k: _py(k, arrays[k][i]) for k in keys}} for i in range(n)]


def _py(key: str, v):
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if key in ("duplicate_of", "opposite_of"):
        return None if int(v) < 0 else int(v)
    f = float(v)
    return f if np.isfinite(f) else None  # JSON has no NaN; null means "not a number"


def _summary(layer: dict) -> dict:
    f, c = layer["filters"], layer["channels"]
    norms = [x["l2_norm"] for x in f if x["l2_norm"] is not None]
    nz = [x["near_zero_fraction"] for x in f if x["near_zero_fraction"] is not None]
    out = {
        "filters": len(f),
        "dead": sum(x["dead"] for x in f),
        "nonfinite": sum(x["nonfinite"] for x in f),
        "duplicates": sum(x.get("duplicate_of") is not None for x in f),
        "on_off_pairs": sum(x.get("opposite_of") is not None for x in f),
        "median_l2_norm": float(np.median(norms)) if norms else None,
        "near_zero_fraction": float(np.mean(nz)) if nz else None,
        "channels": len(c),
        "never_active": sum(x["never_active"] for x in c),
        "saturated": sum(x["saturated"] for x in c),
    }
    if "gabor" in layer:
        out["gabor_like"] = layer["gabor"]["share_gabor_like"]
    init = layer.get("init_check")
    out["looks_like_init"] = init["looks_like_init"] if init else None
    out["init_family"] = init["family"] if init else None
    # Filters of never-active channels against those of active ones, both against the
    # initial norm: channels that died in training kept the size they started with.
    out["never_active_norm_over_init"], out["active_norm_over_init"] = (
        _median([x.get("norm_over_init") for x, ch in zip(f, c) if ch["never_active"] and not x["dead"]]),
        _median([x.get("norm_over_init") for x, ch in zip(f, c) if not ch["never_active"] and not x["dead"]]))
    return out


def _median(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.median(vals)) if vals else None


def sha256(path: Path | None) -> str | None:
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
