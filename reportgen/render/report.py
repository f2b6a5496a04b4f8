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

from pathlib import Path
from typing import Iterator

import numpy as np

from reportgen.analysis.locations import best_matches
from reportgen.core.cache import Cache
from reportgen.render.keys import picture_key
from reportgen.reduce.compare import Comparisons
from reportgen.core.names import slug
from reportgen.render.pages import HISTOGRAMS_SHOWN, MATCHES_SHOWN, render_pages
from reportgen.reduce.health import group_layers
from reportgen.reduce.report import json_value
from reportgen.render.charts import norms_by_run, similarity_heatmap, weight_histograms
from reportgen.render.atlas import Atlas
from reportgen.render.colour import display_width, encode_png, png_size
from reportgen.render.runs import DrawnRun, RunPictures, draw_run, draw_run_task
from reportgen.render.tiles import layer_scale
from reportgen.run.executors import in_workers
from reportgen.render.views import (MAX_CHANNEL_COLUMNS, across_locations, filter_atlas, filter_atlas_cells,
                                    filter_views, gabor_triplets)
from reportgen.core.report_json import to_json
from reportgen.core.extension import Extension
from reportgen.core.files import ReportFiles
from reportgen.load.spec import ReportSpec
from reportgen.core.spill import NO_SPILL, Spill

def render_report(spec: ReportSpec, results, comp: Comparisons, report: dict,
                  done: list[tuple[Extension, dict]], out: Path, cache: Cache | None = None,
                  spill: Spill = NO_SPILL, executor=None) -> ReportFiles:
    """All pictures, report.json and pages of a report, from the reduce step's results: the
    report dict (reportgen.reduce.report, with its findings) and the extensions' values.
    Each file is written into the folder ``out`` as soon as it is made.

    ``executor``: the build's executor (reportgen.run.executors). When its workers are already
    running (a process pool the map step started: ``executor.warm``), each run's own pictures
    (reportgen.render.runs) and the extensions' pictures (mostly matplotlib charts) are drawn
    there while this process draws the layers' charts; else here.

    Every picture is cached under a digest of the arrays and options it is drawn
    from, so an unchanged layer is not drawn again. Spilled maps (reportgen.core.spill) are
    loaded one run and layer at a time.
    """
    cache = cache or Cache(None)

    def png(tag: str, inputs: tuple, draw) -> bytes:
        return cache.memo_bytes("png", picture_key("png", tag, inputs), lambda: encode_png(draw()))

    def chart(tag: str, inputs: tuple, draw) -> bytes:
        return cache.memo_bytes("png", picture_key("chart", tag, inputs), draw)

    files = ReportFiles(out, width=display_width)
    # (model, layer) -> kind -> [(model, path)]
    layer_imgs: dict[tuple[str, str], dict[str, list[tuple[str, str]]]] = {}
    h = spec.analyses.health
    groups = group_layers(results)
    scales = {key: max((layer_scale(lr.weight) for _, lr in items if lr.weight is not None), default=0.0)
              for key, items in groups.items()}
    # Each run's own pictures (reportgen.render.runs), also drawn meanwhile when there are workers
    drawn_runs = _draw_runs(spec, results, comp, scales, out, cache, spill, executor)
    for (model, layer), items in groups.items():
        ws = [lr.weight for _, lr in items if lr.weight is not None]
        shared = scales[(model, layer)]
        per_layer = layer_imgs.setdefault((model, layer), {})

        def add_layer_img(kind: str, name: str, png: bytes) -> None:
            per_layer.setdefault(kind, []).append((model, files.add(f"img/{model}/{slug(layer)}/{name}.png", png)))

        if ws:
            norms = {r.run.key: lr.health["l2_norm"] for r, lr in items if lr.weight is not None}
            median = items[0][1].info["pooled_scale"]["median_norm"]
            threshold = h.dead_norm_ratio * median
            add_layer_img("norms", "norms", chart("norms", (list(norms), list(norms.values()), threshold, layer),
                                                  lambda: norms_by_run(norms, threshold,
                                                                       f"{layer}: filter L2 norms by location")))
            # the first HISTOGRAMS_SHOWN runs: a panel per run made a picture (and its drawing
            # memory: 0.5 GB at 200 locations) grow with the locations
            named = {r.run.key: lr.weight for r, lr in items if lr.weight is not None}
            per_layer["histogram_runs"] = [(model, f"{min(len(named), HISTOGRAMS_SHOWN)}/{len(named)}")]
            named = dict(list(named.items())[:HISTOGRAMS_SHOWN])
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
    shared_inputs = _shared_inputs(spec, results, files, png)
    cross_imgs = {}
    for pair in comp.models:
        a, b = pair.models
        cross_imgs[f"{a}|{b}"] = files.add(f"img/cross-model/{a}_vs_{b}.png", chart(
            "cross-model", (pair.cka, pair.layers, pair.models),
            lambda pair=pair, a=a, b=b: similarity_heatmap(
                pair.cka, [f"{a}: {n}" for n in pair.layers[0]], f"linear CKA, {a} (rows) vs {b} (columns)",
                col_names=[f"{b}: {n}" for n in pair.layers[1]])))
    ref_images: dict[tuple[str, str], dict[str, str]] = {}
    if comp.reference_weight is not None:
        ref_w, tile_px = comp.reference_weight, spec.analyses.filters.tile_px
        ref_views = cache.memo("png", picture_key("filter-views-2", ref_w, None, None, tile_px), lambda: {
            v: encode_png(img) for v, img in filter_views(ref_w, None, None, tile_px).items()})
        for view, data in ref_views.items():
            ref_images.setdefault(("reference", "__ref__"), {})[view] = files.add(f"img/reference/{view}.png", data)
        if comp.reference_fits:
            fits = comp.reference_fits
            ref_images[("reference", "__ref__")]["gabor"] = files.add("img/reference/gabor.png", png(
                "gabor", (ref_w, [f.fitted for f in fits], [f.score for f in fits], [f.dog_score for f in fits]),
                lambda: gabor_triplets(ref_w, fits)))
    images: dict[tuple[str, str], dict[str, str]] = {}  # (run key, layer) -> view -> path
    act_atlases: dict[tuple[str, str], list[Atlas]] = {}  # (run key, layer) -> per shown image
    unit_pages: dict[tuple[str, str], dict] = {}
    for drawn in drawn_runs:
        files.adopt(drawn.records)
        images.update(drawn.images)
        act_atlases.update(drawn.act_atlases)
        unit_pages.update(drawn.units)
        cache.hits.update(drawn.hits)  # a worker's cache use, counted with the build's
        cache.misses.update(drawn.misses)
    images.update(ref_images)
    # drawn meanwhile when there are workers, read last: the extensions' pages are their own
    ext_pictures = _extension_pictures(spec, done, report, executor)
    filter_pages = _filter_pictures(results, comp, files, cache, act_atlases) if spec.analyses.filters.enabled else {}
    files.add("report.json", to_json(report))
    widths = files.widths()
    for rel, text in render_pages(spec, report, images, layer_imgs, shared_inputs, unit_pages,
                                  cross_imgs, widths, filter_pages):
        files.add(rel, text)
    add_extension_files(spec, done, report, files, ext_pictures)
    return files


