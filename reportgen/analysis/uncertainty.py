"""How sure the comparison numbers are: chance levels and bootstrap intervals.

- Chance: the matched |cos| that independent random filters of a layer's shape reach,
  as a mean and a standard deviation over many draws, so a layer's similarity can be
  stated in standard deviations above chance.
- Bootstrap over the shared images and, within each image, over blocks of its sampled
  positions (a two-stage cluster bootstrap: positions of one image are correlated, so
  they are resampled in contiguous blocks, never one by one). Every pair of runs is
  evaluated on the same resamples, so summaries over pairs (a run's mean similarity to
  the others, the median over pairs) get intervals from the same draws.

Resampling reuses the already-sampled features: each resample is a vector of counts per
(image, block) unit, and the centred cross-products it needs are sums of per-unit
cross-products weighted by those counts, so a resample costs (units x C^2), not (S x C^2).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.optimize import linear_sum_assignment

from reportgen.analysis.compare import centre_columns, matched_similarity

CHANCE_DRAWS = 100
BOOTSTRAP_RESAMPLES = 200
POSITION_BLOCKS = 8  # blocks of consecutive sampled positions per image
MIN_IMAGES = 5  # fewer shared images than this: too few distinct resamples for an interval
CHUNK_BYTES = 64 << 20  # float64 arrays of one chunk of resamples (chunk x C x D each, a few alive at once)


@lru_cache(maxsize=64)
def chance_similarity(shape_a: tuple, shape_b: tuple, draws: int = CHANCE_DRAWS, seed: int = 0) -> tuple[float, float]:
    """(mean, standard deviation) of the matched |cos| of independent Gaussian filters of
    these shapes over ``draws`` draws: the level similarity reaches by chance (it grows
    as filters get fewer dimensions)."""
    rng = np.random.default_rng(seed)
    vals = [matched_similarity(rng.standard_normal(shape_a), rng.standard_normal(shape_b)).mean
            for _ in range(draws)]
    return float(np.mean(vals)), float(np.std(vals, ddof=1))


def resample_counts(images: np.ndarray, n_resamples: int = BOOTSTRAP_RESAMPLES, blocks: int = POSITION_BLOCKS,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-stage bootstrap draws over images, then blocks of positions within each drawn image.

    images: (S,) int, the image each sample row comes from (rows of one image contiguous).
    Returns (units (S,) int: the (image, block) unit of each row; counts (R, U) int:
    how often each unit is drawn in each resample).
    """
    images = np.asarray(images)
    units = np.empty(len(images), dtype=np.intp)
    groups: list[np.ndarray] = []  # per image, its unit ids
    u = 0
    for k in dict.fromkeys(images.tolist()):
        rows = np.flatnonzero(images == k)
        parts = np.array_split(rows, min(blocks, len(rows)))
        for p in parts:
            units[p] = u
            u += 1
        groups.append(np.arange(u - len(parts), u))
    # The draws, in this order: per resample the images, then per drawn image its blocks. They
    # stay one generator call each (numpy's bounded draws are not the same when concatenated);
    # the counting is one bincount over all of them.
    rng = np.random.default_rng(seed)
    drawn: list[np.ndarray] = []
    for r in range(n_resamples):
        for k in rng.integers(0, len(groups), len(groups)):
            g = groups[k]
            drawn.append(r * u + g[rng.integers(0, len(g), len(g))])
    flat = np.concatenate(drawn) if drawn else np.zeros(0, dtype=np.intp)
    counts = np.bincount(flat, minlength=n_resamples * u).astype(np.int64).reshape(n_resamples, u)
    return units, counts


