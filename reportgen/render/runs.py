"""The pictures of one run: what needs that run's results alone (and each layer's shared filter
scale and Gabor fits), so the runs can be drawn side by side in the build's workers
(reportgen.render.report sends them there when it has running workers).

Per run: each layer's filter views, Gabor triplets and one activation grid per shown image,
the images shown, the stage strips of the shared images and the unit grids. Files are written
into the report's staging folder as they are made; what comes back is small: the files'
records, the paths and atlases the pages crop, and the cache counts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from reportgen.core.cache import Cache
from reportgen.render.keys import picture_key
from reportgen.core.files import FileRecord, ReportFiles
from reportgen.core.names import slug
from reportgen.core.spill import NO_SPILL, Spill
from reportgen.render.atlas import Atlas, grid_atlas
from reportgen.render.colour import DENSITY, display_width, encode_png, png_size
from reportgen.render.tiles import health_marks
from reportgen.render.views import activation_atlas, activation_grid, filter_views, gabor_triplets, stage_strip


@dataclass
class RunPictures:
    """What drawing one run's pictures needs: light enough to send to a worker (the run's
    spilled maps are read there from the spill store)."""

    run: object  # a RunResult without what drawing does not use (see ``of``)
    scales: dict[str, float]  # layer -> the filter scale shared by its runs (tiles.layer_scale)
    fits: dict[str, list]  # layer -> its Gabor fits (reduce.compare), where fitted
    filters: bool  # analyses.filters.enabled
    tile_px: int
    out: str  # the staging folder
    cache_root: str | None = None  # for a worker: the build's cache and spill store
    spill_root: str | None = None

    @classmethod
    def of(cls, r, scales: dict[str, float], fits: dict[str, list], filters: bool, tile_px: int, out: Path,
           cache: Cache, spill: Spill) -> "RunPictures":
        light = copy.copy(r)
        light.layers = [replace(lr, chain=None, features=None if "features" in lr.spilled else lr.features,
                                cross_pooled=None, stats=None) for lr in r.layers]
        light.extras, light.trace = {}, None
        return cls(light, scales, fits, filters, tile_px, str(out),
                   str(cache.root) if cache.enabled else None, spill.root)


@dataclass
class DrawnRun:
    """One run's pictures as written: file records, and what the pages need of them."""

    records: list[tuple[str, FileRecord]]
    images: dict[tuple[str, str], dict[str, str]]  # (run key, layer) -> view -> path ("__stages__": k -> path)
    act_atlases: dict[tuple[str, str], list[Atlas]]  # (run key, layer) -> one per shown image
    units: dict[tuple[str, str], dict]  # (run key, layer) -> {"grids": view -> path, "atlases": view -> Atlas}
    hits: dict[str, int] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)


def draw_run_task(job: RunPictures) -> DrawnRun:
    """``draw_run`` in a worker: with a cache and spill store of its own on the build's folders."""
    cache = Cache(job.cache_root)
    drawn = draw_run(job, cache, Spill(job.spill_root) if job.spill_root else NO_SPILL)
    drawn.hits, drawn.misses = dict(cache.hits), dict(cache.misses)
    return drawn


