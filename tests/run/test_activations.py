"""Any activation: finding the one applied after a layer, applying it, and what
"active", "never active" and "saturated" mean for each kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reportgen.analysis.activations import ChannelStats
from reportgen.load.spec import LayerSpec
from reportgen.run.hooks import (
    NO_ACTIVATION,
    Activation,
    LayerRecorder,
    apply_activation,
    find_activations,
    inference,
    resolve_activation,
)


class FunctionalSiLU(nn.Module):
    """The activation is a functional call in forward: no module to see in the tree."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = F.silu(self.conv(x))
        return self.head(x.mean(dim=(2, 3)))


class OutOfOrder(nn.Module):
    """Modules registered in an order that differs from the order forward calls them."""

    def __init__(self):
        super().__init__()
        self.act_b = nn.Tanh()
        self.a = nn.Conv2d(3, 4, 3)
        self.b = nn.Conv2d(4, 4, 3)
        self.act_a = nn.PReLU(4)

    def forward(self, x):
        return self.act_b(self.b(self.act_a(self.a(x))))


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, so module order is used."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.ELU()
        self.other = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.act(self.conv(x))
        if x.sum() > 0:
            x = self.other(x)
        return x


class Leaky(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = F.leaky_relu(self.conv(x), negative_slope=0.2)
        return self.head(torch.sigmoid(x.mean(dim=(2, 3))))


def test_auto_finds_functional_silu_in_forward():
    found = find_activations(FunctionalSiLU(), ["conv", "head"])
    assert found["conv"].kind == "silu" and found["conv"].module is None
    assert found["conv"].source == "F.silu in forward"
    assert found["head"] == NO_ACTIVATION  # the logits are left as they are


def test_auto_follows_the_call_order_not_the_registration_order():
    found = find_activations(OutOfOrder(), ["a", "b"])
    assert (found["a"].kind, found["a"].module) == ("prelu", "act_a")
    assert (found["b"].kind, found["b"].module) == ("tanh", "act_b")


def test_auto_falls_back_to_registration_order_when_tracing_fails():
    found = find_activations(Branchy(), ["conv", "other"])
    assert (found["conv"].kind, found["conv"].module) == ("elu", "act")
    assert "registration order" in found["conv"].source
    assert found["other"] == NO_ACTIVATION


def test_functional_arguments_are_replayed():
    model = Leaky()
    act = find_activations(model, ["conv"])["conv"]
    assert act.kind == "leaky_relu" and act.params == {"negative_slope": 0.2}
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(apply_activation(act, dict(model.named_modules()), x), F.leaky_relu(x, 0.2))


def test_an_activation_module_listed_as_a_layer_describes_its_own_output():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.PReLU(4))
    act = find_activations(model, ["1"])["1"]
    assert act.kind == "prelu" and act.source == "the layer itself" and not act.applied
    x = torch.randn(1, 4, 3, 3)
    assert apply_activation(act, dict(model.named_modules()), x) is x  # never applied twice


def test_prelu_is_applied_with_its_learned_slopes():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.PReLU(4))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([-0.5, 0.0, 0.3, 2.0]))
    act = find_activations(model, ["0"])["0"]
    x = torch.randn(3, 4, 5, 5)
    expect = torch.where(x > 0, x, x * torch.tensor([-0.5, 0.0, 0.3, 2.0])[None, :, None, None])
    torch.testing.assert_close(apply_activation(act, dict(model.named_modules()), x), expect)


def test_spec_values_resolve():
    model = OutOfOrder()
    found = find_activations(model, ["a"])["a"]
    assert resolve_activation(model, "a", "auto", found) == found
    assert resolve_activation(model, "a", "none", found) == NO_ACTIVATION
    # a kind the model has after the layer: that module, with its parameters
    assert resolve_activation(model, "a", "prelu", found).module == "act_a"
    # a kind it does not have: the plain function
    assert resolve_activation(model, "a", "gelu", found) == Activation("gelu", "the spec")
    # a module named in the spec
    named = resolve_activation(model, "b", "act_b", NO_ACTIVATION)
    assert (named.kind, named.module) == ("tanh", "act_b")
    with pytest.raises(ValueError, match="learned slopes"):
        resolve_activation(model, "b", "prelu", NO_ACTIVATION)
    with pytest.raises(ValueError, match="neither an activation kind"):
        resolve_activation(model, "b", "nosuch", NO_ACTIVATION)


def test_relu_key_is_an_alias_of_activation():
    assert LayerSpec(name="x", relu="yes").activation == "relu"
    assert LayerSpec(name="x", relu=False).activation == "none"
    assert LayerSpec(name="x", relu="auto").activation == "auto"
    assert LayerSpec(name="x", activation="PReLU").activation == "prelu"  # class names are accepted
    assert LayerSpec(name="x", activation="LeakyReLU").activation == "leaky_relu"
    with pytest.raises(ValueError, match="not both"):
        LayerSpec(name="x", relu="yes", activation="silu")


def test_recorded_output_survives_an_in_place_activation():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(4, 2, 1))
    x = torch.randn(2, 3, 6, 6)
    with inference(model), LayerRecorder(model, ["0", "2"]) as rec:
        out = rec.run(x)["0"]
    with torch.no_grad():
        raw = F.conv2d(x, model[0].weight, model[0].bias)
    torch.testing.assert_close(out, raw)  # before the activation, which is applied once later
    act = find_activations(model, ["0"])["0"]
    torch.testing.assert_close(apply_activation(act, dict(model.named_modules()), out), F.leaky_relu(raw, 0.1))


