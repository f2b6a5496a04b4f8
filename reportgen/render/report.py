"""Results and the report dict -> the report's files, written as they are made into the folder the
publish step swaps in (reportgen.core.files): pictures, report.json and pages.

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

from dataclasses import replace
from pathlib import Path

import numpy as np

from reportgen.analysis.locations import best_matches
from reportgen.core.cache import Cache, digest
from reportgen.reduce.compare import Comparisons
from reportgen.core.names import slug
from reportgen.render.pages import MATCHES_SHOWN, render_pages
from reportgen.reduce.health import group_layers
from reportgen.reduce.report import json_value
from reportgen.render.charts import norms_by_run, similarity_heatmap, weight_histograms
from reportgen.render.atlas import Atlas, grid_atlas
from reportgen.render.colour import DENSITY, display_width, encode_png, png_size
from reportgen.render.tiles import health_marks, layer_scale
from reportgen.render.views import (MAX_CHANNEL_COLUMNS, across_locations, activation_atlas, activation_grid,
                                    filter_atlas, filter_atlas_cells, filter_views, gabor_triplets, stage_strip)
from reportgen.core.report_json import to_json
from reportgen.core.extension import Extension
from reportgen.core.files import ReportFiles
from reportgen.load.spec import ReportSpec
from reportgen.core.spill import NO_SPILL, Spill

def render_report(spec: ReportSpec, results, comp: Comparisons, report: dict,
                  done: list[tuple[Extension, dict]], out: Path, cache: Cache | None = None,
                  spill: Spill = NO_SPILL) -> ReportFiles:
    """All pictures, report.json and pages of a report, from the reduce step's results: the
    report dict (reportgen.reduce.report, with its findings) and the extensions' values.
    Each file is written into the folder ``out`` as soon as it is made.

    Every picture is cached under a digest of the arrays and options it is drawn
    from, so an unchanged layer is not drawn again. Spilled maps (reportgen.core.spill) are
    loaded one run and layer at a time.
    """
    cache = cache or Cache(None)

    def png(tag: str, inputs: tuple, draw) -> bytes:
        return cache.memo_bytes("png", digest("png", tag, inputs), lambda: encode_png(draw()))

    def chart(tag: str, inputs: tuple, draw) -> bytes:
        return cache.memo_bytes("png", digest("chart", tag, inputs), draw)

    files = ReportFiles(out, width=display_width)
    images: dict[tuple[str, str], dict[str, str]] = {}  # (run key, layer) -> view -> path
    act_atlases: dict[tuple[str, str], list[Atlas]] = {}  # (run key, layer) -> per shown image
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
                views = cache.memo("png", digest("filter-views-2", lr.weight, marks, shared, spec.analyses.filters.tile_px),
                                   lambda: {v: encode_png(img) for v, img in filter_views(
                                       lr.weight, marks, shared, spec.analyses.filters.tile_px).items()})
                for view, data in views.items():
                    paths[view] = files.add(f"img/{r.run.key}/{slug(layer)}/{view}.png", data)
            fits = comp.gabor.get((r.run.key, layer))
            if fits:
                paths["gabor"] = files.add(f"img/{r.run.key}/{slug(layer)}/gabor.png", png(
                    "gabor", (lr.weight, [f.fitted for f in fits], [f.score for f in fits], [f.dog_score for f in fits]),
                    lambda: gabor_triplets(lr.weight, fits)))
            # Spilled maps are read only when a picture is not cached: there is one per shown image.
            layer_maps = _Once(lambda lr=lr: spill.load(lr, "maps"))
            grids = act_atlases.setdefault((r.run.key, layer), [])
            for k in range(len(r.images) if "maps" in lr.spilled else len(lr.maps)):
                # The layer's key already digests everything the maps come from.
                act_key = digest("activation-grid-3", lr.key, k) if lr.key else digest("activation-grid-3", lr.maps[k])
                data, order, shape = cache.memo("png", act_key, lambda k=k, m=layer_maps: _act_png(m()[k]))
                paths[f"act_{k}"] = files.add(f"img/{r.run.key}/{slug(layer)}/activations_{k}.png", data)
                paths[f"act_{k}_order"] = ",".join(map(str, order[:8]))
                grids.append(activation_atlas(paths[f"act_{k}"], tuple(shape), png_size(data), order))
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
                # the first MATCHES_SHOWN other locations, as in the filter sections: a picture
                # whose width grew with the locations outgrew any page (and the build's memory)
                shown = [i for i in range(len(wts)) if i != base_i][:MATCHES_SHOWN]
                others = [wts[i] for i in shown]
                matched = cmp.matched_to(base_i)[:len(shown)]
                add_layer_img("across", "across_locations", png(
                    "across", (wts[base_i], others, shared, [m for pair in matched if pair for m in pair]),
                    lambda: across_locations(wts[base_i], others, best_matches(wts[base_i], others, matched),
                                             shared)))
                per_layer["across_order"] = [(model, ",".join(
                    [items[base_i][0].run.key] + [items[i][0].run.key for i in shown]))]
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
        ref_views = cache.memo("png", digest("filter-views-2", ref_w, None, None, tile_px), lambda: {
            v: encode_png(img) for v, img in filter_views(ref_w, None, None, tile_px).items()})
        for view, data in ref_views.items():
            images.setdefault(("reference", "__ref__"), {})[view] = files.add(f"img/reference/{view}.png", data)
        if comp.reference_fits:
            fits = comp.reference_fits
            images[("reference", "__ref__")]["gabor"] = files.add("img/reference/gabor.png", png(
                "gabor", (ref_w, [f.fitted for f in fits], [f.score for f in fits], [f.dog_score for f in fits]),
                lambda: gabor_triplets(ref_w, fits)))
    unit_pages = _unit_pictures(results, files, cache)
    filter_pages = _filter_pictures(results, comp, files, cache, act_atlases) if spec.analyses.filters.enabled else {}
    files.add("report.json", to_json(report))
    add_extension_files(spec, done, report, files)
    widths = files.widths()
    for rel, text in render_pages(spec, report, images, layer_imgs, shared_inputs, unit_pages,
                                  cross_imgs, widths, filter_pages):
        files.add(rel, text)
    return files


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


def _base_index(spec: ReportSpec, keys: list[str]) -> int:
    base = spec.analyses.compare.base
    return keys.index(base) if base in keys else 0


def _unit_pictures(results, files: ReportFiles, cache: Cache) -> dict[tuple[str, str], dict]:
    """The grids of every (run, layer) with unit views, one per view and the top crops; each unit's
    card on the pages is crops of them. Returns (run, layer) -> {"grids": view -> path,
    "atlases": view -> Atlas}."""
    from reportgen.render.unit_cards import unit_grids_and_cells

    pages = {}
    for r in results:
        for layer, u in r.units.items():
            key = digest("unit-grids", u.plain, u.fourier, u.decoded, u.nf, u.patches, u.deconv, u.guided,
                         u.stuck, getattr(u, "inactive", None))
            pics = cache.memo("png", key, lambda u=u: {
                name: [encode_png(img), list(cells)] for name, (img, cells) in unit_grids_and_cells(u).items()})
            base = f"img/{r.run.key}/{slug(layer)}/units"
            grids, atlases = {}, {}
            for name, (data, (cols, cell_w, cell_h, margin)) in pics.items():
                grids[name] = files.add(f"{base}/{name}.png", data)
                atlases[name] = grid_atlas(grids[name], png_size(data), cols, cell_w, cell_h, margin, DENSITY)
            atlases["top_patches"] = replace(atlases["top_patches"], item_cells=atlases["top_patches"].cols)
            pages[(r.run.key, layer)] = {"grids": grids, "atlases": atlases}
    return pages


def _filter_pictures(results, comp: Comparisons, files: ReportFiles, cache: Cache,
                     act_atlases: dict[tuple[str, str], list[Atlas]]) -> dict[tuple[str, str], dict]:
    """What the filter pages show of each conv filter, as crops of a few pictures per
    (run, layer): its tile, its kernels per input and its match at every other location from
    one filter atlas (views.filter_atlas), its feature maps from the activation grids.

    Returns (run key, layer) -> {"atlas": the filter atlas, "inputs": (first column, count)
    or None, "maps": the activation grids' atlases whose channels are the filters, "n": filters,
    "match_runs": the other locations, "matches": per filter and other location {"run",
    "index", "sign", "score"} or None, "match_col": the atlas column of the first match (the
    others follow)}: the comparison's matching (aligned through the network where it was)
    with |cos| in each run's own input order.
    """
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
            n, _, kh, kw = lr.weight.shape
            # the first MATCHES_SHOWN other locations: a page's size, an atlas's width and this
            # step's memory grow with the locations, never with their square
            others = [j for j in range(len(items)) if j != b][:MATCHES_SHOWN] if same else []
            found = best_matches(ws[b], [ws[j] for j in others], cmp.matched_to(b)[:len(others)]) if others else []
            matched = [(ws[j], idx) for j, (idx, _, _) in zip(others, found)]
            key = digest("filter-atlas-2", lr.weight, shared, [m for pair in matched for m in pair], MAX_CHANNEL_COLUMNS)
            data, columns = cache.memo("png", key, lambda lr=lr, matched=matched: _atlas_png(
                lr.weight, shared, matched))
            atlas = filter_atlas_cells(files.add(f"img/{r.run.key}/{slug(layer)}/filter_atlas.png", data),
                                       png_size(data), (kh, kw), columns)
            matches = Matches([keys[j] for j in others], *(np.array([f[k] for f in found]).reshape(len(found), n)
                                                             for k in range(3)))
            grids = [a for a in act_atlases.get((r.run.key, layer), []) if len(a.position or ()) == n]
            out[(r.run.key, layer)] = {"atlas": atlas, "inputs": columns["inputs"], "maps": grids, "n": n,
                                       "matches": matches, "match_runs": [keys[j] for j in others], "n_others": len(items) - 1,
                                       "match_col": columns["matches"][0] if others else None}
    return out


class Matches:
    """Each filter's match at other locations, kept as arrays (other, filter) and made into
    the template's rows one filter at a time: ``matches[i]`` is, per other location, {"run",
    "index", "sign", "score"} or None where filter i has no match there."""

    def __init__(self, runs: list[str], index: np.ndarray, sign: np.ndarray, score: np.ndarray):
        self.runs, self.index, self.sign, self.score = runs, index.astype(np.int64), sign, score

    def __getitem__(self, i: int) -> list[dict | None]:
        return [{"run": run, "index": int(self.index[k, i]), "sign": int(self.sign[k, i]),
                 "score": json_value("", self.score[k, i])} if self.index[k, i] >= 0 else None
                for k, run in enumerate(self.runs)]


def _atlas_png(w: np.ndarray, shared: float, matched: list) -> tuple[bytes, dict]:
    img, columns = filter_atlas(w, shared, matched, MAX_CHANNEL_COLUMNS)
    return encode_png(img), columns


def _act_png(maps: np.ndarray) -> tuple[bytes, np.ndarray, tuple]:
    img, order = activation_grid(maps)
    return encode_png(img), order, np.shape(maps)


def add_extension_files(spec: ReportSpec, done: list[tuple[Extension, dict]], report: dict,
                        files: ReportFiles) -> None:
    """Each extension's pictures under ``img/<name>/`` and its pages, into the report's files."""
    for ext, values in done:
        published: dict[str, str] = {}
        for key, data in ext.pictures(spec, report[ext.name], values).items():
            published[key] = files.add(f"img/{ext.name}/{key}", data)
        for rel, text in ext.pages(spec, report, published).items():
            files.add(rel, text)
