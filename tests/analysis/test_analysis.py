"""Filter health and channel statistics against numpy references."""

from __future__ import annotations

import numpy as np
import torch

from reportgen.analysis.activations import ChannelStats
from reportgen.analysis.filters import filter_health, pooled_scale


def test_planted_dead_filter_is_flagged_and_healthy_is_not():
    rng = np.random.default_rng(0)
    locs = [rng.normal(size=(16, 3, 5, 5)) for _ in range(3)]
    locs[1][[2, 7]] *= 1e-3
    scale = pooled_scale(locs)
    h = filter_health(locs[1], scale, dead_norm_ratio=0.1, near_zero_ratio=0.1)
    assert list(np.flatnonzero(h["dead"])) == [2, 7]
    assert not filter_health(locs[0], scale, 0.1, 0.1)["dead"].any()
    assert np.allclose(h["l2_norm"], np.linalg.norm(locs[1].reshape(16, -1), axis=1))
    assert h["near_zero_fraction"][2] == 1.0


def test_pooled_scale_matches_numpy():
    rng = np.random.default_rng(1)
    ws = [rng.normal(size=(4, 6)), rng.normal(size=(5, 6)) * 3]
    s = pooled_scale(ws)
    all_rows = np.concatenate(ws)
    assert np.isclose(s.median_norm, np.median(np.linalg.norm(all_rows, axis=1)))
    assert np.isclose(s.rms, np.sqrt((all_rows**2).mean()))


def test_nonfinite_filter_flagged_not_dead():
    w = np.ones((3, 4))
    w[1, 2] = np.nan
    w[2] = 0
    h = filter_health(w, pooled_scale([w]), 0.1, 0.1)
    assert list(h["nonfinite"]) == [False, True, False]
    assert list(h["dead"]) == [False, False, True]
    assert pooled_scale([w]).median_norm == 1.0  # median of {2, 0}: the NaN row is excluded


def test_channel_stats_streaming_equals_numpy():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(7, 5, 3, 4))
    a[:, 3] = -1.0  # never active
    a[:, 4] = np.abs(a[:, 4]) + 0.1  # always active
    stats = ChannelStats(5)
    for chunk in np.array_split(a, 3):
        stats.update(torch.from_numpy(chunk))
    r = stats.result(saturated_fraction=0.99)
    per = a.transpose(1, 0, 2, 3).reshape(5, -1)
    np.testing.assert_allclose(r["mean"], per.mean(axis=1))
    np.testing.assert_allclose(r["max"], per.max(axis=1))
    np.testing.assert_allclose(r["active_fraction"], (per > 0).mean(axis=1))
    assert list(r["never_active"]) == [False, False, False, True, False]
    assert list(r["saturated"]) == [False, False, False, False, True]
    assert not r["never_active_label"].any() and not r["saturated_label"].any()  # 7 images: too few to say
    np.testing.assert_array_equal(r["active_images"], (a.reshape(7, 5, -1) > 0).any(axis=2).sum(axis=0))


def test_near_duplicates_skip_dead_and_a_grown_filter_is_not_flagged():
    """Training grows the filters that are used: a large norm earns no flag of any kind."""
    from reportgen.analysis.filters import near_duplicates

    rng = np.random.default_rng(3)
    w = rng.normal(size=(10, 3, 5, 5))
    w[6] = w[2] + 1e-3 * rng.normal(size=(3, 5, 5))  # a copy
    w[8] *= 1e-6  # dead: left out, never anyone's duplicate
    w[4] *= 20  # a filter that grew
    dead = np.zeros(10, dtype=bool)
    dead[8] = True
    dup, opp = near_duplicates(w, 0.95, skip=dead)
    assert list(np.flatnonzero(dup >= 0)) == [6] and dup[6] == 2 and not (opp >= 0).any()
    h = filter_health(w, pooled_scale([w]), 0.1, 0.1)
    assert set(h) == {"l2_norm", "max_abs", "near_zero_fraction", "nonfinite", "dead"}
    assert not h["dead"][4] and h["dead"][8]