def draw_run(job: RunPictures, cache: Cache, spill: Spill = NO_SPILL) -> DrawnRun:
    """Draw (or read from the cache) one run's pictures into ``job.out``.

    Every picture is cached under a digest of the arrays and options it is drawn from, so an
    unchanged run is not drawn again; spilled maps are read only to draw a missing picture.
    """
    r = job.run
    files = ReportFiles(job.out, width=display_width)

    def png(tag: str, inputs: tuple, draw) -> bytes:
        return cache.memo_bytes("png", picture_key("png", tag, inputs), lambda: encode_png(draw()))

    images: dict[tuple[str, str], dict[str, str]] = {}
    act_atlases: dict[tuple[str, str], list[Atlas]] = {}
    for lr in r.layers:
        paths = images.setdefault((r.run.key, lr.name), {})
        base = f"img/{r.run.key}/{slug(lr.name)}"
        if lr.weight is not None and job.filters:
            marks, shared = health_marks(lr.health), job.scales.get(lr.name, 0.0)
            views = cache.memo("png", picture_key("filter-views-2", lr.weight, marks, shared, job.tile_px),
                               lambda lr=lr, marks=marks, shared=shared: {
                                   v: encode_png(img) for v, img in filter_views(
                                       lr.weight, marks, shared, job.tile_px).items()})
            for view, data in views.items():
                paths[view] = files.add(f"{base}/{view}.png", data)
        fits = job.fits.get(lr.name)
        if fits:
            paths["gabor"] = files.add(f"{base}/gabor.png", png(
                "gabor", (lr.weight, [f.fitted for f in fits], [f.score for f in fits], [f.dog_score for f in fits]),
                lambda lr=lr, fits=fits: gabor_triplets(lr.weight, fits)))
        # Spilled maps are read only when a picture is not cached: there is one per shown image.
        layer_maps = _Once(lambda lr=lr: spill.load(lr, "maps"))
        grids = act_atlases.setdefault((r.run.key, lr.name), [])
        for k in range(len(r.images) if "maps" in lr.spilled else len(lr.maps)):
            # The layer's key already digests everything the maps come from.
            act_key = picture_key("activation-grid-3", lr.key if lr.key else lr.maps[k], k)
            data, order, shape = cache.memo("png", act_key, lambda k=k, m=layer_maps: _act_png(m()[k]))
            paths[f"act_{k}"] = files.add(f"{base}/activations_{k}.png", data)
            paths[f"act_{k}_order"] = ",".join(map(str, order[:8]))
            grids.append(activation_atlas(paths[f"act_{k}"], tuple(shape), png_size(data), order))
    for k, im in enumerate(r.images):
        files.add(f"img/{r.run.key}/input_{k}.png", png("input", (im.pixels,), lambda im=im: im.pixels))
    # One stage map per shared image shown (r.shared_shown), read only to draw a missing picture.
    stage_maps = _Once(lambda: [spill.load(lr, "shared_maps") for lr in r.layers])
    n_stages = min((len(r.shared_shown) if "shared_maps" in lr.spilled else len(lr.shared_maps)
                    for lr in r.layers), default=0)
    for k in range(n_stages):
        keyed = all(lr.key for lr in r.layers)
        stage_inputs = tuple(lr.key for lr in r.layers) if keyed else tuple(m[k] for m in stage_maps())
        images.setdefault((r.run.key, "__stages__"), {})[str(k)] = files.add(
            f"img/{r.run.key}/stages_{k}.png", png("stages", (stage_inputs, k),
                                                    lambda k=k: stage_strip([x[k] for x in stage_maps()])))
    units = _unit_pictures(r, files, cache)
    return DrawnRun(files.records(), images, act_atlases, units)


class _Once:
    """``make()`` called on first use only, then remembered."""

    def __init__(self, make):
        self.make, self.value, self.done = make, None, False

    def __call__(self):
        if not self.done:
            self.value, self.done = self.make(), True
        return self.value


def _act_png(maps: np.ndarray) -> tuple[bytes, np.ndarray, tuple]:
    img, order = activation_grid(maps)
    return encode_png(img), order, np.shape(maps)


def _unit_pictures(r, files: ReportFiles, cache: Cache) -> dict[tuple[str, str], dict]:
    """The grids of each layer of ``r`` with unit views, one per view and the top crops; each
    unit's card on the pages is crops of them. Returns (run, layer) -> {"grids": view -> path,
    "atlases": view -> Atlas}."""
    from reportgen.render.unit_cards import unit_grids_and_cells

    pages = {}
    for layer, u in r.units.items():
        key = picture_key("unit-grids", u.plain, u.fourier, u.decoded, u.nf, u.patches, u.deconv, u.guided,
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
