"""Per-channel activation statistics, accumulated batch by batch.

What "active", "never active" and "saturated" mean depends on the activation the
statistics are taken after (docs/reference/methods.md#activations):

- rectifier-like kinds (relu, relu6, leaky_relu, prelu, elu, selu, silu, gelu, hardswish,
  mish), a raw output ('none') and any other module: a position is active when the output
  is > 0; a channel is saturated when it is active at ``saturated_fraction`` of positions
  or more (it barely selects);
- sigmoid: active when the output is > 0.5 (the input is > 0); tanh: active when > 0;
  for both a position is saturated when it sits near an asymptote, where the slope is
  below a tenth of its peak (sigmoid: y(1 - y) < 0.025; tanh: 1 - y^2 < 0.1), and a
  channel is saturated when that holds at ``saturated_fraction`` of positions or more.

A channel is never active when no position of any image is active.
"""

from __future__ import annotations

import numpy as np
import torch

ACTIVE_ABOVE = {"sigmoid": 0.5}  # the output level above which a position is active (else 0)
SLOPE_SHARE = 0.1  # "near an asymptote": the slope is below this share of its peak


def saturated_positions(a: torch.Tensor, kind: str) -> torch.Tensor | None:
    """Boolean mask of positions near an asymptote for bounded kinds; None for the others."""
    if kind == "sigmoid":
        return a * (1 - a) < SLOPE_SHARE * 0.25
    if kind == "tanh":
        return 1 - a * a < SLOPE_SHARE
    return None


class ChannelStats:
    """Running per-channel statistics of activations (N, C, H, W) or (N, C).

    ``kind``: the activation the values come after (an ACTIVATION_KINDS key, 'none' or
    'module'). Streaming keeps memory flat however many images a spec lists.
    """

    def __init__(self, channels: int, kind: str = "none"):
        self.kind = kind
        self.threshold = ACTIVE_ABOVE.get(kind, 0.0)
        self.sum = np.zeros(channels, dtype=np.float64)
        self.max = np.full(channels, -np.inf)
        self.positive = np.zeros(channels, dtype=np.int64)
        self.near_asymptote = np.zeros(channels, dtype=np.int64)
        self.count = 0  # positions per channel seen so far

    def update(self, acts: torch.Tensor) -> None:
        a = acts.detach().to(torch.float64)
        a = a.reshape(a.shape[0], a.shape[1], -1).transpose(0, 1).reshape(a.shape[1], -1)
        self.sum += a.sum(dim=1).cpu().numpy()
        self.max = np.maximum(self.max, a.max(dim=1).values.cpu().numpy())
        self.positive += (a > self.threshold).sum(dim=1).cpu().numpy()
        sat = saturated_positions(a, self.kind)
        if sat is not None:
            self.near_asymptote += sat.sum(dim=1).cpu().numpy()
        self.count += a.shape[1]

    def result(self, saturated_fraction: float) -> dict[str, np.ndarray]:
        """``mean``, ``max``, ``active_fraction``, ``never_active``, ``saturated`` per channel."""
        n = max(self.count, 1)
        active = self.positive / n
        bounded = self.kind in ("sigmoid", "tanh")
        return {
            "mean": self.sum / n,
            "max": self.max.copy(),
            "active_fraction": active,
            "never_active": self.max <= self.threshold,
            "saturated": (self.near_asymptote / n if bounded else active) >= saturated_fraction,
        }


def rank_channels(maps: np.ndarray) -> np.ndarray:
    """Channel order for display, most active first.

    maps: (C, H, W) one image's activations; ranked by mean activation, ties by index.
    """
    means = maps.reshape(maps.shape[0], -1).mean(axis=1)
    means = np.where(np.isfinite(means), means, -np.inf)
    return np.argsort(-means, kind="stable")
