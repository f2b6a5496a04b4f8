"""Network dissection against the user's own annotations: which concept each unit detects.

For every unit of a layer (Bau et al. 2017, "Network Dissection"), the unit's threshold
T_k is the top quantile of its activations over all positions of all annotated images, as
the network computes them (the *raw* maps: a share ``quantile`` of the values lies at or
above it, P(a_k > T_k) = 0.005 in the paper); its maps are then upsampled bilinearly to
the input size and thresholded at T_k, and the resulting masks are compared with each
concept's masks (``reportgen.load.annotations.concept_masks``) by one IoU over the whole
image set: the sum of the intersections over the sum of the unions. A unit's label is the
concept of highest IoU when that IoU reaches the detection threshold (0.04 in the paper).

``threshold="upsampled"`` takes the quantile over the upsampled maps instead (reportgen's
rule before 0.3): bilinear upsampling spreads a peak over more pixels than it covered, so
the two thresholds differ and so do the masks; the paper's rule is the default.

Pure numpy/torch; no model, no files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

QUANTILE = 0.005  # Bau et al.: P(a_k > T_k) = 0.005
IOU_DETECTS = 0.04  # Bau et al.: a unit with IoU above this detects its concept
CHUNK_VALUES = 1 << 24  # upsampled values held at once (64 MiB of float32)
THRESHOLDS = ("raw", "upsampled")  # where T_k is taken: the network's maps (the paper), or upsampled


@dataclass(frozen=True)
class Dissection:
    """Unit x concept IoUs of one layer over one image set."""

    concepts: tuple[str, ...]  # C names, in the order of the masks given
    iou: np.ndarray  # (U, C) float64
    thresholds: np.ndarray  # (U,) T_k of each unit, in activation units
    mask_share: np.ndarray  # (U,) share of all pixels in the unit's thresholded masks


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, U, h, w) activation maps -> (N, U, H, W) float32, bilinear (half-pixel centres)."""
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))
    if tuple(t.shape[2:]) == tuple(size):
        return t.numpy()
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False).numpy()


def top_masks(values: np.ndarray, quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``values`` (U, P): the threshold T and the mask of the top ``quantile``.

    T is the m-th largest value, m = max(1, ceil(quantile * P)); the mask holds the
    values >= T (ties at T included). When T is the row's smallest value (a rectified
    unit silent at more than 1 - quantile of the positions, or a constant one) the
    mask holds the values > T instead, so silence never counts as firing.
    Returns (thresholds (U,), masks (U, P) bool).
    """
    u, p = values.shape
    m = max(1, int(np.ceil(quantile * p)))
    t = np.partition(values, p - m, axis=1)[:, p - m]
    floor = values.min(axis=1)
    masks = np.where((t > floor)[:, None], values >= t[:, None], values > t[:, None])
    return t.astype(np.float64), masks


def stack_masks(per_image: list[dict[str, np.ndarray]], size: tuple[int, int]) -> tuple[list[str], np.ndarray]:
    """Concept masks of N images -> (names, (N, C, H, W) bool); a concept missing from an
    image is an empty mask there. Names keep first-seen order; 'background' comes last."""
    names = list(dict.fromkeys(k for masks in per_image for k in masks if k != "background"))
    if any("background" in masks for masks in per_image):
        names.append("background")
    out = np.zeros((len(per_image), len(names), *size), dtype=bool)
    for i, masks in enumerate(per_image):
        for c, name in enumerate(names):
            if name in masks:
                out[i, c] = masks[name]
    return names, out


def dissect(maps: np.ndarray, concepts: list[str], masks: np.ndarray, quantile: float = QUANTILE,
            threshold: str = "raw") -> Dissection:
    """IoU of every unit's top-quantile masks with every concept over all images.

    maps: (N, U, h, w) activations of one layer (after its activation function);
    masks: (N, C, H, W) bool concept masks at the input size (``stack_masks``);
    threshold: "raw" (T_k from the maps as they are, the paper's rule) or "upsampled".
    Units are processed in chunks so that memory stays bounded for wide layers.
    """
    if threshold not in THRESHOLDS:
        raise ValueError(f"threshold must be one of {THRESHOLDS}, not {threshold!r}")
    n, u = maps.shape[:2]
    size = masks.shape[2:]
    concept_px = masks.transpose(1, 0, 2, 3).reshape(len(concepts), -1)  # (C, P) bool
    area = concept_px.sum(axis=1).astype(np.float64)
    step = max(1, CHUNK_VALUES // max(1, n * int(np.prod(size))))
    iou = np.zeros((u, len(concepts)))
    thresholds = np.zeros(u)
    share = np.zeros(u)
    for start in range(0, u, step):
        chunk = maps[:, start:start + step]
        up = upsample(chunk, size)  # (N, k, H, W)
        values = up.transpose(1, 0, 2, 3).reshape(up.shape[1], -1)  # (k, P)
        if threshold == "raw":
            raw = np.asarray(chunk, dtype=np.float32).transpose(1, 0, 2, 3).reshape(chunk.shape[1], -1)
            t, _ = top_masks(raw, quantile)
            silent = t <= raw.min(axis=1)  # as in top_masks: silence never counts as firing
            unit_px = np.where(silent[:, None], values > t[:, None], values >= t[:, None])
        else:
            t, unit_px = top_masks(values, quantile)
        # Counted with bool logic, one concept at a time: exact at any image-set size.
        inter = np.stack([np.count_nonzero(unit_px & c_px, axis=1) for c_px in concept_px], axis=1
                         ).astype(np.float64) if len(concepts) else np.zeros((len(t), 0))
        size_k = unit_px.sum(axis=1).astype(np.float64)
        union = size_k[:, None] + area[None, :] - inter
        iou[start:start + step] = np.divide(inter, union, out=np.zeros_like(union, dtype=np.float64),
                                            where=union > 0)
        thresholds[start:start + step] = t
        share[start:start + step] = size_k / values.shape[1]
    return Dissection(concepts=tuple(concepts), iou=iou, thresholds=thresholds, mask_share=share)


def labels(iou: np.ndarray, concepts: list[str] | tuple[str, ...], detects: float = IOU_DETECTS
           ) -> list[tuple[str | None, float]]:
    """Per unit: (best concept, its IoU); the concept is None when the IoU is below ``detects``."""
    out = []
    for row in np.asarray(iou):
        if row.size == 0:
            out.append((None, 0.0))
            continue
        c = int(np.argmax(row))
        out.append((concepts[c] if row[c] >= detects and row[c] > 0 else None, float(row[c])))
    return out
