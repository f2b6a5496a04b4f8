"""A classroom network whose kernels are written by hand, not learned.

``edges``: four 3x3 kernels on a grey image, stride 1, zero padding 1, so the
output keeps the input's size: (n + 2*1 - 3) / 1 + 1 = n.
  0 vertical edge   [[1, 0, -1]] * 3    (responds to left-right changes)
  1 horizontal edge its transpose       (responds to top-bottom changes)
  2, 3 random       seeded normal kernels, a baseline with no design
``pool``: 2x2 max pooling, stride 2: n -> n / 2.
``strided``: 3x3, stride 2, no padding, on the four pooled maps:
  (m - 3) / 2 + 1 outputs per side. Channel 0 adds the vertical and horizontal
  responses (an "any edge" detector); channel 1 is random.
"""

import torch
from torch import nn

VERTICAL = torch.tensor([[1.0, 0.0, -1.0]] * 3)
HORIZONTAL = VERTICAL.T.contiguous()


class EdgeNet(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.edges = nn.Conv2d(1, 4, kernel_size=3, stride=1, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.strided = nn.Conv2d(4, 2, kernel_size=3, stride=2, padding=0)
        with torch.no_grad():
            self.edges.weight[0, 0] = VERTICAL
            self.edges.weight[1, 0] = HORIZONTAL
            self.edges.weight[2:, 0] = torch.randn(2, 3, 3, generator=gen) / 3
            self.edges.bias.zero_()
            self.strided.weight.zero_()
            centre = torch.zeros(3, 3)
            centre[1, 1] = 1.0
            self.strided.weight[0, 0] = centre
            self.strided.weight[0, 1] = centre
            self.strided.weight[1] = torch.randn(4, 3, 3, generator=gen) / 6
            self.strided.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.strided(self.pool(self.relu(self.edges(x))))
