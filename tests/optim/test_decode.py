"""Known-answer tests for reportgen.optim.decode (filter decoding and its baselines).

The reference for a linear network is autograd: with no ReLU, bias or max
pooling, a unit is a linear function of its receptive field, and the decoded
filter must equal its gradient there and be zero elsewhere.
"""

import copy

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d
from torch import nn

from reportgen.optim.decode import (
    decode_layer,
    decode_modules,
    deconvnet,
    guided_backprop,
    module_chain,
    plain_gradient,
)


def _conv(cin, cout, k, stride=1, dilation=1, bias=False, seed=0, groups=1):
    torch.manual_seed(seed)
    c = nn.Conv2d(cin, cout, k, stride=stride, dilation=dilation, bias=bias, groups=groups)
    with torch.no_grad():
        c.weight.copy_(torch.randn_like(c.weight))
    return c


def _rf_gradient(model, layer, channel, size, pos):
    """Autograd d(unit at pos)/d(input) on a random (1, 3, size, size) image, as (3, size, size)."""
    model = model.double()
    x = torch.randn(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    out = {}
    h = dict(model.named_modules())[layer].register_forward_hook(lambda m, a, o: out.update(o=o))
    try:
        model(x)
    finally:
        h.remove()
    (g,) = torch.autograd.grad(out["o"][0, channel, pos[0], pos[1]], x)
    return g[0].numpy()


def _check_against_autograd(model, layer, size=32, pos=(2, 3)):
    dec = decode_layer(model, layer)
    s_h, s_w = dec.shape[2:]
    chain = module_chain(model, layer)
    jump = decode_modules(chain).jump
    for k in range(dec.shape[0]):
        g = _rf_gradient(copy.deepcopy(model), layer, k, size, pos)
        # No padding anywhere: the RF of unit pos starts at pos * jump.
        y0, x0 = pos[0] * jump[0], pos[1] * jump[1]
        np.testing.assert_allclose(g[:, y0:y0 + s_h, x0:x0 + s_w], dec[k], atol=1e-10)
        rest = g.copy()
        rest[:, y0:y0 + s_h, x0:x0 + s_w] = 0
        assert np.abs(rest).max() == 0


def test_conv1_only_decodes_to_its_weights():
    conv = _conv(3, 6, 5, stride=2, bias=True)
    model = nn.Sequential(conv, nn.ReLU())
    dec = decode_layer(model, "0")
    np.testing.assert_array_equal(dec, conv.weight.detach().double().numpy())
    # Through the ReLU: the same template.
    np.testing.assert_array_equal(decode_layer(model, "1"), dec)


@pytest.mark.parametrize("s1,s2,dil", [(1, 1, 1), (2, 1, 1), (1, 2, 1), (2, 2, 1), (2, 1, 2)])
def test_linear_two_layer_net_equals_autograd(s1, s2, dil):
    model = nn.Sequential(_conv(3, 4, 3, stride=s1, seed=1), _conv(4, 5, 3, stride=s2, dilation=dil, seed=2))
    dec = decode_layer(model, "1")
    # s_2 = s_1 + (h_2 - 1) * dilation * J_1 with J_1 = s1.
    assert dec.shape == (5, 3, 3 + 2 * dil * s1, 3 + 2 * dil * s1)
    _check_against_autograd(model, "1")


def test_three_layers_non_square_and_grouped_equal_autograd():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 4, (3, 2), stride=(2, 1), bias=False),
        nn.Conv2d(4, 6, 3, stride=2, groups=2, bias=False),
        nn.Conv2d(6, 2, (1, 3), bias=False),
    )
    _check_against_autograd(model, "2", size=40)


