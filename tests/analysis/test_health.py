"""Is a layer trained? The init-law test, signed near-duplicates and on/off pairs, the
norm against the initial norm: known answers against torch, numpy and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from reportgen.analysis.filters import near_duplicates, norm_over_init
from reportgen.analysis.init_check import FAMILIES, fans, init_likeness
from tests.conftest import ROOT

CKPT = ROOT / "examples/towncenter/checkpoints"


def _weights(module: nn.Module) -> np.ndarray:
    return module.weight.detach().numpy()


FRESH = [
    ("conv 3->32 3x3", lambda: nn.Conv2d(3, 32, 3)),
    ("conv 16->32 5x5", lambda: nn.Conv2d(16, 32, 5)),
    ("conv 64->128 3x3", lambda: nn.Conv2d(64, 128, 3)),
    ("grouped conv", lambda: nn.Conv2d(32, 32, 3, groups=4)),
    ("conv1d", lambda: nn.Conv1d(8, 16, 7)),
    ("linear 40->20", lambda: nn.Linear(40, 20)),
    ("linear 512->256", lambda: nn.Linear(512, 256)),
]


@pytest.mark.parametrize("name,make", FRESH, ids=[f[0] for f in FRESH])
def test_freshly_initialised_layers_look_like_their_initialisation(name, make):
    torch.manual_seed(0)
    m = make()
    c = init_likeness(_weights(m))
    assert c["looks_like_init"] is True, c["verdict"]
    assert "pytorch-default" in c["fitting"]
    # fans as torch.nn.init computes them
    assert (c["fan_in"], c["fan_out"]) == nn.init._calculate_fan_in_and_fan_out(m.weight)
    if m.weight.numel() >= 5000:  # large enough to tell the laws apart
        assert c["family"] == "pytorch-default"


@pytest.mark.parametrize("init,family", [
    (lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"), "kaiming-normal"),
    (lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"), "kaiming-uniform"),
    (nn.init.xavier_uniform_, "xavier-uniform"),
    (nn.init.xavier_normal_, "xavier-normal"),
])
@pytest.mark.parametrize("make", [lambda: nn.Conv2d(64, 128, 3), lambda: nn.Linear(600, 300)])
def test_other_init_families_are_recognised(init, family, make):
    torch.manual_seed(1)
    m = make()
    with torch.no_grad():
        init(m.weight)
    c = init_likeness(_weights(m))
    assert c["looks_like_init"] is True and c["family"] == family, c["verdict"]


def test_numbers_match_scipy_numpy_and_a_hand_ks():
    torch.manual_seed(2)
    w = _weights(nn.Conv2d(6, 10, 3)).astype(np.float64)
    c = init_likeness(w)
    x = np.sort(w.ravel())
    n = x.size
    b = 1 / math.sqrt(6 * 9)
    cdf = np.clip((x + b) / (2 * b), 0, 1)  # U(-b, b) by hand
    ks = max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max())
    assert c["families"]["pytorch-default"]["ks"] == pytest.approx(ks, abs=1e-12)
    z = x - x.mean()
    assert c["excess_kurtosis"] == pytest.approx((z**4).mean() / (z**2).mean() ** 2 - 3, rel=1e-9)
    assert c["max_abs_over_bound"] == pytest.approx(np.abs(x).max() / b)
    assert c["ks_limit"] == pytest.approx(max(stats.kstwo.ppf(0.999, n), 0.02))
    s = math.sqrt(2 / (54 + 90))  # xavier-normal sd from fan_in 6*9 and fan_out 10*9
    assert c["families"]["xavier-normal"]["ks"] == pytest.approx(stats.kstest(x, stats.norm(0, s).cdf).statistic)
    assert fans((10, 6, 3, 3)) == (54, 90) and set(FAMILIES) >= {"pytorch-default", "kaiming-normal"}


@pytest.mark.slow
def test_a_trained_network_is_not_flagged(one_thread):
    """A small CNN trained for 150 Adam steps on a learnable task leaves every init law."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 5, padding=2), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveMaxPool2d(2), nn.Flatten(), nn.Linear(128, 4))
    layers = (0, 2, 6)
    assert [init_likeness(_weights(net[i]))["looks_like_init"] for i in layers] == [True, True, True]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    eye = torch.eye(4)
    for _ in range(150):
        # class k < 3 brightens colour k top-left and darkens colour k-1 bottom-right; class 3 is plain noise
        y = torch.randint(0, 4, (32,), generator=g)
        x = torch.randn(32, 3, 8, 8, generator=g)
        x[:, :, :4, :4] += 2 * eye[y, :3, None, None]
        x[:, :, 4:, 4:] -= 2 * eye[y, 1:, None, None]
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1  # it did learn
    for i in layers:
        c = init_likeness(_weights(net[i]))
        assert c["looks_like_init"] is False, (i, c["verdict"])


