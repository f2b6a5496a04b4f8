"""A model run only as far as one layer, with the autograd graph kept: the forward pass
of activation maximisation (reportgen.optim.maximise) and of receptive fields
(reportgen.optim.receptive)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from reportgen.core.batching import image_slices, join


class _StopForward(Exception):
    """Raised by the target layer's hook so the network runs no further."""


class LayerNotReached(RuntimeError):
    """The forward pass finished without calling the target layer."""


@contextmanager
def truncated_forward(model: nn.Module, layer: str) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """Run ``model`` only up to ``layer``, keeping the autograd graph.

    Yields ``run(x) -> output of layer`` (with grad, first element if the layer
    returns a tuple). For the duration the model is in eval mode and its
    parameters do not require grad (only input gradients are wanted, and
    weight gradients would cost as much again); on exit, whatever happened, the
    hook is removed and every module's ``training`` and every parameter's
    ``requires_grad`` are restored. A module called several times in one
    forward (weight sharing) is read at its first call.
    """
    modules = dict(model.named_modules())
    if layer not in modules:
        raise KeyError(f"no such layer: {layer!r}")
    training = {m: m.training for m in model.modules()}
    requires = {p: p.requires_grad for p in model.parameters()}
    store: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, (tuple, list)):
            output = output[0]
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"layer {layer!r} returned {type(output).__name__}, not a tensor")
        store["out"] = output
        raise _StopForward

    def run_one(x: torch.Tensor) -> torch.Tensor:
        store.clear()
        with torch.enable_grad():
            try:
                model(x)
            except _StopForward:
                pass
        if "out" not in store:
            raise LayerNotReached(f"layer {layer!r} never ran in the forward pass")
        return store.pop("out")

    def run(x: torch.Tensor) -> torch.Tensor:
        # A network that takes one image at a time (reportgen.core.batching) runs image by image.
        return join([run_one(xs) for xs in image_slices(model, x)])

    handle = None
    try:
        model.eval()
        for p in requires:
            p.requires_grad_(False)
        handle = modules[layer].register_forward_hook(hook)
        yield run
    finally:
        if handle is not None:
            handle.remove()
        for m, flag in training.items():
            m.training = flag
        for p, flag in requires.items():
            p.requires_grad_(flag)
