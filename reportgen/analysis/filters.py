"""Filter weights: reshaping and health statistics. Pure numpy, no I/O.

Health rules (documented in docs/reference/methods.md#filter-health):
- a filter is *dead* when its L2 norm is below ``dead_norm_ratio`` times the
  layer's *typical* filter norm: the median filter norm of that layer pooled
  over every run of the same model in the report. Pooling matters: a location
  whose filters all collapsed would look normal against its own median.
- a weight is *near zero* when ``|w|`` is below ``near_zero_ratio`` times the
  layer's pooled RMS weight.
- a filter with any NaN or Inf is flagged ``nonfinite`` and is never called dead.
- near-duplicates use the signed cosine; sign-flipped pairs are on/off pairs, kept apart.
- a filter's size is also given against its initial size (``norm_over_init``). A large norm
  is not flagged: it is what training does to a filter that is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def as_filters(w: np.ndarray) -> np.ndarray:
    """Weights (N, ...) -> (N, D) float64, one row per output filter / unit."""
    w = np.asarray(w)
    return w.reshape(w.shape[0], -1).astype(np.float64)


def transposed_filters(w: np.ndarray, groups: int = 1) -> np.ndarray:
    """A transposed convolution's weight (C_in, C_out / groups, k...) -> (C_out, C_in / groups, k...).

    Output channel ``g * C_out/groups + j`` of a transposed convolution stamps, for each input
    channel ``i`` of its group ``g``, the kernel ``w[i, j]`` into its map: its filter is that
    slice of the weight's *second* axis, in the layout of an ordinary convolution's filters, so
    that filter c is paired with output channel c's statistics like any other layer's.
    """
    w = np.asarray(w)
    c_in, per_group, kernel = w.shape[0], w.shape[1], w.shape[2:]
    return (w.reshape(groups, c_in // groups, per_group, *kernel).swapaxes(1, 2)
            .reshape(groups * per_group, c_in // groups, *kernel))


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


def near_duplicates(w: np.ndarray, threshold: float, skip: np.ndarray | None = None,
                    groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate and sign-flipped (on/off) filters of one layer.

    w: (N, ...) weights. A filter *duplicates* an earlier one when their signed cosine
    reaches ``threshold``: two copies of one detector. It forms an *on/off pair* with an
    earlier one when the cosine is at most ``-threshold``: the same pattern with opposite
    sign, which after a ReLU responds to the opposite contrast (a dark-to-light and a
    light-to-dark edge), so it is a second feature, not redundancy.
    ``skip``: (N,) bool, filters left out (dead or non-finite: their direction is noise).
    ``groups``: the convolution's groups. Filters of different groups read different input
    channels, so alike weights there are not copies of one detector: only filters of one
    group are compared (a depthwise layer has no pairs at all).
    Returns (duplicate_of, opposite_of): (N,) int each, the earlier filter's index or -1.
    A filter is listed in at most one of the two (the closer relation wins).
    """
    from reportgen.analysis.compare import cosine_matrix

    rows = as_filters(w)
    n = len(rows)
    dup = np.full(n, -1, dtype=np.int64)
    opp = np.full(n, -1, dtype=np.int64)
    ok = np.isfinite(rows).all(axis=1) & (np.linalg.norm(rows, axis=1) > 0)
    if skip is not None:
        ok &= ~skip
    idx = np.flatnonzero(ok)
    if len(idx) < 2:
        return dup, opp
    cos = cosine_matrix(rows[idx], rows[idx], absolute=False)
    if groups > 1 and n % groups == 0:
        group = idx // (n // groups)
        cos = np.where(group[:, None] == group[None, :], cos, 0.0)
    for j in range(1, len(idx)):
        earlier = cos[j, :j]
        k = int(np.argmax(np.abs(earlier)))
        if earlier[k] >= threshold:
            dup[idx[j]] = idx[k]
        elif earlier[k] <= -threshold:
            opp[idx[j]] = idx[k]
    return dup, opp


def norm_over_init(w: np.ndarray) -> np.ndarray:
    """Each filter's L2 norm over the norm PyTorch's default initialisation gives it.

    w: (N, ...) weights. Under the default init (kaiming-uniform, a = sqrt(5)) each of a
    filter's D weights is U(-b, b) with b = 1/sqrt(D), so its squared norm is 1/3 on average
    (standard deviation sqrt(4 / (45 D))) whatever the layer: 1 means "the size it started
    with". Training grows the filters of channels that are used; a channel that stopped
    firing early stops receiving gradient and its filter stays near 1. Returns (N,) float,
    NaN for non-finite filters.
    """
    rows = as_filters(w)
    with np.errstate(invalid="ignore"):
        return np.linalg.norm(rows, axis=1) / np.sqrt(1 / 3)


def duplicate_evidence(w: np.ndarray, duplicate_of: np.ndarray, opposite_of: np.ndarray, threshold: float,
                       skip: np.ndarray | None = None, groups: int = 1, alpha: float = 0.05) -> dict:
    """Are a layer's near-duplicates (on/off pairs) more than chance gives filters of its size?

    Two independent random filters of D weights have a cosine of at least ``threshold`` with
    probability ``evidence.duplicate_chance(D, threshold)`` (the same for at most -threshold);
    over the P pairs compared (live filters within a group) about P times that many reach it.
    A count k is beyond chance when P(X >= k) <= ``alpha`` for X ~ Poisson(expected). Tiny
    kernels need this: at D = 9 a cosine of 0.95 has probability 1.3e-5 per pair, at D = 4
    0.03. Returns ``weights_per_filter``, ``pairs``, ``chance_per_pair``,
    ``expected_by_chance``, and per kind (``duplicates``, ``on_off_pairs``) its ``count``,
    ``p_value`` and ``enough`` (beyond chance, or nothing to judge)."""
    from reportgen.analysis.evidence import duplicate_chance, poisson_tail

    rows = as_filters(w)
    n, dim = rows.shape
    ok = np.isfinite(rows).all(axis=1) & (np.linalg.norm(rows, axis=1) > 0)
    if skip is not None:
        ok &= ~skip
    group = np.arange(n) // (n // groups) if groups > 1 and n % groups == 0 else np.zeros(n, dtype=np.int64)
    live = np.bincount(group[ok], minlength=int(group.max(initial=0)) + 1) if n else np.zeros(0, dtype=np.int64)
    pairs = int((live * (live - 1) // 2).sum())
    chance = duplicate_chance(dim, threshold) if dim else 1.0
    expected = pairs * chance
    out = {"weights_per_filter": int(dim), "pairs": pairs, "cosine": float(threshold), "chance_per_pair": chance,
           "expected_by_chance": expected, "alpha": alpha}
    for key, idx in (("duplicates", duplicate_of), ("on_off_pairs", opposite_of)):
        k = int((np.asarray(idx) >= 0).sum())
        p = poisson_tail(k, expected) if k else 1.0
        out[key] = {"count": k, "p_value": p, "enough": bool(k == 0 or p <= alpha)}
    return out
