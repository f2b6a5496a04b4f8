"""Two 224-px ImageNet-shaped networks for bench/bench_resnet.py, written for reportgen's
benchmarks: a ResNet-18-shaped network (basic residual blocks, 64 to 512 filters) and a
PP-LCNet-shaped one (depthwise-separable blocks with hard-swish, 16 to 512 filters, a
squeeze-and-excitation step in the last two blocks). The benchmark copies this file into its
temporary folder and names it in the generated spec as ``arch: nets224.py:ResNet18``.

``INSPECTED`` lists the layers the benchmark inspects in each, by ``named_modules()`` name.
"""

from __future__ import annotations

import torch
from torch import nn

INSPECTED = {
    "ResNet18": ["conv1", "layer1.0.conv1", "layer1.1.conv2", "layer2.0.conv1", "layer2.1.conv2",
                 "layer3.0.conv1", "layer4.0.conv1", "layer4.1.conv2"],
    "LCNet": ["stem.conv", "blocks.0.pw", "blocks.1.dw", "blocks.2.pw", "blocks.4.pw", "blocks.5.pw",
              "blocks.8.dw", "blocks.11.pw", "blocks.12.pw"],
}


class Residual(nn.Module):
    """Two 3x3 convolutions with batch norms, added to the input (through a strided 1x1
    convolution and a batch norm where the shape changes), then a ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + skip)


class ResNet18(nn.Module):
    """A 7x7 stride-2 stem, max pooling, four stages of two residual blocks (64, 128, 256,
    512 filters; each stage after the first halves the map), global average pooling and a
    linear classifier: 11.7 M weights, 7x7 maps at the last stage for a 224-px input."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths, cin = (64, 128, 256, 512), 64
        for k, cout in enumerate(widths, 1):
            stride = 1 if k == 1 else 2
            setattr(self, f"layer{k}", nn.Sequential(Residual(cin, cout, stride), Residual(cout, cout)))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Stem(nn.Module):
    """A 3x3 stride-2 convolution, batch norm, hard-swish."""

    def __init__(self, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(3, cout, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.Hardswish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Squeeze(nn.Module):
    """Squeeze and excitation: channel weights from the pooled map (reduction 4, ReLU, hard sigmoid)."""

    def __init__(self, channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, channels // 4, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(channels // 4, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))


class Separable(nn.Module):
    """A depthwise k x k convolution (``dw``) with batch norm and hard-swish, an optional
    squeeze and excitation, and a pointwise 1x1 convolution (``pw``) with batch norm and hard-swish."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, squeeze: bool):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, kernel, stride=stride, padding=kernel // 2, groups=cin, bias=False)
        self.dw_bn = nn.BatchNorm2d(cin)
        self.dw_act = nn.Hardswish()
        self.se = Squeeze(cin) if squeeze else nn.Identity()
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.pw_bn = nn.BatchNorm2d(cout)
        self.pw_act = nn.Hardswish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.dw_act(self.dw_bn(self.dw(x))))
        return self.pw_act(self.pw_bn(self.pw(x)))


# (kernel, output channels, stride, squeeze and excitation) of each separable block
LCNET_BLOCKS = [(3, 32, 1, False), (3, 64, 2, False), (3, 64, 1, False), (3, 128, 2, False), (3, 128, 1, False),
                (3, 256, 2, False)] + [(5, 256, 1, False)] * 5 + [(5, 512, 2, True), (5, 512, 1, True)]


class LCNet(nn.Module):
    """A 3x3 stride-2 stem of 16 filters, thirteen separable blocks to 512 filters at 7x7
    (for 224 px), global average pooling, a 1x1 convolution to 1280 features with hard-swish
    and a linear classifier."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.stem = Stem(16)
        blocks, cin = [], 16
        for kernel, cout, stride, squeeze in LCNET_BLOCKS:
            blocks.append(Separable(cin, cout, kernel, stride, squeeze))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.last = nn.Conv2d(cin, 1280, 1)
        self.last_act = nn.Hardswish()
        self.fc = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last_act(self.last(self.pool(self.blocks(self.stem(x)))))
        return self.fc(torch.flatten(x, 1))