def _draw_runs(spec: ReportSpec, results, comp: Comparisons, scales: dict, out: Path, cache: Cache,
               spill: Spill, executor=None) -> Iterator[DrawnRun]:
    """Each run's own pictures (reportgen.render.runs), in run order: from the executor's
    running workers (see render_report), else drawn here as they are read."""
    jobs = (RunPictures.of(r, {layer: scales[(r.run.model.name, layer)] for layer in (lr.name for lr in r.layers)},
                           {lr.name: comp.gabor[(r.run.key, lr.name)] for lr in r.layers if comp.gabor.get((r.run.key, lr.name))},
                           spec.analyses.filters.enabled, spec.analyses.filters.tile_px, out, cache, spill)
            for r in results)
    if getattr(executor, "warm", False):
        return executor.map(draw_run_task, list(jobs))
    return (draw_run(job, cache, spill) for job in jobs)


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
            key = picture_key("filter-atlas-2", lr.weight, shared, [m for pair in matched for m in pair],
                              MAX_CHANNEL_COLUMNS)
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


def _extension_pictures(spec: ReportSpec, done: list[tuple[Extension, dict]], report: dict,
                        executor=None) -> Iterator[dict[str, bytes]]:
    """Each extension's pictures ({key: PNG bytes}), in the order of ``done``: from the
    executor's running workers (see render_report), else drawn here as they are read."""
    return in_workers(executor, draw_extension_pictures, [(ext, spec, report[ext.name], values) for ext, values in done])


def draw_extension_pictures(part: tuple) -> dict[str, bytes]:
    """One extension's pictures from (extension, spec, its report section, its per-run values):
    the task a worker runs."""
    ext, spec, section, values = part
    return ext.pictures(spec, section, values)


def add_extension_files(spec: ReportSpec, done: list[tuple[Extension, dict]], report: dict,
                        files: ReportFiles, pictures: Iterator[dict[str, bytes]] | None = None) -> None:
    """Each extension's pictures under ``img/<name>/`` and its pages, into the report's files.
    ``pictures``: the extensions' pictures in the order of ``done`` (see _extension_pictures),
    None: drawn here."""
    pictures = iter(pictures if pictures is not None else _extension_pictures(spec, done, report))
    for ext, values in done:
        published: dict[str, str] = {}
        for key, data in next(pictures).items():
            published[key] = files.add(f"img/{ext.name}/{key}", data)
        for rel, text in ext.pages(spec, report, published).items():
            files.add(rel, text)
