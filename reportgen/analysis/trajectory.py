"""Training trajectories: how one layer's weights evolved over the checkpoints saved in training.

Pure numpy, no I/O. Input: the layer's weights at S ascending training steps, the last being
the final weights every other analysis uses. Definitions (docs/reference/methods.md#training):

- filter norms: each output filter's L2 norm at each step, (S, N);
- distance from initialisation: ||W_s - W_0|| / ||W_0||, W_0 the first listed step;
- similarity to the final weights: cosine of the flattened W_s and W_final;
- relative change per step between consecutive checkpoints i and i+1:
  ||W_(i+1) - W_i|| / (scale_i * (t_(i+1) - t_i)), scale_i the largest of ||W_i||, ||W_(i+1)||
  and ||W_0||: a layer that grew is measured against its present size, one that collapsed
  against the size it started from (its last wobbles around zero are not "movement");
- a layer *stopped moving* at the first checkpoint step after which every relative change per
  step stays below a threshold (None: still moving in the last interval);
- a filter is dead at a step under the rule of filters.filter_health with a fixed threshold
  (the pooled scale of the final step); it *died* at the first checkpoint step after which it
  stays dead to the end (None: alive at the end).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reportgen.analysis.filters import as_filters

SNAPSHOT_MAX = 8192  # layers with at most this many weights keep every step's weights (filter pictures)


@dataclass
class LayerTrajectory:
    """One layer over training. S steps, N filters."""

    steps: np.ndarray  # (S,) int64, ascending
    norms: np.ndarray  # (S, N) float64 per-filter L2 norms
    distance_from_init: np.ndarray  # (S,) float64, NaN when ||W_0|| = 0
    cosine_to_final: np.ndarray  # (S,) float64, NaN when a norm is 0
    relative_change: np.ndarray  # (S-1,) float64 per training step
    snapshots: np.ndarray | None = None  # (S, N, ...) float32 for small layers, else None


def trajectory(weights: list[np.ndarray], steps: list[int] | np.ndarray) -> LayerTrajectory:
    """The trajectory of one layer. weights: S arrays (N, ...) of one shape; steps: (S,) ascending."""
    steps = np.asarray(steps, dtype=np.int64)
    if len(weights) != len(steps) or len(steps) < 2:
        raise ValueError("a trajectory needs one weight array per step and at least two steps")
    if np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be ascending")
    rows = np.stack([as_filters(w) for w in weights])  # (S, N, D)
    flat = rows.reshape(len(steps), -1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        norms = np.linalg.norm(rows, axis=2)
        sizes = np.linalg.norm(flat, axis=1)  # (S,)
        distance = np.linalg.norm(flat - flat[0], axis=1) / sizes[0] if sizes[0] > 0 else np.full(len(steps), np.nan)
        final = flat[-1]
        cosine = flat @ final / (sizes * sizes[-1])
        cosine = np.where((sizes > 0) & (sizes[-1] > 0), cosine, np.nan)
        moved = np.linalg.norm(np.diff(flat, axis=0), axis=1)
        scale = np.maximum(np.maximum(sizes[:-1], sizes[1:]), sizes[0])
        change = np.where(scale > 0, moved / np.where(scale > 0, scale, 1.0), np.where(moved > 0, np.inf, 0.0))
        change = change / np.diff(steps)
    snaps = np.stack([np.asarray(w, dtype=np.float32) for w in weights]) if weights[0].size <= SNAPSHOT_MAX else None
    return LayerTrajectory(steps=steps, norms=norms, distance_from_init=distance, cosine_to_final=cosine,
                           relative_change=change, snapshots=snaps)


def stopped_moving(steps: np.ndarray, change: np.ndarray, threshold: float) -> int | None:
    """The first checkpoint step after which every relative change per step is below ``threshold``.

    steps: (S,); change: (S-1,) as in LayerTrajectory. The first step itself when the layer
    never moved; None when it still moved in the last interval (or a change is NaN there).
    """
    still = np.asarray(change) < threshold  # NaN compares False: not known to be still
    k = len(still)
    while k > 0 and still[k - 1]:
        k -= 1
    return int(steps[k]) if k < len(still) else None


def dead_over_steps(norms: np.ndarray, threshold: float) -> np.ndarray:
    """(S, N) norms -> (S, N) bool: below ``threshold`` (the dead rule's absolute bound).
    Non-finite norms are never dead, as in filters.filter_health."""
    norms = np.asarray(norms, dtype=np.float64)
    return np.isfinite(norms) & (norms < threshold)


def death_index(dead: np.ndarray) -> np.ndarray:
    """(S, N) bool -> (N,) int: the first step index after which each filter stays dead; -1 if
    it is alive at the last step (0 when it was dead all along)."""
    dead = np.asarray(dead, dtype=bool)
    s = dead.shape[0]
    # Length of the all-dead run that ends at the last step, per filter.
    alive_rev = ~dead[::-1]
    tail = np.where(alive_rev.any(axis=0), alive_rev.argmax(axis=0), s)
    return np.where(tail > 0, s - tail, -1)


def shrink_fit(steps: np.ndarray, norms: np.ndarray) -> dict | None:
    """How a norm series fell towards zero: a straight line (a constant pull per step) against a
    geometric decay (a constant factor per step, what weight decay alone does).

    steps: (K,) ascending; norms: (K,) positive, from where the fall starts to where it ends.
    Returns the R^2 of a line fitted to the norms and of a line fitted to their logarithm, the
    per-step factor of the geometric fit and the slope of the linear one, or None with fewer
    than 4 points or a non-positive norm (the log is undefined).
    """
    t = np.asarray(steps, dtype=np.float64)
    y = np.asarray(norms, dtype=np.float64)
    if len(t) < 4 or not np.all(np.isfinite(y)) or np.any(y <= 0):
        return None

    def fit(values: np.ndarray) -> tuple[float, float]:
        slope, intercept = np.polyfit(t, values, 1)
        resid = values - (slope * t + intercept)
        total = float(((values - values.mean()) ** 2).sum())
        return float(slope), 1.0 - float((resid**2).sum()) / total if total > 0 else 1.0

    lin_slope, lin_r2 = fit(y)
    log_slope, log_r2 = fit(np.log(y))
    return {"linear_r2": lin_r2, "linear_slope": lin_slope, "geometric_r2": log_r2,
            "factor_per_step": float(np.exp(log_slope))}
