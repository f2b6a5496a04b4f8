"""SceneNet: the small multi-task pedestrian network of the towncenter example.

One SceneNet is trained per camera location. All ten share this architecture,
so reportgen can compare the same layer (e.g. ``conv1``) across locations.

Module names and registration order are part of the contract with reportgen:
layers are addressed by their ``named_modules()`` names, and a conv is treated
as post-ReLU when the next registered sibling is an ``nn.ReLU``. That is why
every conv is followed directly by its own ``nn.ReLU`` module and ``forward``
calls those modules instead of ``F.relu``.
"""

from __future__ import annotations

import torch
from torch import nn


class SceneNet(nn.Module):
    """Shared trunk plus three 1x1 heads, all at output stride 4.

    Args:
        width: output channels of ``conv1`` (and of ``conv3``).
        keypoints: number of keypoint heatmaps produced by ``pose_head``.
        mid: channels of ``conv2`` and ``conv4`` (the narrow layers).
        conv1_stride: stride of ``conv1``; 2 keeps CPU training cheap.

    ``forward`` takes normalised images ``(N, 3, H, W)`` with H and W
    divisible by 4 and returns a dict of raw (pre-activation) maps of size
    ``(H/4, W/4)``:

    * ``det``: channel 0 is the pedestrian-centre heatmap logit, channels 1-2
      are box height / image height and box width / image width.
    * ``seg``: person-mask logit, 1 channel.
    * ``pose``: ``keypoints`` keypoint heatmaps (regressed, not logits).
    """

    def __init__(self, width: int = 64, keypoints: int = 5, mid: int = 32, conv1_stride: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 5, stride=conv1_stride, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, mid, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(mid, width, 3, padding=1)
        self.relu3 = nn.ReLU()
        # Dilated so the heads see a whole pedestrian (receptive field 39 px)
        # without another pooling stage, which would coarsen the heatmaps.
        self.conv4 = nn.Conv2d(width, mid, 3, padding=2, dilation=2)
        self.relu4 = nn.ReLU()
        self.det_head = nn.Conv2d(mid, 3, 1)
        self.seg_head = nn.Conv2d(mid, 1, 1)
        self.pose_head = nn.Conv2d(mid, keypoints, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.conv3(x))
        x = self.relu4(self.conv4(x))
        return {"det": self.det_head(x), "seg": self.seg_head(x), "pose": self.pose_head(x)}