def test_one_channel_stride_one_is_the_full_convolution():
    a, b = _conv(1, 1, 3, seed=4), _conv(1, 1, 4, seed=5)
    model = nn.Sequential(a, b)
    dec = decode_layer(model, "1", input_channels=1)
    wa, wb = a.weight[0, 0].detach().double().numpy(), b.weight[0, 0].detach().double().numpy()
    # D2[u] = sum_i W2[i] W1[u - i]: a convolution (PyTorch correlates at both layers).
    np.testing.assert_allclose(dec[0, 0], convolve2d(wb, wa, mode="full"), atol=1e-12)
    assert dec.shape == (1, 1, 6, 6)


def test_decoding_is_linear_in_each_layers_weights():
    base = nn.Sequential(_conv(3, 4, 3, seed=6), nn.ReLU(), nn.MaxPool2d(2), _conv(4, 3, 3, stride=2, seed=7)).double()
    ref = decode_layer(base, "3")
    scaled = copy.deepcopy(base)
    with torch.no_grad():
        scaled[3].weight.mul_(-2.5)
    np.testing.assert_allclose(decode_layer(scaled, "3"), -2.5 * ref, atol=1e-12)
    # Sum of two last-layer weight sets decodes to the sum of their decodings.
    other = copy.deepcopy(base)
    with torch.no_grad():
        other[3].weight.copy_(torch.randn_like(other[3].weight))
    summed = copy.deepcopy(base)
    with torch.no_grad():
        summed[3].weight.add_(other[3].weight)
    np.testing.assert_allclose(decode_layer(summed, "3"), ref + decode_layer(other, "3"), atol=1e-12)
    # And in the first layer's weights.
    first = copy.deepcopy(base)
    with torch.no_grad():
        first[0].weight.mul_(3.0)
    np.testing.assert_allclose(decode_layer(first, "3"), 3.0 * ref, atol=1e-12)


def test_pooling_options():
    c1, c2 = _conv(3, 4, 3, seed=8), _conv(4, 2, 3, seed=9)
    sub = nn.Sequential(c1, nn.MaxPool2d(1, 2), c2)  # a 1x1 max pool is exact subsampling
    maxp = nn.Sequential(c1, nn.MaxPool2d(2, 2), c2)
    avg = nn.Sequential(c1, nn.AvgPool2d(2, 2), c2)
    _check_against_autograd(sub, "2")
    _check_against_autograd(avg, "2")
    # "subsample": max pooling acts like the 1x1 subsampler; "average": like AvgPool2d.
    np.testing.assert_allclose(decode_layer(maxp, "2"), decode_layer(sub, "2"), atol=1e-12)
    np.testing.assert_allclose(decode_layer(maxp, "2", pooling="average"), decode_layer(avg, "2"), atol=1e-12)
    # AvgPool2d is linear: always box-filtered.
    np.testing.assert_allclose(decode_layer(avg, "2", pooling="subsample"), decode_layer(avg, "2"), atol=1e-12)
    with pytest.raises(ValueError, match="pooling"):
        decode_layer(maxp, "2", pooling="max")


def test_batchnorm_is_folded_like_eval_mode():
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
        bn.running_var.copy_(torch.tensor([0.25, 4.0, 1.0, 9.0]))
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    model = nn.Sequential(_conv(3, 4, 3, seed=10), bn, _conv(4, 3, 3, seed=11))
    model.train()
    _check_against_autograd(copy.deepcopy(model).eval(), "2")
    ignored = decode_layer(model, "2", batchnorm="ignore")
    assert model.training and bn.num_batches_tracked.item() == 0  # dummy pass ran in eval mode
    plain = decode_layer(nn.Sequential(model[0], model[2]), "1")
    np.testing.assert_allclose(ignored, plain, atol=1e-12)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = _conv(3, 3, 3, seed=12)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.conv1(x)
        return self.relu(self.conv2(x) + x)


class _Branch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 2, 3)
        self.b = nn.Conv2d(3, 2, 3)
        self.c = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], dim=1))


