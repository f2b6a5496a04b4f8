"""Hooks: values equal a hand forward; nothing survives an exception."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reportgen.run.hooks import LayerRecorder, inference, relu_follows
from tests.conftest import tiny_module


def seq() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 2, 3), nn.Tanh())


def test_recorded_outputs_equal_truncated_sequential():
    model = seq()
    x = torch.randn(2, 3, 12, 12)
    with inference(model), LayerRecorder(model, ["0", "3"]) as rec:
        out = rec.run(x)
    with torch.no_grad():
        np0 = model[0](x)
        np3 = model[3](model[2](model[1](np0)))
    assert torch.allclose(out["0"], np0) and torch.allclose(out["3"], np3)


def test_conv_output_equals_hand_convolution():
    conv = nn.Conv2d(1, 1, 2, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
        conv.bias.fill_(0.5)
    model = nn.Sequential(conv)
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    with inference(model), LayerRecorder(model, ["0"]) as rec:
        out = rec.run(x)["0"][0, 0]
    # hand: top-left window [[0,1],[3,4]] -> 0*1+1*2+3*3+4*4 + 0.5 = 27.5
    assert out.tolist() == [[27.5, 37.5], [57.5, 67.5]]


def test_stops_after_last_layer():
    model = seq()
    calls = []
    model[4].register_forward_hook(lambda *a: calls.append(1))
    with inference(model), LayerRecorder(model, ["0"]) as rec:
        rec.run(torch.randn(1, 3, 12, 12))
    assert calls == []  # nothing after layer 0 ran


def test_hooks_removed_and_mode_restored_after_exception():
    model = seq()
    model.train()
    model[2].eval()  # mixed flags must come back exactly
    with pytest.raises(RuntimeError):
        with inference(model), LayerRecorder(model, ["0", "3"]) as rec:
            rec.run(torch.randn(1, 5, 12, 12))  # wrong channel count fails inside forward
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training and model[0].training and not model[2].training
    assert torch.is_grad_enabled()


def test_hooks_removed_after_error_in_caller_code():
    model = seq()
    with pytest.raises(ValueError):
        with LayerRecorder(model, ["0"]):
            raise ValueError("boom")
    assert all(not m._forward_hooks for m in model.modules())


def test_unknown_layer_is_rejected():
    with pytest.raises(KeyError):
        LayerRecorder(seq(), ["9"])


def test_relu_follows():
    model = seq()
    assert relu_follows(model, "0") and relu_follows(model, "1")
    assert not relu_follows(model, "3") and not relu_follows(model, "2")
    tiny = tiny_module()
    assert relu_follows(tiny, "conv1") and relu_follows(tiny, "conv2") and not relu_follows(tiny, "fc")


def test_tolerant_run_returns_what_fired():
    model = seq()
    with LayerRecorder(model, ["0", "3"], stop_early=False) as rec:
        got = rec.run(torch.randn(1, 3, 5, 5), require_all=False)  # too small: conv "3" fails
    assert list(got) == ["0"]
    assert all(not m._forward_hooks for m in model.modules())


def test_probing_records_any_output_and_removes_its_hooks():
    from reportgen.run.hooks import probing

    class Odd(nn.Module):
        def forward(self, x):
            return None

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)
            self.odd = Odd()
            self.unused = nn.ReLU()

        def forward(self, x):
            self.odd(x)
            return self.conv(x)

    model = Net()
    with probing(model, ["conv", "odd", "unused"]) as seen:
        model(torch.ones(1, 3, 5, 5))
    assert seen["conv"].shape == (1, 2, 3, 3) and seen["odd"] is None and "unused" not in seen
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ZeroDivisionError):
        with probing(model, ["conv"]):
            1 / 0
    assert all(not m._forward_hooks for m in model.modules())


class _SiluByHand(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)

    def forward(self, x):
        y = self.conv(x)
        return y * torch.sigmoid(y)


class _DataDependent(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x  # cannot be traced with proxies


def _converted_graph_module() -> torch.fx.GraphModule:
    """What an ONNX conversion looks like: conv -> Sigmoid module and Mul -> a module that
    cannot be traced again."""
    import operator

    root = nn.Module()
    root.conv, root.sig, root.gate = nn.Conv2d(2, 3, 3), nn.Sigmoid(), _DataDependent()
    g = torch.fx.Graph()
    x = g.placeholder("x")
    c = g.call_module("conv", (x,))
    s = g.call_module("sig", (c,))
    m = g.call_function(operator.mul, (c, s))
    g.output(g.call_module("gate", (m,)))
    return torch.fx.GraphModule(root, g)


@pytest.mark.parametrize("make", [_SiluByHand, _converted_graph_module])
def test_silu_written_as_x_times_sigmoid_is_silu(make):
    from reportgen.run.hooks import apply_activation, find_activations

    torch.manual_seed(0)
    model = make()
    act = find_activations(model, ["conv"])["conv"]
    assert act.kind == "silu", act  # not the sigmoid alone
    x = torch.randn(1, 2, 6, 6)
    out = model.conv(x)
    got = apply_activation(act, dict(model.named_modules()), out)
    assert torch.allclose(got, out * torch.sigmoid(out))


def test_sigmoid_used_elsewhere_too_is_not_silu():
    from reportgen.run.hooks import find_activations

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)

        def forward(self, x):
            y = self.conv(x)
            return y * torch.sigmoid(x), torch.sigmoid(y)  # the product is not with sigmoid(y)

    assert find_activations(Two(), ["conv"])["conv"].kind != "silu"
