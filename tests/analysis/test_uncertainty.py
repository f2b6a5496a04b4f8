"""Bootstrap resamples computed as arrays equal a plain loop over the resamples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from reportgen.analysis.locations import compare_layer
from reportgen.analysis.uncertainty import BootRun, resample_counts, resamples_per_chunk


def _loop_counts(images: np.ndarray, n_resamples: int, blocks: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The draws one at a time: per resample the images, then per drawn image its blocks."""
    groups, units, u = [], np.empty(len(images), dtype=np.intp), 0
    for k in dict.fromkeys(images.tolist()):
        rows = np.flatnonzero(images == k)
        ids = []
        for part in np.array_split(rows, min(blocks, len(rows))):
            units[part] = u
            ids.append(u)
            u += 1
        groups.append(ids)
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_resamples, u), dtype=np.int64)
    for r in range(n_resamples):
        for k in rng.integers(0, len(groups), len(groups)):
            for b in rng.integers(0, len(groups[k]), len(groups[k])):
                counts[r, groups[k][b]] += 1
    return units, counts


def _loop_pair(xa: np.ndarray, xb: np.ndarray, units: np.ndarray, counts: np.ndarray):
    """Per resample: its rows repeated as drawn, then Pearson r (constant channels: 0, two
    constant: 1), the best one-to-one matching, and linear CKA, straight from the rows."""
    act, cka = [], []
    for c in counts:
        rows = np.concatenate([np.repeat(np.flatnonzero(units == u), n) for u, n in enumerate(c)])
        a, b = xa[rows] - xa[rows].mean(0), xb[rows] - xb[rows].mean(0)
        ca, cb = np.ptp(xa[rows], axis=0) == 0, np.ptp(xb[rows], axis=0) == 0
        sa, sb = np.sqrt((a * a).sum(0)), np.sqrt((b * b).sum(0))
        r = np.zeros((a.shape[1], b.shape[1]))
        for i in range(a.shape[1]):
            for j in range(b.shape[1]):
                if ca[i] and cb[j]:
                    r[i, j] = 1.0
                elif not (ca[i] or cb[j]):
                    r[i, j] = np.clip(a[:, i] @ b[:, j] / (sa[i] * sb[j]), -1, 1)
        ri, ci = linear_sum_assignment(r, maximize=True)
        keep = ~(ca[ri] & cb[ci])
        act.append(r[ri, ci][keep].mean() if keep.any() else 1.0)
        cka.append(np.linalg.norm(a.T @ b) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)))
    return np.array(act), np.array(cka)


def _features(seed: int, sizes=(30, 25, 30, 12, 30, 30)):
    rng = np.random.default_rng(seed)
    images = np.repeat(np.arange(len(sizes)), sizes)
    z = rng.normal(size=(len(images), 4))
    xa = np.maximum(z @ rng.normal(size=(4, 6)) + 0.5 * rng.normal(size=(len(images), 6)), 0)
    xb = np.maximum(z @ rng.normal(size=(4, 5)) + 0.5 * rng.normal(size=(len(images), 5)), 0)
    xa[:, 2] = 0.0  # constant everywhere
    xb[:, 4] = 0.0
    xb[images == 3, 1] = 0.7  # constant on one image: constant in resamples that draw only it... rarely
    return images, xa, xb


def test_counts_are_the_draws_of_a_loop():
    images = np.repeat([4, 1, 9, 2, 7], [13, 8, 3, 20, 9])
    for seed in (0, 5):
        units, counts = resample_counts(images, n_resamples=60, blocks=4, seed=seed)
        ref_units, ref_counts = _loop_counts(images, 60, 4, seed)
        np.testing.assert_array_equal(units, ref_units)
        np.testing.assert_array_equal(counts, ref_counts)


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_resamples_as_arrays_equal_a_loop_over_resamples(chunk):
    images, xa, xb = _features(1)
    units, counts = resample_counts(images, n_resamples=40, blocks=3)
    act, cka = BootRun(xa, units, counts, chunk).pair(BootRun(xb, units, counts, chunk))
    ref_act, ref_cka = _loop_pair(xa, xb, units, counts)
    np.testing.assert_allclose(act, ref_act, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cka, ref_cka, rtol=0, atol=1e-12)
    assert np.ptp(cka) > 0.01  # the resamples differ


def test_bootstrap_of_every_pair_equals_the_loop():
    """compare_layer's bootstrap values: every pair of runs on the same resamples."""
    images, xa, xb = _features(2)
    xc = np.abs(xa[:, ::-1] + 0.2 * xb[:, :1])
    c = compare_layer(["a", "b", "c"], [None] * 3, [xa, xb, xc], feature_images=images, resamples=30)
    units, counts = resample_counts(images, 30)
    feats = [xa, xb, xc]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        ref_act, ref_cka = _loop_pair(feats[i], feats[j], units, counts)
        for m, ref in (("activations", ref_act), ("cka", ref_cka)):
            np.testing.assert_allclose(c.boot[m][i, j], ref, rtol=0, atol=1e-12)
            np.testing.assert_array_equal(c.boot[m][j, i], c.boot[m][i, j])


def test_chunk_follows_the_budget():
    assert resamples_per_chunk(64, 64, budget=4 * 8 * 64 * 64 * 10) == 10
    assert resamples_per_chunk(4096, 4096, budget=1) == 1
