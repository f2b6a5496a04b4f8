"""Numeric trace of a tiny dense network: every number of one forward and backward pass.

For the classroom case (the 3-5-2-1 sigmoid MLP) a page shows, for one batch,
each layer's pre-activation ``Z = A_prev W^T + b``, its activation ``A``, the
loss, ``dL/dZ`` and the gradient of every weight and bias, as tables.

Everything is computed on a float64 copy of the model (the caller's model is
not touched: its dtype, ``training`` flag and ``.grad`` stay as they were),
with gradients from ``torch.autograd.grad``. The model must be a chain of
``Linear`` layers, each optionally followed by one ``Sigmoid``, ``ReLU`` or
``Tanh`` (``nn.Sequential`` or any module whose children, in registration
order, are what its forward applies: the trace checks its result against
``model(x)``).

Losses, averaged over every element of the (B, K) output:
- ``"mse"``: ``mean((A_out - y)^2)``;
- ``"bce"``: ``mean(-(y log p + (1 - y) log(1 - p)))`` with ``p = A_out``;
  computed from the last ``Z`` (``binary_cross_entropy_with_logits``, the same
  number without the rounding of ``log(sigmoid)``) when the last activation is
  a Sigmoid, else from ``p`` directly (then ``p`` must lie in [0, 1]).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = (nn.Sigmoid, nn.ReLU, nn.Tanh)


@dataclass(frozen=True)
class LayerTrace:
    """One Linear layer and its activation on a batch of B examples.

    name: the Linear's module name; activation: the activation module's name,
    or None when the Linear is not followed by one (then ``A`` is ``Z``);
    activation_kind: "sigmoid", "relu", "tanh" or "identity".
    weight (out, in), bias (out,): the parameters as float64.
    Z, A, dZ: (B, out) pre-activation, activation and dL/dZ.
    grad_weight (out, in), grad_bias (out,): dL/dW and dL/db.
    """

    name: str
    activation: str | None
    activation_kind: str
    weight: np.ndarray
    bias: np.ndarray
    Z: np.ndarray
    A: np.ndarray
    dZ: np.ndarray
    grad_weight: np.ndarray
    grad_bias: np.ndarray


@dataclass(frozen=True)
class Trace:
    """A forward and backward pass. x: (B, D); y and output: (B, K); loss: scalar."""

    x: np.ndarray
    y: np.ndarray
    layers: tuple[LayerTrace, ...]
    output: np.ndarray
    loss: float
    loss_kind: str


def _layers(model: nn.Module) -> list[tuple[str, nn.Linear, str | None, nn.Module | None]]:
    """Group the children into (linear name, linear, activation name, activation)."""
    groups: list[list] = []
    for name, mod in model.named_children():
        if isinstance(mod, nn.Linear):
            groups.append([name, mod, None, None])
        elif isinstance(mod, ACTIVATIONS):
            if not groups or groups[-1][3] is not None:
                raise ValueError(f"activation {name!r} must follow a Linear layer directly")
            groups[-1][2:] = [name, mod]
        else:
            raise ValueError(f"cannot trace module {name!r} ({type(mod).__name__}): only Linear "
                             "layers each followed by an optional Sigmoid, ReLU or Tanh")
    if not groups:
        raise ValueError("the model has no Linear layer")
    return [tuple(g) for g in groups]


def _as64(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().to(torch.float64)
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def _loss(z_out: torch.Tensor, a_out: torch.Tensor, y: torch.Tensor, kind: str,
          sigmoid_out: bool) -> torch.Tensor:
    if kind == "mse":
        return ((a_out - y) ** 2).mean()
    if kind == "bce":
        if sigmoid_out:
            return F.binary_cross_entropy_with_logits(z_out, y)
        return F.binary_cross_entropy(a_out, y)
    raise ValueError(f"loss must be 'mse' or 'bce', got {kind!r}")


def _prepare(model: nn.Module, x, y):
    """A float64 eval-mode copy of the model, its layer groups and x, y as float64 (B, D), (B, K)."""
    m64 = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
    groups = _layers(m64)
    x64 = _as64(x)
    if x64.ndim == 1:
        x64 = x64[None]
    y64 = _as64(y)
    k = groups[-1][1].out_features
    if y64.ndim == 1:
        y64 = y64.reshape(-1, k) if k > 1 else y64[:, None]
    if y64.shape != (x64.shape[0], k):
        raise ValueError(f"y must be (B, K) = ({x64.shape[0]}, {k}), got {tuple(y64.shape)}")
    return m64, groups, x64, y64


def _forward(groups, x64):
    """Z and A per layer for input x64; Z keeps its graph for the gradients."""
    zs, acts = [], []
    a = x64
    for _, lin, _, act in groups:
        z = lin(a)
        a = act(z) if act is not None else z
        zs.append(z)
        acts.append(a)
    return zs, acts


def trace_mlp(model: nn.Module, x, y, loss: str = "mse") -> Trace:
    """Forward and backward pass of a small MLP on one batch, every intermediate kept.

    model: Linear + Sigmoid/ReLU/Tanh chain (see the module docstring);
    x: (B, D) inputs; y: (B, K) targets ((B,) accepted when K = 1);
    loss: "mse" or "bce". Returns a Trace of float64 numpy arrays.
    """
    m64, groups, x64, y64 = _prepare(model, x, y)
    with torch.enable_grad():
        zs, acts = _forward(groups, x64)
        with torch.no_grad():
            direct = m64(x64)
        if direct.shape != acts[-1].shape or not torch.allclose(direct, acts[-1], rtol=1e-12, atol=1e-12):
            raise ValueError("model(x) differs from applying its children in order: "
                             "its forward is not a plain chain")
        sigmoid_out = isinstance(groups[-1][3], nn.Sigmoid)
        L = _loss(zs[-1], acts[-1], y64, loss, sigmoid_out)
        params = [p for _, lin, _, _ in groups for p in (lin.weight, lin.bias) if p is not None]
        grads = torch.autograd.grad(L, params + zs)
    pgrads = iter(grads[:len(params)])
    dzs = grads[len(params):]
    layers = []
    for (name, lin, act_name, act), z, a, dz in zip(groups, zs, acts, dzs):
        gw = next(pgrads)
        gb = next(pgrads) if lin.bias is not None else None
        out_f = lin.out_features
        layers.append(LayerTrace(
            name=name, activation=act_name,
            activation_kind=type(act).__name__.lower() if act is not None else "identity",
            weight=lin.weight.detach().numpy().copy(),
            bias=(lin.bias.detach().numpy().copy() if lin.bias is not None else np.zeros(out_f)),
            Z=z.detach().numpy().copy(), A=a.detach().numpy().copy(), dZ=dz.numpy().copy(),
            grad_weight=gw.numpy().copy(),
            grad_bias=gb.numpy().copy() if gb is not None else np.zeros(out_f),
        ))
    return Trace(x=x64.numpy().copy(), y=y64.numpy().copy(), layers=tuple(layers),
                 output=acts[-1].detach().numpy().copy(), loss=float(L.detach()), loss_kind=loss)


def finite_difference_check(model: nn.Module, x, y, loss: str = "mse", eps: float = 1e-6) -> float:
    """Max |autograd gradient - central finite difference| over every weight and bias.

    Central differences ``(L(p + eps) - L(p - eps)) / (2 eps)`` one parameter
    at a time, in float64 on a copy of the model; the caller's model is not
    changed. Returns the largest absolute difference (a float).
    """
    tr = trace_mlp(model, x, y, loss)
    m64, groups, x64, y64 = _prepare(model, x, y)
    sigmoid_out = isinstance(groups[-1][3], nn.Sigmoid)

    def loss_now() -> float:
        zs, acts = _forward(groups, x64)
        return float(_loss(zs[-1], acts[-1], y64, loss, sigmoid_out))

    worst = 0.0
    with torch.no_grad():
        for (_, lin, _, _), lt in zip(groups, tr.layers):
            for p, g in ((lin.weight, lt.grad_weight), (lin.bias, lt.grad_bias)):
                if p is None:
                    continue
                flat, gflat = p.view(-1), g.reshape(-1)
                for i in range(flat.numel()):
                    keep = float(flat[i])
                    flat[i] = keep + eps
                    up = loss_now()
                    flat[i] = keep - eps
                    down = loss_now()
                    flat[i] = keep  # restore before the next parameter
                    worst = max(worst, abs((up - down) / (2 * eps) - gflat[i]))
    return float(worst)
