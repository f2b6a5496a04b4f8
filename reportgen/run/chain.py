"""Which weighted layers feed each inspected layer: the channel chain used for alignment.

Comparing layer l+1 of two networks is only meaningful after its input channels are put
in the same order, which needs the matching of the layer that produced those channels
(docs/reference/methods.md#alignment-through-the-network). This module traces the model
once with ``torch.fx`` and records, per inspected layer, the chain of weighted layers
(convolutions and dense layers) from the network input down to it, with each link's
weights, bias and the BatchNorm that follows it: plain arrays, cached with the layer.

A link's input may come from its producer only through operations that keep each
channel separate (activations, pooling, dropout, BatchNorm, spatial means, flattening).
Anything else on the way (a residual add, a concatenation, a grouped convolution, a
module called twice, a model fx cannot trace) ends the chain: the layer is then compared
in its own input-channel order, with a note saying why.
"""

from __future__ import annotations

import torch
from torch import nn

MAX_CHAIN_VALUES = 1 << 23  # float32 weights kept per layer's chain (32 MiB); beyond it: no alignment

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                 nn.Hardtanh, nn.PReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
                 nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                 nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Dropout, nn.Dropout1d,
                 nn.Dropout2d, nn.Dropout3d, nn.Identity, nn.Flatten)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_PASS_FUNCTIONS = {"relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "sigmoid", "tanh", "hardswish",
                   "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
                   "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool2d",
                   "dropout", "dropout2d", "flatten", "contiguous", "view", "reshape"}
_REDUCTIONS = {"mean", "amax", "sum", "max", "amin", "min"}  # channel-preserving unless over dim 1


def trace_links(model: nn.Module) -> tuple[dict[str, dict], str | None]:
    """Per weighted module, where its input channels come from.

    Returns ({name: {"producer": weighted module name or None for the network input,
    "note": why the link is not a chain (None when it is), "bn": name of a BatchNorm
    applied right after the module, or None}}, a note when the model cannot be traced).
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # fx refuses data-dependent control flow, custom tracers, ...
        return {}, f"the model could not be traced with torch.fx ({type(exc).__name__})"
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    links: dict[str, dict] = {}
    for node in graph.nodes:
        m = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(m, _WEIGHTED):
            continue
        producer, note = _producer(node.args[0] if node.args else None, modules)
        if calls[node.target] > 1:
            note = f"`{node.target}` is called {calls[node.target]} times"
        if getattr(m, "groups", 1) != 1:
            note = f"`{node.target}` is a grouped convolution"
        users = list(node.users)
        bn = (users[0].target if len(users) == 1 and users[0].op == "call_module"
              and isinstance(modules.get(users[0].target), _BATCHNORM) else None)
        links[node.target] = {"producer": producer, "note": note, "bn": bn}
    return links, None


def _producer(node, modules: dict[str, nn.Module]) -> tuple[str | None, str | None]:
    """Walk back through channel-preserving operations to the weighted module (or input)."""
    while node is not None:
        if node.op == "placeholder":
            return None, None
        if node.op == "call_module":
            m = modules.get(node.target)
            if isinstance(m, _WEIGHTED):
                return node.target, None
            if not isinstance(m, _PASS_MODULES + _BATCHNORM):
                return None, f"`{node.target}` ({type(m).__name__}) may mix channels"
        elif node.op in ("call_function", "call_method"):
            name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
            if name in _REDUCTIONS:
                dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
                dims = dims if isinstance(dims, (tuple, list)) else (dims,)
                # dim 1 is the channel axis (N, C, ...); -1 and -2 are spatial in (N, C, H, W)
                if any(d is None or d == 1 or (isinstance(d, int) and d <= -3) for d in dims):
                    return None, f"`{name}` over the channel axis"
            elif name not in _PASS_FUNCTIONS:
                return None, f"channels are joined by `{name}`" if name in ("add", "cat", "iadd", "mul") else \
                    f"`{name}` on the way may mix channels"
            if not node.args or not hasattr(node.args[0], "op"):
                return None, f"`{name}` has no tensor input"
        else:
            return None, f"unsupported graph node `{node.op}`"
        node = node.args[0]
    return None, "no input found"


def layer_chains(model: nn.Module, names: list[str]) -> dict[str, tuple[list[dict] | None, str | None]]:
    """For each name: (links from the network input to that layer, or None; a note why not).

    A link: {"name", "weight" (N, ...) float32, "bias" (N,) or None, "bn" {weight, bias,
    running_mean, running_var} arrays or None, "block": how many input features of this
    layer come from each producer channel (1 for a conv; H*W for a dense layer after a
    flatten)}. The first link reads the network input.
    """
    links, note = trace_links(model)
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        if note is not None or name not in links:
            out[name] = (None, note or "not a convolution or dense layer the tracer saw")
            continue
        path, why, cur = [], None, name
        while cur is not None:
            link = links[cur]
            if link["note"]:
                why = f"the channels feeding `{cur}` are not a chain: {link['note']}"
                break
            path.append(cur)
            cur = link["producer"]
        if why:
            out[name] = (None, why)
            continue
        chain = [_record(modules, n, links[n]["bn"]) for n in reversed(path)]
        for prev, link in zip(chain, chain[1:]):
            n_prev = prev["weight"].shape[0]
            n_in = link["weight"].shape[1]
            if n_in % n_prev:
                why = f"`{link['name']}` has {n_in} inputs for {n_prev} channels of `{prev['name']}`"
                break
            link["block"] = n_in // n_prev
        if why is None and sum(link["weight"].size for link in chain) > MAX_CHAIN_VALUES:
            why = "the weights feeding it are too many to keep for alignment"
        out[name] = (None, why) if why else (chain, None)
    return out


def _record(modules: dict[str, nn.Module], name: str, bn_name: str | None) -> dict:
    m = modules[name]

    def arr(t):
        return None if t is None else t.detach().float().cpu().numpy()

    bn = modules.get(bn_name) if bn_name else None
    return {"name": name, "weight": arr(m.weight), "bias": arr(getattr(m, "bias", None)), "block": 1,
            "bn": None if bn is None else {k: arr(getattr(bn, k, None)) for k in
                                           ("weight", "bias", "running_mean", "running_var")}}
