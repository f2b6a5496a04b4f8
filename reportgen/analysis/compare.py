"""Cross-location comparison of layers: filter similarity, activation correlation, CKA.

Everything here is a pure function on numpy arrays. Inputs are never mutated and
all arithmetic is done in float64, whatever the input dtype, because the
quantities we report (similarities close to 1, CKA of near-identical layers) are
exactly where float32 round-off would show.

Conventions
-----------
* Filters are rows: a conv layer's weights ``(N, C, kh, kw)`` become ``(N, C*kh*kw)``.
* Activations are ``(S, N)``: S samples (images x positions, or images with
  spatially pooled activations) by N channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "Match",
    "flatten_filters",
    "cosine_matrix",
    "correlation_matrix",
    "match",
    "matched_similarity",
    "filter_similarity",
    "matched_correlation",
    "without_constant_pairs",
    "zero_rows",
    "linear_cka",
    "pairwise",
    "constant_rule",
    "TIE_WEIGHT",
]

# Weight of the tie-break in ``match``: far below any real difference of similarities
# (float64 resolves 1e-16), so it only decides between exactly equal candidates.
TIE_WEIGHT = 1e-6


@dataclass(frozen=True, eq=False)
class Match:
    """A one-to-one matching between the rows and columns of a similarity matrix.

    rows:   (K,) int   row indices, ascending; K = min(N, M)
    cols:   (K,) int   column matched to each row
    scores: (K,) float sim[rows, cols]; NaN where the matched entry was NaN
    mean:   float      mean of ``scores`` (NaN if any matched score is NaN, or K == 0)

    ``eq=False`` because the fields are arrays (element-wise ``==`` has no
    single truth value); the arrays are read-only so the result stays frozen.
    """

    rows: np.ndarray
    cols: np.ndarray
    scores: np.ndarray
    mean: float


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def flatten_filters(w: np.ndarray) -> np.ndarray:
    """Weights to one row per output unit.

    w: (N, C, kh, kw) conv weights, (N, D) dense weights, or (N,) -> (N, D) float64.
    Returns a new array (never a view of ``w``).
    """
    w = np.asarray(w)
    if w.ndim == 0:
        raise ValueError("flatten_filters needs at least one axis (N, ...)")
    n = w.shape[0]
    return np.array(w, dtype=np.float64, copy=True).reshape(n, -1)


def unit_rows(a: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero, NaN rows stay NaN.

    a: (N, D) float64 -> (N, D) float64.
    Each row is first divided by its max |.| so the norm neither overflows
    (1e200) nor underflows (1e-200) before we divide by it.
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        peak = np.max(np.abs(a), axis=1, keepdims=True) if a.shape[1] else np.zeros((a.shape[0], 1))
        # peak == 0: an all-zero row; keep it at zero so its similarities are 0, not NaN.
        pre = np.where(peak > 0, 1.0 / np.where(peak > 0, peak, 1.0), 0.0)
        pre = np.where(np.isnan(peak), np.nan, pre)
        scaled = a * pre
        norm = np.sqrt(np.sum(scaled * scaled, axis=1, keepdims=True))
        inv = np.where(norm > 0, 1.0 / np.where(norm > 0, norm, 1.0), 0.0)
        inv = np.where(np.isnan(norm), np.nan, inv)
        return scaled * inv


def cosine_matrix(a: np.ndarray, b: np.ndarray, absolute: bool = True) -> np.ndarray:
    """Cosine similarity between every row of ``a`` and every row of ``b``.

    a: (N, D), b: (M, D) -> (N, M) float64 in [-1, 1] ([0, 1] when absolute).

    absolute: return |cos|. A filter and its negation detect the same feature:
        the next layer can undo the sign with the sign of its own weights (and a
        bias), so for comparing what two layers learned the sign is noise.
    A zero row has similarity 0 to everything (not NaN). A row containing NaN
    gives NaN in its own row (of ``a``) or column (of ``b``) only.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need (N, D) and (M, D) with the same D, got {a.shape} and {b.shape}")
    ua, ub = unit_rows(a), unit_rows(b)
    with np.errstate(invalid="ignore"):
        sim = ua @ ub.T
    # Rounding can push |cos| of parallel rows a hair past 1.
    sim = np.clip(sim, -1.0, 1.0)
    return np.abs(sim) if absolute else sim


