"""Per-channel activation statistics, accumulated batch by batch.

What "active", "never active" and "saturated" mean depends on the activation the
statistics are taken after (docs/reference/methods.md#activations):

- rectifier-like kinds (relu, relu6, leaky_relu, prelu, elu, selu, silu, gelu, hardswish,
  mish), a raw output ('none') and any other module: a position is active when the output
  is > 0; a channel is saturated when it is active at ``saturated_fraction`` of positions
  or more (it barely selects);
- sigmoid and hardsigmoid: active when the output is > 0.5 (the input is > 0); tanh: active
  when > 0; for these a position is saturated when it sits near an asymptote, where the slope
  is below a tenth of its peak (sigmoid: y(1 - y) < 0.025; tanh: 1 - y^2 < 0.1; hardsigmoid:
  y at 0 or 1, where it is flat), and a channel is saturated when that holds at
  ``saturated_fraction`` of positions or more.

``never_active``: no position of any image is active (what was observed on these images);
the *label* (``never_active_label``) only when that holds on at least ``evidence.MIN_IMAGES``
images: images, not positions, are the independent samples (docs/reference/methods.md#health).
Likewise ``saturated``: the rule above holds over the positions of every image, and
``saturated_label`` when there are enough of them.
"""

from __future__ import annotations

import numpy as np
import torch

from reportgen.analysis.evidence import MIN_IMAGES

ACTIVE_ABOVE = {"sigmoid": 0.5, "hardsigmoid": 0.5}  # the output level above which a position is active (else 0)
SLOPE_SHARE = 0.1  # "near an asymptote": the slope is below this share of its peak


def saturated_positions(a: torch.Tensor, kind: str) -> torch.Tensor | None:
    """Boolean mask of positions near an asymptote for bounded kinds; None for the others."""
    if kind == "sigmoid":
        return a * (1 - a) < SLOPE_SHARE * 0.25
    if kind == "tanh":
        return 1 - a * a < SLOPE_SHARE
    if kind == "hardsigmoid":  # flat (slope 0) outside its linear ramp
        return (a <= 0) | (a >= 1)
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
        self.images = 0  # images seen so far
        self.active_images = np.zeros(channels, dtype=np.int64)  # images with an active position
        self.saturated_images = np.zeros(channels, dtype=np.int64)  # images the channel saturates on
        self.positions_per_image: int | None = None

    def update(self, acts: torch.Tensor, saturated_fraction: float = 0.99) -> None:
        """Add a batch (N, C, ...) of N images; ``saturated_fraction`` is the per-image rule."""
        per_image = acts.detach().to(torch.float64)
        per_image = per_image.reshape(per_image.shape[0], per_image.shape[1], -1)  # (N, C, P)
        a = per_image.transpose(0, 1).reshape(per_image.shape[1], -1)
        self.sum += a.sum(dim=1).cpu().numpy()
        self.max = np.maximum(self.max, a.max(dim=1).values.cpu().numpy())
        on = per_image > self.threshold  # (N, C, P)
        self.positive += on.sum(dim=(0, 2)).cpu().numpy()
        self.active_images += on.any(dim=2).sum(dim=0).cpu().numpy()
        sat = saturated_positions(per_image, self.kind)
        if sat is not None:
            self.near_asymptote += sat.sum(dim=(0, 2)).cpu().numpy()
        share = (sat if sat is not None else on).to(torch.float64).mean(dim=2)  # (N, C)
        self.saturated_images += (share >= saturated_fraction).sum(dim=0).cpu().numpy()
        self.count += a.shape[1]
        self.images += per_image.shape[0]
        self.positions_per_image = per_image.shape[2]

    def result(self, saturated_fraction: float) -> dict[str, np.ndarray]:
        """Per channel: ``mean``, ``max``, ``active_fraction`` (over every position of every
        image), ``active_images`` (images with an active position), ``saturated_images``
        (images on which the channel is saturated), ``never_active`` (active on no image),
        ``saturated`` (saturated on every image), and the labels ``never_active_label`` and
        ``saturated_label`` (those two, only with ``MIN_IMAGES`` images or more)."""
        n = max(self.count, 1)
        active = self.positive / n
        silent = self.max <= self.threshold
        enough = self.images >= MIN_IMAGES
        always = (self.saturated_images == self.images) & (self.images > 0)
        return {
            "mean": self.sum / n,
            "max": self.max.copy(),
            "active_fraction": active,
            "active_images": self.active_images.copy(),
            "saturated_images": self.saturated_images.copy(),
            "never_active": silent,
            "never_active_label": silent & enough,
            "saturated": always,
            "saturated_label": always & enough,
        }


def rank_channels(maps: np.ndarray) -> np.ndarray:
    """Channel order for display, most active first.

    maps: (C, H, W) one image's activations; ranked by mean activation, ties by index.
    """
    means = maps.reshape(maps.shape[0], -1).mean(axis=1)
    means = np.where(np.isfinite(means), means, -np.inf)
    return np.argsort(-means, kind="stable")
