"""Causal importance of units: zero one channel, measure how much each output changes.

Ablating unit k of a layer sets channel k of the layer's output to zero for the rest
of the forward pass (a forward hook; the hook is removed on exit, also after an
exception). The effect on an output head is its relative L2 change,
||y_ablated - y|| / ||y|| per image, averaged over the images (images where the head's
output is all zero are left out). A forward that returns a tuple, list or dict of
tensors has one head per element; a plain tensor is the head "output".

Many units are ablated in one forward pass, as batch slots: the N images are repeated once
per unit and each copy zeroes its own unit; every pass also carries the images unablated
(block 0), the baseline each ablation of that pass is compared with, so that a unit that
changes nothing comes out as exactly 0 whatever a kernel's rounding does with the batch
size. How many units share a pass (``units_per_pass``) follows from a memory budget
(``budget`` bytes; ``PASS_BYTES`` per device type) and the widest activation one image
makes in the network (measured on the baseline pass): a deterministic function of the
shapes, the dtype and the device type only, never of the free memory or the thread count,
so a report's numbers are the same wherever it is built. (A kernel may round one image's
output differently in batches of different sizes, so the last bits of an effect may depend
on that chunking; the effects equal one forward per unit to float tolerance.)

A model that mixes the images of a batch in eval mode (a BatchNorm without running
statistics normalises with the batch's own) would see every ablation of a pass at once:
there each unit, and the baseline, get a forward pass of their own N images.

When torch.fx can trace the model and the layer is called once, only the part of the
network after the layer is run again (the layer's output is computed once and fed to that
*tail*); otherwise every pass runs the whole model with the zeroing hook.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from scipy import stats
from torch import nn

from reportgen.core.batching import one_image_at_a_time, output_tensors
from reportgen.core.determinism import one_thread
from reportgen.run.hooks import inference


@dataclass(frozen=True)
class Ablation:
    heads: tuple[str, ...]  # H output names
    units: np.ndarray  # (U,) int: the channels ablated
    effect: np.ndarray  # (U, H) mean relative L2 change of each head's output

    @property
    def overall(self) -> np.ndarray:
        """(U,) the mean over heads: relative changes are scale-free, so heads weigh alike."""
        return self.effect.mean(axis=1) if self.effect.size else np.zeros(len(self.units))


def output_heads(out: object) -> dict[str, torch.Tensor]:
    """A model's output as named tensors: dict keys, tuple/list positions, or 'output'."""
    if isinstance(out, torch.Tensor):
        return {"output": out}
    if isinstance(out, dict):
        items = [(str(k), v) for k, v in out.items()]
    elif isinstance(out, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(out)]
    else:
        items = []
    heads = {k: v for k, v in items if isinstance(v, torch.Tensor) and v.is_floating_point()}
    if not heads:
        raise TypeError(f"the model returned {type(out).__name__} without floating-point tensors to compare")
    return heads


