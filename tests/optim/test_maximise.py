"""Activation maximisation: known answers on tiny hand-set models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reportgen.optim.maximise import (
    COLOR_MATRIX,
    default_size,
    deprocess_plain,
    fourier_ascent,
    gram_similarity,
    plain_ascent,
    robustness_transforms,
    spectrum_to_image,
)
from reportgen.optim.receptive import ReceptiveField
from reportgen.optim.truncate import LayerNotReached, truncated_forward

pytestmark = pytest.mark.usefixtures("one_thread")


MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)


def linear_conv(k: int = 3, out: int = 2, seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(3, out, k, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
    return nn.Sequential(conv)


def small_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
    )


def test_plain_step_on_linear_conv_is_uniform_colour_shift():
    model = linear_conv(k=3)
    w = model[0].weight.detach()
    H = W = 12
    kw = dict(size=(H, W), objective="mean", mean=MEAN, std=STD, seed=3)
    start = plain_ascent(model, "0", [0, 1], steps=0, **kw)
    one = plain_ascent(model, "0", [0, 1], steps=1, step=0.7, **kw)
    delta = one.raw - start.raw  # model-input space, before any deprocessing
    n_out = (H - 2) * (W - 2)
    for b in range(2):
        # The gradient of the mean of a linear map: the filter summed over the
        # output positions that see each pixel; its RMS over the whole image.
        g = F.conv_transpose2d(torch.ones(1, 1, H - 2, W - 2) / n_out, w[b : b + 1])[0]
        rms = g.pow(2).mean().sqrt() + 1e-5
        interior = delta[b, :, 2:-2, 2:-2]
        expected = 0.7 * w[b].sum(dim=(1, 2)) / n_out / rms  # per colour
        assert torch.allclose(interior, expected.view(3, 1, 1).expand_as(interior), atol=1e-5)
        # proportional to the per-colour sum of the weights
        ratio = interior[:, 0, 0] / w[b].sum(dim=(1, 2))
        assert torch.allclose(ratio, ratio[0].expand(3), rtol=1e-4)
    # The grey-plus-noise start went through the mean/std normalisation.
    pixels = start.raw * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    assert (pixels - 0.5).abs().max() <= 10 / 255 + 1e-6
    assert torch.allclose(start.images, deprocess_plain(pixels))
    assert one.history.shape == (2, 2) and torch.equal(one.loss, one.history[-1])


def test_negative_channel_is_stuck():
    conv = nn.Conv2d(3, 3, 3)
    with torch.no_grad():
        conv.weight.fill_(0.05)
        conv.bias.copy_(torch.tensor([0.1, -100.0, 0.1]))
    model = nn.Sequential(conv, nn.ReLU())
    res = plain_ascent(model, "1", [0, 1, 2], size=(10, 10), steps=5)
    assert res.stuck.tolist() == [False, True, False]
    assert res.loss[1] == 0 and (res.loss[[0, 2]] > 0).all()
    # a stuck slot has zero gradient, so it never moves
    assert torch.equal(res.history[:, 1], torch.zeros(6))


def test_norm_bound_optimum_is_normalised_filter():
    model = linear_conv(k=5, out=3, seed=1)
    w = model[0].weight.detach()
    res = plain_ascent(
        model, "0", [0, 1, 2], size=(5, 5), objective="centre", steps=20, norm_bound=1.0, mean=MEAN, std=STD
    )
    for b in range(3):
        x = res.raw[b].flatten()
        assert x.norm() == pytest.approx(1.0, abs=1e-5)
        assert F.cosine_similarity(x, w[b].flatten(), dim=0) > 0.99
        assert res.loss[b] == pytest.approx(w[b].norm().item(), rel=1e-3)


def test_zero_spectrum_decodes_to_grey():
    img = spectrum_to_image(torch.zeros(2, 3, 8, 6, 2), (8, 10))
    assert img.shape == (2, 3, 8, 10)
    assert torch.equal(img, torch.full_like(img, 0.5))
    # only a DC term: a uniform image of the colour matrix applied to the DC colour
    spec = torch.zeros(1, 3, 8, 6, 2)
    spec[0, :, 0, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    img = spectrum_to_image(spec, (8, 10))
    assert torch.allclose(img, img[:, :, :1, :1].expand_as(img), atol=1e-6)
    assert img[0, :, 0, 0].argmax() == COLOR_MATRIX[:, 0].argmax()


def test_robustness_without_transformation_is_identity():
    img = torch.rand(3, 3, 12, 16, generator=torch.Generator().manual_seed(0))
    out = robustness_transforms(img, torch.full((3, 4), 0.5), "constant")  # u = 0: no rotation, scale 1, shift 0
    assert torch.allclose(out, img, atol=1e-5)


def test_gram_similarity_of_identical_slots_is_one():
    a = torch.rand(1, 4, 5, 5)
    same = torch.cat([a, a, a, a])  # two units, two identical slots each
    assert gram_similarity(same, 2).item() == pytest.approx(2.0, abs=1e-5)


@pytest.mark.parametrize("chunk", [1, 3])
def test_batching_is_exact(chunk):
    model = small_net()
    kw = dict(size=(16, 16), steps=6, seed=5)
    together = plain_ascent(model, "4", list(range(8)), chunk=64, **kw)
    chunked = plain_ascent(model, "4", list(range(8)), chunk=chunk, **kw)
    alone = [plain_ascent(model, "4", [c], chunk=1, **kw) for c in range(8)]
    for field in ("raw", "images", "loss", "history"):
        a = getattr(together, field)
        assert torch.allclose(a, getattr(chunked, field), rtol=1e-4, atol=1e-5)
        b = torch.cat([getattr(r, field) for r in alone], dim=1 if field == "history" else 0)
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_fourier_batching_is_exact_and_increases_objective():
    model = small_net()
    kw = dict(size=(16, 16), steps=8, seed=2, lr=0.05)
    together = fourier_ascent(model, "4", [0, 3, 5], chunk=8, **kw)
    alone = [fourier_ascent(model, "4", [c], chunk=1, **kw) for c in (0, 3, 5)]
    assert torch.allclose(together.images, torch.cat([r.images for r in alone]), atol=1e-5)
    assert together.images.min() >= 0 and together.images.max() <= 1
    clean = fourier_ascent(model, "4", [0, 3, 5], steps=20, transforms=False, size=(16, 16))
    alive = clean.history[0] > 0  # channel 3 of this net is off on every image near grey
    assert alive.sum() == 2 and (clean.loss[alive] > 2 * clean.history[0][alive]).all()
    assert clean.stuck.tolist() == (~alive).tolist()


def test_fourier_per_unit_and_diversity():
    model = small_net()
    res = fourier_ascent(model, "4", [1, 2], size=(16, 16), steps=3, per_unit=2, diversity=1.0, chunk=3)
    assert res.channels == (1, 1, 2, 2)
    assert res.images.shape == (4, 3, 16, 16) and res.history.shape == (4, 4)
    # replicas of a unit start from different spectra
    assert not torch.allclose(res.images[0], res.images[1])


def test_same_seed_same_tensors():
    model = small_net()
    a = plain_ascent(model, "4", [0, 1, 2], size=(12, 12), steps=3, seed=7)
    b = plain_ascent(model, "4", [0, 1, 2], size=(12, 12), steps=3, seed=7)
    c = plain_ascent(model, "4", [0, 1, 2], size=(12, 12), steps=3, seed=8)
    assert torch.equal(a.raw, b.raw) and torch.equal(a.history, b.history)
    assert not torch.equal(a.raw, c.raw)
    f1 = fourier_ascent(model, "4", [0, 1], size=(12, 12), steps=3, seed=7)
    f2 = fourier_ascent(model, "4", [0, 1], size=(12, 12), steps=3, seed=7)
    assert torch.equal(f1.images, f2.images) and torch.equal(f1.history, f2.history)


class Boom(nn.Module):
    def forward(self, x):
        raise ValueError("boom")


class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.extra = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.conv(x)


def _state(model):
    return (
        {n: m.training for n, m in model.named_modules()},
        {n: p.requires_grad for n, p in model.named_parameters()},
    )


def test_hooks_removed_and_flags_restored_when_forward_raises():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), Boom(), nn.Conv2d(4, 4, 1))
    model.train()
    model[1].eval()
    model[0].bias.requires_grad_(False)
    before = _state(model)
    with pytest.raises(ValueError, match="boom"):
        plain_ascent(model, "3", [0], size=(8, 8), steps=2)
    with pytest.raises(ValueError, match="boom"):
        fourier_ascent(model, "3", [0], size=(8, 8), steps=2)
    with pytest.raises(RuntimeError, match="inside"):
        with truncated_forward(model, "0") as run:
            assert not model.training and not any(p.requires_grad for p in model.parameters())
            run(torch.rand(1, 3, 8, 8))
            raise RuntimeError("inside")
    assert _state(model) == before
    assert all(not m._forward_hooks for m in model.modules())


def test_network_stops_at_target_and_input_untouched():
    after = Counter()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), after, nn.Conv2d(4, 4, 1))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    plain_ascent(model, "1", [0, 1], size=(8, 8), steps=2)
    assert after.calls == 0
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    with pytest.raises(LayerNotReached):
        plain_ascent(Unused(), "extra", [0], size=(8, 8), steps=1)
    with pytest.raises(IndexError):
        plain_ascent(model, "1", [4], size=(8, 8), steps=1)


def test_default_size():
    rf = ReceptiveField(size=(23, 23), jump=(4, 4), start=(1.0, 1.0))
    assert default_size(rf) == (48, 48)  # 2 * 23 = 46, rounded up to the jump
    assert default_size(rf, objective="centre") == (32, 32)  # 23 clipped to the minimum
    big = ReceptiveField(size=(300, 150), jump=(32, 32), start=(0.0, 0.0))
    assert default_size(big) == (224, 224)  # 600 -> 224 (256 would exceed), 300 -> 224
    assert default_size(big, objective="centre", maximum=512) == (320, 160)


def test_plain_reports_range_and_the_clipped_objective():
    model = small_net(seed=4)
    res = plain_ascent(model, "3", [0, 3, 5], (16, 16), steps=15, mean=MEAN, std=STD, seed=1)
    mu, sd = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    pixels = res.raw * sd + mu
    # independent: count the values outside [0, 1] and run the whole net by hand on the clipped image
    outside = ((pixels < 0) | (pixels > 1)).double().flatten(1).mean(dim=1)
    with torch.no_grad():
        x = (pixels.clamp(0, 1) - mu) / sd
        conv1, conv2 = model[0], model[3]
        h = F.max_pool2d(F.relu(F.conv2d(x, conv1.weight, conv1.bias, padding=1)), 2)
        out = F.conv2d(h, conv2.weight, conv2.bias, padding=1)
    clipped = out[torch.arange(3), torch.tensor([0, 3, 5])].mean(dim=(1, 2))
    torch.testing.assert_close(res.outside.double(), outside, rtol=0, atol=1e-7)
    torch.testing.assert_close(res.clipped_loss, clipped, rtol=1e-5, atol=1e-5)
    # 15 unit steps in normalised space take the image well out of range, and clipping costs objective
    assert (res.outside > 0.05).all()
    assert (res.clipped_loss < res.loss).all()


def test_fourier_images_stay_in_range():
    model = small_net(seed=4)
    res = fourier_ascent(model, "3", [1, 2], (16, 16), steps=5, mean=MEAN, std=STD, seed=1)
    pixels = res.raw * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    assert float(pixels.min()) >= -1e-6 and float(pixels.max()) <= 1 + 1e-6
    assert (res.outside == 0).all()
    torch.testing.assert_close(res.clipped_loss, res.loss)


def test_the_written_out_adam_takes_torch_adams_steps():
    """maximise.Adam against torch.optim.Adam: the same parameter after 50 steps of a bumpy loss."""
    from reportgen.optim.maximise import Adam

    gen = torch.Generator().manual_seed(0)
    start = torch.randn(2, 3, 5, 4, generator=gen)
    target = torch.randn(2, 3, 5, 4, generator=gen)
    ours, theirs = start.clone().requires_grad_(True), start.clone().requires_grad_(True)
    a, b = Adam(ours, 0.05), torch.optim.Adam([theirs], lr=0.05)
    for _ in range(50):
        for p in (ours, theirs):
            p.grad = None
            (torch.sin(3 * p) * target + (p - target) ** 2).sum().backward()
        a.step()
        b.step()
    assert not torch.equal(ours, start)
    assert torch.equal(ours, theirs)  # the same operations in the same order
