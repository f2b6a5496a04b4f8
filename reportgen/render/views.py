"""The pictures of a layer: which grids a weight tensor or a feature map becomes.

Each function takes arrays and returns ``{view_name: (H, W, 3) uint8}``; the
view names become file names (``{run}/{layer}/{view}.png``).
"""

from __future__ import annotations

import math

import numpy as np

from reportgen.analysis.activations import rank_channels
from reportgen.render import tiles as T
from reportgen.render.atlas import Atlas, grid_atlas
from reportgen.render.colour import DENSITY, apply_lut, at_density, fit_width

# The report's content column is about 680 CSS px wide in a 1400 px window (Material,
# both sidebars shown); pictures are drawn at DENSITY px per CSS px to fill it at most.
CONTENT_CSS = 680
MAX_WIDTH = CONTENT_CSS * DENSITY  # px; grids pick their columns to fit, wider pictures are shrunk
MAX_CHANNEL_COLUMNS = 64  # per-input-channel view shows at most this many inputs
FILTER_CSS = 48  # CSS px per filter tile (kernels of any size)
MAP_CSS = 96  # CSS px per activation map (the larger side)
# Colours of the map an activation grid uses: with white margins, the NaN colour and two-tone
# channel numbers a grid has at most 244 colours, so it is stored with a palette
# (colour.encode_png): a third of the data of RGB, about half the bytes. 240 shades step by
# 0.42% of the scale, under what an eye tells apart on these maps.
ACTIVATION_SHADES = 240
MARGIN = DENSITY  # 1 CSS px around tiles; 2 CSS px frames mark flagged filters
LABEL_CSS = 10  # CSS px of the numbers stamped on tiles
LABEL_PX = LABEL_CSS * DENSITY


def _fit(img: np.ndarray) -> np.ndarray:
    return fit_width(at_density(img), MAX_WIDTH)


def _filter_grid(tiles: np.ndarray, dead: np.ndarray | None, labels: list[str], css: int) -> np.ndarray:
    up = T.upscale_for(max(tiles.shape[1:3]), css)
    cell = tiles.shape[2] * up + 4 * MARGIN
    return T.grid(tiles, ncols=T.fit_columns(len(tiles), cell, MAX_WIDTH), upscale=up, margin=2 * MARGIN,
                  marks=dead, labels=labels, font_px=LABEL_PX)


