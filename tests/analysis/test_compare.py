"""Known-answer tests for reportgen.analysis.compare.

References are independent of the implementation: hand-computed values,
np.corrcoef, and CKA written with the centring matrix H (HSIC form).
"""

import warnings

import numpy as np
import pytest

from reportgen.analysis.compare import (
    Match,
    correlation_matrix,
    cosine_matrix,
    flatten_filters,
    linear_cka,
    match,
    matched_correlation,
    matched_similarity,
    pairwise,
)


def _cka_reference(x, y):
    """CKA via HSIC with the explicit centring matrix H = I - 11^T/n."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def _planted_copy(w, rng):
    """Rows of w permuted and about half of them negated; returns (copy, perm)."""
    perm = rng.permutation(w.shape[0])
    signs = np.where(rng.random(w.shape[0]) < 0.5, -1.0, 1.0)
    return signs.reshape(-1, *([1] * (w.ndim - 1))) * w[perm], perm


# ----------------------------------------------------------------- flatten / cosine

def test_flatten_filters_shapes_and_copy():
    w = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    flat = flatten_filters(w)
    assert flat.shape == (2, 12) and flat.dtype == np.float64
    np.testing.assert_array_equal(flat[1], np.arange(12, 24))
    flat[0, 0] = 99.0
    assert w[0, 0, 0, 0] == 0.0  # a copy, not a view
    assert flatten_filters(np.ones((4, 7))).shape == (4, 7)


def test_cosine_matrix_hand_computed():
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 2.0], [-3.0, -3.0], [2.0, 0.0]])
    r = 1 / np.sqrt(2)
    expected = np.array([[0.0, -r, 1.0], [r, -1.0, r]])
    np.testing.assert_allclose(cosine_matrix(a, b, absolute=False), expected, atol=1e-15)
    np.testing.assert_allclose(cosine_matrix(a, b), np.abs(expected), atol=1e-15)


def test_cosine_matrix_zero_rows_are_zero_not_nan():
    a = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    b = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sim = cosine_matrix(a, b)
    np.testing.assert_allclose(sim, [[0.0, 0.0], [1.0, 0.0]], atol=1e-15)


def test_cosine_matrix_nan_stays_in_its_row_and_column():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=(5, 6))
    a[1, 2] = np.nan
    b[3, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sim = cosine_matrix(a, b)
    nan = np.isnan(sim)
    expected = np.zeros((4, 5), bool)
    expected[1, :] = True
    expected[:, 3] = True
    np.testing.assert_array_equal(nan, expected)


def test_cosine_matrix_extreme_magnitudes():
    # Norms of these rows overflow / underflow if computed naively.
    a = np.array([[1e200, 1e200], [1e-200, 0.0]])
    sim = cosine_matrix(a, a, absolute=False)
    np.testing.assert_allclose(sim, [[1.0, 1 / np.sqrt(2)], [1 / np.sqrt(2), 1.0]], rtol=1e-12)


# ----------------------------------------------------------------- correlation

def test_correlation_matches_corrcoef_and_constant_channel_is_zero():
    rng = np.random.default_rng(1)
    xa = rng.normal(size=(200, 4))
    xb = 0.5 * xa[:, [2, 0, 1]] + rng.normal(size=(200, 3))
    xa[:, 3] = 7.25  # constant channel
    r = correlation_matrix(xa, xb)
    ref = np.corrcoef(xa[:, :3].T, xb.T)[:3, 3:]
    np.testing.assert_allclose(r[:3], ref, atol=1e-12)
    np.testing.assert_array_equal(r[3], 0.0)
    assert r.shape == (4, 3)


def test_two_constant_channels_correlate_one_and_self_similarity_is_one_with_dead_channels():
    rng = np.random.default_rng(4)
    x = np.maximum(rng.normal(size=(500, 32)), 0)
    x[:, :17] = 0.0  # 17 dead channels, as at a layer that never fires
    x[:, 20] = 3.5  # and one constant but not zero
    r = correlation_matrix(x, x)
    dead = np.zeros(32, bool)
    dead[:17] = dead[20] = True
    ref = np.corrcoef(x[:, ~dead].T)  # numpy's Pearson r on the live channels
    np.testing.assert_allclose(r[np.ix_(~dead, ~dead)], ref, atol=1e-12)
    assert (r[np.ix_(dead, dead)] == 1).all() and (r[np.ix_(dead, ~dead)] == 0).all()
    np.testing.assert_array_equal(r, r.T)
    perm = rng.permutation(32)
    assert matched_correlation(x, x[:, perm]).mean == pytest.approx(1.0, abs=1e-12)
    assert matched_correlation(x, x).mean == pytest.approx(1.0, abs=1e-12)  # was 15/32 before the rule


def test_shared_dead_channels_do_not_inflate_the_layer_score():
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(6)
    xa, xb = np.maximum(rng.normal(size=(2, 400, 20)), 0)  # unrelated live channels
    xa[:, :12] = 0.0  # both layers lost 12 channels
    xb[:, 4:16] = 0.0
    m = matched_correlation(xa, xb)
    live_a, live_b = np.flatnonzero(xa.std(0) > 0), np.flatnonzero(xb.std(0) > 0)
    r = np.corrcoef(xa[:, live_a].T, xb[:, live_b].T)[: len(live_a), len(live_a):]
    rows, cols = linear_sum_assignment(-r)
    # 12 dead-dead pairs are left out; the 8 live channels of each side pair up (no live one is left
    # with a dead partner), so the score is the mean of the best live-live matching
    assert m.mean == pytest.approx(r[rows, cols].mean(), abs=1e-12)
    assert m.mean < 0.2  # counting dead pairs as 1 would have given about 0.6


def test_all_zero_filters_count_as_identical_to_each_other_only():
    rng = np.random.default_rng(5)
    w = rng.normal(size=(6, 3, 3, 3))
    w[[1, 4]] = 0.0
    perm = rng.permutation(6)
    assert matched_similarity(w, w[perm]).mean == pytest.approx(1.0, abs=1e-12)
    live = rng.normal(size=(6, 3, 3, 3))
    # a zero filter against a live one shares nothing
    assert matched_similarity(w[[1]], live[[0]]).mean == 0.0


def test_correlation_large_offset_constant_is_exactly_zero():
    # The mean of many copies of 0.1 + 1e6 is not exactly that value in floating
    # point; the correlation must still be 0, not a round-off artefact.
    xa = np.full((1000, 1), 1e6 + 0.1)
    xb = np.random.default_rng(2).normal(size=(1000, 2))
    np.testing.assert_array_equal(correlation_matrix(xa, xb), 0.0)


# ----------------------------------------------------------------- matching

def test_match_recovers_planted_permutation_with_sign_flips():
    rng = np.random.default_rng(3)
    wa = rng.normal(size=(16, 3, 5, 5))
    wb, perm = _planted_copy(wa, rng)
    m = matched_similarity(wa, wb)
    # wb[j] = +-wa[perm[j]], so row i of wa belongs with column argwhere(perm == i).
    inverse = np.argsort(perm)
    np.testing.assert_array_equal(m.rows, np.arange(16))
    np.testing.assert_array_equal(m.cols, inverse)
    np.testing.assert_allclose(m.scores, 1.0, atol=1e-12)
    assert m.mean == pytest.approx(1.0, abs=1e-12)


def test_match_signed_cosine_would_miss_the_flips():
    # Control for the test above: with signed cosine a negated copy scores -1 on
    # the true pairs, so the matching pairs up unrelated filters instead.
    rng = np.random.default_rng(4)
    wa = rng.normal(size=(8, 27))
    wb = -wa
    signed = match(cosine_matrix(wa, wb, absolute=False))
    assert not np.array_equal(signed.cols, np.arange(8)) and signed.mean < 0.5
    unsigned = match(cosine_matrix(wa, wb))
    np.testing.assert_array_equal(unsigned.cols, np.arange(8))
    assert unsigned.mean == pytest.approx(1.0)


def test_match_n_not_equal_m():
    rng = np.random.default_rng(5)
    wb = rng.normal(size=(9, 12))
    picked = np.array([7, 2, 5, 0, 4])
    wa = wb[picked] + 0.01 * rng.normal(size=(5, 12))
    m = matched_similarity(wa, wb)
    assert len(m.rows) == len(m.cols) == len(m.scores) == 5
    np.testing.assert_array_equal(m.cols, picked)
    assert m.mean > 0.99
    # And the other way round: 9 rows, 5 columns.
    mt = matched_similarity(wb, wa)
    assert len(mt.rows) == 5
    np.testing.assert_array_equal(mt.rows, np.sort(picked))
    np.testing.assert_array_equal(mt.cols, np.argsort(picked))


def test_match_against_brute_force():
    from itertools import permutations

    sim = np.random.default_rng(6).random((5, 5))
    best = max(sum(sim[i, p[i]] for i in range(5)) for p in permutations(range(5)))
    assert match(sim).scores.sum() == pytest.approx(best)


def test_match_nan_entries_are_avoided_not_fatal():
    sim = np.array([[0.9, np.nan, 0.1], [np.nan, 0.8, 0.2], [0.3, 0.2, np.nan]])
    m = match(sim)
    # Reference: the best assignment among those using finite entries only.
    finite_best = max(
        (sim[0, a] + sim[1, b] + sim[2, c], (a, b, c))
        for a in range(3) for b in range(3) for c in range(3)
        if len({a, b, c}) == 3 and np.isfinite([sim[0, a], sim[1, b], sim[2, c]]).all()
    )
    np.testing.assert_array_equal(m.cols, finite_best[1])
    assert np.isfinite(m.scores).all()
    # A row with no finite entry must be matched somewhere and reported as NaN.
    sim2 = np.array([[np.nan, np.nan], [0.5, 0.7]])
    m2 = match(sim2)
    assert m2.cols[1] == 1 and np.isnan(m2.scores[0]) and np.isnan(m2.mean)
    m3 = match(np.full((2, 3), np.nan))
    assert len(m3.rows) == 2 and np.isnan(m3.mean)


def test_match_result_is_frozen():
    m = match(np.eye(3))
    assert isinstance(m, Match)
    with pytest.raises(ValueError):
        m.scores[0] = 5.0
    with pytest.raises(AttributeError):
        m.mean = 0.0


def test_zero_filters_do_not_produce_nan():
    rng = np.random.default_rng(7)
    wa = rng.normal(size=(6, 3, 3, 3))
    wa[2] = 0.0
    wb = wa.copy()
    wb[4] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = matched_similarity(wa, wb)
    assert np.isfinite(m.scores).all() and np.isfinite(m.mean)
    assert 0.0 <= m.mean < 1.0


# ----------------------------------------------------------------- whole model, pairwise

def test_model_compared_with_itself_scores_one():
    rng = np.random.default_rng(8)
    model = [rng.normal(size=(16, 3, 5, 5)), rng.normal(size=(32, 16, 3, 3)), rng.normal(size=(10, 288))]
    scores = [matched_similarity(w, w).mean for w in model]
    np.testing.assert_allclose(scores, 1.0, atol=1e-12)
    # A retrained-like copy (permuted, sign-flipped filters) is the same model.
    copy = [_planted_copy(w, rng)[0] for w in model]
    np.testing.assert_allclose([matched_similarity(a, b).mean for a, b in zip(model, copy)], 1.0, atol=1e-12)


def test_pairwise_symmetric_diagonal_one_and_calls_once_per_pair():
    rng = np.random.default_rng(9)
    locations = [rng.normal(size=(8, 3, 5, 5)) for _ in range(4)]
    index = {id(v): i for i, v in enumerate(locations)}
    calls = []

    def fn(a, b):
        calls.append(tuple(sorted((index[id(a)], index[id(b)]))))
        return matched_similarity(a, b).mean

    mat = pairwise(locations, fn)
    assert mat.shape == (4, 4)
    # Each unordered pair, diagonal included, exactly once.
    assert sorted(calls) == [(i, j) for i in range(4) for j in range(i, 4)]
    np.testing.assert_array_equal(mat, mat.T)
    np.testing.assert_allclose(np.diag(mat), 1.0, atol=1e-12)
    off = mat[~np.eye(4, dtype=bool)]
    assert (off < 0.9).all()  # independent random layers are clearly less similar
    assert pairwise([], fn).shape == (0, 0)


# ----------------------------------------------------------------- CKA

def test_cka_self_is_one():
    x = np.random.default_rng(10).normal(size=(100, 20))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_matches_hsic_reference():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(60, 7))
    y = x @ rng.normal(size=(7, 5)) + 0.5 * rng.normal(size=(60, 5))
    assert linear_cka(x, y) == pytest.approx(_cka_reference(x, y), abs=1e-12)


@pytest.mark.parametrize("s,p,q", [(50, 10, 6), (20, 64, 40)])
def test_cka_two_forms_agree(s, p, q):
    rng = np.random.default_rng(12)
    x = rng.normal(size=(s, p)) + 3.0
    y = np.tanh(x[:, :q] @ rng.normal(size=(q, q))) + rng.normal(size=(s, q))
    a = linear_cka(x, y, method="feature")
    b = linear_cka(x, y, method="gram")
    assert abs(a - b) < 1e-10
    assert linear_cka(x, y) == pytest.approx(a, abs=1e-10)


def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(80, 12))
    y = x[:, :6] ** 2 + rng.normal(size=(80, 6))
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    base = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(37.5 * x, y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x + 100.0, y) == pytest.approx(base, abs=1e-10)
    # Not invariant to an arbitrary (non-orthogonal) linear map: the test can fail.
    a = rng.normal(size=(12, 12)) @ np.diag(np.geomspace(1, 100, 12))
    assert abs(linear_cka(x @ a, y) - base) > 1e-3


def test_cka_independent_is_small():
    rng = np.random.default_rng(14)
    x, y = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    assert linear_cka(x, y) < 0.1


def test_cka_constant_layers_follow_the_constant_rule_and_nan_stays_nan():
    rng = np.random.default_rng(15)
    y = rng.normal(size=(30, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert linear_cka(np.full((30, 3), 2.5), y) == 0.0  # nothing varies on one side: nothing shared
        assert linear_cka(y, np.zeros((30, 2))) == 0.0
        assert linear_cka(np.full((30, 3), 2.5), np.zeros((30, 2))) == 1.0  # both constant: identical
        bad = y.copy()
        bad[3, 1] = np.nan
        assert np.isnan(linear_cka(bad, y))


# ----------------------------------------------------------------- purity

def test_inputs_are_not_mutated():
    rng = np.random.default_rng(16)
    a, b = rng.normal(size=(5, 3, 2, 2)), rng.normal(size=(6, 3, 2, 2))
    xa, xb = rng.normal(size=(40, 5)), rng.normal(size=(40, 6))
    originals = [v.copy() for v in (a, b, xa, xb)]
    for v in (a, b, xa, xb):
        v.setflags(write=False)  # any in-place write would raise
    matched_similarity(a, b)
    cosine_matrix(flatten_filters(a), flatten_filters(b))
    correlation_matrix(xa, xb)
    linear_cka(xa, xb, method="feature")
    linear_cka(xa, xb, method="gram")
    for v, o in zip((a, b, xa, xb), originals):
        np.testing.assert_array_equal(v, o)


def test_shape_errors():
    with pytest.raises(ValueError):
        cosine_matrix(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError):
        correlation_matrix(np.ones((5, 2)), np.ones((6, 2)))
    with pytest.raises(ValueError):
        linear_cka(np.ones((5, 2)), np.ones((6, 2)))
    with pytest.raises(ValueError):
        matched_similarity(np.ones((2, 3, 3, 3)), np.ones((2, 3, 5, 5)))
    with pytest.raises(ValueError):
        linear_cka(np.ones((5, 2)), np.ones((5, 2)), method="fast")