class _Heads(nn.Module):
    """A trunk read by two heads, like a multi-task network."""

    def __init__(self):
        super().__init__()
        self.trunk = _conv(3, 4, 3, seed=16)
        self.relu = nn.ReLU(inplace=True)
        self.head1 = _conv(4, 2, 1, seed=17)
        self.head2 = _conv(4, 3, 3, seed=18)

    def forward(self, x):
        x = self.relu(self.trunk(x))
        return {"one": self.head1(x), "two": self.head2(x)}


class _InPlaceAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.conv(x)
        y += x
        return self.relu(y)


def test_chain_breaks_are_named():
    # Up to conv2 the residual model is still a chain; the ReLU after the sum is not.
    assert [n for n, _ in module_chain(_Residual(), "conv2")] == ["conv1", "conv2"]
    with pytest.raises(ValueError, match="module 'relu' breaks the chain.*merge"):
        decode_layer(_Residual(), "relu")
    with pytest.raises(ValueError, match="module 'c' breaks"):
        decode_layer(_Branch(), "c")
    with pytest.raises(ValueError, match="'relu'.*in place"):
        decode_layer(_InPlaceAdd(), "relu")
    with pytest.raises(ValueError, match="no module named"):
        decode_layer(_Branch(), "zzz")
    with pytest.raises(ValueError, match="'1' \\(Linear\\)"):
        decode_layer(nn.Sequential(nn.ReLU(), nn.Linear(64, 2)), "1")


def test_parallel_branches_off_the_path_are_allowed():
    branch = _Branch()
    np.testing.assert_array_equal(decode_layer(branch, "b"), branch.b.weight.detach().double().numpy())
    heads = _Heads()
    assert [n for n, _ in module_chain(heads, "head2")] == ["trunk", "relu", "head2"]
    _check_against_autograd(nn.Sequential(heads.trunk, heads.head2), "1")
    np.testing.assert_allclose(decode_layer(heads, "head2"),
                               decode_layer(nn.Sequential(heads.trunk, heads.head2), "1"), atol=1e-12)


def test_container_target_and_model_left_unchanged():
    inner = nn.Sequential(_conv(3, 4, 3, seed=13), nn.ReLU(inplace=True))
    model = nn.Sequential(inner, _conv(4, 2, 3, seed=14))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    assert [n for n, _ in module_chain(model, "0")] == ["0.0", "0.1"]
    np.testing.assert_array_equal(decode_layer(model, "0"), inner[0].weight.detach().double().numpy())
    assert model.training
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_baselines_agree_with_decoding_when_linear():
    torch.manual_seed(15)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, bias=False), nn.Conv2d(4, 3, 3, bias=False))
    model.double()
    image = torch.rand(3, 21, 21, dtype=torch.float64)
    dec = decode_layer(model, "1")
    out = model(image[None])[0]
    for ch in range(3):
        flat = int(out[ch].argmax())
        py, px = flat // out.shape[2], flat % out.shape[2]
        g = plain_gradient(model, "1", ch, image)
        d = deconvnet(model, "1", ch, image)
        gb = guided_backprop(model, "1", ch, image)
        np.testing.assert_allclose(d, g, atol=1e-12)
        np.testing.assert_allclose(gb, g, atol=1e-12)
        placed = np.zeros_like(g)
        s = dec.shape[-1]
        y0, x0 = py * 2, px * 2  # jump 2, no padding
        placed[:, y0:y0 + s, x0:x0 + s] = dec[ch]
        np.testing.assert_allclose(g, placed, atol=1e-12)


