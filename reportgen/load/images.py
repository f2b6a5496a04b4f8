"""Test images: file -> (display array, normalised input tensor).

Every image becomes RGB values in [0, 1] by these rules (docs/reference/methods.md,
"Reading images"): the EXIF orientation is applied; 8-bit modes (1, L, P, RGB) are
divided by 255; 16-bit greyscale (I;16) by 65535; 32-bit integer (I) by 65535 and
clipped; float (F) is taken as [0, 1] and clipped (NaN or infinity is an error); CMYK
is (1 - C)(1 - K) per channel, without colour management; transparent images (LA,
RGBA, PA, P with transparency) are composited on white. Greyscale is repeated into
three channels.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from reportgen.core.errors import ImageError
from reportgen.load.spec import InputSpec

MIN_SIDE = 2
# Larger images are refused before they are decoded: a tiny PNG can claim billions of
# pixels (a decompression bomb). 8192 x 8192 is far above any network's input size.
MAX_IMAGE_PIXELS = 8192 * 8192
ORIENTATION_TAG = 0x0112  # EXIF


@dataclass(frozen=True)
class LoadedImage:
    path: Path
    pixels: np.ndarray  # (H, W, 3) uint8, what the network sees before normalisation
    tensor: torch.Tensor  # (C, H, W) float32, normalised
    digest: str  # SHA-256 of the normalised tensor: what the network sees


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file as the network will see it (after the EXIF
    rotation, before any resize), read from its header without decoding the pixels."""
    with _opened(path) as im:
        w, h = im.size
        if im.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8):  # quarter turns swap the sides
            w, h = h, w
    return h, w


def load_image(path: Path, spec: InputSpec) -> LoadedImage:
    """Read, resize and normalise one image as the spec's ``input`` section says."""
    with _opened(path) as im:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im.load()
                im = ImageOps.exif_transpose(im)
                x, exact8 = to_rgb(im, path)
        except ImageError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ImageError(
                f"image {path} cannot be read ({type(exc).__name__}); replace it or remove it from 'images'"
            ) from None
    h0, w0 = x.shape[:2]
    if min(h0, w0) < MIN_SIDE:
        raise ImageError(
            f"image {path} is {w0}x{h0} pixels, too small to analyse; "
            f"use images of at least {MIN_SIDE}x{MIN_SIDE}"
        )
    if spec.size is not None:
        x = _resize(x, spec.size, exact8)
    if spec.channels == "grey":
        # ITU-R BT.601 luma, the same weights Pillow's "L" mode uses.
        x = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
        pixels = np.repeat((x * 255).round().astype(np.uint8), 3, axis=2)
    else:
        pixels = (x * 255).round().astype(np.uint8)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    x = np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))
    return LoadedImage(path=path, pixels=pixels, tensor=torch.from_numpy(x),
                       digest=hashlib.sha256(x.tobytes() + str(x.shape).encode()).hexdigest())


class _opened:
    """``Image.open`` with every failure as an ImageError naming the file, and a size
    limit checked from the header, before any pixel is decoded."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Image.Image:
        path = self.path
        try:
            with warnings.catch_warnings():
                # Pillow only warns up to twice its limit; the size check below refuses those.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                self.im = Image.open(path)
        except FileNotFoundError:
            raise ImageError(f"image {path} not found") from None
        except Image.DecompressionBombError:
            raise ImageError(_too_big(path, None)) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise ImageError(
                f"image {path} cannot be read ({type(exc).__name__}); replace it or remove it from 'images'"
            ) from None
        w, h = self.im.size
        if w * h > MAX_IMAGE_PIXELS:
            self.im.close()
            raise ImageError(_too_big(path, (w, h)))
        return self.im

    def __exit__(self, *exc: object) -> None:
        self.im.close()


def _too_big(path: Path, size: tuple[int, int] | None) -> str:
    claimed = f"claims {size[0]}x{size[1]} pixels" if size else "claims more pixels than Pillow will decode"
    return (f"image {path} {claimed}, over reportgen's limit of {MAX_IMAGE_PIXELS:,} pixels "
            "(8192x8192; a huge scan or a decompression bomb); downscale it or remove it from 'images'")


def to_rgb(im: Image.Image, path: Path) -> tuple[np.ndarray, bool]:
    """Decoded image -> ((H, W, 3) float32 RGB in [0, 1], whether the values are exact
    multiples of 1/255, i.e. came from 8-bit samples untouched)."""
    mode = im.mode
    if mode == "P" and "transparency" in im.info:
        im, mode = im.convert("RGBA"), "RGBA"
    elif mode == "PA":
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in ("LA", "La", "RGBA", "RGBa"):
        if mode in ("La", "RGBa"):  # premultiplied alpha
            im = im.convert("RGBA" if mode == "RGBa" else "LA")
        a = np.asarray(im, dtype=np.float32) / 255.0
        colour = np.repeat(a[..., :1], 3, axis=2) if a.shape[2] == 2 else a[..., :3]
        alpha = a[..., -1:]
        # Composited on white: a transparent background reads as paper, not as black.
        return (colour * alpha + (1.0 - alpha)).astype(np.float32), False
    if mode == "CMYK":
        c = np.asarray(im, dtype=np.float32) / 255.0
        return ((1.0 - c[..., :3]) * (1.0 - c[..., 3:4])).astype(np.float32), False
    if mode.startswith("I;16") or mode == "I":
        v = np.asarray(im).astype(np.float64) / 65535.0
        return np.repeat(np.clip(v, 0, 1)[..., None], 3, axis=2).astype(np.float32), False
    if mode == "F":
        v = np.asarray(im, dtype=np.float32)
        if not np.isfinite(v).all():
            raise ImageError(f"image {path} holds NaN or infinite values; replace it or remove it from 'images'")
        return np.repeat(np.clip(v, 0, 1)[..., None], 3, axis=2), False
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0, True


def _resize(x: np.ndarray, size: tuple[int, int], exact8: bool) -> np.ndarray:
    """(H, W, 3) in [0, 1] -> (h, w, 3), bilinear. 8-bit images resize as 8-bit RGB
    (Pillow rounds each result to a byte); others per channel in float."""
    h, w = size
    if exact8:
        img = Image.fromarray((x * 255).round().astype(np.uint8), "RGB")
        return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(x[..., i]), "F").resize((w, h), Image.Resampling.BILINEAR))
             for i in range(3)]
    return np.clip(np.stack(chans, axis=2), 0, 1).astype(np.float32)
