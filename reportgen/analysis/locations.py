"""Comparing one layer across locations. Pure: arrays in, numbers out.

- weight similarity: mean |cosine| of filters after an optimal one-to-one matching
  (filters are permutation-invariant: filter 3 at one location may be filter 17 at
  another), with the layer's input channels first aligned by the matchings of the layers
  that feed it (``reportgen.analysis.align``) where the channel graph is a chain;
- activation similarity: mean Pearson correlation of matched channels over the same
  sampled positions of the shared images (constant channels by ``constant_rule``);
- linear CKA of the same activations;
- chance level of the weight similarity (mean, sd) and bootstrap 95% intervals of the
  activation measures (``reportgen.analysis.uncertainty``).
Every matrix is runs x runs, symmetric, with exactly 1 on the diagonal.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from reportgen.analysis.align import align_chain
from reportgen.analysis.compare import (
    centre_columns,
    constant_rule,
    flatten_filters,
    match,
    matched_similarity,
    pairwise,
    unit_rows,
    without_constant_pairs,
    zero_rows,
)
from reportgen.analysis.uncertainty import (
    MIN_IMAGES,
    BootRun,
    chance_similarity,
    interval,
    resample_counts,
)

MEASURES = ("weights", "activations", "cka")
# Runs per block of pairs: the features of at most two blocks are prepared at once (a conv
# layer's prepared features are a few MB a run), so the memory of a comparison stops
# growing at 2 x PAIR_BLOCK runs; a smaller block reads each run's features more often.
PAIR_BLOCK = 8
# Bootstrap intervals cost a resampled comparison per pair (O(K^2) for K runs). Up to this many
# runs every pair gets them; above, each run gets them against BOOTSTRAP_PARTNERS others (its
# neighbours in run order, wrapping around), which is what the pages' intervals need.
BOOTSTRAP_ALL_PAIRS = 24
BOOTSTRAP_PARTNERS = 16


@dataclass(frozen=True)
class LayerComparison:
    runs: list[str]
    weights: np.ndarray | None  # (K, K) mean matched |cos|, None without weights
    weight_chance: float | None  # the same measure for independent random filters of this shape: mean
    activations: np.ndarray | None  # (K, K) mean matched correlation, None without shared images
    cka: np.ndarray | None  # (K, K)
    weight_chance_sd: float | None = None  # ... and standard deviation over draws
    aligned: bool = False  # weights compared after aligning input channels through the network
    alignment_note: str | None = None  # why not, where it was not done
    matching: dict = field(default_factory=dict)  # (i, j), i < j -> (N,) b's filter matched to each of a's
    signs: dict = field(default_factory=dict)  # (i, j) -> (N,) +-1: sign of each matched pair's cosine
    boot: dict = field(default_factory=dict)  # measure -> (K, K, R) bootstrap values (diagonal 1)
    # measure -> {"pairs": {(i, j): [lo, hi]}, "mean": [[lo, hi]] per run, "median": [lo, hi]}: the
    # intervals of a bootstrap over sampled pairs (more than BOOTSTRAP_ALL_PAIRS runs), instead of ``boot``
    ci: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        def m(x):
            return None if x is None else np.asarray(x).tolist()

        sd = self.weight_chance_sd
        z = None
        if self.weights is not None and sd:
            z = (self.weights - self.weight_chance) / sd
        out = {"runs": self.runs, "weight_similarity": m(self.weights), "weight_chance": self.weight_chance,
               "weight_chance_sd": sd, "weight_z": m(z),
               "aligned": self.aligned, "alignment_note": self.alignment_note,
               "weight_matching": [{"a": self.runs[i], "b": self.runs[j], "b_index": m(cols)}
                                   for (i, j), cols in sorted(self.matching.items())],
               "activation_similarity": m(self.activations), "cka": m(self.cka),
               "activation_similarity_ci": self._pair_ci("activations"), "cka_ci": self._pair_ci("cka"),
               "mean_to_others": {k: m(v) for k, v in self.mean_to_others().items()},
               "mean_to_others_ci": {k: self._mean_ci(k) for k in ("activations", "cka")},
               "median_over_pairs": {k: self.median_over_pairs(k) for k in MEASURES},
               "median_over_pairs_ci": {k: self._median_ci(k) for k in ("activations", "cka")}}
        return out

    def matched_to(self, base: int) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Per other run (in order, ``base`` left out): (filter matched to each of base's, sign)."""
        out = []
        for o in range(len(self.runs)):
            if o == base:
                continue
            key = (min(base, o), max(base, o))
            if key not in self.matching:
                out.append(None)
            elif base < o:
                out.append((self.matching[key], self.signs[key]))
            else:  # the stored matching goes from o to base: invert it
                cols = self.matching[key]
                inv = np.full(len(cols), -1, dtype=np.intp)
                inv[cols] = np.arange(len(cols))
                out.append((inv, self.signs[key][inv]) if (inv >= 0).all() else None)
        return out

    def matrix(self, measure: str) -> np.ndarray | None:
        return {"weights": self.weights, "activations": self.activations, "cka": self.cka}[measure]

    def mean_to_others(self) -> dict[str, np.ndarray | None]:
        """Per run, its mean similarity to every other run (NaN-aware), per measure."""
        return {name: None if self.matrix(name) is None or len(self.runs) < 2 else _mean_off(self.matrix(name))
                for name in MEASURES}

    def median_over_pairs(self, measure: str) -> float | None:
        mat = self.matrix(measure)
        if mat is None or len(self.runs) < 2:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            v = float(np.nanmedian(mat[np.triu_indices(len(self.runs), 1)]))
        return v if np.isfinite(v) else None

    def _pair_ci(self, measure: str) -> list | None:
        if measure in self.ci:  # sampled pairs: the others have no interval (null)
            pairs, k = self.ci[measure]["pairs"], len(self.runs)
            return [[[1.0, 1.0] if i == j else pairs.get((min(i, j), max(i, j))) for j in range(k)]
                    for i in range(k)]
        b = self.boot.get(measure)
        if b is None:
            return None
        k = len(self.runs)
        point = self.matrix(measure)
        return [[[1.0, 1.0] if i == j else interval(b[i, j], point[i, j]) for j in range(k)] for i in range(k)]

    def _mean_ci(self, measure: str) -> list | None:
        if measure in self.ci:
            return self.ci[measure]["mean"]
        b = self.boot.get(measure)
        if b is None or len(self.runs) < 2:
            return None
        per = np.stack([_mean_off(b[:, :, r]) for r in range(b.shape[2])], axis=1)  # (K, R)
        return [interval(row, p) for row, p in zip(per, _mean_off(self.matrix(measure)))]

    def _median_ci(self, measure: str) -> list | None:
        if measure in self.ci:
            return self.ci[measure]["median"]
        b = self.boot.get(measure)
        if b is None or len(self.runs) < 2:
            return None
        iu = np.triu_indices(len(self.runs), 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return interval(np.nanmedian(b[iu[0], iu[1], :], axis=0), self.median_over_pairs(measure))


def _mean_off(mat: np.ndarray) -> np.ndarray:
    off = mat.astype(np.float64).copy()
    np.fill_diagonal(off, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(off, axis=1)


def _no_memo(measure: str, i: int, j: int, compute: Callable):
    return compute()


def compare_layer(runs: list[str], weights: list[np.ndarray | None],
                  features: list[np.ndarray | None], memo: Callable = _no_memo,
                  chains: list[list[dict] | None] | None = None, chain_note: str | None = None,
                  feature_images: np.ndarray | None = None, resamples: int = 0,
                  align_memo: Callable[[int, int], dict] | None = None,
                  feature_rows: list[int | None] | None = None, chance_level: bool = True) -> LayerComparison:
    """runs: K names; weights: K arrays (N, ...) or None; features: K arrays (S, C) on the same samples.

    ``features`` may be any sequence that loads a run's array when indexed (spilled
    features): with ``feature_rows`` (per run S, or None without features) it is only
    indexed when a pair is computed, pairs go block by block (``block_pairs``) and at most
    two blocks of runs are prepared at once, so memory does not grow with K.

    chains: per run, the links from the network input to this layer
    (``reportgen.run.chain.layer_chains``; the last link is this layer); when every run has
    one, weights are compared after aligning input channels (``align_chain``), else in
    each run's own input order, and ``chain_note`` says why.
    feature_images: (S,) the shared image of each feature row; with ``resamples`` > 0 and at
    least MIN_IMAGES images, bootstrap values of the activation measures over images and
    blocks of positions.
    align_memo(i, j): a dict kept per pair of runs across layers (see ``align_chain``).
    chance_level: False leaves ``weight_chance`` to the caller (``chance_shapes`` says for
    which shapes), who may compute it elsewhere (reportgen.reduce.compare).
    Each run's features are centred and normalised once (``_Prepared``) rather than once
    per pair; the results equal ``correlation_matrix`` + ``match`` and ``linear_cka``.
    ``memo(measure, i, j, compute)`` may return a stored value instead of calling
    ``compute()`` (the build's cache); runs' features are prepared only on demand.
    """
    k = len(runs)
    w_ok = weights_comparable(weights)
    if feature_rows is None:
        feature_rows = [None if f is None else f.shape[0] for f in features]
    f_ok = all(r is not None for r in feature_rows) and len(set(feature_rows)) == 1
    aligned = w_ok and chains is not None and all(c is not None for c in chains)
    if aligned and len({tuple(l["weight"].shape for l in c) for c in chains}) != 1:
        aligned, chain_note = False, "the locations' layers feeding it differ in shape"
    prep = _Recent(lambda i: _Prepared(features[i]), 2 * PAIR_BLOCK)

    def matrix(measure: str, fn: Callable[[int, int], float]) -> np.ndarray:
        out = np.empty((k, k), dtype=np.float64)
        for i, j in block_pairs(k):
            out[i, j] = out[j, i] = float(memo(measure, i, j, lambda: fn(i, j)))
        return out

    matching: dict[tuple[int, int], np.ndarray] = {}
    signs: dict[tuple[int, int], np.ndarray] = {}
    weight_mat = None
    if w_ok:
        def weight_pair(i: int, j: int) -> dict:
            pair = [weights[i], weights[j]]
            memo_ij = align_memo(i, j) if align_memo else None
            m = align_chain(chains[i], chains[j], pair, memo_ij)[-1] if aligned else matched_similarity(*pair)
            a, b = flatten_filters(pair[0]), flatten_filters(pair[1])
            dots = np.einsum("ij,ij->i", a[m.rows], b[m.cols])
            return {"mean": float(m.mean), "cols": [int(c) for c in m.cols],
                    "signs": [-1.0 if d < 0 else 1.0 for d in dots]}

        def weight_score(i: int, j: int) -> float:
            res = memo("weights-aligned" if aligned else "weights-own-order", i, j, lambda: weight_pair(i, j))
            if i < j:
                matching[(i, j)] = np.asarray(res["cols"])
                signs[(i, j)] = np.asarray(res["signs"])
            return res["mean"]

        weight_mat = pairwise(list(range(k)), weight_score)
    chance = (chance_similarity(*chance_shapes(weights)) if chance_level and w_ok and k > 1 else (None, None))
    act_mat = matrix("activations", lambda i, j: prep(i).matched_correlation(prep(j))) if f_ok else None
    cka_mat = matrix("cka", lambda i, j: prep(i).cka(prep(j))) if f_ok else None
    prep.clear()  # the bootstrap prepares the features its own way
    boot, ci = {}, {}
    if wants_bootstrap(feature_rows, feature_images, resamples):
        boot, ci = layer_bootstrap(features, feature_images, resamples, memo, act_mat, cka_mat)
    return LayerComparison(
        runs=runs,
        weights=weight_mat,
        weight_chance=chance[0], weight_chance_sd=chance[1],
        activations=act_mat,
        cka=cka_mat,
        aligned=bool(aligned), alignment_note=None if aligned or not w_ok else (
            chain_note or "the layers feeding it were not recorded"),
        matching=matching, signs=signs, boot=boot, ci=ci,
    )


def weights_comparable(weights: list[np.ndarray | None]) -> bool:
    """Whether a layer's runs all have weights with filters of the same size (compared by weight)."""
    return all(w is not None for w in weights) and len({flatten_filters(w).shape[1] for w in weights}) == 1


def chance_shapes(weights: list[np.ndarray]) -> tuple[tuple, tuple]:
    """The shapes whose chance level of matched similarity (``chance_similarity``) a layer's
    comparison reports: those of its first two runs' weights."""
    return tuple(weights[0].shape), tuple(weights[1].shape)


def wants_bootstrap(feature_rows: list[int | None], feature_images: np.ndarray | None, resamples: int) -> bool:
    """Whether a layer's comparison gets bootstrap values: every run has features on the same
    rows, at least two runs, resamples asked for and at least MIN_IMAGES shared images."""
    return (len(feature_rows) > 1 and all(r is not None for r in feature_rows) and len(set(feature_rows)) == 1
            and resamples > 0 and feature_images is not None and len(np.unique(feature_images)) >= MIN_IMAGES)


def layer_bootstrap(features, feature_images: np.ndarray, resamples: int, memo: Callable,
                    act_mat: np.ndarray, cka_mat: np.ndarray) -> tuple[dict, dict]:
    """The bootstrap part of ``compare_layer`` (its ``boot`` and ``ci``), on its own so that a
    build can run it elsewhere (reportgen.reduce.compare): every pair's values up to
    BOOTSTRAP_ALL_PAIRS runs, else the intervals from each run's partners; ``act_mat`` and
    ``cka_mat`` are the point values the intervals are centred on."""
    if len(features) <= BOOTSTRAP_ALL_PAIRS:
        return _bootstrap(features, feature_images, resamples, memo), {}
    return {}, _sampled_bootstrap(features, feature_images, resamples, memo, {"activations": act_mat, "cka": cka_mat})


def block_pairs(k: int, block: int = PAIR_BLOCK):
    """Every pair (i, j), i <= j < k, a block of rows against a block of columns at a time, so
    that consecutive pairs reuse the same few runs."""
    for bi in range(0, k, block):
        for bj in range(bi, k, block):
            for i in range(bi, min(bi + block, k)):
                for j in range(max(i, bj), min(bj + block, k)):
                    yield i, j


class _Recent:
    """``make(i)`` memoised for the ``size`` most recently used ``i``."""

    def __init__(self, make: Callable[[int], Any], size: int):
        self.make, self.size, self.items = make, size, OrderedDict()

    def __call__(self, i: int):
        if i in self.items:
            self.items.move_to_end(i)
        else:
            self.items[i] = self.make(i)
            if len(self.items) > self.size:
                self.items.popitem(last=False)
        return self.items[i]

    def clear(self) -> None:
        self.items.clear()


def _bootstrap(features: list[np.ndarray], images: np.ndarray, resamples: int, memo: Callable) -> dict:
    """measure -> (K, K, R) bootstrap values of every pair, all pairs on the same resamples."""
    k = len(features)
    out = {m: np.ones((k, k, resamples)) for m in ("activations", "cka")}
    for (i, j), vals in _boot_pairs(features, images, resamples, memo,
                                    [(i, j) for i, j in block_pairs(k) if i < j]):
        for m in out:
            out[m][i, j] = out[m][j, i] = vals[m]
    return out


def _boot_pairs(features, images: np.ndarray, resamples: int, memo: Callable, pairs: list[tuple[int, int]]):
    """Yields ((i, j), {"activations": (R,), "cka": (R,)}) for each pair, in the given order."""
    units, counts = resample_counts(images, resamples)
    run = _Recent(lambda i: BootRun(features[i], units, counts), 2 * PAIR_BLOCK)
    for i, j in pairs:
        def compute(i=i, j=j) -> dict:
            act, cka = run(i).pair(run(j))
            return {"activations": act.tolist(), "cka": cka.tolist()}

        yield (i, j), memo(f"bootstrap-{resamples}", i, j, compute)


def bootstrap_partners(k: int, partners: int = BOOTSTRAP_PARTNERS) -> list[tuple[int, int]]:
    """The pairs a bootstrap over many runs evaluates: each run with its ``partners`` nearest
    runs in run order (half before, half after, wrapping around), in block order."""
    half = max(1, min(partners, k - 1) // 2)
    pairs = {(min(i, (i + d) % k), max(i, (i + d) % k)) for i in range(k) for d in range(1, half + 1)}
    return sorted((p for p in pairs if p[0] != p[1]),
                  key=lambda p: (p[0] // PAIR_BLOCK, p[1] // PAIR_BLOCK, p[0], p[1]))


def _sampled_bootstrap(features, images: np.ndarray, resamples: int, memo: Callable,
                       points: dict[str, np.ndarray]) -> dict:
    """Intervals from bootstrap values of the ``bootstrap_partners`` pairs only: per pair; per
    run, of its mean similarity to its partners (centred on its mean to all others); of the
    median over the sampled pairs (centred on the median over all pairs)."""
    k = len(features)
    vals = dict(_boot_pairs(features, images, resamples, memo, bootstrap_partners(k)))
    out = {}
    for m, point in points.items():
        per_pair = {p: np.asarray(v[m], dtype=np.float64) for p, v in vals.items()}
        partners: dict[int, list[np.ndarray]] = {i: [] for i in range(k)}
        for (i, j), v in sorted(per_pair.items()):  # sums in an order that does not depend on PAIR_BLOCK
            partners[i].append(v)
            partners[j].append(v)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = [np.nanmean(np.stack(partners[i]), axis=0) for i in range(k)]
            median = np.nanmedian(np.stack(list(per_pair.values())), axis=0)
        iu = np.triu_indices(k, 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            point_median = float(np.nanmedian(point[iu]))
        out[m] = {"pairs": {p: interval(v, point[p]) for p, v in per_pair.items()},
                  "mean": [interval(row, p) for row, p in zip(means, _mean_off(point))],
                  "median": interval(median, point_median if np.isfinite(point_median) else None)}
    return out


class _Prepared:
    """One run's activations (S, C), centred once for many pairwise comparisons."""

    def __init__(self, x: np.ndarray):
        xc = centre_columns(x)
        self.finite = bool(np.isfinite(xc).all())
        peak = float(np.abs(xc).max(initial=0.0)) if self.finite else 0.0
        self.constant = peak == 0 and self.finite  # every channel constant
        self.xc = xc / peak if peak > 0 else xc  # CKA is scale-invariant; this avoids overflow
        self.self_norm = float(np.linalg.norm(self.xc.T @ self.xc)) if peak > 0 else 0.0
        self.unit = unit_rows(xc.T)  # (C, S): Pearson r between channels is a dot product
        self.const = zero_rows(xc.T)  # (C,) constant channels (exactly 0 once centred)

    def matched_correlation(self, other: "_Prepared") -> float:
        with np.errstate(invalid="ignore"):
            r = np.clip(self.unit @ other.unit.T, -1.0, 1.0)
        m = match(constant_rule(r, self.const, other.const))
        return without_constant_pairs(m, self.const, other.const).mean

    def cka(self, other: "_Prepared") -> float:
        if not (self.finite and other.finite):
            return float("nan")
        if self.constant or other.constant:  # the constant rule, for a whole layer
            return 1.0 if self.constant and other.constant else 0.0
        cross = float(np.sum((other.xc.T @ self.xc) ** 2))
        return cross / (self.self_norm * other.self_norm)


def best_matches(base: np.ndarray, others: list[np.ndarray], matched: list | None = None,
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each other layer, the filter matched to each of ``base``'s filters.

    base: (N, ...) weights; others: list of (M, ...) with the same filter size.
    matched: optional, per other, (cols (N,), signs (N,)) from the comparison (aligned
    through the network); otherwise base and other are matched here in their own order.
    Returns per other: (index (N,) int, -1 where unmatched; sign (N,) +-1 so that
    sign * other[index] points the same way as the base filter; score (N,) |cos| in own order).
    """
    out = []
    a = flatten_filters(base)
    for k, w in enumerate(others):
        b = flatten_filters(w)
        m = matched_similarity(base, w)
        idx = np.full(len(a), -1, dtype=np.int64)
        sign = np.ones(len(a))
        score = np.full(len(a), np.nan)
        if matched is not None and matched[k] is not None:
            cols, sg = matched[k]
            idx[:len(cols)] = cols
            sign[:len(cols)] = sg
            score[:len(cols)] = np.abs(np.einsum("ij,ij->i", unit_rows(a[:len(cols)]), unit_rows(b[cols])))
        else:
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