@contextmanager
def zeroed(model: nn.Module, layer: str, channels: list[int] | torch.Tensor, group: int) -> Iterator[None]:
    """While active, the output of module ``layer`` has channel ``channels[j]`` set to zero in
    samples ``j * group`` to ``(j + 1) * group - 1`` (one ablated unit per block of ``group``
    samples); a channel of -1 ablates nothing in its block."""
    module = dict(model.named_modules())[layer]
    chans = torch.as_tensor(channels, dtype=torch.long)
    total = len(chans) * group
    seen = [0]  # samples already through the layer: a network that takes one image at a time
    # (reportgen.core.batching) calls it once per image, each call a slice of the batch

    def hook(mod: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"layer '{layer}' returned {type(output).__name__}, not a tensor")
        start = seen[0] % total if output.shape[0] < total else 0
        seen[0] = start + output.shape[0]
        keep = torch.ones(output.shape[:2], dtype=output.dtype, device=output.device)
        cols = chans.to(output.device).repeat_interleave(group)[start:start + output.shape[0]]
        rows = torch.arange(len(cols), device=output.device)
        live = cols >= 0
        keep[rows[live], cols[live]] = 0
        return output * keep.reshape(*keep.shape, *([1] * (output.ndim - 2)))

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def tail_after(model: nn.Module, layer: str):
    """The network after ``layer``: a GraphModule ``f(x, layer_output)`` computing the model's
    output from the layer's output (and the input, where a skip connection reads it), or None
    when torch.fx cannot trace the model or the layer is called more than once."""
    import torch.fx

    class _Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return qualname == layer or super().is_leaf_module(m, qualname)

    if isinstance(model, torch.jit.ScriptModule) or one_image_at_a_time(model):
        return None  # a traced tail would run a whole batch through a graph that takes one image
    try:
        graph = _Tracer().trace(model)
    except Exception:  # noqa: BLE001 - data-dependent control flow and the like: ablate with hooks
        return None
    calls = [nd for nd in graph.nodes if nd.op == "call_module" and nd.target == layer]
    inputs = [nd for nd in graph.nodes if nd.op == "placeholder"]
    if len(calls) != 1 or len(inputs) != 1:
        return None
    with graph.inserting_after(inputs[0]):
        fed = graph.placeholder("layer_output")
    calls[0].replace_all_uses_with(fed)
    graph.erase_node(calls[0])
    tail = torch.fx.GraphModule(model, graph)
    tail.graph.eliminate_dead_code()  # drops the layers before: they are what the tail saves
    tail.recompile()
    return tail


PASS_BYTES = {"cpu": 64 << 20, "cuda": 512 << 20}  # activations one ablation pass may hold, per device type
OTHER_DEVICES_BYTES = 64 << 20


