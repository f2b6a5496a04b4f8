"""Filter and feature-map grids composed with numpy.

Normalisations (see docs/reference/views.md):
- ``per_filter``: each filter min-max scaled to [0, 1] on its own (shows the
  pattern of even a tiny filter, so it must never be the only view);
- ``per_layer``: ``0.5 + 0.5 * w / max|W|`` with one scale for the whole layer
  (or one passed in, shared across locations), so 0 is mid grey and a dead filter
  looks flat grey.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from reportgen.render.colour import DENSITY, NAN_RGB, apply_lut, to_uint8

BACKGROUND = np.array([255, 255, 255], dtype=np.uint8)
MARK_RGB = np.array([220, 20, 20], dtype=np.uint8)  # frame of dead tiles
# Frame colours by mark code (see health_marks); True counts as 1.
MARK_COLOURS = {
    1: MARK_RGB,                                   # dead
    2: np.array([245, 150, 0], dtype=np.uint8),    # near-duplicate of an earlier filter
    3: np.array([30, 100, 230], dtype=np.uint8),   # unusually large norm
    4: np.array([255, 0, 255], dtype=np.uint8),    # NaN / Inf
}


def health_marks(health: dict | None) -> np.ndarray | None:
    """(N,) int mark codes from a layer's health arrays: NaN/Inf > dead > duplicate > outlier."""
    if not health:
        return None
    codes = np.zeros(len(health["dead"]), dtype=np.int64)
    for code, key in ((3, "norm_outlier"), (2, "duplicate_of"), (1, "dead"), (4, "nonfinite")):
        if key in health:
            flag = health[key] >= 0 if key == "duplicate_of" else health[key].astype(bool)
            codes[flag] = code
    return codes


