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


def encode_png(img: np.ndarray) -> bytes:
    """(H, W, 3) or (H, W) uint8 -> PNG bytes (deterministic: no timestamps)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def fit_width(img: np.ndarray, max_width: int) -> np.ndarray:
    """Shrink (H, W, 3) uint8 to at most ``max_width`` wide, keeping aspect; never enlarges."""
    h, w = img.shape[:2]
    if w <= max_width:
        return img
    new_h = max(1, round(h * max_width / w))
    return np.asarray(Image.fromarray(img).resize((max_width, new_h), Image.Resampling.BOX))