def resamples_per_chunk(c: int, d: int, budget: int = CHUNK_BYTES) -> int:
    """Resamples evaluated at once for C x D cross-products: about four float64 arrays of
    chunk x C x D fit ``budget`` bytes; at least 1. Results do not depend on it."""
    return max(1, budget // (4 * 8 * max(1, c * d)))


class BootRun:
    """One run's features (S, C) prepared for resampled correlation and CKA."""

    def __init__(self, x: np.ndarray, units: np.ndarray, counts: np.ndarray, chunk: int | None = None):
        """chunk: resamples evaluated at once (default ``resamples_per_chunk``)."""
        self.chunk = chunk
        xc = centre_columns(x)
        peak = float(np.abs(xc).max(initial=0.0))
        self.finite = bool(np.isfinite(xc).all())
        self.x = xc / peak if peak > 0 and self.finite else xc
        self.counts = counts.astype(np.float64)
        n_units = counts.shape[1]
        self.rows = [np.flatnonzero(units == u) for u in range(n_units)]
        sums = np.stack([self.x[r].sum(axis=0) for r in self.rows])  # (U, C)
        self.n = self.counts @ np.array([len(r) for r in self.rows], dtype=np.float64)  # (R,)
        self.s = self.counts @ sums  # (R, C)
        # A channel is constant in a resample when every drawn unit holds one same value:
        # decided exactly from per-unit extremes, not from a rounded variance.
        hi = np.stack([self.x[r].max(axis=0) for r in self.rows])
        lo = np.stack([self.x[r].min(axis=0) for r in self.rows])
        drawn = counts > 0
        top = np.where(drawn[:, :, None], hi[None], -np.inf).max(axis=1)
        bot = np.where(drawn[:, :, None], lo[None], np.inf).min(axis=1)
        self.const = top == bot  # (R, C)
        var = np.empty(self.const.shape)
        self.norm = np.empty(len(counts))
        for sl, cov in self._cov(self):
            var[sl] = np.diagonal(cov, axis1=1, axis2=2)
            self.norm[sl] = np.sqrt(_squares(cov))
        self.var = np.where(self.const, 0.0, np.maximum(var, 0.0))
        # a zero deviation (constant) as infinity: dividing by it gives the correlation 0
        sd = np.sqrt(self.var)
        self.sd = np.where(sd > 0, sd, np.inf)

    def _cov(self, other: "BootRun"):
        """Yields (slice of resamples, (r, C, D) centred cross-products of self and other)."""
        cross = np.stack([self.x[r].T @ other.x[r] for r in self.rows])  # (U, C, D)
        flat = cross.reshape(len(cross), -1)
        step = self.chunk or resamples_per_chunk(cross.shape[1], cross.shape[2])
        for start in range(0, len(self.counts), step):
            sl = slice(start, start + step)
            cov = (self.counts[sl] @ flat).reshape(-1, cross.shape[1], cross.shape[2])
            cov -= (self.s[sl] / self.n[sl, None])[:, :, None] * other.s[sl, None, :]
            yield sl, cov

    def pair(self, other: "BootRun") -> tuple[np.ndarray, np.ndarray]:
        """(R,) matched activation similarity and (R,) linear CKA on each resample."""
        r_count = len(self.counts)
        if not (self.finite and other.finite):
            nan = np.full(r_count, np.nan)
            return nan, nan
        act, cka = np.empty(r_count), np.empty(r_count)
        for sl, cov in self._cov(other):
            ca, cb = self.const[sl], other.const[sl]  # (r, C), (r, D)
            # Pearson r; constant_rule for a chunk of resamples at once: a constant channel has
            # the deviation inf (r = 0), two constant channels r = 1
            corr = cov / self.sd[sl][:, :, None]
            corr /= other.sd[sl][:, None, :]
            np.clip(corr, -1.0, 1.0, out=corr)
            if ca.any() and cb.any():
                corr[ca[:, :, None] & cb[:, None, :]] = 1.0
            # One assignment per resample (scipy has no batched solver); everything around
            # it is done for the whole chunk at once.
            m = min(corr.shape[1:])
            rows, cols = np.empty((len(corr), m), dtype=np.intp), np.empty((len(corr), m), dtype=np.intp)
            for k, c in enumerate(corr):
                rows[k], cols[k] = linear_sum_assignment(c, maximize=True)
            k = np.arange(len(cov))[:, None]
            keep = ~(ca[k, rows] & cb[k, cols])  # pairs constant on both sides: left out
            n_keep = keep.sum(axis=1)
            picked = np.where(keep, corr[k, rows, cols], 0.0).sum(axis=1)
            act[sl] = np.where(n_keep > 0, picked / np.maximum(n_keep, 1), 1.0)
            both = ca.all(axis=1) & cb.all(axis=1)
            either = ca.all(axis=1) | cb.all(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                value = _squares(cov) / (self.norm[sl] * other.norm[sl])
            cka[sl] = np.where(either, np.where(both, 1.0, 0.0), value)
        return act, cka


def _squares(cov: np.ndarray) -> np.ndarray:
    """(r,) sums of squares of (r, C, D) cross-products."""
    flat = cov.reshape(len(cov), -1)
    return np.einsum("ri,ri->r", flat, flat)


def interval(values: np.ndarray, point: float | None = None) -> list[float | None]:
    """95% bootstrap interval of bootstrap values (NaN-aware).

    With ``point`` (the statistic on the data themselves): the bias-corrected percentile
    interval (Efron 1981), widened if need be to contain the point. Resampling images with replacement repeats some of them, which
    biases statistics such as CKA upward; the correction shifts the percentiles by how far
    the point lies inside the bootstrap distribution, so the interval stays around it.
    Without: the plain 2.5th and 97.5th percentiles.
    """
    from scipy.stats import norm

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return [None, None]
    q = np.array([0.025, 0.975])
    if point is not None and np.isfinite(point) and np.ptp(v) > 0:
        below = (np.sum(v < point) + 0.5 * np.sum(v == point)) / v.size
        z0 = norm.ppf(np.clip(below, 0.5 / v.size, 1 - 0.5 / v.size))
        q = norm.cdf(2 * z0 + norm.ppf(q))
    lo, hi = np.percentile(v, 100 * q)
    if point is not None and np.isfinite(point):
        # the correction can fail when the point lies at the edge of the resamples; an
        # interval that excludes the value it is about would be read as a contradiction
        lo, hi = min(lo, point), max(hi, point)
    return [float(lo), float(hi)]
