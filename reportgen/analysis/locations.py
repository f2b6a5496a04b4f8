"""Comparing one layer across locations. Pure: arrays in, numbers out.

- weight similarity: mean |cosine| of filters after an optimal one-to-one matching
  (filters are permutation-invariant: filter 3 at one location may be filter 17 at
  another);
- activation similarity: mean Pearson correlation of matched channels over the same
  sampled positions of the shared images;
- linear CKA of the same activations.
Every matrix is runs x runs, symmetric, with 1 on the diagonal for healthy runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from reportgen.analysis.compare import (_centre_columns, _unit_rows, flatten_filters, match, matched_similarity,
                                       pairwise)


@dataclass(frozen=True)
class LayerComparison:
    runs: list[str]
    weights: np.ndarray | None  # (K, K) mean matched |cos|, None without weights
    weight_chance: float | None  # the same measure for independent random filters of this shape
    activations: np.ndarray | None  # (K, K) mean matched correlation, None without shared images
    cka: np.ndarray | None  # (K, K)

    def to_dict(self) -> dict:
        def m(x):
            return None if x is None else x.tolist()

        return {"runs": self.runs, "weight_similarity": m(self.weights), "weight_chance": self.weight_chance,
                "activation_similarity": m(self.activations), "cka": m(self.cka),
                "mean_to_others": {k: m(v) for k, v in self.mean_to_others().items()}}

    def mean_to_others(self) -> dict[str, np.ndarray | None]:
        """Per run, its mean similarity to every other run (NaN-aware), per measure."""
        out = {}
        for name, mat in (("weights", self.weights), ("activations", self.activations), ("cka", self.cka)):
            if mat is None or len(self.runs) < 2:
                out[name] = None
                continue
            off = mat.astype(np.float64).copy()
            np.fill_diagonal(off, np.nan)
            with np.errstate(all="ignore"):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    out[name] = np.nanmean(off, axis=1)
        return out


def _no_memo(measure: str, i: int, j: int, compute: Callable[[], float]) -> float:
    return compute()


def compare_layer(runs: list[str], weights: list[np.ndarray | None],
                  features: list[np.ndarray | None], memo: Callable = _no_memo) -> LayerComparison:
    """runs: K names; weights: K arrays (N, ...) or None; features: K arrays (S, C) on the same samples.

    Each run's features are centred and normalised once (``_Prepared``) rather than once
    per pair; the results equal ``correlation_matrix`` + ``match`` and ``linear_cka``.
    ``memo(measure, i, j, compute)`` may return a stored value instead of calling
    ``compute()`` (the build's cache); runs' features are prepared only on demand.
    """
    w_ok = all(w is not None for w in weights) and len({flatten_filters(w).shape[1] for w in weights}) == 1
    f_ok = all(f is not None for f in features) and len({f.shape[0] for f in features}) == 1
    prepared: dict[int, _Prepared] = {}

    def prep(i: int) -> _Prepared:
        if i not in prepared:
            prepared[i] = _Prepared(features[i])
        return prepared[i]

    def matrix(measure: str, fn: Callable[[int, int], float]) -> np.ndarray:
        idx = list(range(len(runs)))
        return pairwise(idx, lambda i, j: memo(measure, i, j, lambda: fn(i, j)))

    return LayerComparison(
        runs=runs,
        weights=matrix("weights", lambda i, j: matched_similarity(weights[i], weights[j]).mean) if w_ok else None,
        weight_chance=chance_similarity(tuple(weights[0].shape), tuple(weights[1].shape)) if w_ok else None,
        activations=matrix("activations", lambda i, j: prep(i).matched_correlation(prep(j))) if f_ok else None,
        cka=matrix("cka", lambda i, j: prep(i).cka(prep(j))) if f_ok else None,
    )


class _Prepared:
    """One run's activations (S, C), centred once for many pairwise comparisons."""

    def __init__(self, x: np.ndarray):
        xc = _centre_columns(x)
        self.finite = bool(np.isfinite(xc).all())
        peak = float(np.abs(xc).max(initial=0.0)) if self.finite else 0.0
        self.xc = xc / peak if peak > 0 else xc  # CKA is scale-invariant; this avoids overflow
        self.self_norm = float(np.linalg.norm(self.xc.T @ self.xc)) if peak > 0 else 0.0
        self.unit = _unit_rows(xc.T)  # (C, S): Pearson r between channels is a dot product

    def matched_correlation(self, other: "_Prepared") -> float:
        with np.errstate(invalid="ignore"):
            r = np.clip(self.unit @ other.unit.T, -1.0, 1.0)
        return match(r).mean

    def cka(self, other: "_Prepared") -> float:
        if not (self.finite and other.finite) or self.self_norm == 0 or other.self_norm == 0:
            return float("nan")
        cross = float(np.sum((other.xc.T @ self.xc) ** 2))
        return cross / (self.self_norm * other.self_norm)


def best_matches(base: np.ndarray, others: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each other layer, the filter matched to each of ``base``'s filters.

    base: (N, ...) weights; others: list of (M, ...) with the same filter size.
    Returns per other: (index (N,) int, -1 where unmatched; sign (N,) +-1 so that
    sign * other[index] points the same way as the base filter; score (N,) |cos|).
    """
    out = []
    a = flatten_filters(base)
    for w in others:
        b = flatten_filters(w)
        m = matched_similarity(base, w)
        idx = np.full(len(a), -1, dtype=np.int64)
        sign = np.ones(len(a))
        score = np.full(len(a), np.nan)
        idx[m.rows] = m.cols
        score[m.rows] = m.scores
        dots = np.einsum("ij,ij->i", a[m.rows], b[m.cols])
        sign[m.rows] = np.where(dots < 0, -1.0, 1.0)
        out.append((idx, sign, score))
    return out


def sample_positions(n_positions: int, n_images: int, max_samples: int, seed: int = 0) -> np.ndarray:
    """Sorted positions to keep from each image's (H*W) map, the same for every run.

    Each image contributes at most ceil(max_samples / n_images) positions.
    """
    per_image = max(1, -(-max_samples // max(1, n_images)))
    if per_image >= n_positions:
        return np.arange(n_positions)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_positions, size=per_image, replace=False))


def resize_filters(w: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, C, h, w) -> (N, C, *size) by bilinear resampling, to compare kernels of other sizes."""
    import torch
    from torch.nn import functional as F

    if w.shape[2:] == tuple(size):
        return w
    t = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float64))
    return F.interpolate(t, size=size, mode="bilinear", align_corners=True).numpy()


@lru_cache(maxsize=64)
def chance_similarity(shape_a: tuple, shape_b: tuple, trials: int = 3, seed: int = 0) -> float:
    """Mean matched |cos| of independent Gaussian filters of these shapes: the level that
    similarity reaches by chance (it grows as filters get fewer dimensions)."""
    rng = np.random.default_rng(seed)
    vals = [matched_similarity(rng.standard_normal(shape_a), rng.standard_normal(shape_b)).mean
            for _ in range(trials)]
    return float(np.mean(vals))
