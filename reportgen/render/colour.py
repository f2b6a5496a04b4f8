"""Colour maps as lookup tables (no pyplot, no global state) and PNG encoding."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

# Flag colour for NaN / Inf values: magenta never occurs in the maps used here.
NAN_RGB = np.array([255, 0, 255], dtype=np.uint8)


@lru_cache(maxsize=16)
def lut(name: str) -> np.ndarray:
    """(256, 3) uint8 lookup table of a matplotlib colour map."""
    import matplotlib

    table = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    table = np.round(table * 255).astype(np.uint8)
    table.setflags(write=False)
    return table


def apply_lut(x01: np.ndarray, name: str) -> np.ndarray:
    """Values in [0, 1] (NaN allowed) -> (..., 3) uint8; NaN becomes the flag colour."""
    x = np.asarray(x01, dtype=np.float64)
    bad = ~np.isfinite(x)
    idx = np.round(np.clip(np.where(bad, 0.0, x), 0.0, 1.0) * 255).astype(np.intp)
    out = lut(name)[idx]
    out[bad] = NAN_RGB
    return out


def to_uint8(x01: np.ndarray) -> np.ndarray:
    """RGB floats in [0, 1] (NaN allowed) -> uint8, NaN pixels in the flag colour.

    x01: (..., 3). A pixel with any non-finite channel is flagged as a whole.
    """
    x = np.asarray(x01, dtype=np.float64)
    bad = ~np.isfinite(x).all(axis=-1)
    out = np.round(np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0) * 255)
    out = out.astype(np.uint8)
    out[bad] = NAN_RGB
    return out


# Pictures are drawn at DENSITY image pixels per CSS pixel: the page shows them at
# 1/DENSITY of their width (crisp on high-density screens) and the lightbox opens the
# file at full size, so it is DENSITY times larger than the inline picture.
DENSITY = 2
_CSS_DPI = 72  # a PNG's pHYs density of 72 dpi means one image pixel per CSS pixel


class Picture(np.ndarray):
    """An (H, W, 3) uint8 image that knows it is drawn at ``density`` px per CSS px."""

    density: int = 1

    def __array_finalize__(self, obj) -> None:
        self.density = getattr(obj, "density", 1)


def at_density(img: np.ndarray, density: int = DENSITY) -> Picture:
    """``img`` (not copied) marked as drawn at ``density`` px per CSS px."""
    pic = np.asarray(img).view(Picture)
    pic.density = density
    return pic


def encode_png(img: np.ndarray, density: int | None = None) -> bytes:
    """(H, W, 3) or (H, W) uint8 -> PNG bytes (deterministic: no timestamps).

    ``density`` (default: the Picture's own, else 1) above 1 is recorded in the PNG's
    pHYs chunk (72 x density dpi) so the pages can show the picture at
    ``width / density`` CSS px (see ``display_width``).
    """
    if density is None:
        density = getattr(img, "density", 1)
    img = np.asarray(img)
    buf = io.BytesIO()
    extra = {"dpi": (_CSS_DPI * density,) * 2} if density != 1 else {}
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=6, **extra)
    return buf.getvalue()


def display_width(png: bytes) -> int | None:
    """CSS width to show a PNG at: its pixel width / the density in its pHYs chunk.

    None for a PNG without a density above 1 (shown at its natural size). Reads the
    chunk headers only; nothing is decoded.
    """
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    width = int.from_bytes(png[16:20], "big")
    pos = 8
    while pos + 8 <= len(png):
        length = int.from_bytes(png[pos:pos + 4], "big")
        kind = png[pos + 4:pos + 8]
        if kind == b"pHYs" and length == 9 and png[pos + 16] == 1:  # unit 1: per metre
            dpi = int.from_bytes(png[pos + 8:pos + 12], "big") * 0.0254
            density = dpi / _CSS_DPI
            return max(1, round(width / density)) if density > 1.05 else None
        if kind in (b"IDAT", b"IEND"):
            return None  # pHYs must come before the image data
        pos += 12 + length
    return None


def fit_width(img: np.ndarray, max_width: int) -> np.ndarray:
    """Shrink (H, W, 3) uint8 to at most ``max_width`` wide, keeping aspect; never enlarges.

    Resampling blurs pixel grids: grids choose their columns to fit instead (tiles.fit_columns).
    """
    h, w = img.shape[:2]
    if w <= max_width:
        return img
    new_h = max(1, round(h * max_width / w))
    small = np.asarray(Image.fromarray(np.asarray(img)).resize((max_width, new_h), Image.Resampling.BOX))
    return at_density(small, getattr(img, "density", 1))
