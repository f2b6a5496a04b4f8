"""Colour maps as lookup tables (no pyplot, no global state) and PNG encoding."""

from __future__ import annotations

import struct
import zlib
from functools import lru_cache

import numpy as np
from PIL import Image

# Flag colour for NaN / Inf values: magenta never occurs in the maps used here.
NAN_RGB = np.array([255, 0, 255], dtype=np.uint8)


@lru_cache(maxsize=16)
def lut(name: str) -> np.ndarray:
    """(256, 3) uint8 lookup table of a matplotlib colour map (the report's own maps are
    stored in render._luts, so matplotlib is imported only for another name)."""
    from reportgen.render._luts import TABLES

    if name in TABLES:
        table = np.frombuffer(bytes.fromhex(TABLES[name]), dtype=np.uint8).reshape(256, 3).copy()
    else:
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
    ``width / density`` CSS px (see ``display_width``). An RGB image whose every pixel
    is grey (R = G = B) is stored as an 8-bit greyscale PNG: the same pixels in a third
    of the data; one of at most 256 colours with a palette (``_palette``).

    Written here rather than by Pillow because encoding was the largest cost of a
    build: Pillow tries every PNG row filter on every row, which our pictures do not
    need. They are mostly nearest-neighbour enlargements, so a row usually repeats the
    one above (stored as filter "Up", all zeros) and pixels repeat along a row, which
    deflate finds without a filter. About 4x faster than Pillow's level-6 encoding, at
    a similar size (bench/bench_render.py).
    """
    if density is None:
        density = getattr(img, "density", 1)
    a = np.ascontiguousarray(np.asarray(img), dtype=np.uint8)
    palette = None
    if a.ndim == 3 and a.shape[2] == 3 and _is_grey(a):
        a = np.ascontiguousarray(a[..., 0])
    elif a.ndim == 3 and a.shape[2] == 3 and (found := _palette(a)) is not None:
        a, palette = found
    if palette is not None:
        colour_type = 3
    elif a.ndim == 2:
        colour_type = 0
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        colour_type = 2 if a.shape[2] == 3 else 6
    else:
        raise ValueError(f"encode_png needs (H, W), (H, W, 3) or (H, W, 4) uint8, got shape {a.shape}")
    h, w = a.shape[:2]
    rows = a.reshape(h, -1)
    data = np.empty((h, rows.shape[1] + 1), dtype=np.uint8)
    data[:, 0] = 0  # filter "None": the row as it is
    data[:, 1:] = rows
    same = np.zeros(h, dtype=bool)
    same[1:] = (rows[1:] == rows[:-1]).all(axis=1)
    data[same, 1:] = 0
    data[same, 0] = 2  # filter "Up": the row above, unchanged
    out = [_PNG_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0))]
    if palette is not None:
        out.append(_chunk(b"PLTE", palette.tobytes()))
    if density != 1:
        per_metre = int(_CSS_DPI * density / 0.0254 + 0.5)
        out.append(_chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1)))
    out += [_chunk(b"IDAT", zlib.compress(memoryview(data), _ZLIB_LEVEL)), _chunk(b"IEND", b"")]
    return b"".join(out)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Deflate level 6. Measured on the 361 pictures of the TownCentre report (most of them with a
# palette since the grids use 240 shades): level 2 17.9 MB in 2.6 cpu s, level 4 16.6 MB in
# 3.0 s, level 6 15.2 MB in 3.5 s, level 9 14.8 MB in 8.1 s. Before the palettes, levels
# 4-6 took twice as long as level 2; now 6 costs a third more time for 15 % fewer bytes.
_ZLIB_LEVEL = 6


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _palette(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(H, W) uint8 indices and the (K, 3) uint8 palette of an (H, W, 3) picture of at most
    256 colours, else None: such a picture (an activation grid) is stored with a palette, a
    third of the data to compress, so about half the bytes in a fifth of the time.

    A sample of rows rules out a many-coloured picture (a photograph, RGB filters) early.
    Otherwise colours are collected where a row differs from the one above and a pixel from
    the one on its left (each colour starts a run somewhere), few pixels in a picture of
    enlarged tiles.
    """
    step = max(1, len(rgb) // 32)  # 32 rows first: most many-coloured pictures show it there
    if len(np.unique(_packed(rgb[::step]))) > 256:
        return None
    packed = _packed(rgb)
    fresh = np.ones(len(packed), dtype=bool)
    fresh[1:] = (packed[1:] != packed[:-1]).any(axis=1)
    rows = packed[fresh]
    starts = np.ones(rows.shape, dtype=bool)
    starts[:, 1:] = rows[:, 1:] != rows[:, :-1]
    seen = rows[starts]
    if len(np.unique(seen[:4096])) > 256:
        return None
    colours = np.unique(seen)
    if len(colours) > 256:
        return None
    index = np.searchsorted(colours, packed).astype(np.uint8)
    table = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=1).astype(np.uint8)
    return index, table


def _packed(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) uint32 0xRRGGBB."""
    return (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]


def _is_grey(rgb: np.ndarray) -> bool:
    """Whether every pixel of (H, W, 3) uint8 has R = G = B."""
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's header (nothing decoded)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


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
