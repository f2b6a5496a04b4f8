"""Mantel test: known answers (scipy for r, a brute-force count for p, planted relations)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import pdist, squareform

from reportgen.analysis.mantel import (
    complete_subset,
    holm,
    mantel,
    smallest_p,
    triangle,
)


def _points(n: int, seed: int, dim: int = 2) -> np.ndarray:
    return squareform(pdist(np.random.default_rng(seed).normal(size=(n, dim))))


def test_r_equals_scipy_on_the_triangles():
    a, b = _points(8, 1), _points(8, 2)
    iu = np.triu_indices(8, 1)
    assert mantel(a, b, permutations=99).r == pytest.approx(stats.pearsonr(a[iu], b[iu])[0], abs=1e-12)
    assert mantel(a, b, "spearman", permutations=99).r == pytest.approx(stats.spearmanr(a[iu], b[iu])[0], abs=1e-12)


def test_exact_p_equals_a_brute_force_count():
    a, b = _points(5, 3), _points(5, 4) + _points(5, 3)
    tri_b = triangle(b)
    r_obs = np.corrcoef(triangle(a), tri_b)[0, 1]
    hits = sum(np.corrcoef(triangle(a[np.ix_(p, p)]), tri_b)[0, 1] >= r_obs - 1e-12
               for p in itertools.permutations(range(5)))
    res = mantel(a, b, permutations=999)
    assert res.exact and res.permutations == 120
    assert res.p == pytest.approx(hits / 120)


def test_smallest_p_with_few_locations():
    assert smallest_p(4) == pytest.approx(1 / 24)
    assert smallest_p(10) == pytest.approx(1 / 1000)
    a = _points(4, 5)
    # a matrix against itself: only the identity reaches r = 1 for generic distances
    res = mantel(a, a)
    assert res.r == pytest.approx(1.0) and res.p == pytest.approx(1 / 24) and res.smallest_p == pytest.approx(1 / 24)


def test_planted_relation_gives_high_r_and_the_smallest_p():
    a = _points(10, 7)
    noise = np.random.default_rng(8).normal(scale=0.05, size=(10, 10))
    b = np.sqrt(a) + (noise + noise.T) / 2  # a noisy monotone transform
    np.fill_diagonal(b, 0)
    for method in ("pearson", "spearman"):
        res = mantel(a, b, method)
        assert res.r > 0.8
        assert res.p == pytest.approx(1 / 1000)  # no relabelling of 999 reaches it
        assert not res.exact


def test_independent_matrices_give_roughly_uniform_p():
    ps = [mantel(_points(8, 100 + s), _points(8, 200 + s), permutations=199, seed=s).p for s in range(40)]
    assert 0.35 < np.mean(ps) < 0.65
    assert sum(p <= 0.05 for p in ps) <= 6  # about 2 expected
    assert stats.kstest(ps, "uniform").pvalue > 0.01


def test_seeded_and_invariant_to_relabelling_both():
    a, b = _points(9, 11), _points(9, 12)
    r1, r2 = mantel(a, b, seed=3), mantel(a, b, seed=3)
    assert r1 == r2
    p = np.random.default_rng(0).permutation(9)
    assert mantel(a[np.ix_(p, p)], b[np.ix_(p, p)]).r == pytest.approx(r1.r, abs=1e-12)


def test_constant_matrix_has_no_correlation():
    a = np.ones((5, 5)) - np.eye(5)
    res = mantel(a, _points(5, 1))
    assert math.isnan(res.r) and res.p is None


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        mantel(np.full((4, 4), np.nan), _points(4, 1))
    with pytest.raises(ValueError, match="at least 3"):
        mantel(np.zeros((2, 2)), np.zeros((2, 2)))


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm([0.01, 0.04, 0.03, 0.005, None]) == pytest.approx([0.03, 0.06, 0.06, 0.02, None])


def test_complete_subset_leaves_out_the_location_without_numbers():
    a = _points(5, 1)
    a[2, :] = a[:, 2] = np.nan
    assert complete_subset([a, _points(5, 2)]) == [0, 1, 3, 4]


def test_spearman_with_ties_equals_scipy():
    a = np.round(_points(7, 21), 1)  # rounding makes ties
    b = np.round(_points(7, 22), 1)
    iu = np.triu_indices(7, 1)
    assert mantel(a, b, "spearman", permutations=99).r == pytest.approx(stats.spearmanr(a[iu], b[iu])[0], abs=1e-12)


def test_leave_one_out_equals_scipy_without_that_location():
    from reportgen.analysis.mantel import leave_one_out

    a, b = _points(6, 31), _points(6, 32)
    loo = leave_one_out(a, b)
    keep = [0, 1, 2, 4, 5]
    iu = np.triu_indices(5, 1)
    assert loo[3] == pytest.approx(stats.pearsonr(a[np.ix_(keep, keep)][iu], b[np.ix_(keep, keep)][iu])[0], abs=1e-12)
    # one location far from all others in both matrices carries r: without it r drops
    a2, b2 = a.copy(), b.copy()
    a2[0, 1:] = a2[1:, 0] = 50
    b2[0, 1:] = b2[1:, 0] = 50
    assert mantel(a2, b2, permutations=99).r > 0.9
    assert leave_one_out(a2, b2)[0] == pytest.approx(loo[0]) and loo[0] < 0.9  # the same matrices without it


def test_the_result_does_not_depend_on_how_relabellings_are_chunked(monkeypatch):
    """Relabellings go a memory-sized chunk at a time (40 locations: 780 distances each); the
    same r and p whether one relabelling or all of them go at once, the null's quantile to
    rounding."""
    from reportgen.analysis import mantel as m

    rng = np.random.default_rng(3)
    pts = rng.standard_normal((40, 2))
    a = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    b = a + 0.5 * np.abs(rng.standard_normal((40, 40)))
    b = (b + b.T) / 2
    np.fill_diagonal(b, 0)
    whole = m.mantel(a, b, permutations=199)
    monkeypatch.setattr(m, "CHUNK_BYTES", 8 * 780)  # one relabelling per chunk
    single = m.mantel(a, b, permutations=199)
    monkeypatch.setattr(m, "CHUNK_BYTES", 8 * 780 * 64)  # 64 per chunk, the last one short
    some = m.mantel(a, b, permutations=199)
    for other in (single, some):
        assert (other.r, other.p, other.permutations) == (whole.r, whole.p, whole.permutations)
        assert other.null_r_95 == pytest.approx(whole.null_r_95, rel=1e-12)
    assert 0 < whole.p < 0.05
