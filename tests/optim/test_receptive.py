"""Receptive fields against hand computation.

Hand rule for a chain: size_out = size_in + (k_eff - 1) * jump_in with
k_eff = dilation * (k - 1) + 1, jump_out = jump_in * stride; the centre of
unit 0 moves by ((k_eff - 1) / 2 - padding) * jump_in.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from reportgen.optim.receptive import ReceptiveField, receptive_field

pytestmark = pytest.mark.usefixtures("one_thread")


ROOT = Path(__file__).resolve().parents[2]


def rf(model: nn.Module, layer: str, shape=(3, 16, 16)) -> ReceptiveField:
    torch.manual_seed(0)
    return receptive_field(model, layer, shape)


def test_conv_pool_conv_unpadded():
    # 3 -> pool 2: 3 + 1*1 = 4, jump 2 -> conv 3: 4 + 2*2 = 8, jump 2.
    # Centres: conv1 unit 0 at 1, pool unit 0 at 1.5, conv3 unit 0 over pool units 0..2 -> 1.5 + 2.
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3))
    assert rf(m, "3") == ReceptiveField(size=(8, 8), jump=(2, 2), start=(3.5, 3.5))
    assert rf(m, "2") == ReceptiveField(size=(4, 4), jump=(2, 2), start=(1.5, 1.5))
    assert rf(m, "0") == ReceptiveField(size=(3, 3), jump=(1, 1), start=(1.0, 1.0))


def test_conv_pool_conv_padded():
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1))
    assert rf(m, "3") == ReceptiveField(size=(8, 8), jump=(2, 2), start=(0.5, 0.5))


def test_stride():
    # 5 s2 -> 3 s2: 5 + 2*2 = 9, jump 4; centre of unit 0: 2 - 2 = 0 then + (1 - 1)*2 = 0.
    m = nn.Sequential(nn.Conv2d(3, 4, 5, stride=2, padding=2), nn.Conv2d(4, 4, 3, stride=2, padding=1))
    assert rf(m, "1") == ReceptiveField(size=(9, 9), jump=(4, 4), start=(0.0, 0.0))


def test_dilation():
    # k_eff = 5 each: 5, then 5 + 4 = 9; after a stride-2 conv: 3 + 4*2 = 11, jump 2.
    m = nn.Sequential(nn.Conv2d(3, 4, 3, dilation=2), nn.ReLU(), nn.Conv2d(4, 4, 3, dilation=2))
    assert rf(m, "0").size == (5, 5)
    assert rf(m, "2") == ReceptiveField(size=(9, 9), jump=(1, 1), start=(4.0, 4.0))
    m2 = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Conv2d(4, 4, 3, dilation=2, padding=2))
    assert rf(m2, "1") == ReceptiveField(size=(11, 11), jump=(2, 2), start=(1.0, 1.0))


def test_dilated_maxpool():
    # MaxPool 3 dilation 2: k_eff 5 on a 1x1 conv.
    m = nn.Sequential(nn.Conv2d(3, 2, 1), nn.MaxPool2d(3, stride=1, dilation=2))
    assert rf(m, "1").size == (5, 5)


def test_rectangular_kernel():
    m = nn.Sequential(nn.Conv2d(3, 2, (3, 7), stride=(1, 2)), nn.Conv2d(2, 2, 3))
    r = rf(m, "1")
    assert r.size == (5, 7 + 2 * 2) and r.jump == (1, 2)


class Residual(nn.Module):
    """conv 3 s2 -> ReLU -> conv 3 on the main path, 1x1 s2 on the skip, summed."""

    def __init__(self, downsample: bool):
        super().__init__()
        s = 2 if downsample else 1
        self.a = nn.Conv2d(3, 3, 3, stride=s, padding=1)
        self.relu = nn.ReLU()
        self.b = nn.Conv2d(3, 3, 3, padding=1)
        self.skip = nn.Conv2d(3, 3, 1, stride=s) if downsample else nn.Identity()
        self.out = nn.ReLU()

    def forward(self, x):
        return self.out(self.b(self.relu(self.a(x))) + self.skip(x))


def test_residual_block():
    # Main path dominates: 3 + 2 * s; the skip (1 px) lies inside it.
    down = Residual(downsample=True)
    assert rf(down, "out") == ReceptiveField(size=(7, 7), jump=(2, 2), start=(0.0, 0.0))
    assert rf(down, "skip").size == (1, 1)
    same = nn.Sequential(nn.Conv2d(3, 3, 1), Residual(downsample=False))
    assert rf(same, "1.out").size == (5, 5)


def test_negative_batchnorm_statistics_do_not_hide_pixels():
    # With a huge running mean every activation would be negative and ReLU would
    # zero the gradient; the measurement neutralises batch norm.
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3))
    m[1].running_mean.fill_(1e6)
    assert rf(m, "3").size == (5, 5)


def test_small_first_input_grows_and_model_untouched():
    m = nn.Sequential(*[nn.Conv2d(3, 3, 5) for _ in range(6)])  # RF 25
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.train()
    r = receptive_field(m, "5", (3, 4, 4))
    assert r.size == (25, 25) and r.jump == (1, 1)
    assert m.training and all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert all(not mod._forward_hooks for mod in m.modules())


def test_global_pooling_has_no_finite_field():
    m = nn.Sequential(nn.Conv2d(3, 3, 3), nn.AdaptiveAvgPool2d(4), nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError):
        receptive_field(m, "2", (3, 16, 16), max_side=128)


def test_unknown_layer():
    with pytest.raises(KeyError):
        receptive_field(nn.Sequential(nn.Conv2d(3, 3, 3)), "nope")


def test_scenenet():
    # Loaded under its own name: a bare "import model" could collide with other tests.
    spec = importlib.util.spec_from_file_location("_towncenter_model", ROOT / "examples/towncenter/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    m = module.SceneNet()
    # conv1 5 s2 -> pool 2: 5 + 2 = 7, jump 4 -> conv2, conv3: +8 each -> 23; conv4 dilated 2: + 4*4 -> 39
    assert rf(m, "conv3") == ReceptiveField(size=(23, 23), jump=(4, 4), start=(1.0, 1.0))
    assert rf(m, "conv4").size == (39, 39)