def centre_columns(x: np.ndarray) -> np.ndarray:
    """Column-centred float64 copy of x: (S, P) -> (S, P).

    Subtracting the first row before the mean makes a constant column exactly 0
    (the mean of S copies of c is not always exactly c in floating point), so
    "constant" can be tested with == 0 instead of a tolerance; it also removes a
    large common offset before the mean is taken, which helps precision.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] == 0:
        return x.copy()
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = x - x[:1]
        return shifted - shifted.mean(axis=0, keepdims=True)


def constant_rule(sim: np.ndarray, const_a: np.ndarray, const_b: np.ndarray) -> np.ndarray:
    """How pairs with a constant side count: a copy of sim with 1 where both are
    constant and 0 where exactly one is.

    sim: (N, M); const_a: (N,) bool; const_b: (M,) bool.
    Correlation and cosine ignore offset and scale, so two constant channels (or two
    all-zero filters) are the same signal up to those: identical, 1. A constant and a
    varying one share nothing: 0. This keeps a network against itself, or any permuted
    copy, at exactly 1 with dead channels, and keeps the matrix symmetric.
    """
    out = np.array(sim, dtype=np.float64, copy=True)
    out[const_a, :] = 0.0
    out[:, const_b] = 0.0
    out[np.ix_(const_a, const_b)] = 1.0
    return out


def without_constant_pairs(m: Match, const_a: np.ndarray, const_b: np.ndarray) -> Match:
    """The same matching, its mean taken over the pairs with at least one varying side.

    Two constant channels count 1 for the matching (``constant_rule``: it pairs dead with
    dead and leaves the live channels to each other) but carry no signal, so they would
    otherwise inflate the score of two layers that both lost many channels. A layer against
    itself or a permuted copy still scores exactly 1; when every matched pair is constant
    on both sides the score is 1 (nothing varies anywhere, identically).
    """
    keep = ~(np.asarray(const_a)[m.rows] & np.asarray(const_b)[m.cols])
    mean = float(m.scores[keep].mean()) if keep.any() else (1.0 if m.scores.size else float("nan"))
    return Match(rows=m.rows, cols=m.cols, scores=m.scores, mean=mean)


def zero_rows(a: np.ndarray) -> np.ndarray:
    """(N, D) -> (N,) bool: rows that are exactly zero (NaN rows are not)."""
    return ~np.any(np.asarray(a) != 0, axis=1)


def correlation_matrix(xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """Pearson correlation between the channels of two activation matrices.

    xa: (S, N), xb: (S, M) -> (N, M) float64 in [-1, 1].
    S samples are paired across xa and xb (same images, same positions).
    Constant channels follow ``constant_rule`` (two constant channels: 1; one: 0);
    a channel containing NaN gives NaN in its own row/column.
    """
    xa = np.asarray(xa)
    xb = np.asarray(xb)
    if xa.ndim != 2 or xb.ndim != 2 or xa.shape[0] != xb.shape[0]:
        raise ValueError(f"need (S, N) and (S, M) with the same S, got {xa.shape} and {xb.shape}")
    # Centred columns, scaled to unit norm: the Pearson r is then a plain dot product,
    # and unit_rows already maps zero (constant) columns to 0.
    ca, cb = centre_columns(xa).T, centre_columns(xb).T
    za, zb = unit_rows(ca), unit_rows(cb)
    with np.errstate(invalid="ignore"):
        r = za @ zb.T
    return constant_rule(np.clip(r, -1.0, 1.0), zero_rows(ca), zero_rows(cb))


def match(sim: np.ndarray, tie: np.ndarray | None = None) -> Match:
    """Best one-to-one matching of rows to columns (maximum total similarity).

    sim: (N, M) -> Match of K = min(N, M) pairs (Hungarian algorithm via
    ``scipy.optimize.linear_sum_assignment(maximize=True)``).
    tie: optional (N, M) in [0, 1], added with weight ``TIE_WEIGHT`` to decide between
    equally similar candidates (e.g. two all-zero filters told apart by their biases);
    the reported scores are ``sim``'s.
    Non-finite entries (NaN, +-inf) are treated as worse than every finite entry
    for the assignment, so they are used only when unavoidable; the reported
    score of such a pair is the original entry, so a NaN stays visible in
    ``scores`` and ``mean``.
    """
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2:
        raise ValueError(f"sim must be 2-D (N, M), got shape {sim.shape}")
    finite = np.isfinite(sim)
    if tie is not None:
        sim_cost = sim + TIE_WEIGHT * np.nan_to_num(np.asarray(tie, dtype=np.float64))
    else:
        sim_cost = sim
    if finite.all():
        cost = sim_cost
    else:
        # A finite stand-in strictly below every finite entry: linear_sum_assignment
        # rejects NaN, and -inf makes a row "infeasible" when it has no finite entry.
        lo, hi = (sim[finite].min(), sim[finite].max()) if finite.any() else (0.0, 0.0)
        cost = np.where(finite, sim_cost, lo - (hi - lo) - 1.0)
    rows, cols = linear_sum_assignment(cost, maximize=True)
    rows = rows.astype(np.intp)
    cols = cols.astype(np.intp)
    scores = sim[rows, cols].copy()
    mean = float(scores.mean()) if scores.size else float("nan")
    return Match(rows=_readonly(rows), cols=_readonly(cols), scores=_readonly(scores), mean=mean)


def filter_similarity(wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """|cos| of every pair of filters, all-zero filters by ``constant_rule``.

    wa: (N, ...), wb: (M, ...) with the same size after flattening -> (N, M) float64.
    """
    fa, fb = flatten_filters(wa), flatten_filters(wb)
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"filters have different sizes: {np.shape(wa)} vs {np.shape(wb)}")
    return constant_rule(cosine_matrix(fa, fb, absolute=True), zero_rows(fa), zero_rows(fb))


def matched_similarity(wa: np.ndarray, wb: np.ndarray, tie: np.ndarray | None = None) -> Match:
    """Permutation-invariant similarity of two layers' filters.

    wa: (N, C, kh, kw) or (N, D); wb: (M, C, kh, kw) or (M, D), same D after flattening.
    Flattens, takes |cos| between every pair (two all-zero filters count 1, one 0),
    and matches filters one-to-one (``tie``: see ``match``); ``Match.mean`` is the
    layer-level similarity (1 for the same filters in any order and with any signs),
    over the pairs that are not all-zero on both sides.
    """
    fa, fb = flatten_filters(wa), flatten_filters(wb)
    return without_constant_pairs(match(filter_similarity(fa, fb), tie), zero_rows(fa), zero_rows(fb))


def matched_correlation(xa: np.ndarray, xb: np.ndarray) -> Match:
    """Channels of two activation matrices (S, N), (S, M) matched on their correlation;
    the mean leaves out pairs constant on both sides (``without_constant_pairs``)."""
    ca, cb = centre_columns(xa).T, centre_columns(xb).T
    return without_constant_pairs(match(correlation_matrix(xa, xb)), zero_rows(ca), zero_rows(cb))


def linear_cka(x: np.ndarray, y: np.ndarray, method: str = "auto") -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019).

    x: (S, P), y: (S, Q) activations over the same S samples -> float in [0, 1].

    With column-centred X, Y:
        CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)          ("feature" form)
            = <XX^T, YY^T>_F / (||XX^T||_F ||YY^T||_F)           ("gram" form)
    The two are equal (trace identities); "auto" picks the cheaper: the feature
    form costs about S(P+Q)^2, the gram form S^2(P+Q), so gram wins when S < P+Q.
    CKA is invariant to orthogonal transforms and isotropic scaling of either
    side, but not to arbitrary invertible linear maps.
    A side whose columns are all constant has no variance: as for channels
    (``constant_rule``), both constant gives 1 and one constant 0.
    Returns NaN if x or y contains NaN.
    """
    if method not in ("auto", "feature", "gram"):
        raise ValueError(f"method must be 'auto', 'feature' or 'gram', got {method!r}")
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"need (S, P) and (S, Q) with the same S, got {x.shape} and {y.shape}")
    xc, yc = centre_columns(x), centre_columns(y)
    if not (np.isfinite(xc).all() and np.isfinite(yc).all()):
        return float("nan")
    # CKA is scale-invariant: normalise by the peak so squared norms cannot overflow.
    px, py = np.abs(xc).max(initial=0.0), np.abs(yc).max(initial=0.0)
    if px == 0 or py == 0:
        return 1.0 if px == py else 0.0
    xc, yc = xc / px, yc / py
    s, p, q = xc.shape[0], xc.shape[1], yc.shape[1]
    if method == "auto":
        method = "gram" if s * s * (p + q) < s * (p + q) ** 2 else "feature"
    if method == "feature":
        cross = np.sum((yc.T @ xc) ** 2)
        nx = np.linalg.norm(xc.T @ xc)
        ny = np.linalg.norm(yc.T @ yc)
    else:
        k, l = xc @ xc.T, yc @ yc.T
        cross = np.sum(k * l)
        nx = np.linalg.norm(k)
        ny = np.linalg.norm(l)
    return float(cross / (nx * ny))


def pairwise(items: Sequence[Any], fn: Callable[[Any, Any], float]) -> np.ndarray:
    """Symmetric matrix of fn over all pairs of items, e.g. locations x locations.

    items: K things (weights, activations, ...) -> (K, K) float64 with
    out[i, j] = out[j, i] = fn(items[i], items[j]).
    fn is called once per unordered pair i <= j (K(K+1)/2 calls), the diagonal
    included so self-similarity is shown rather than assumed. fn must return a
    number, e.g. ``lambda a, b: matched_similarity(a, b).mean``.
    """
    k = len(items)
    out = np.empty((k, k), dtype=np.float64)
    for i in range(k):
        for j in range(i, k):
            out[i, j] = out[j, i] = float(fn(items[i], items[j]))
    return out