def _one_pixel_net(w2, inplace):
    conv1 = nn.Conv2d(3, 1, 1, bias=False)
    conv2 = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv1.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
        conv2.weight.fill_(w2)
    return nn.Sequential(conv1, nn.ReLU(inplace=inplace), conv2)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("w2,red,expect", [
    # (plain, deconvnet, guided) gradient on the red input
    (-1.0, 0.5, (-1.0, 0.0, 0.0)),   # negative gradient: deconv and guided stop it
    (1.0, -0.5, (0.0, 1.0, 0.0)),    # inactive forward: deconv ignores the mask
    (1.0, 0.5, (1.0, 1.0, 1.0)),
])
def test_relu_backward_rules(inplace, w2, red, expect):
    model = _one_pixel_net(w2, inplace)
    image = torch.tensor([red, 0.3, 0.7]).view(3, 1, 1)
    got = [f(model, "2", 0, image)[0, 0, 0] for f in (plain_gradient, deconvnet, guided_backprop)]
    np.testing.assert_allclose(got, expect)
    relu = model[1]
    assert relu.inplace == inplace and not relu._forward_hooks
    assert all(p.grad is None for p in model.parameters())


def _fidelity_net(relu: bool, seed: int = 0) -> nn.Sequential:
    """conv 3->4 (k3, pad 2, bias) -> [ReLU] -> avg pool 2 -> conv 4->5 (k3, stride 2, bias), in float64.

    The first conv's padding puts the receptive field of unit (0, 0) partly
    outside the image (a negative origin); zero padding of the input is what
    the template sees there too, so the linear case stays exact.
    """
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 4, 3, padding=2, bias=True)]
    layers += [nn.ReLU()] if relu else [nn.Identity()]
    layers += [nn.AvgPool2d(2), nn.Conv2d(4, 5, 3, stride=2, bias=True)]
    return nn.Sequential(*layers).double().eval()


def _fidelity(model, x):
    from reportgen.optim.decode import template_fidelity, template_response
    from reportgen.optim.patches import crop_origin
    from reportgen.optim.receptive import receptive_field

    rf = receptive_field(model, "3", input_shape=tuple(x.shape[1:]))
    with torch.no_grad():
        pre = model(x)
    D = decode_layer(model, "3", pooling="average")
    resp = template_response(D, x, crop_origin(np.zeros(2), rf.size, rf.jump, rf.start), rf.jump, pre.shape[2:])
    return resp, pre.numpy(), template_fidelity(resp, pre.numpy())


def test_fidelity_of_a_linear_network_is_one():
    model = _fidelity_net(relu=False)
    x = torch.randn(4, 3, 23, 27, dtype=torch.float64)
    resp, pre, r2 = _fidelity(model, x)
    # independent: the same network without its biases is what the template computes
    bare = copy.deepcopy(model)
    with torch.no_grad():
        for m in bare:
            if isinstance(m, nn.Conv2d):
                m.bias.zero_()
        np.testing.assert_allclose(resp, bare(x).numpy(), atol=1e-10)
    np.testing.assert_allclose(r2, np.ones(5), atol=1e-10)


def test_fidelity_with_relus_between_is_the_squared_correlation_and_below_one():
    model = _fidelity_net(relu=True, seed=1)
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([-1.0, 0.5, -0.3, 0.0], dtype=torch.float64))
    x = torch.randn(4, 3, 23, 27, dtype=torch.float64)
    _, pre, r2 = _fidelity(model, x)
    # independent: the linear copy (ReLU removed, biases zeroed) against the real net, numpy's corrcoef
    lin = copy.deepcopy(model)
    lin[1] = nn.Identity()
    with torch.no_grad():
        for m in lin:
            if isinstance(m, nn.Conv2d):
                m.bias.zero_()
        t = lin(x).numpy()
    ref = [np.corrcoef(t[:, k].ravel(), pre[:, k].ravel())[0, 1] ** 2 for k in range(5)]
    np.testing.assert_allclose(r2, ref, rtol=1e-9)
    assert (r2 < 0.999).all() and (r2 > 0).all()


def test_fidelity_is_nan_for_a_constant_unit():
    from reportgen.optim.decode import template_fidelity

    resp = np.random.default_rng(0).normal(size=(2, 2, 3, 3))
    pre = resp.copy()
    pre[:, 1] = 4.0
    r2 = template_fidelity(resp, pre)
    assert r2[0] == pytest.approx(1.0) and np.isnan(r2[1])
