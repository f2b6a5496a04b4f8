"""Receptive field of a layer's units, measured by backpropagation.

Instead of composing kernel sizes and strides by hand (which breaks on
branches, skips and unusual modules), the field is read off a gradient: a copy
of the network is made linear and positive, so that every input pixel that can
influence a unit gets a strictly positive gradient and every other pixel gets
exactly zero. The copy:

* convolutions (and linear layers): weights set to 1 / fan-in, bias 0 (an
  average, so values neither blow up nor vanish in float64 however deep);
* max pooling -> average pooling with the same window (a max passes gradient to
  one input only; the average reaches every input the max could have chosen);
* batch norm: running mean 0, variance 1, weight 1, bias 0 (a positive scale);
  group/layer/instance norm -> identity (their statistics span the whole map;
  the conventional receptive field ignores them);
* everything else kept: on a positive input every activation stays positive,
  so ReLU & co. pass gradient everywhere.

The input is grown until the measured unit is far enough from the border that
its field is not clipped (the measurement at the next size agrees).

Caveats: pooling written as ``F.max_pool2d`` inside ``forward`` (not a module)
is not replaced and shrinks the measured field to one pixel per window; layers
after global or adaptive pooling have no finite field (ValueError); after
upsampling the jump is not an integer and is not supported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from reportgen.optim.truncate import LayerNotReached, truncated_forward


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one unit of a layer, in input pixels.

    size: (h, w) extent of the input region that influences one unit.
    jump: (sy, sx) input-pixel distance between adjacent units (cumulative stride).
    start: (y0, x0) input coordinate of the centre of unit (0, 0)'s field
        (pixel centres at integers; may be negative or half-integer when the
        layers pad). Unit (i, j)'s field is centred at (y0 + i * sy, x0 + j * sx).
    """

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]


class _DilatedAvgPool2d(nn.Module):
    """Average over a dilated window: stands in for a dilated MaxPool2d."""

    def __init__(self, pool: nn.MaxPool2d):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pool
        k = nn.modules.utils._pair(p.kernel_size)
        weight = torch.full((x.shape[1], 1, *k), 1.0 / (k[0] * k[1]), dtype=x.dtype, device=x.device)
        pad = nn.modules.utils._pair(p.padding)
        return nn.functional.conv2d(
            x, weight, stride=p.stride, padding=pad, dilation=p.dilation, groups=x.shape[1]
        )


_IDENTITY_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm)


def _replacement(module: nn.Module) -> nn.Module | None:
    """The positive linear stand-in for ``module`` (None: adjust in place or keep)."""
    if isinstance(module, nn.MaxPool2d):
        if nn.modules.utils._pair(module.dilation) != (1, 1):
            return _DilatedAvgPool2d(module)
        return nn.AvgPool2d(module.kernel_size, module.stride, module.padding, ceil_mode=module.ceil_mode)
    if isinstance(module, nn.AdaptiveMaxPool2d):
        return nn.AdaptiveAvgPool2d(module.output_size)
    if isinstance(module, _IDENTITY_NORMS):
        return nn.Identity()
    return None


def _positive_linear_copy(model: nn.Module) -> nn.Module:
    """A float64 CPU copy of ``model`` in which every unit is a positive average of its inputs."""
    net = copy.deepcopy(model).to(device="cpu", dtype=torch.float64)
    for name, module in list(net.named_modules()):
        new = _replacement(module)
        if new is not None and name:
            parent_name, _, child = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            setattr(parent, child, new)
            continue
        with torch.no_grad():
            if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                if module.running_mean is not None:
                    module.running_mean.zero_()
                    module.running_var.fill_(1.0)
                if module.affine:
                    module.weight.fill_(1.0)
                    module.bias.zero_()
    return net


def _support(grad: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(y_min, y_max, x_min, x_max) of the nonzero gradient, or None if it is all zero."""
    mask = grad.abs().sum(dim=(0, 1)) > 0  # (H, W)
    rows = mask.any(dim=1).nonzero().flatten()
    cols = mask.any(dim=0).nonzero().flatten()
    if rows.numel() == 0:
        return None
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _measure(net: nn.Module, layer: str, shape: tuple[int, int, int]):
    """Supports of the central unit and its lower and right neighbours at one input size.

    Returns (centre unit (i, j), three supports, input (H, W)) or None when the
    input is too small (the network fails or the map is narrower than 2).
    """
    x = torch.ones((1, *shape), dtype=torch.float64, requires_grad=True)
    with truncated_forward(net, layer) as run:
        try:
            out = run(x)
        except LayerNotReached:
            raise
        except RuntimeError:
            return None  # e.g. a kernel larger than its (too small) input
    if out.dim() != 4:
        raise ValueError(f"layer {layer!r} outputs shape {tuple(out.shape)}: no spatial map, no receptive field")
    h, w = out.shape[2:]
    if h < 2 or w < 2:
        return None
    i, j = (h - 1) // 2, (w - 1) // 2
    supports = []
    for di, dj in ((0, 0), (1, 0), (0, 1)):
        (g,) = torch.autograd.grad(out[0, :, i + di, j + dj].sum(), x, retain_graph=True)
        supports.append(_support(g))
    if any(s is None for s in supports):
        raise ValueError(f"layer {layer!r}: a unit has zero gradient w.r.t. the input (non-positive operation?)")
    return (i, j), supports, shape[1:]


def receptive_field(
    model: nn.Module,
    layer: str,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    max_side: int = 2048,
) -> ReceptiveField:
    """Receptive field of a unit of ``layer`` (a ``named_modules()`` name) of ``model``.

    input_shape: (C, H, W) of the first input tried; it is doubled until the
        field of a central unit touches no border and measures the same at the
        next size, up to ``max_side`` pixels (ValueError beyond: the field grows
        with the input, e.g. after global pooling). Any H, W works; a size near
        the expected field saves doublings.
    ``model`` is not modified (a float64 CPU copy is measured). Branches and
    skips need nothing special: the gradient follows every path.
    """
    if layer not in dict(model.named_modules()):
        raise KeyError(f"no such layer: {layer!r}")
    net = _positive_linear_copy(model)
    C, H, W = (int(v) for v in input_shape)
    previous = None
    while True:
        m = _measure(net, layer, (C, H, W))
        result = None
        if m is not None:
            (i, j), supports, (h_in, w_in) = m
            inside = all(s[0] > 0 and s[1] < h_in - 1 and s[2] > 0 and s[3] < w_in - 1 for s in supports)
            (y0, y1, x0, x1) = supports[0]
            size = (y1 - y0 + 1, x1 - x0 + 1)
            jump = (supports[1][0] - y0, supports[2][2] - x0)
            start = ((y0 + y1) / 2 - i * jump[0], (x0 + x1) / 2 - j * jump[1])
            if inside:
                result = ReceptiveField(size=size, jump=jump, start=start)
        # Start may legitimately depend on the input size only through
        # rounding; size and jump must agree between two sizes.
        if result is not None and previous is not None and (result.size, result.jump) == (previous.size, previous.jump):
            return result
        previous = result
        if max(H, W) * 2 > max_side:
            raise ValueError(
                f"receptive field of {layer!r} not settled at input {H}x{W} "
                "(it grows with the input: global/adaptive pooling before the layer?)"
            )
        H, W = 2 * H, 2 * W
