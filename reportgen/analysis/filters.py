"""Filter weights: reshaping and health statistics. Pure numpy, no I/O.

Health rules (documented in docs/reference/health.md):
- a filter is *dead* when its L2 norm is below ``dead_norm_ratio`` times the
  layer's *typical* filter norm: the median filter norm of that layer pooled
  over every run of the same model in the report. Pooling matters: a location
  whose filters all collapsed would look normal against its own median.
- a weight is *near zero* when ``|w|`` is below ``near_zero_ratio`` times the
  layer's pooled RMS weight.
- a filter with any NaN or Inf is flagged ``nonfinite`` and is never called dead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def as_filters(w: np.ndarray) -> np.ndarray:
    """Weights (N, ...) -> (N, D) float64, one row per output filter / unit."""
    w = np.asarray(w)
    return w.reshape(w.shape[0], -1).astype(np.float64)


@dataclass(frozen=True)
class LayerScale:
    """Typical magnitudes of one layer pooled over runs."""

    median_norm: float
    rms: float


def pooled_scale(weights: list[np.ndarray]) -> LayerScale:
    """Median filter L2 norm and RMS weight over all finite filters of all runs."""
    norms, sq, count = [], 0.0, 0
    for w in weights:
        rows = as_filters(w)
        finite = np.isfinite(rows).all(axis=1)
        rows = rows[finite]
        norms.append(np.linalg.norm(rows, axis=1))
        sq += float((rows**2).sum())
        count += rows.size
    all_norms = np.concatenate(norms) if norms else np.zeros(0)
    return LayerScale(
        median_norm=float(np.median(all_norms)) if all_norms.size else 0.0,
        rms=float(np.sqrt(sq / count)) if count else 0.0,
    )


def filter_health(w: np.ndarray, scale: LayerScale, dead_norm_ratio: float,
                  near_zero_ratio: float) -> dict[str, np.ndarray]:
    """Per-filter statistics of one layer.

    w: (N, ...) weights. Returns arrays of length N: ``l2_norm``, ``max_abs``,
    ``near_zero_fraction``, ``nonfinite`` (bool), ``dead`` (bool).
    """
    rows = as_filters(w)
    nonfinite = ~np.isfinite(rows).all(axis=1)
    with np.errstate(invalid="ignore"):
        l2 = np.linalg.norm(rows, axis=1)
        max_abs = np.abs(rows).max(axis=1) if rows.shape[1] else np.zeros(len(rows))
        near_zero = (np.abs(rows) < near_zero_ratio * scale.rms).mean(axis=1)
    dead = (~nonfinite) & (l2 < dead_norm_ratio * scale.median_norm)
    return {
        "l2_norm": l2,
        "max_abs": max_abs,
        "near_zero_fraction": near_zero,
        "nonfinite": nonfinite,
        "dead": dead,
    }


def near_duplicates(w: np.ndarray, threshold: float, skip: np.ndarray | None = None) -> np.ndarray:
    """For each filter, the index of an earlier filter it nearly duplicates, else -1.

    w: (N, ...) weights. Two filters are near-duplicates when |cosine| >= threshold
    (a filter and its negation carry one feature up to the next layer's sign).
    ``skip``: (N,) bool, filters left out (dead or non-finite: their direction is noise).
    Returns (N,) int.
    """
    from reportgen.analysis.compare import cosine_matrix

    rows = as_filters(w)
    n = len(rows)
    out = np.full(n, -1, dtype=np.int64)
    ok = np.isfinite(rows).all(axis=1) & (np.linalg.norm(rows, axis=1) > 0)
    if skip is not None:
        ok &= ~skip
    idx = np.flatnonzero(ok)
    if len(idx) < 2:
        return out
    cos = cosine_matrix(rows[idx], rows[idx], absolute=True)
    for j in range(1, len(idx)):
        earlier = cos[j, :j]
        k = int(np.argmax(earlier))
        if earlier[k] >= threshold:
            out[idx[j]] = idx[k]
    return out


def norm_outliers(l2: np.ndarray, z: float, skip: np.ndarray | None = None) -> np.ndarray:
    """Filters whose L2 norm is far above the layer's others: robust z > ``z``.

    Robust z = (norm - median) / (1.4826 * MAD), over the filters not skipped
    (dead and non-finite ones, which have their own flags). One-sided: unusually
    small norms are what the dead-filter rule is for. Returns (N,) bool.
    """
    l2 = np.asarray(l2, dtype=np.float64)
    ok = np.isfinite(l2) if skip is None else np.isfinite(l2) & ~skip
    out = np.zeros(len(l2), dtype=bool)
    if ok.sum() < 4:
        return out
    med = np.median(l2[ok])
    mad = 1.4826 * np.median(np.abs(l2[ok] - med))
    if mad <= 0:
        return out
    out[ok] = (l2[ok] - med) / mad > z
    return out