def _example(loc: str) -> dict:
    return torch.load(CKPT / f"{loc}.pt", weights_only=True)["state_dict"]


def test_example_under_trained_location_looks_like_init_at_conv1_and_healthy_ones_do_not():
    c = init_likeness(_example("loc02")["conv1.weight"].numpy())
    assert c["looks_like_init"] is True and c["family"] == "pytorch-default"
    assert c["excess_kurtosis"] == pytest.approx(-1.15, abs=0.01)
    assert c["max_abs_over_bound"] == pytest.approx(1.2, abs=0.01)
    for loc in ("loc01", "loc03", "loc05", "loc07", "loc09", "loc10"):
        sd = _example(loc)
        for layer in ("conv1", "conv2", "conv3", "conv4"):
            c = init_likeness(sd[f"{layer}.weight"].numpy())
            assert c["looks_like_init"] is False, (loc, layer, c["verdict"])


def test_too_few_or_nonfinite_weights_are_not_judged():
    assert init_likeness(_weights(nn.Conv2d(3, 4, 3)))["looks_like_init"] is None  # 108 weights: too few to tell
    w = _weights(nn.Linear(50, 20)).copy()
    w[0, 0] = np.nan
    assert init_likeness(w)["looks_like_init"] is None
    assert init_likeness(np.zeros((64, 3, 5, 5)))["looks_like_init"] is False  # all-zero: no init law


def test_sign_flipped_pair_is_an_on_off_pair_not_a_duplicate():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(10, 3, 5, 5))
    w[6] = -w[2] + 1e-3 * rng.normal(size=(3, 5, 5))  # cos ≈ -1: an on/off pair
    w[7] = w[1] + 1e-3 * rng.normal(size=(3, 5, 5))  # cos ≈ +1: a duplicate
    w[8] *= 1e-6  # dead: left out, never anyone's partner
    w[9] = -w[8] * 1e6
    dead = np.zeros(10, dtype=bool)
    dead[8] = True
    dup, opp = near_duplicates(w, 0.95, skip=dead)
    rows = w.reshape(10, -1)
    cos = rows @ rows.T / np.outer(np.linalg.norm(rows, axis=1), np.linalg.norm(rows, axis=1))
    assert cos[6, 2] < -0.95 and cos[7, 1] > 0.95  # the planted relations, by numpy
    assert list(np.flatnonzero(dup >= 0)) == [7] and dup[7] == 1
    assert list(np.flatnonzero(opp >= 0)) == [6] and opp[6] == 2


def test_norm_over_init_is_one_at_default_init_and_grows_with_training():
    torch.manual_seed(4)
    w = _weights(nn.Conv2d(64, 256, 3))
    r = norm_over_init(w)
    np.testing.assert_allclose(r, np.linalg.norm(w.reshape(256, -1), axis=1) * math.sqrt(3), rtol=1e-6)
    assert abs(np.median(r) - 1) < 0.02  # E|w|² = 1/3 under U(-1/√D, 1/√D), by hand
    grown = w.copy()
    grown[:10] *= 3
    assert (norm_over_init(grown)[:10] > 2.5).all()


def test_grouped_filters_are_compared_within_their_group_only():
    from reportgen.analysis.filters import near_duplicates

    rng = np.random.default_rng(3)
    k = rng.standard_normal((3, 3))
    # Depthwise: four filters of one input channel each, all the same 3x3 pattern.
    depthwise = np.stack([k, 2 * k, -k, k])[:, None]
    dup, opp = near_duplicates(depthwise, 0.95, groups=4)
    assert (dup == -1).all() and (opp == -1).all()
    # The same weights as an ordinary layer are copies of one detector.
    dup, opp = near_duplicates(depthwise, 0.95)
    assert list(dup) == [-1, 0, -1, 0] and list(opp) == [-1, -1, 0, -1]
    # Two groups of two filters: the pair inside the second group is found, across groups not.
    dup, _ = near_duplicates(np.stack([k, rng.standard_normal((3, 3)), k, k])[:, None], 0.95, groups=2)
    assert list(dup) == [-1, -1, -1, 2]
