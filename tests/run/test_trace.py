"""Known-answer tests for reportgen.analysis.trace and the colour_mlp example.

The 2-2-1 net uses the weights of Matt Mazur's well-known "A step by step
backpropagation example" (its first output unit), so its published numbers
double as a hand computation.
"""

import copy
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reportgen.analysis.trace import finite_difference_check, trace_mlp

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "colour_mlp"


def _colour_mlp_class():
    spec = importlib.util.spec_from_file_location("colour_mlp_model", EXAMPLE / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ColourMLP


def _net_221():
    # Built in float64 so the hand-set weights are exactly the decimals written here.
    net = nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 1), nn.Sigmoid()).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.15, 0.20], [0.25, 0.30]], dtype=torch.float64))
        net[0].bias.fill_(0.35)
        net[2].weight.copy_(torch.tensor([[0.40, 0.45]], dtype=torch.float64))
        net[2].bias.fill_(0.60)
    return net


def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def test_221_forward_equals_hand_computation():
    tr = trace_mlp(_net_221(), [[0.05, 0.10]], [[0.01]], loss="mse")
    z1 = [0.15 * 0.05 + 0.20 * 0.10 + 0.35, 0.25 * 0.05 + 0.30 * 0.10 + 0.35]
    a1 = [_sig(v) for v in z1]
    z2 = 0.40 * a1[0] + 0.45 * a1[1] + 0.60
    a2 = _sig(z2)
    l1, l2 = tr.layers
    assert (l1.name, l1.activation, l1.activation_kind) == ("0", "1", "sigmoid")
    np.testing.assert_allclose(l1.Z, [z1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(l1.A, [a1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(l2.Z, [[z2]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(tr.output, [[a2]], rtol=0, atol=1e-15)
    assert tr.loss == pytest.approx((a2 - 0.01) ** 2, abs=1e-15)
    # Mazur's published values.
    np.testing.assert_allclose(l1.Z, [[0.3775, 0.3925]], atol=1e-12)
    np.testing.assert_allclose(l1.A, [[0.593269992, 0.596884378]], atol=1e-9)
    np.testing.assert_allclose(l2.Z, [[1.105905967]], atol=1e-9)
    np.testing.assert_allclose(tr.output, [[0.75136507]], atol=1e-8)


def test_221_gradients_equal_hand_backprop():
    x = np.array([[0.05, 0.10], [0.9, -0.3], [0.2, 0.7]])
    y = np.array([[0.01], [0.99], [0.5]])
    tr = trace_mlp(_net_221(), x, y, loss="mse")
    W1 = np.array([[0.15, 0.20], [0.25, 0.30]])
    W2 = np.array([[0.40, 0.45]])
    z1 = x @ W1.T + 0.35
    a1 = 1 / (1 + np.exp(-z1))
    z2 = a1 @ W2.T + 0.60
    a2 = 1 / (1 + np.exp(-z2))
    d2 = 2 * (a2 - y) / y.size * a2 * (1 - a2)  # d mean((a2 - y)^2) / dz2
    d1 = (d2 @ W2) * a1 * (1 - a1)
    l1, l2 = tr.layers
    np.testing.assert_allclose(l2.dZ, d2, atol=1e-15)
    np.testing.assert_allclose(l1.dZ, d1, atol=1e-15)
    np.testing.assert_allclose(l2.grad_weight, d2.T @ a1, atol=1e-15)
    np.testing.assert_allclose(l2.grad_bias, d2.sum(0), atol=1e-15)
    np.testing.assert_allclose(l1.grad_weight, d1.T @ x, atol=1e-15)
    np.testing.assert_allclose(l1.grad_bias, d1.sum(0), atol=1e-15)


def test_221_output_gradients_match_mazur():
    # Mazur uses E = 1/2 (target - out)^2; mean squared error on one output is twice that.
    tr = trace_mlp(_net_221(), [[0.05, 0.10]], [[0.01]], loss="mse")
    np.testing.assert_allclose(tr.layers[1].grad_weight, [[2 * 0.082167041, 2 * 0.082667628]], atol=1e-8)


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_gradients_equal_autograd_on_colour_mlp(loss):
    torch.manual_seed(0)
    model = _colour_mlp_class()()
    batch = json.loads((EXAMPLE / "batch.json").read_text())
    x, y = np.array(batch["inputs"]), np.array(batch["labels"], dtype=float)
    tr = trace_mlp(model, x, y, loss=loss)
    ref = copy.deepcopy(model).double()
    out = ref(torch.tensor(x))
    yt = torch.tensor(y)
    L = F.mse_loss(out, yt) if loss == "mse" else F.binary_cross_entropy(out, yt)
    L.backward()
    assert tr.loss == pytest.approx(L.item(), rel=1e-12)
    names = [lt.name for lt in tr.layers]
    assert names == ["hidden1", "hidden2", "out"]
    assert [lt.activation for lt in tr.layers] == ["act1", "act2", "act_out"]
    for lt in tr.layers:
        lin = getattr(ref, lt.name)
        np.testing.assert_allclose(lt.grad_weight, lin.weight.grad.numpy(), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(lt.grad_bias, lin.bias.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert tr.layers[0].Z.shape == (8, 5) and tr.layers[1].A.shape == (8, 2)
    np.testing.assert_allclose(tr.output, out.detach().numpy(), atol=1e-15)
    # The caller's model is untouched.
    assert next(model.parameters()).dtype == torch.float32
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("loss", ["mse", "bce"])
@pytest.mark.parametrize("act", [nn.Sigmoid, nn.Tanh, nn.ReLU])
def test_finite_differences_agree(loss, act):
    torch.manual_seed(1)
    layers = [nn.Linear(3, 5), act(), nn.Linear(5, 2), act(), nn.Linear(2, 1), nn.Sigmoid()]
    model = nn.Sequential(*layers)
    x = torch.rand(6, 3)
    y = (torch.rand(6, 1) > 0.5).float()
    before = copy.deepcopy(model.state_dict())
    err = finite_difference_check(model, x, y, loss)
    assert err < 1e-6
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_linear_output_and_one_dimensional_targets():
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    tr = trace_mlp(model, np.ones((4, 2)), np.zeros(4), loss="mse")
    assert tr.layers[-1].activation is None and tr.layers[-1].activation_kind == "identity"
    np.testing.assert_array_equal(tr.layers[-1].A, tr.layers[-1].Z)
    assert tr.y.shape == (4, 1)
    assert finite_difference_check(model, np.ones((4, 2)), np.zeros(4)) < 1e-6


class _Reversed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 2)
        self.b = nn.Linear(2, 2)

    def forward(self, x):
        return self.a(self.b(x))


def test_unsupported_models_are_refused():
    with pytest.raises(ValueError, match="Dropout"):
        trace_mlp(nn.Sequential(nn.Linear(2, 2), nn.Dropout()), np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="must follow"):
        trace_mlp(nn.Sequential(nn.Sigmoid(), nn.Linear(2, 2)), np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="loss"):
        trace_mlp(_net_221(), np.ones((1, 2)), np.ones((1, 1)), loss="hinge")
    with pytest.raises(ValueError, match="not a plain chain"):
        trace_mlp(_Reversed(), np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="y must be"):
        trace_mlp(_net_221(), np.ones((2, 2)), np.ones((3, 1)))


def test_colour_mlp_example_files():
    ck = torch.load(EXAMPLE / "checkpoint.pt", weights_only=True)
    model = _colour_mlp_class()()
    model.load_state_dict(ck["state_dict"])
    assert ck["test_accuracy"] >= 0.97
    for name in ("checkpoint.pt", "batch.json", "model.py", "README.md"):
        assert (EXAMPLE / name).stat().st_size < 10_000
    batch = json.loads((EXAMPLE / "batch.json").read_text())
    x = torch.tensor(batch["inputs"])
    assert 4 <= len(x) <= 8 and x.shape[1] == 3
    assert [[c["label"]] for c in batch["colours"]] == batch["labels"]
    with torch.no_grad():
        pred = (model(x) > 0.5).float()
    assert pred.tolist() == [[float(v) for v in row] for row in batch["labels"]]
    tr = trace_mlp(model, x, batch["labels"], loss=batch["loss"])
    assert [lt.Z.shape[1] for lt in tr.layers] == [5, 2, 1]
    assert finite_difference_check(model, x, batch["labels"], batch["loss"]) < 1e-6
