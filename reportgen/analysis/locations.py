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

import numpy as np

from reportgen.analysis.compare import correlation_matrix, flatten_filters, linear_cka, match, matched_similarity, pairwise


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


def compare_layer(runs: list[str], weights: list[np.ndarray | None],
                  features: list[np.ndarray | None]) -> LayerComparison:
    """runs: K names; weights: K arrays (N, ...) or None; features: K arrays (S, C) on the same samples."""
    w_ok = all(w is not None for w in weights) and len({flatten_filters(w).shape[1] for w in weights}) == 1
    f_ok = all(f is not None for f in features) and len({f.shape[0] for f in features}) == 1
    return LayerComparison(
        runs=runs,
        weights=pairwise(weights, lambda a, b: matched_similarity(a, b).mean) if w_ok else None,
        weight_chance=chance_similarity(weights[0].shape, weights[1].shape) if w_ok else None,
        activations=pairwise(features, lambda a, b: match(correlation_matrix(a, b)).mean) if f_ok else None,
        cka=pairwise(features, linear_cka) if f_ok else None,
    )


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


def chance_similarity(shape_a: tuple, shape_b: tuple, trials: int = 3, seed: int = 0) -> float:
    """Mean matched |cos| of independent Gaussian filters of these shapes: the level that
    similarity reaches by chance (it grows as filters get fewer dimensions)."""
    rng = np.random.default_rng(seed)
    vals = [matched_similarity(rng.standard_normal(shape_a), rng.standard_normal(shape_b)).mean
            for _ in range(trials)]
    return float(np.mean(vals))
