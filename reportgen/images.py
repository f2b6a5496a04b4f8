"""Test images: file -> (display array, normalised input tensor)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from reportgen.errors import ImageError
from reportgen.spec import InputSpec

MIN_SIDE = 2


@dataclass(frozen=True)
class LoadedImage:
    path: Path
    pixels: np.ndarray  # (H, W, 3) uint8, what the network sees before normalisation
    tensor: torch.Tensor  # (C, H, W) float32, normalised
    digest: str  # SHA-256 of the normalised tensor: what the network sees


def load_image(path: Path, spec: InputSpec) -> LoadedImage:
    """Read, resize and normalise one image as the spec's ``input`` section says."""
    try:
        with Image.open(path) as im:
            im.load()
            img = im.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"image {path} not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(
            f"image {path} cannot be read ({type(exc).__name__}); replace it or remove it from 'images'"
        ) from None
    if min(img.size) < MIN_SIDE:
        raise ImageError(
            f"image {path} is {img.size[0]}x{img.size[1]} pixels, too small to analyse; "
            f"use images of at least {MIN_SIDE}x{MIN_SIDE}"
        )
    if spec.size is not None:
        h, w = spec.size
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    pixels = np.asarray(img, dtype=np.uint8)
    x = pixels.astype(np.float32) / 255.0
    if spec.channels == "grey":
        # ITU-R BT.601 luma, the same weights Pillow's "L" mode uses.
        x = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
        pixels = np.repeat((x * 255).round().astype(np.uint8), 3, axis=2)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    x = np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))
    return LoadedImage(path=path, pixels=pixels, tensor=torch.from_numpy(x),
                       digest=hashlib.sha256(x.tobytes() + str(x.shape).encode()).hexdigest())
