"""Filter decoding with substitution, and the deconvnet / guided-backprop baselines.

Decoding (after Rafegas & Vanrell 2015, arXiv 1511.05084). Only that paper's
abstract is available to us, so this is a *reconstruction* from it, not a copy
of the authors' method: instead of projecting an activation back through
transposed convolutions (a deconvnet), every weight of a unit is *substituted*
by the image-space filter already decoded for the input channel it multiplies,
shifted to where that weight looks, and the results are summed. In symbols,
with ``J`` the cumulative stride of the layer's input (product of the strides
below it), ``d`` the conv's dilation and ``D0_c`` the one-pixel filter that
picks input channel ``c``::

    D1_k = W1_k
    Dl_k[:, u, v] = sum_c sum_{i,j} Wl_k[c, i, j] * D(l-1)_c[:, u - i*d*J, v - j*d*J]
    s_l = s_(l-1) + (h_l - 1) * d * J          J <- J * stride_l

Read as arrays, ``Dl_k`` is the sum over taps ``(i, j)`` of the previous
filters weighted by ``Wl_k[:, i, j]``, pasted at offset ``(i*d*J, j*d*J)``.
For one channel at stride 1 that is the *full 2-D convolution* of the two
kernels (``u - i``: convolution, not correlation, because PyTorch's conv is a
correlation at every layer and correlating twice composes into correlating
with their convolution). For a network with no nonlinearity, bias or max
pooling, the decoded filter is exactly the gradient of the unit with respect
to the input over its receptive field; ``Dl_k[:, 0, 0]`` sits on the top-left
input pixel of the unit's receptive field.

What each module does to the template:
- ``Conv2d``: the rule above (groups supported; padding only moves the unit's
  position in the image, not its template, so it is ignored).
- ``ReLU`` and other elementwise activations, ``Dropout``, ``Identity``:
  ignored, like every bias: the result is a linear template.
- ``BatchNorm2d``: folded by default (in eval form it scales channel ``c`` by
  ``gamma_c / sqrt(running_var_c + eps)``; its shift is a bias and is dropped);
  ``batchnorm="ignore"`` skips it instead.
- ``MaxPool2d``: ``pooling="subsample"`` (default) treats it as taking the
  window's top-left input: the filter is unchanged and ``J *= stride``, so the
  template is ``(k - 1) * J`` pixels smaller than the true receptive field per
  pooling layer (centre it in the RF to display it). ``pooling="average"``
  box-filters the template over the window (``J *= stride`` too).
- ``AvgPool2d``: always the box filter (it is linear: exact away from the
  border, where ``count_include_pad`` and ``ceil_mode`` change the weights).
- anything else (``Linear``, adaptive pooling, ...): ValueError.

The module chain is read from the model by running a dummy input with forward
hooks on every leaf module, recording which module produced each one's input,
and walking back from ``layer`` to the input. Only chains are supported: every
module on that path must receive, unmodified, the output of one earlier module
(the first one: the model input). Branches that leave the path (several heads
on one trunk) are fine; a merge (``torch.cat``, a residual ``x + y`` or
``out += x``) or a functional op that makes a new tensor (``F.relu``,
``x * 2``) on the path breaks the chain, and the ValueError names the module
that received it.

Baselines: ``deconvnet`` (Zeiler & Fergus 2014) and ``guided_backprop``
(Springenberg et al. 2015) back-propagate a one-hot signal at the unit's
strongest position to the input, changing only the backward rule of every
``nn.ReLU`` module: deconvnet passes the gradient where the gradient is
positive (the forward mask is ignored), guided backprop where both the
forward input and the gradient are positive; ``plain_gradient`` is the
ordinary gradient. ReLUs applied as functions (``F.relu``) keep the plain rule.
Max pooling routes the signal through each window's argmax (the deconvnet's
"switches"), which is autograd's own max-pool backward. Units whose field
crosses the image border get a truncated map: the gradient has no pixels there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from reportgen.core.batching import image_slices, join
from reportgen.core.determinism import one_thread

# Elementwise modules that leave a linear template unchanged (ignored like a ReLU).
IGNORED = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
           nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
           nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@dataclass(frozen=True)
class Decoded:
    """Decoded filters of one layer.

    filters: (C, input_channels, s_h, s_w) float64, one image-space template per
        output channel; ``[:, :, 0, 0]`` is the top-left of the unit's receptive field.
    jump: (J_y, J_x) cumulative stride of the layer's output.
    chain: names of the modules decoded, in order.
    """

    filters: np.ndarray
    jump: tuple[int, int]
    chain: tuple[str, ...]


class _Stop(Exception):
    """Raised from a hook to end a forward pass once the target layer has run."""


def module_chain(model: nn.Module, layer: str, input_channels: int = 3,
                 input_size: int | tuple[int, int] = 64) -> list[tuple[str, nn.Module]]:
    """The leaf modules on the path from the input to ``layer``, in order, checked to form a chain.

    Runs ``model`` in eval mode and without gradients on a zero input
    (1, input_channels, *input_size), recording which module produced each
    leaf's input, and stops right after ``layer`` runs. The path is then walked
    back from ``layer`` to the model input; modules off that path (another
    head reading the same features) do not matter. Returns [(name, module), ...]
    ending with ``layer`` (or with its last leaf when ``layer`` is a container).
    Raises ValueError when ``layer`` is unknown or never runs, or naming the
    module on the path whose input is not, unmodified, the output of one
    earlier module or the model input. The model is left as it was
    (``training`` restored, hooks removed).
    """
    named = dict(model.named_modules())
    if layer not in named:
        raise ValueError(f"no module named {layer!r} in the model")
    target = named[layer]
    names: dict[int, str] = {}
    for n, m in model.named_modules():
        names.setdefault(id(m), n)  # a shared module keeps its first name
    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    leaf_ids = {id(m) for m in leaves}
    watched = {id(m): m for m in leaves}
    watched[id(target)] = target

    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    h, w = _pair(input_size)
    x = torch.zeros(1, input_channels, h, w, dtype=dtype, device=device)

    # id(tensor) -> (tensor, its version counter when produced, index of the call
    # that produced it; -1 = the model input). The tensor is kept so its id is
    # not reused; the version catches in-place changes (``out += skip``).
    produced: dict[int, tuple[torch.Tensor, int, int]] = {id(x): (x, x._version, -1)}
    # One entry per leaf call: (name, module, producer index or None, why not).
    calls: list[tuple[str, nn.Module, int | None, str]] = []
    state: dict = {}

    def source(args) -> tuple[int | None, str]:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if len(tensors) != 1 or len(args) != 1:
            return None, "it does not take exactly one tensor input"
        inp = tensors[0]
        entry = produced.get(id(inp))
        if entry is None or entry[0] is not inp:
            return None, ("its input is not the output of an earlier module or the model input "
                          "(a merge such as torch.cat or x + y, or a functional op such as "
                          "F.relu, in between)")
        if inp._version != entry[1]:
            by = "the model input" if entry[2] < 0 else f"module {calls[entry[2]][0]!r}"
            return None, f"{by} was changed in place before it (e.g. a residual 'out += x')"
        return entry[2], ""

    def pre_hook(mod, args):
        if id(mod) in leaf_ids:
            state["pending"] = source(args)
        return None

    def hook(mod, args, out):
        if id(mod) in leaf_ids:
            producer, why = state.pop("pending", (None, "it was called without its pre-hook"))
            calls.append((names[id(mod)], mod, producer, why))
            if isinstance(out, torch.Tensor):
                produced[id(out)] = (out, out._version, len(calls) - 1)
        if mod is target:
            state["out"] = out
            raise _Stop
        return None

    was_training = model.training
    handles = []
    try:
        for m in watched.values():
            handles.append(m.register_forward_pre_hook(pre_hook))
            handles.append(m.register_forward_hook(hook))
        model.eval()
        with torch.no_grad():
            try:
                model(x)
            except _Stop:
                pass
    finally:
        for hd in handles:
            hd.remove()
        model.train(was_training)
    if "out" not in state:
        raise ValueError(f"module {layer!r} never ran in a forward pass")

    def broken(name: str, why: str) -> ValueError:
        return ValueError(f"cannot decode {layer!r}: module {name!r} breaks the chain: {why}; "
                          "only plain chains of modules are supported")

    if id(target) in leaf_ids:
        idx = len(calls) - 1
    else:
        out = state["out"]
        entry = produced.get(id(out)) if isinstance(out, torch.Tensor) else None
        if entry is None or entry[0] is not out or entry[2] < 0 or out._version != entry[1]:
            raise broken(layer, "its output is not, unmodified, the output of one of its modules")
        idx = entry[2]
    path = []
    while idx >= 0:
        name, mod, producer, why = calls[idx]
        if producer is None:
            raise broken(name, why)
        path.append((name, mod))
        idx = producer
    return path[::-1]


def _paste_taps(D: np.ndarray, taps: np.ndarray, step: tuple[int, int]) -> np.ndarray:
    """Sum over taps (i, j) of ``taps[:, :, i, j] @ D`` pasted at offset ``(i, j) * step``.

    D: (C_in, X, s_h, s_w); taps: (C_out, C_in, k_h, k_w); step: per-axis offset
    of one tap in input pixels. Returns (C_out, X, s_h + (k_h-1)*step_h, s_w + (k_w-1)*step_w).
    """
    c_out, _, kh, kw = taps.shape
    _, nx, sh, sw = D.shape
    out = np.zeros((c_out, nx, sh + (kh - 1) * step[0], sw + (kw - 1) * step[1]))
    flat = D.reshape(D.shape[0], -1)
    for i in range(kh):
        for j in range(kw):
            oy, ox = i * step[0], j * step[1]
            out[:, :, oy:oy + sh, ox:ox + sw] += (taps[:, :, i, j] @ flat).reshape(c_out, nx, sh, sw)
    return out


def decode_modules(chain: Iterable[tuple[str, nn.Module]] | Sequence[nn.Module],
                   input_channels: int = 3, pooling: str = "subsample",
                   batchnorm: str = "fold") -> Decoded:
    """Decode the output channels of the last module of a chain into input space.

    chain: modules in order, as (name, module) pairs or bare modules (see the
    module docstring for what each kind does). pooling: "subsample" or
    "average" for max pooling; batchnorm: "fold" or "ignore".
    Returns Decoded with filters (C, input_channels, s_h, s_w) float64.
    """
    if pooling not in ("subsample", "average"):
        raise ValueError(f"pooling must be 'subsample' or 'average', got {pooling!r}")
    if batchnorm not in ("fold", "ignore"):
        raise ValueError(f"batchnorm must be 'fold' or 'ignore', got {batchnorm!r}")
    # Before any layer, channel c of the "input layer" is the one-pixel filter on input channel c.
    D = np.eye(input_channels).reshape(input_channels, input_channels, 1, 1)
    J = (1, 1)
    names = []
    for k, item in enumerate(chain):
        name, mod = item if isinstance(item, tuple) else (str(k), item)
        names.append(name)
        if isinstance(mod, nn.Conv2d):
            W = mod.weight.detach().cpu().double().numpy()
            if W.shape[1] * mod.groups != D.shape[0]:
                raise ValueError(f"module {name!r} expects {W.shape[1] * mod.groups} input "
                                 f"channels but receives {D.shape[0]}")
            dil, stride = _pair(mod.dilation), _pair(mod.stride)
            step = (dil[0] * J[0], dil[1] * J[1])
            g, cin_g, cout_g = mod.groups, W.shape[1], W.shape[0] // mod.groups
            parts = [_paste_taps(D[gi * cin_g:(gi + 1) * cin_g], W[gi * cout_g:(gi + 1) * cout_g], step)
                     for gi in range(g)]
            D = np.concatenate(parts, axis=0)
            J = (J[0] * stride[0], J[1] * stride[1])
        elif isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
            kern = _pair(mod.kernel_size)
            stride = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
            dil = _pair(getattr(mod, "dilation", 1))
            if isinstance(mod, nn.AvgPool2d) or pooling == "average":
                c = D.shape[0]
                # A box filter is a depthwise conv with equal taps summing to 1.
                box = np.zeros((c, c, kern[0], kern[1]))
                box[np.arange(c), np.arange(c)] = 1.0 / (kern[0] * kern[1])
                D = _paste_taps(D, box, (dil[0] * J[0], dil[1] * J[1]))
            J = (J[0] * stride[0], J[1] * stride[1])
        elif isinstance(mod, nn.BatchNorm2d):
            if batchnorm == "fold":
                if mod.running_var is not None:
                    scale = 1.0 / torch.sqrt(mod.running_var.detach().double() + mod.eps)
                else:  # no running statistics: only the affine scale is known
                    scale = torch.ones(mod.num_features, dtype=torch.float64)
                if mod.weight is not None:
                    scale = scale * mod.weight.detach().double()
                D = D * scale.cpu().numpy()[:, None, None, None]
        elif isinstance(mod, IGNORED):
            pass
        else:
            raise ValueError(f"cannot decode through module {name!r} ({type(mod).__name__}): "
                             "only Conv2d, MaxPool2d, AvgPool2d, BatchNorm2d and elementwise "
                             "activations are supported")
    return Decoded(filters=D, jump=J, chain=tuple(names))


def decode_layer(model: nn.Module, layer: str, input_channels: int = 3,
                 pooling: str = "subsample", batchnorm: str = "fold",
                 input_size: int | tuple[int, int] = 64) -> np.ndarray:
    """Decoded image-space filter of every output channel of ``layer``.

    Returns (C_l, input_channels, s_l, s_l) float64 (s_h, s_w when kernels are
    not square). ``input_size`` is the side of the dummy input used to find the
    module chain: raise it for models that need larger inputs. See
    ``module_chain`` and ``decode_modules``.
    """
    chain = module_chain(model, layer, input_channels, input_size)
    return decode_modules(chain, input_channels, pooling, batchnorm).filters


def template_response(templates, inputs, origin, jump, out_size) -> np.ndarray:
    """Each decoded template correlated with the input at every unit's position.

    templates: (U, C_in, s_h, s_w); inputs: (N, C_in, H, W) model inputs (the
    normalised images); origin: (y, x) input coordinate of template pixel
    ``[0, 0]`` for the unit at map position (0, 0), i.e. the top-left of its
    receptive field (may be negative); jump: (J_y, J_x); out_size: (H_m, W_m)
    of the layer's map. Unit (i, j)'s template sits at ``origin + (i, j) * jump``;
    input outside the image counts as 0, like a convolution's zero padding.
    Returns (N, U, H_m, W_m) float64: ``sum_{c,u,v} D[c, u, v] * x[c, y + u, x + v]``.
    """
    D = torch.as_tensor(np.asarray(templates, dtype=np.float64))
    x = torch.as_tensor(inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor)
                        else np.asarray(inputs)).double()
    (oy, ox), (jy, jx), (hm, wm) = ((int(a), int(b)) for a, b in (origin, jump, out_size))
    sh, sw = D.shape[2:]
    H, W = x.shape[2:]
    top, left = max(0, -oy), max(0, -ox)
    bottom = max(0, oy + (hm - 1) * jy + sh - H)
    right = max(0, ox + (wm - 1) * jx + sw - W)
    xp = torch.nn.functional.pad(x, (left, right, top, bottom))
    xp = xp[:, :, oy + top:, ox + left:]
    with one_thread():  # a float64 convolution's last bits depend on the thread count
        out = torch.nn.functional.conv2d(xp, D, stride=(jy, jx))
    return out[:, :, :hm, :wm].numpy()


def template_fidelity(response, preact) -> np.ndarray:
    """R^2 of each unit's pre-activation explained by its template's response.

    response, preact: (N, U, H_m, W_m), the template response
    (``template_response``) and the layer's actual output before any ReLU, over
    the same images and positions. Per unit: the squared Pearson correlation
    over all N * H_m * W_m values, i.e. the R^2 of the least-squares fit
    ``preact ~ a * response + b`` (the offset absorbs the biases the template
    drops). 1 for a network that is linear up to the layer; NaN where either
    side is constant. Returns (U,) float64.
    """
    t = np.asarray(response, dtype=np.float64)
    z = np.asarray(preact, dtype=np.float64)
    if t.shape != z.shape or t.ndim != 4:
        raise ValueError(f"response and preact must be the same (N, U, H, W) shape: {t.shape} vs {z.shape}")
    t = np.moveaxis(t, 1, 0).reshape(t.shape[1], -1)
    z = np.moveaxis(z, 1, 0).reshape(z.shape[1], -1)
    t = t - t.mean(axis=1, keepdims=True)
    z = z - z.mean(axis=1, keepdims=True)
    vt, vz = (t * t).sum(axis=1), (z * z).sum(axis=1)
    cov = (t * z).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where((vt > 0) & (vz > 0), cov * cov / (vt * vz), np.nan)
    return np.clip(r2, 0.0, 1.0)


class _DeconvReLU(torch.autograd.Function):
    """ReLU forward; backward passes only positive gradients, ignoring the forward mask."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