def filter_views(w: np.ndarray, dead: np.ndarray | None = None, scale: float | None = None,
                 tile_px: int = 0) -> dict[str, np.ndarray]:
    """Views of one layer's weights, drawn at DENSITY px per CSS px.

    w: (N, C, kh, kw) conv weights or (N, D) dense weights. ``dead``: (N,) mark codes
    (see tiles.health_marks), framed in colour. ``scale``: the per-layer symmetric scale
    (pass one shared across locations to compare magnitudes); defaults to this layer's
    max|W|. ``tile_px``: CSS px per filter tile (0: FILTER_CSS).
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 2:
        return {"weights_heatmap": _fit(dense_weights(w))}
    if w.ndim != 4:
        w = w.reshape(w.shape[0], w.shape[1], -1, 1) if w.ndim == 3 else w.reshape(w.shape[0], 1, -1, 1)
    n, c, kh, kw = w.shape
    s = T.layer_scale(w) if scale is None else scale
    labels = [str(i) for i in range(n)]
    css = tile_px or FILTER_CSS
    views: dict[str, np.ndarray] = {}
    if c == 3:
        views["filters_per_layer"] = _filter_grid(T.rgb_filter_tiles(T.per_layer(w, s)), dead, labels, css)
        views["filters_per_filter"] = _filter_grid(T.rgb_filter_tiles(T.per_filter(w)), dead, labels, css)
    else:
        mean = w.mean(axis=1)
        views["filters_mean"] = _filter_grid(T.mapped_tiles(T.per_layer(mean, T.layer_scale(mean)), "gray"),
                                             dead, labels, css)
        l2 = np.sqrt((w**2).sum(axis=1))
        l2max = T.layer_scale(l2)
        views["filters_l2"] = _filter_grid(T.mapped_tiles(l2 / l2max if l2max > 0 else l2 * 0, "gray"),
                                           dead, labels, css)
        if c == 1:
            views["filters_per_filter"] = _filter_grid(T.mapped_tiles(T.per_filter(w[:, 0]), "gray"),
                                                       dead, labels, css)
    return {k: _fit(v) for k, v in views.items()}


def dense_weights(w: np.ndarray) -> np.ndarray:
    """A dense layer's (out, in) weights as a picture no thinner than about 96 CSS px.

    Few units with many inputs: one tile per unit, its inputs wrapped row by row into a
    square (a 2 x 1024 matrix is two 32 x 32 tiles, not a 2-px band); otherwise a
    heatmap, rows units and columns inputs, with whole-pixel cells.
    """
    out_n, d = w.shape
    if d >= 64 and out_n <= 64:
        tiles = T.wrapped_units(w)
        up = T.upscale_for(tiles.shape[1], MAP_CSS)
        cell = tiles.shape[2] * up + 2 * MARGIN
        return T.grid(tiles, ncols=T.fit_columns(out_n, cell, MAX_WIDTH), upscale=up, margin=MARGIN,
                      labels=[str(i) for i in range(out_n)], font_px=LABEL_PX)
    return T.heatmap(w, max_side=MAX_WIDTH)


def activation_grid(maps: np.ndarray, target_px: int = MAP_CSS) -> tuple[np.ndarray, np.ndarray]:
    """One image's feature maps as a grid, most active channel first.

    maps: (C, H, W) or (C,) for dense layers. Each map is at least ``target_px`` CSS px
    on its larger side (a dense layer's 1 x 1 maps: 24). Non-negative maps use one colour
    scale [0, max] for all channels (weak channels look weak); maps with negative
    values use a diverging scale symmetric around 0. Returns (image, order).

    Each activation is drawn as a square of whole pixels, no more than needed: a map that
    is already ``target_px`` wide keeps one pixel per activation (density 1), a smaller one
    is enlarged by the smallest whole factor that reaches it and the picture's density
    (``colour.at_density``, a fraction) shows it at exactly ``target_px`` CSS px. The page
    keeps the squares sharp (``image-rendering: pixelated``); drawing every map at twice
    its size for high-density screens made activation grids most of a report's bytes.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == 1:
        maps = maps[:, None, None]
    order = rank_channels(maps)
    up, cols, _, _, density = _activation_layout(maps.shape, target_px)
    img = T.grid(coloured_maps(maps, ACTIVATION_SHADES)[order], ncols=cols, upscale=up, margin=1,
                 labels=[str(int(i)) for i in order], font_px=round(LABEL_CSS * density), two_tone_labels=True)
    return fit_width(at_density(img, density), int(CONTENT_CSS * density)), order


def _activation_layout(shape: tuple, target_px: int) -> tuple[int, int, int, int, float]:
    """(upscale, columns, cell width, cell height, density) of ``activation_grid`` for maps of
    ``shape``: 1 px margins, as many columns as fit the content column."""
    h, w = (shape[1], shape[2]) if len(shape) == 3 else (1, 1)
    target = target_px if h * w > 1 else 24
    side = max(h, w)
    up = math.ceil(target / side) if side < target else 1
    density = up * side / target if side < target else 1.0  # shows an enlarged map at exactly target
    cell_w, cell_h = w * up + 2, h * up + 2
    return up, T.fit_columns(shape[0], cell_w, int(CONTENT_CSS * density)), cell_w, cell_h, density


def activation_atlas(path: str, shape: tuple, size: tuple[int, int], order: np.ndarray,
                     target_px: int = MAP_CSS) -> Atlas:
    """Where each channel lies in ``activation_grid``'s picture of maps of ``shape``, saved at
    ``path`` with pixel ``size`` (width, height) and channel ``order``: its per-channel crops."""
    _, cols, cell_w, cell_h, density = _activation_layout(shape, target_px)
    return grid_atlas(path, size, cols, cell_w, cell_h, 1, density, order)


def coloured_maps(maps: np.ndarray, shades: int = 256) -> np.ndarray:
    """(C, H, W) feature maps of one image -> (C, H, W, 3) uint8 on one colour scale for
    all channels: viridis on [0, max] for non-negative maps, else RdBu symmetric around 0,
    in ``shades`` evenly spaced colours of the map (at most 256)."""
    maps = np.asarray(maps, dtype=np.float64)
    finite = maps[np.isfinite(maps)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 0.0
    x01 = T.per_layer(maps) if lo < 0 else maps / hi if hi > 0 else np.where(np.isfinite(maps), 0.0, np.nan)
    if shades < 256:
        x01 = np.round(x01 * (shades - 1)) / (shades - 1)
    return apply_lut(x01, "RdBu_r" if lo < 0 else "viridis")


def atlas_upscale(kh: int, kw: int) -> int:
    """Whole-pixel enlargement of a kernel in ``filter_atlas``: about 12 px on its larger side,
    so the 2 px between kernels stay thin next to them when a page enlarges a row."""
    return max(1, -(-12 // max(kh, kw)))


def filter_atlas(w: np.ndarray, scale: float, matched: list[tuple[np.ndarray, np.ndarray]],
                 max_inputs: int) -> tuple[np.ndarray, dict]:
    """Every filter of a layer, a row per filter, at a few pixels per weight (atlas_upscale).

    w: (N, C, kh, kw) conv weights on the shared symmetric ``scale``; matched: per other
    location, its weights (M, C, kh, kw) and the index of its filter matched to each of
    ours (-1: none). Row i: filter i's tile (RGB, or the mean over inputs in grey, as in
    the layer's grid), its kernel for each of the first ``max_inputs`` input channels in
    grey (when C > 1), then its match at each other location as that filter is (white
    where none). Cells are 1 px apart (white), so a crop never shows its neighbour.

    Returns the picture and its columns: {"tile": 0, "inputs": (first, count) or None,
    "matches": [column per other location]}.
    """
    w = np.asarray(w, dtype=np.float64)
    n, c, kh, kw = w.shape
    cols = [filter_tiles(w, scale)]
    inputs = None
    if c > 1:
        cc = min(c, max_inputs)
        grey = T.mapped_tiles(T.per_layer(w[:, :cc], scale).reshape(n * cc, kh, kw), "gray")
        cols += list(grey.reshape(n, cc, kh, kw, 3).transpose(1, 0, 2, 3, 4))
        inputs = (1, cc)
    match_cols = []
    for other, idx in matched:
        tiles = filter_tiles(np.asarray(other, dtype=np.float64), scale)
        idx = np.asarray(idx)
        col = np.full((n, kh, kw, 3), 255, dtype=np.uint8)
        col[idx >= 0] = tiles[idx[idx >= 0]]
        match_cols.append(len(cols))
        cols.append(col)
    stacked = np.stack(cols, axis=1).reshape(n * len(cols), kh, kw, 3)
    up = atlas_upscale(kh, kw)
    img = T.grid(stacked, ncols=len(cols), upscale=up, margin=1)
    return img, {"tile": 0, "inputs": inputs, "matches": match_cols, "cols": len(cols), "upscale": up}


def filter_atlas_cells(path: str, size: tuple[int, int], kernel: tuple[int, int], columns: dict) -> Atlas:
    """The atlas of a ``filter_atlas`` picture of kernels of ``kernel`` (kh, kw) saved at ``path``
    with pixel ``size``; ``columns`` as it returned. A filter's row is its item."""
    up, cols = columns["upscale"], columns["cols"]
    return Atlas(path, size[0], size[1], cols, kernel[1] * up + 2, kernel[0] * up + 2, margin=1, item_cells=cols)


def filter_tiles(w: np.ndarray, scale: float) -> np.ndarray:
    """(N, C, kh, kw) -> (N, kh, kw, 3) uint8 tiles on a shared symmetric scale:
    RGB for 3 input channels, else the mean over input channels in grey."""
    w = np.asarray(w, dtype=np.float64)
    if w.shape[1] == 3:
        return T.rgb_filter_tiles(T.per_layer(w, scale))
    mean = w.mean(axis=1)
    return T.mapped_tiles(T.per_layer(mean, T.layer_scale(mean)), "gray")


def across_locations(base: np.ndarray, others: list[np.ndarray],
                     matches: list[tuple[np.ndarray, np.ndarray, np.ndarray]], scale: float,
                     tile_px: int = FILTER_CSS) -> np.ndarray:
    """Each base filter (rows) beside its matched filter at every other location (columns).

    base: (N, C, kh, kw); others: K arrays (M, C, kh, kw); matches from
    ``locations.best_matches`` (index, sign, score). Matched filters are sign-aligned
    to the base filter; unmatched cells stay white. Returns (H, W, 3) uint8.
    """
    n, _, kh, kw = base.shape
    cols = [filter_tiles(base, scale)]
    for w, (idx, sign, _score) in zip(others, matches):
        aligned = np.zeros_like(base, dtype=np.float64)
        ok = idx >= 0
        aligned[ok] = sign[ok, None, None, None] * w[idx[ok]]
        tiles = filter_tiles(aligned, scale)
        tiles[~ok] = 255
        cols.append(tiles)
    stacked = np.stack(cols, axis=1).reshape(n * len(cols), kh, kw, 3)  # row-major: filter, location
    labels = [str(i) if j == 0 else "" for i in range(n) for j in range(len(cols))]
    img = T.grid(stacked, ncols=len(cols), upscale=T.upscale_for(max(kh, kw), tile_px), margin=MARGIN,
                 labels=labels, font_px=LABEL_PX)
    return _fit(img)


def gabor_triplets(w: np.ndarray, fits: list, tile_px: int = FILTER_CSS) -> np.ndarray:
    """Per filter: the filter (RGB or grey, min-max), its spatial pattern and the fitted Gabor,
    labelled 'index: Gabor score/centre-surround score'.

    w: (N, C, kh, kw) with C in (1, 3); fits: N GaborFit. The spatial pattern is the
    rank-1 spatial map the fit used (see analysis.gabor.rgb_to_spatial); pattern and
    fit share one symmetric grey scale so they compare directly.
    """
    from reportgen.analysis.gabor import rgb_to_spatial

    w = np.asarray(w, dtype=np.float64)
    n, c, kh, kw = w.shape
    first = T.rgb_filter_tiles(T.per_filter(w)) if c == 3 else T.mapped_tiles(T.per_filter(w[:, 0]), "gray")
    out = []
    for i in range(n):
        spatial = rgb_to_spatial(w[i])[0] if c == 3 else w[i, 0]
        pair = np.stack([spatial, fits[i].fitted])
        s = T.layer_scale(pair)
        grey = T.mapped_tiles(T.per_layer(pair, s), "gray")
        out += [first[i], grey[0], grey[1]]
    labels = []
    for i in range(n):
        score, dog = fits[i].score, getattr(fits[i], "dog_score", float("nan"))
        label = f"{i}: {'nan' if not np.isfinite(score) else f'{score:.2f}'}"
        labels += [label + (f"/{dog:.2f}" if np.isfinite(dog) else ""), "", ""]
    up = T.upscale_for(max(kh, kw), tile_px)
    triplets = T.fit_columns(n, 3 * (kw * up + 2 * MARGIN), MAX_WIDTH, ncols=min(8, n))
    img = T.grid(np.stack(out), ncols=3 * triplets, upscale=up, margin=MARGIN, labels=labels, font_px=LABEL_PX)
    return _fit(img)


def stage_strip(maps: list[np.ndarray], height: int = MAP_CSS) -> np.ndarray:
    """One image's activations at several layers, left to right.

    maps: per layer (C, H, W) (or (C,) for dense layers, drawn as a bar of channels).
    Each panel is the mean over channels, scaled to its own [0, max] and resized to
    ``height`` CSS px (nearest), so panels of different resolution line up.
    """
    from PIL import Image

    height *= DENSITY
    panels = []
    for m in maps:
        m = np.asarray(m, dtype=np.float64)
        mean = m.mean(axis=0) if m.ndim == 3 else m[None, :]
        hi = np.nanmax(mean) if np.isfinite(mean).any() else 0.0
        x01 = mean / hi if hi > 0 else np.zeros_like(mean)
        rgb = apply_lut(x01, "viridis")
        w = max(1, round(rgb.shape[1] * height / rgb.shape[0])) if m.ndim == 3 else height
        panels.append(np.asarray(Image.fromarray(rgb).resize((w, height), Image.Resampling.NEAREST)))
    gap = np.full((height, 6 * DENSITY, 3), 255, dtype=np.uint8)
    row = [p for pair in zip(panels, [gap] * len(panels)) for p in pair][:-1]
    return _fit(np.concatenate(row, axis=1))
