"""Per-channel activation statistics, accumulated batch by batch."""

from __future__ import annotations

import numpy as np
import torch


class ChannelStats:
    """Running per-channel statistics of activations (N, C, H, W) or (N, C).

    Streaming keeps memory flat however many images a spec lists.
    """

    def __init__(self, channels: int):
        self.sum = np.zeros(channels, dtype=np.float64)
        self.max = np.full(channels, -np.inf)
        self.positive = np.zeros(channels, dtype=np.int64)
        self.count = 0  # positions per channel seen so far

    def update(self, acts: torch.Tensor) -> None:
        a = acts.detach().to(torch.float64)
        a = a.reshape(a.shape[0], a.shape[1], -1).transpose(0, 1).reshape(a.shape[1], -1)
        self.sum += a.sum(dim=1).cpu().numpy()
        self.max = np.maximum(self.max, a.max(dim=1).values.cpu().numpy())
        self.positive += (a > 0).sum(dim=1).cpu().numpy()
        self.count += a.shape[1]

    def result(self, saturated_fraction: float) -> dict[str, np.ndarray]:
        """``mean``, ``max``, ``active_fraction``, ``never_active``, ``saturated`` per channel."""
        n = max(self.count, 1)
        active = self.positive / n
        return {
            "mean": self.sum / n,
            "max": self.max.copy(),
            "active_fraction": active,
            "never_active": self.max <= 0,
            "saturated": active >= saturated_fraction,
        }


def rank_channels(maps: np.ndarray) -> np.ndarray:
    """Channel order for display, most active first.

    maps: (C, H, W) one image's activations; ranked by mean activation, ties by index.
    """
    means = maps.reshape(maps.shape[0], -1).mean(axis=1)
    means = np.where(np.isfinite(means), means, -np.inf)
    return np.argsort(-means, kind="stable")
