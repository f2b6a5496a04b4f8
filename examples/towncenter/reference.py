"""ReferenceNet: the stand-in "well-trained" first layer of the towncenter example.

A single ``Conv2d(3, 64, 5, padding=2)`` followed by a ReLU, the same shape as
SceneNet's ``conv1``. Its weights (``reference/reference.pt``) are not trained
by gradient descent: they are ICA filters of natural-image patches, made by
``make_reference.py`` (see ``REFERENCE.md``). With real data, point the spec's
``reference:`` at a real pretrained network and its architecture file instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ReferenceNet(nn.Module):
    """One 5x5 colour conv layer with 64 filters, post-ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 5, padding=2, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv1(x))