def per_filter(w: np.ndarray) -> np.ndarray:
    """(N, ...) -> same shape in [0, 1], each filter min-max scaled over its finite values.

    A constant filter maps to 0.5; non-finite values stay NaN (shown flagged).
    """
    x = np.asarray(w, dtype=np.float64)
    flat = x.reshape(x.shape[0], -1)
    finite = np.isfinite(flat)
    lo = np.where(finite, flat, np.inf).min(axis=1, keepdims=True)
    hi = np.where(finite, flat, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(span > 0, (flat - lo) / np.where(span > 0, span, 1.0), 0.5)
    out = np.where(finite, out, np.nan)
    return out.reshape(x.shape)


def layer_scale(w: np.ndarray) -> float:
    """max |w| over the finite weights (0.0 when there are none)."""
    x = np.abs(np.asarray(w, dtype=np.float64))
    x = x[np.isfinite(x)]
    return float(x.max()) if x.size else 0.0


def per_layer(w: np.ndarray, scale: float | None = None) -> np.ndarray:
    """(N, ...) -> [0, 1] with 0 at 0.5, symmetric around 0; ``scale`` defaults to max|W|."""
    x = np.asarray(w, dtype=np.float64)
    s = layer_scale(x) if scale is None else float(scale)
    if s <= 0:
        return np.where(np.isfinite(x), 0.5, np.nan)
    with np.errstate(invalid="ignore"):
        out = 0.5 + 0.5 * x / s
    return np.where(np.isfinite(x), np.clip(out, 0.0, 1.0), np.nan)


NORMALISERS = {"per_filter": per_filter, "per_layer": per_layer}


def upscale_for(size: int, css_px: int, density: int = DENSITY) -> int:
    """Smallest whole-pixel (nearest-neighbour) factor that shows ``size`` image pixels
    at least ``css_px`` CSS px wide on a picture drawn at ``density`` px per CSS px, and
    each pixel at least one CSS px (a large map is never shown below its resolution)."""
    return max(density, math.ceil(css_px * density / max(size, 1)))


def fit_columns(n: int, cell_w: int, max_width: int, ncols: int | None = None) -> int:
    """Columns for ``n`` cells of ``cell_w`` px: near-square (or ``ncols``), but never
    wider than ``max_width`` so the grid is not resampled (which would blur it)."""
    want = ncols if ncols is not None else max(1, math.ceil(math.sqrt(n)))
    return max(1, min(want, max_width // max(cell_w, 1)))


def grid(tiles: np.ndarray, ncols: int | None = None, upscale: int = 1, margin: int = 2,
         marks: np.ndarray | None = None, labels: list[str] | None = None, font_px: int = 11,
         two_tone_labels: bool = False) -> np.ndarray:
    """Compose tiles into one image.

    tiles: (N, h, w, 3) uint8. Each tile is enlarged ``upscale`` times (nearest
    neighbour) and surrounded by ``margin`` pixels of white; where ``marks[i]`` is
    non-zero the margin is drawn in ``MARK_COLOURS[marks[i]]`` instead (True: red). Tiles fill rows of
    ``ncols`` (default: a near-square layout). ``labels[i]`` is written (``font_px``
    high) in the tile's top-left corner when tiles are at least 2.5 x ``font_px`` wide;
    ``two_tone_labels``: in pure black and white, not smoothed (no new colours).
    Returns (H, W, 3) uint8.
    """
    tiles = np.asarray(tiles)
    n, h, w = tiles.shape[:3]
    if ncols is None:
        ncols = max(1, math.ceil(math.sqrt(n)))
    nrows = max(1, math.ceil(n / ncols))
    th, tw = h * upscale, w * upscale
    ch, cw = th + 2 * margin, tw + 2 * margin
    out = np.full((nrows * ch, ncols * cw, 3), 255, dtype=np.uint8)  # BACKGROUND
    # Cells as a (row, y, column, x) view of the picture: frames first, then every tile
    # at once, enlarged along x by np.repeat and along y by broadcasting whole pixel rows
    # into a (row, y, k, column, x) view (no per-tile loop; long contiguous copies).
    cells = out.reshape(nrows, ch, ncols, cw, 3)
    if marks is not None and margin > 0:
        for i in np.flatnonzero(np.asarray(marks)[:n]):
            r, c = divmod(int(i), ncols)
            cells[r, :, c] = MARK_COLOURS[int(marks[i])]
    padded = tiles if n == nrows * ncols else np.concatenate(
        [tiles, np.broadcast_to(BACKGROUND, (nrows * ncols - n, h, w, 3))])
    src = padded.reshape(nrows, ncols, h, w, 3).transpose(0, 2, 1, 3, 4)  # (row, y, column, x, 3)
    if upscale > 1:
        src = src.repeat(upscale, axis=3)
    inner = cells[:, margin:margin + th, :, margin:margin + tw]
    s = inner.strides
    view = np.lib.stride_tricks.as_strided(inner, (nrows, h, upscale, ncols, tw, 3),
                                           (s[0], s[1] * upscale, s[1], s[2], s[3], s[4]), writeable=True)
    view[...] = src[:, :, None]
    if labels is not None and tw >= 2.5 * font_px:
        out = _draw_labels(out, labels, ncols, ch, cw, margin, font_px, two_tone_labels)
    return out


def _draw_labels(img: np.ndarray, labels: list[str], ncols: int, ch: int, cw: int, margin: int,
                 font_px: int, two_tone: bool = False) -> np.ndarray:
    """Each non-empty label stamped at its cell's top-left inside the margin (in place)."""
    h_img, w_img = img.shape[:2]
    for i, text in enumerate(labels):
        if not text:
            continue
        r, c = divmod(i, ncols)
        x, y = c * cw + margin, r * ch + margin
        stamp = _label_stamp(text, font_px, two_tone)
        h, w = min(stamp.shape[0], h_img - y), min(stamp.shape[1], w_img - x)
        img[y:y + h, x:x + w] = stamp[:h, :w]
    return img


@lru_cache(maxsize=2048)
def _label_stamp(text: str, font_px: int, two_tone: bool = False) -> np.ndarray:
    """(h, w, 3) uint8: white digits on the dark box under them, drawn once per text.

    A dark box under white digits stays readable on any tile colour; the box covers the
    text's ink, so the stamp does not depend on the tile below and can be reused (drawing
    the text for every tile was most of the time of a labelled grid).
    """
    from PIL import Image, ImageDraw

    font = _font(font_px)
    pad = max(1, font_px // 8)
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((pad, 0), text, font=font)
    stamp = Image.new("RGB", (box[2] + pad + 1, box[3] + pad + 1), (0, 0, 0))
    ImageDraw.Draw(stamp).text((pad, 0), text, fill=(255, 255, 255), font=font)
    out = np.asarray(stamp)
    if two_tone:
        out = np.where(out >= 128, 255, 0).astype(np.uint8)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=8)
def _font(font_px: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=font_px)


def rgb_filter_tiles(w01: np.ndarray) -> np.ndarray:
    """(N, 3, h, w) values in [0, 1] -> (N, h, w, 3) uint8 RGB tiles."""
    return to_uint8(np.moveaxis(np.asarray(w01), 1, -1))


def mapped_tiles(x01: np.ndarray, cmap: str) -> np.ndarray:
    """(N, h, w) values in [0, 1] -> (N, h, w, 3) uint8 through a colour map."""
    return apply_lut(x01, cmap)


def heatmap(m: np.ndarray, cmap: str = "RdBu_r", max_side: int = 1360, min_side: int = 160 * DENSITY,
            max_cells: int = 170) -> np.ndarray:
    """Dense weight matrix (out, in) -> (H, W, 3) uint8, symmetric around 0.

    Axes with more than ``max_cells`` entries are block-averaged; each axis is then
    enlarged by a whole factor to at least ``min_side`` px (at most ``max_side``), so
    a matrix of 2 rows is two bands, never a hairline. Cells may be non-square.
    """
    x = block_mean(np.asarray(m, dtype=np.float64), max_cells)
    img = apply_lut(per_layer(x), cmap)
    ky, kx = (min(max(1, math.ceil(min_side / n)), max(1, max_side // n)) for n in x.shape)
    return img.repeat(ky, axis=0).repeat(kx, axis=1)


PAD_RGB = np.array([225, 225, 225], dtype=np.uint8)  # past the last input of a wrapped unit


def wrapped_units(m: np.ndarray, cmap: str = "RdBu_r") -> np.ndarray:
    """(out, in) -> (out, s, s, 3) uint8: each unit's ``in`` weights wrapped row by row
    into an s x s square (s = ceil(sqrt(in))), on one symmetric scale for the matrix;
    cells past the last input are light grey."""
    x = np.asarray(m, dtype=np.float64)
    out_n, d = x.shape
    side = math.ceil(math.sqrt(d))
    rgb = apply_lut(per_layer(x), cmap)
    tiles = np.empty((out_n, side * side, 3), dtype=np.uint8)
    tiles[:] = PAD_RGB
    tiles[:, :d] = rgb
    return tiles.reshape(out_n, side, side, 3)


def block_mean(x: np.ndarray, max_cells: int) -> np.ndarray:
    fy = math.ceil(x.shape[0] / max_cells)
    fx = math.ceil(x.shape[1] / max_cells)
    if fy == 1 and fx == 1:
        return x
    ph, pw = -x.shape[0] % fy, -x.shape[1] % fx
    padded = np.pad(x, ((0, ph), (0, pw)), constant_values=np.nan)
    blocks = padded.reshape(padded.shape[0] // fy, fy, padded.shape[1] // fx, fx)
    with np.errstate(invalid="ignore"):
        return np.nanmean(blocks, axis=(1, 3))


__all__ = [
    "NAN_RGB", "NORMALISERS", "fit_columns", "grid", "heatmap", "layer_scale", "mapped_tiles", "per_filter",
    "per_layer", "rgb_filter_tiles", "upscale_for", "wrapped_units",
]
