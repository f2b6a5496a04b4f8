"""Training trajectories: known answers of the analysis (planted deaths, a frozen layer)."""

from __future__ import annotations

import numpy as np
import pytest

from reportgen.analysis.filters import LayerScale, filter_health
from reportgen.analysis.trajectory import (
    dead_over_steps,
    death_index,
    shrink_fit,
    stopped_moving,
    trajectory,
)

STEPS = [0, 10, 20, 30, 40, 50]


def _weights(seed: int = 0, n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 3, 3, 3))
    return [base + 0.1 * s * rng.normal(size=base.shape) for s in range(len(STEPS))]


def test_a_filter_decayed_to_zero_dies_at_the_planted_step():
    ws = _weights()
    planted = 3  # index of step 30: the filter is below the bound from here on
    for s in range(len(STEPS)):
        ws[s][2] *= 0.5 ** s if s < planted else 1e-4
    # a filter that dips below the bound at step 10 and recovers never counts as dead
    ws[1][4] *= 1e-4
    traj = trajectory(ws, STEPS)
    final = filter_health(ws[-1], LayerScale(median_norm=float(np.median(traj.norms[-1])), rms=1.0), 0.1, 0.1)
    bound = 0.1 * float(np.median(traj.norms[-1]))
    dead = dead_over_steps(traj.norms, bound)
    idx = death_index(dead)
    assert idx[2] == planted and STEPS[idx[2]] == 30
    assert idx[4] == -1 and dead[1, 4]  # dead at step 10 only: not a death
    assert list(np.flatnonzero(idx >= 0)) == [2]
    # the last step's dead filters are exactly filter_health's dead filters
    assert np.array_equal(dead[-1], final["dead"])


def test_a_filter_dead_from_the_start_has_index_zero():
    ws = _weights()
    for w in ws:
        w[0] = 0.0
    idx = death_index(dead_over_steps(trajectory(ws, STEPS).norms, 1e-3))
    assert idx[0] == 0 and (idx[1:] == -1).all()


def test_a_layer_frozen_after_step_k_stops_moving_at_k():
    ws = _weights()
    k = 2  # step 20: no change afterwards
    for s in range(k + 1, len(STEPS)):
        ws[s] = ws[k].copy()
    traj = trajectory(ws, STEPS)
    assert stopped_moving(traj.steps, traj.relative_change, 1e-6) == 20
    # still moving in the last interval: None; never moved: the first step
    assert stopped_moving(traj.steps, np.array([1.0, 0.0, 0.0, 0.0, 0.5]), 1e-6) is None
    assert stopped_moving(traj.steps, np.zeros(5), 1e-6) == 0


def test_distance_cosine_and_change_against_hand_formulas():
    ws = _weights(seed=3)
    traj = trajectory(ws, STEPS)
    flat = [w.ravel() for w in ws]
    for s, v in enumerate(flat):
        assert traj.distance_from_init[s] == pytest.approx(
            np.sqrt(np.sum((v - flat[0]) ** 2)) / np.sqrt(np.sum(flat[0] ** 2)))
        assert traj.cosine_to_final[s] == pytest.approx(
            np.sum(v * flat[-1]) / np.sqrt(np.sum(v ** 2) * np.sum(flat[-1] ** 2)))
        assert traj.norms[s] == pytest.approx(np.sqrt((ws[s].reshape(len(ws[s]), -1) ** 2).sum(1)))
    size = [np.sqrt(np.sum(v ** 2)) for v in flat]
    for i in range(len(flat) - 1):
        scale = max(size[i], size[i + 1], size[0])
        assert traj.relative_change[i] == pytest.approx(np.sqrt(np.sum((flat[i + 1] - flat[i]) ** 2)) / scale / 10)
    assert traj.distance_from_init[0] == 0 and traj.cosine_to_final[-1] == pytest.approx(1.0)
    assert traj.snapshots.shape == (6, 6, 3, 3, 3)


def test_a_collapsed_layer_is_measured_against_its_initial_size():
    # After collapsing, wobbles of 1e-6 around zero are huge against the layer's present size
    # but nothing against the size it started from: the layer counts as having stopped.
    ws = _weights()
    rng = np.random.default_rng(1)
    for s in range(2, len(STEPS)):
        ws[s] = 1e-6 * rng.normal(size=ws[0].shape)
    traj = trajectory(ws, STEPS)
    assert stopped_moving(traj.steps, traj.relative_change, 1e-4) == 20


def test_shrink_fit_tells_a_geometric_decay_from_a_straight_fall():
    t = np.arange(0, 100, 10)
    geo = shrink_fit(t, 2.0 * 0.97 ** t)
    assert geo["geometric_r2"] == pytest.approx(1.0) and geo["factor_per_step"] == pytest.approx(0.97)
    assert geo["linear_r2"] < 0.95
    lin = shrink_fit(t, 2.0 - 0.0199 * t)
    assert lin["linear_r2"] == pytest.approx(1.0) and lin["linear_slope"] == pytest.approx(-0.0199)
    assert lin["geometric_r2"] < lin["linear_r2"] - 0.05
    assert shrink_fit(t[:3], 0.9 ** t[:3]) is None  # too few points
    assert shrink_fit(t, np.r_[1.0, np.zeros(9)]) is None  # log of zero


def test_bad_input():
    with pytest.raises(ValueError, match="at least two steps"):
        trajectory(_weights()[:1], [0])
    with pytest.raises(ValueError, match="ascending"):
        trajectory(_weights()[:2], [5, 5])


def test_the_dying_filters_fall_is_measured_before_they_die():
    # Four of six filters decay by a planted factor per step, then hit a cliff at step 80; the
    # fit sees the decay only (peak to the last step before the median death) and names it.
    from reportgen.extensions.training import layer_summary

    steps = np.arange(0, 100, 10)
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 3, 3, 3))
    base /= np.linalg.norm(base.reshape(6, -1), axis=1)[:, None, None, None]
    ws = []
    for t in steps:
        w = base.copy()
        w[:4] *= 0.97 ** t if t < 80 else 1e-6
        ws.append(w)
    out = layer_summary("conv1", trajectory(ws, steps), dead_threshold=0.05)
    assert [d["filter"] for d in out["deaths"]] == [0, 1, 2, 3] and {d["step"] for d in out["deaths"]} == {80}
    shrink = out["shrink"]
    assert (shrink["from_step"], shrink["to_step"], shrink["filters"]) == (0, 70, 4)
    assert shrink["factor_per_step"] == pytest.approx(0.97) and shrink["geometric_r2"] == pytest.approx(1.0)
    from reportgen.extensions.training_text import shrink_text
    text = shrink_text(shrink)
    assert "by a factor of 0.9700 per step" in text and "lr × wd ≈ 0.03" in text and "is geometric" in text