def units_per_pass(images: int, image_bytes: int, budget: int) -> int:
    """Units ablated in one pass: the copies of ``images`` images (one per unit, one for the
    baseline) whose widest activation, ``image_bytes`` per image, fits ``budget``; at least 1."""
    return max(1, budget // max(1, images * image_bytes) - 1)


def mixes_batch(model: nn.Module) -> bool:
    """Whether an eval-mode forward lets one image change another's output: a BatchNorm that
    keeps no running statistics normalises with the statistics of the batch it is given."""
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    return any(isinstance(m, norms) and (m.running_mean is None or m.running_var is None) for m in model.modules())


@contextmanager
def widest_activation(model: nn.Module) -> Iterator[list[int]]:
    """While active, ``[bytes]`` holds the largest per-image size of any tensor a module of
    ``model`` returned (the first axis is the batch); hooks removed on exit."""
    widest = [0]

    def hook(mod: nn.Module, inputs: object, output: object) -> None:
        for t in output_tensors(output):
            if t.ndim and t.shape[0]:
                widest[0] = max(widest[0], t.numel() // t.shape[0] * t.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        yield widest
    finally:
        for h in handles:
            h.remove()


def ablate_units(model: nn.Module, layer: str, x: torch.Tensor, units: list[int],
                 budget: int | None = None) -> Ablation:
    """Effect of zeroing each of ``units`` of ``layer`` on every output head.

    x: (N, C, H, W) the model's input images on the model's device. budget: bytes of
    activations one pass may hold (default ``PASS_BYTES`` of the device type); it sets how
    many units share a forward pass (``units_per_pass``).
    """
    from reportgen.run.hooks import LayerRecorder

    n = x.shape[0]
    tail = tail_after(model, layer)
    if budget is None:
        budget = PASS_BYTES.get(x.device.type, OTHER_DEVICES_BYTES)
    with inference(model), one_thread():
        mid = None
        if tail is not None:
            with LayerRecorder(model, [layer]) as rec:
                mid = rec.run(x)[layer]
        with widest_activation(model) as widest:
            base_out = output_heads(model(x) if tail is None else tail(x, mid))
        base = {k: v.float() for k, v in base_out.items()}
        heads = tuple(base)
        image_bytes = max([widest[0], _per_image_bytes(x), _per_image_bytes(mid)]
                          + [_per_image_bytes(v) for v in base_out.values()])
        # Norms in float64 numpy, not torch: a torch reduction's order (and so its last bits)
        # depends on the thread count, and the report must not depend on the executor.
        norms = {k: _norms(v.reshape(n, -1)) for k, v in base.items()}
        effect = np.zeros((len(units), len(heads)))
        mixing = mixes_batch(model)
        per_pass = 1 if mixing else units_per_pass(n, image_bytes, budget)

        def run(chunk: list[int]) -> dict[str, torch.Tensor]:
            """Heads' outputs of one pass: block j has unit chunk[j] zeroed (-1: none)."""
            xs = x.repeat(len(chunk), *([1] * (x.ndim - 1)))
            if tail is not None:
                ms = mid.repeat(len(chunk), *([1] * (mid.ndim - 1)))
                for j, u in enumerate(chunk):
                    if u >= 0:
                        ms[j * n:(j + 1) * n, u] = 0
                return output_heads(tail(xs, ms))
            with zeroed(model, layer, chunk, group=n):
                return output_heads(model(xs))

        for start in range(0, len(units), per_pass):
            part = list(units[start:start + per_pass])
            # mixing: the baseline is the unablated pass above, each unit gets a pass alone
            blocks = part if mixing else [-1] + part
            out = run(blocks)
            for h, name in enumerate(heads):
                y = out[name].float().reshape(len(blocks), n, -1)
                ref = base[name].reshape(1, n, -1) if mixing else y[:1]
                diff = _norms(y[len(blocks) - len(part):] - ref)  # (units in the pass, N)
                ok = norms[name] > 0
                effect[start:start + len(part), h] = (diff[:, ok] / norms[name][ok]).mean(axis=1) if ok.any() else np.nan
    return Ablation(heads=heads, units=np.asarray(units, dtype=np.int64), effect=effect)


def _per_image_bytes(t: torch.Tensor | None) -> int:
    return t.numel() // t.shape[0] * t.element_size() if t is not None and t.ndim and t.shape[0] else 0


def _norms(t: torch.Tensor) -> np.ndarray:
    """L2 norms over the last axis, in float64 (numpy's summation order is fixed)."""
    a = t.detach().to("cpu", torch.float64).numpy()
    return np.sqrt(np.einsum("...i,...i->...", a, a))


def ranking(effect: np.ndarray) -> np.ndarray:
    """Unit positions from most to least important (ties: lower index first)."""
    return np.argsort(-np.nan_to_num(np.asarray(effect, dtype=np.float64), nan=-np.inf), kind="stable")


def relate_to_flags(effect: np.ndarray, flagged: np.ndarray, share: float = 0.25) -> dict:
    """Are the flagged units (dead, never active, duplicates) the unimportant ones?

    effect: (U,) importance; flagged: (U,) bool. The least important ``share`` of the
    units (at least one, extended to every unit tied with its most important member, so
    that units of equal effect are never split) is compared with the flags: how many
    flagged units it holds, how many a random group of that size would hold
    (hypergeometric mean), the chance of holding at least that many (hypergeometric tail),
    and the Spearman correlation between effect and flag (negative: flagged units matter
    less). ``no_effect``: units whose ablation changes nothing (effect exactly 0). NaN where
    undefined.
    """
    effect = np.asarray(effect, dtype=np.float64)
    flagged = np.asarray(flagged, dtype=bool)
    u = len(effect)
    finite = np.isfinite(effect)
    k = int(flagged.sum())
    low = np.zeros(u, dtype=bool)
    if finite.any():
        cutoff = np.sort(effect[finite])[min(int(finite.sum()), max(1, math.ceil(share * u))) - 1]
        low = finite & (effect <= cutoff)
    n_low, hits = int(low.sum()), int((flagged & low).sum())
    p = float(stats.hypergeom.sf(hits - 1, u, k, n_low)) if k and u else math.nan
    rho = math.nan
    if 0 < k < u and finite.any() and effect[finite].max() > effect[finite].min():
        rho = float(stats.spearmanr(effect, flagged.astype(float), nan_policy="omit").statistic)
    none = finite & (effect == 0)
    return {"units": u, "flagged": k, "least_important": n_low, "flagged_in_least": hits,
            "expected_in_least": (k * n_low / u) if u else math.nan, "p_value": p, "spearman": rho,
            "no_effect": int(none.sum()), "flagged_no_effect": int((none & flagged).sum())}