def _stats(kind: str, a: np.ndarray, frac: float = 0.9) -> dict:
    s = ChannelStats(a.shape[1], kind)
    s.update(torch.from_numpy(a[:2]))
    s.update(torch.from_numpy(a[2:]))  # streamed in two batches
    return s.result(frac)


def _per_image_all(mask: np.ndarray, frac: float) -> np.ndarray:
    """(N, C, H, W) bool -> (C,): the share of each image's positions reaches ``frac`` on every image."""
    return (mask.reshape(mask.shape[0], mask.shape[1], -1).mean(axis=2) >= frac).all(axis=0)


def test_sigmoid_and_tanh_definitions():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 3, 4, 4))
    z[:, 1] = -8 + 0.1 * z[:, 1]  # far below zero: silent, pinned to the lower asymptote
    z[:, 2] = np.abs(z[:, 2])  # always active, mostly in the linear part
    y = 1 / (1 + np.exp(-z))
    got = _stats("sigmoid", y)
    per_c = y.transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(got["active_fraction"], (per_c > 0.5).mean(axis=1))
    np.testing.assert_array_equal(got["saturated"], _per_image_all(y * (1 - y) < 0.025, 0.9))
    assert got["never_active"].tolist() == [False, True, False]
    assert got["saturated"].tolist() == [False, True, False]  # always on is not "saturated" for a sigmoid
    # 5 images are too few to state either label (analysis/evidence.py: 29 are needed)
    assert not got["never_active_label"].any() and not got["saturated_label"].any()
    assert got["active_images"].tolist() == [5, 0, 5]

    t = np.tanh(z)
    got = _stats("tanh", t)
    per_c = t.transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(got["active_fraction"], (per_c > 0).mean(axis=1))
    np.testing.assert_array_equal(got["saturated"], _per_image_all(1 - t ** 2 < 0.1, 0.9))
    assert got["never_active"].tolist() == [False, True, False]


def test_rectifier_like_definitions():
    rng = np.random.default_rng(1)
    z = torch.from_numpy(rng.normal(size=(4, 3, 5, 5)))
    z[:, 0] = z[:, 0].abs() + 0.1  # always active: saturated in the rectifier sense
    z[:, 1] = -z[:, 1].abs() - 0.1  # silent
    for kind, fn in (("prelu", lambda x: F.prelu(x, torch.tensor([0.25, -0.5, 0.1], dtype=x.dtype))),
                     ("silu", F.silu), ("gelu", F.gelu), ("elu", F.elu)):
        y = fn(z)
        got = _stats(kind, y.numpy())
        per_c = y.transpose(0, 1).reshape(3, -1).numpy()
        np.testing.assert_allclose(got["active_fraction"], (per_c > 0).mean(axis=1))
        np.testing.assert_allclose(got["mean"], per_c.mean(axis=1))
        np.testing.assert_array_equal(got["never_active"], per_c.max(axis=1) <= 0)
        assert got["saturated"][0] and not got["saturated_label"][0]  # 4 images: observed, not stated
    # a negative PReLU slope makes negative inputs positive outputs: "active" is about the output
    assert _stats("prelu", F.prelu(z, torch.tensor([0.25, -0.5, 0.1], dtype=z.dtype)).numpy())["active_fraction"][1] == 1


class BranchyBN(nn.Module):
    """conv -> BN -> ReLU6 with control flow that torch.fx cannot trace."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU6()

    def forward(self, x):
        x = self.act(self.bn(self.conv(x)))
        return x if x.sum() > 0 else -x


def _bn_with_stats(bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0, 9.0]))
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.0, -0.3, 1.0]))


@pytest.mark.parametrize("model", [nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()), BranchyBN()])
def test_activation_behind_a_batchnorm_is_applied_after_it(model):
    names = ("0", "1", "2") if isinstance(model, nn.Sequential) else ("conv", "bn", "act")
    modules = dict(model.named_modules())
    _bn_with_stats(modules[names[1]])
    model.eval()
    act = find_activations(model, [names[0]])[names[0]]
    assert act.through == (names[1],) and act.applied and act.kind in ("relu", "relu6")
    assert f"'{names[1]}'" in act.source
    x = torch.randn(2, 4, 5, 5)
    # By hand: eval-mode batch norm with the running statistics, then the activation.
    mean = torch.tensor([0.5, -1.0, 0.0, 2.0])[None, :, None, None]
    var = torch.tensor([4.0, 0.25, 1.0, 9.0])[None, :, None, None]
    gamma = torch.tensor([1.0, -2.0, 0.5, 3.0])[None, :, None, None]
    beta = torch.tensor([0.1, 0.0, -0.3, 1.0])[None, :, None, None]
    normed = (x - mean) / torch.sqrt(var + 1e-5) * gamma + beta
    expect = normed.clamp(0, 6) if act.kind == "relu6" else normed.clamp_min(0)
    with torch.no_grad():
        torch.testing.assert_close(apply_activation(act, modules, x), expect)


def test_batchnorm_feeding_something_else_applies_nothing():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.MaxPool2d(2), nn.ReLU())
    assert find_activations(model, ["0"])["0"] == NO_ACTIVATION