class _GuidedReLU(torch.autograd.Function):
    """ReLU forward; backward passes gradients that are positive where the input was positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad.dtype)


_RULES = {"plain": None, "deconvnet": _DeconvReLU, "guided": _GuidedReLU}


def _unit_gradient(model: nn.Module, layer: str, channel: int, image, rule: str,
                   position: tuple[int, int] | None) -> np.ndarray:
    """Gradient of one unit of ``layer`` w.r.t. the input image with a ReLU backward rule."""
    x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"image must be (C, H, W) or (1, C, H, W), got {tuple(x.shape)}")
    return unit_gradients(model, layer, [channel], x, rule, None if position is None else [position])[0]


def unit_gradients(model: nn.Module, layer: str, channels: Sequence[int], images, rule: str,
                   positions: Sequence[tuple[int, int]] | None = None, values: list | None = None) -> np.ndarray:
    """Input gradients of many units at once, one unit per batch slot.

    images: (B, C, H, W), slot b's image; channels: B channels of ``layer``;
    positions: B (row, col) of the unit in its map (default: each map's maximum);
    rule: "plain", "deconvnet" or "guided" (how every nn.ReLU passes gradients back).
    Returns (B, C, H, W) float64. Slots do not interact (eval mode, elementwise ReLU
    rules), so slot b equals the single-unit gradient of ``channels[b]`` on its image:
    one forward and one backward serve a whole layer's units instead of one each.
    The model is left unchanged and no parameter ``.grad`` is touched. ``values``: a
    list that receives the (B,) float64 values of the units (the layer's output there).
    """
    named = dict(model.named_modules())
    if layer not in named:
        raise ValueError(f"no module named {layer!r} in the model")
    target = named[layer]
    fn = _RULES[rule]
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    x = x.detach().to(device=device, dtype=dtype)
    if x.ndim != 4 or x.shape[0] != len(channels):
        raise ValueError(f"images must be (B, C, H, W) with B = {len(channels)} channels, got {tuple(x.shape)}")
    x = x.clone().requires_grad_(True)

    captured = {}

    def capture(mod, args, out):
        captured["out"] = out
        raise _Stop

    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)] if fn is not None else []
    inplace = [m.inplace for m in relus]
    was_training = model.training
    handles = []
    try:
        for m in relus:
            # An in-place ReLU would have overwritten its input (and its graph) before
            # our hook runs; the replacement needs the untouched pre-activation.
            m.inplace = False
            handles.append(m.register_forward_hook(lambda mod, args, out: fn.apply(args[0])))
        # Registered last so that, on a ReLU target, it sees the replaced output.
        handles.append(target.register_forward_hook(capture))
        model.eval()
        with torch.enable_grad():
            outs = []
            for xs in image_slices(model, x):  # one image at a time where the network needs it
                captured.clear()
                try:
                    model(xs)
                except _Stop:
                    pass
                if "out" not in captured:
                    raise ValueError(f"module {layer!r} never ran in a forward pass")
                outs.append(captured["out"])
            captured["out"] = join(outs)
            slots = torch.arange(len(channels), device=x.device)
            fmaps = captured["out"][slots, torch.as_tensor([int(c) for c in channels], device=x.device)]  # (B, h, w)
            if positions is None:
                flat = torch.nan_to_num(fmaps.detach(), nan=-float("inf")).flatten(1).argmax(dim=1)
                rows, cols = flat // fmaps.shape[2], flat % fmaps.shape[2]
            else:
                rows = torch.as_tensor([int(p[0]) for p in positions], device=x.device)
                cols = torch.as_tensor([int(p[1]) for p in positions], device=x.device)
            picked = fmaps[slots, rows, cols]
            if values is not None:
                values.extend(picked.detach().cpu().double().tolist())
            (grad,) = torch.autograd.grad(picked.sum(), x)
    finally:
        for hd in handles:
            hd.remove()
        for m, flag in zip(relus, inplace):
            m.inplace = flag
        model.train(was_training)
    return grad.detach().cpu().double().numpy()


def plain_gradient(model: nn.Module, layer: str, channel: int, image,
                   position: tuple[int, int] | None = None) -> np.ndarray:
    """d(unit)/d(input) for ``channel`` of ``layer`` at ``position`` (default: its spatial max).

    image: (3, H, W) or (1, 3, H, W). Returns (3, H, W) float64. Eval mode;
    the model is left unchanged and no parameter ``.grad`` is touched.
    """
    return _unit_gradient(model, layer, channel, image, "plain", position)


def deconvnet(model: nn.Module, layer: str, channel: int, image,
              position: tuple[int, int] | None = None) -> np.ndarray:
    """Deconvnet projection of a unit: the gradient with every nn.ReLU passing positive gradients.

    Same arguments and result as ``plain_gradient``; the forward mask of the
    ReLUs is ignored on the way back.
    """
    return _unit_gradient(model, layer, channel, image, "deconvnet", position)


def guided_backprop(model: nn.Module, layer: str, channel: int, image,
                    position: tuple[int, int] | None = None) -> np.ndarray:
    """Guided backprop of a unit: every nn.ReLU passes gradients that are positive
    where its forward input was positive.

    Same arguments and result as ``plain_gradient``.
    """
    return _unit_gradient(model, layer, channel, image, "guided", position)
