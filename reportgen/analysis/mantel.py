"""The Mantel test: do two distance matrices over the same locations go together?

The statistic is the correlation (Pearson, or Spearman: Pearson of the ranks) between
the upper triangles of the two matrices. Pairs of locations are not independent (a
location is in n - 1 of them), so its p-value comes from permutations: relabel the
locations of one matrix (permute its rows and columns together) and count how often the
correlation is at least the observed one. The test is one-sided: the alternative is
that the matrices grow together.

With n locations there are only n! relabellings: 24 for 4 locations, so no p-value can
be below 1/24 = 0.042 there. When n! is at most the requested number of permutations
plus one, every relabelling is enumerated and p = (relabellings at least as extreme,
the identity included) / n!; otherwise ``permutations`` random relabellings are drawn
(seeded) and p = (k + 1) / (permutations + 1). ``smallest_p`` gives the floor.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

PERMUTATIONS = 999
# One (relabellings, triangle) float64 block of a chunk. It depends only on the number of
# locations, so a result is the same on every build; another size changes the null's
# quantile in the last bits (the products go through BLAS in other blocks), nothing else.
CHUNK_BYTES = 16 << 20
TIE = 1e-12  # relabellings within this of the observed r count as at least as extreme


@dataclass(frozen=True)
class MantelResult:
    r: float  # NaN when a triangle is constant
    p: float | None  # None when r is NaN
    n: int  # locations
    permutations: int  # relabellings evaluated (n! when exact), identity excluded for drawn ones
    exact: bool  # every relabelling enumerated
    smallest_p: float  # the lowest p this n and permutation count can give
    null_r_95: float = float("nan")  # 95th percentile of r over the relabellings: weaker r look like chance


def smallest_p(n: int, permutations: int = PERMUTATIONS) -> float:
    """1/n! when every relabelling is enumerated, else 1/(permutations + 1)."""
    total = math.factorial(n)
    return 1.0 / total if total <= permutations + 1 else 1.0 / (permutations + 1)


def triangle(m: np.ndarray) -> np.ndarray:
    """(n, n) -> (n(n-1)/2,) entries above the diagonal, row by row."""
    m = np.asarray(m, dtype=np.float64)
    return m[np.triu_indices(len(m), 1)]


def _ranks(m: np.ndarray) -> np.ndarray:
    """The symmetric matrix of the average ranks (1-based, ties share their mean rank) of
    the upper triangle's entries. numpy only: importing scipy.stats takes seconds."""
    n = len(m)
    iu = np.triu_indices(n, 1)
    _, inverse, counts = np.unique(np.asarray(m, dtype=np.float64)[iu], return_inverse=True, return_counts=True)
    average = np.cumsum(counts) - (counts - 1) / 2
    out = np.zeros((n, n))
    out[iu] = average[inverse]
    return out + out.T


def _relabellings(n: int, permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """(P, n) index arrays: every permutation of n (identity first) or ``permutations`` drawn ones."""
    if math.factorial(n) <= permutations + 1:
        return np.array(list(itertools.permutations(range(n))), dtype=np.intp).reshape(-1, n), True
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(np.arange(n), (permutations, 1)), axis=1), False


def mantel(a: np.ndarray, b: np.ndarray, method: str = "pearson", permutations: int = PERMUTATIONS,
           seed: int = 0) -> MantelResult:
    """Correlation of the upper triangles of ``a`` and ``b`` ((n, n), symmetric, finite) and its
    one-sided permutation p-value; ``a``'s rows and columns are relabelled.

    method: 'pearson' or 'spearman'. The same seed draws the same relabellings, so the
    two methods (and every pair of matrices of one size) are tested on the same ones.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = len(a)
    if a.shape != (n, n) or b.shape != (n, n):
        raise ValueError(f"need two square matrices of one size, got {a.shape} and {b.shape}")
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method is 'pearson' or 'spearman', not {method!r}")
    if n < 3:
        raise ValueError(f"a Mantel test needs at least 3 locations, got {n}")
    iu = np.triu_indices(n, 1)
    if not (np.isfinite(a[iu]).all() and np.isfinite(b[iu]).all()):
        raise ValueError("the matrices hold NaN or infinite distances; leave those locations out first")
    if method == "spearman":
        a, b = _ranks(a), _ranks(b)
    perms, exact = _relabellings(n, permutations, seed)
    count = len(perms)
    floor = 1.0 / count if exact else 1.0 / (count + 1)
    bz = _standardised(b[iu])
    az = _standardised(a[iu])
    if bz is None or az is None:
        return MantelResult(r=float("nan"), p=None, n=n, permutations=count, exact=exact, smallest_p=floor)
    r_obs = float(np.clip(az @ bz, -1.0, 1.0))
    hits = 0
    null = []
    # Relabellings a chunk at a time, the chunk sized to the triangle: a (P, m) block of
    # float64 and its index arrays are several copies of P x m x 8 bytes, and with 4,096
    # relabellings a chunk 200 locations (m = 19,900) took 0.8 GB at once.
    step = max(1, CHUNK_BYTES // (8 * len(iu[0])))
    for start in range(0, count, step):
        p = perms[start:start + step]
        # a relabelled: a[p][:, p]; its upper triangle is a[p[i], p[j]] over the same (i, j)
        tri = a[p[:, iu[0]], p[:, iu[1]]]  # (P, m)
        r = _standardised_rows(tri) @ bz
        hits += int(np.sum(r >= r_obs - TIE))
        null.append(r)
    p_value = hits / count if exact else (hits + 1) / (count + 1)
    return MantelResult(r=r_obs, p=float(p_value), n=n, permutations=count, exact=exact, smallest_p=floor,
                        null_r_95=float(np.quantile(np.concatenate(null), 0.95)))


def _standardised(x: np.ndarray) -> np.ndarray | None:
    """Centred and scaled to unit norm, so a dot product is Pearson's r; None when constant."""
    c = x - x.mean()
    norm = float(np.linalg.norm(c))
    scale = max(float(np.max(np.abs(x))), 1e-300)
    return None if norm <= 1e-12 * scale * math.sqrt(len(x)) else c / norm


def _standardised_rows(x: np.ndarray) -> np.ndarray:
    c = x - x.mean(axis=1, keepdims=True)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def leave_one_out(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) Pearson r of the triangles with each location left out in turn (NaN where a
    triangle is constant): how much one location, e.g. a collapsed network far from all
    others, carries the correlation."""
    n = len(a)
    out = np.full(n, np.nan)
    for i in range(n):
        keep = [j for j in range(n) if j != i]
        x = _standardised(triangle(np.asarray(a)[np.ix_(keep, keep)]))
        y = _standardised(triangle(np.asarray(b)[np.ix_(keep, keep)]))
        if x is not None and y is not None and len(keep) >= 3:
            out[i] = float(x @ y)
    return out


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None stays None and does not
    count towards the family): a test is significant at level alpha when its adjusted p <= alpha."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def complete_subset(mats: list[np.ndarray]) -> list[int]:
    """Indices of locations to keep so that every matrix is finite among them: drop the
    location with the most non-finite entries (over all matrices) until none is left."""
    n = len(mats[0])
    keep = list(range(n))
    while keep:
        bad = np.zeros(len(keep), dtype=np.int64)
        for m in mats:
            sub = np.asarray(m, dtype=np.float64)[np.ix_(keep, keep)]
            bad += (~np.isfinite(sub)).sum(axis=1)
        if not bad.any():
            break
        keep.pop(int(np.argmax(bad)))
    return keep
