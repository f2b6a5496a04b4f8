"""Reading what a network computes: forward hooks that always clean up.

Every hook and mode change lives in a context manager (try/finally), so an
exception in the middle of a forward pass leaves the model exactly as it was:
no hook attached, ``training`` flags restored.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def inference(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no autograd for the block; every module's flag restored after."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for m, flag in flags.items():
            m.training = flag


class _StopForward(Exception):
    """Raised from a hook once every requested layer has produced its output."""


class LayerRecorder:
    """Collects the outputs of named modules during a forward pass.

    Use as a context manager: hooks are attached on entry and removed on exit,
    whatever happens in between. ``run(x)`` returns ``{name: output}`` and stops
    the forward pass as soon as the last requested layer has fired, so layers
    early in a deep network cost only the work up to them.

    A module called several times in one forward (weight sharing) is recorded
    at its first call.
    """

    def __init__(self, model: nn.Module, names: list[str], stop_early: bool = True):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise KeyError(f"no such layers: {missing}")
        self.model = model
        self.names = list(dict.fromkeys(names))
        self.stop_early = stop_early
        self._modules = modules
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._out: dict[str, torch.Tensor] = {}

    def __enter__(self) -> "LayerRecorder":
        try:
            for name in self.names:
                self._handles.append(self._modules[name].register_forward_hook(self._hook(name)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if name in self._out:
                return
            if isinstance(output, (tuple, list)):
                output = output[0]
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer '{name}' returned {type(output).__name__}, not a tensor")
            self._out[name] = output.detach()
            if self.stop_early and len(self._out) == len(self.names):
                raise _StopForward

        return hook

    def run(self, x: torch.Tensor, require_all: bool = True) -> dict[str, torch.Tensor]:
        """One forward pass of ``x``; the requested layers' outputs by name.

        With ``require_all=False`` layers that never ran are simply absent, and an
        exception raised by the model after some layers fired is swallowed (used to
        list shapes of whatever a model computes on a dummy input).
        """
        if not self._handles:
            raise RuntimeError("LayerRecorder.run() must be called inside its 'with' block")
        self._out = {}
        try:
            self.model(x)
        except _StopForward:
            pass
        except Exception:
            if require_all:
                raise
        if not require_all:
            return dict(self._out)
        missing = [n for n in self.names if n not in self._out]
        if missing:
            raise RuntimeError(f"layers never ran in the forward pass: {missing}")
        return dict(self._out)


def relu_follows(model: nn.Module, name: str) -> bool:
    """True when layer ``name`` is a ReLU or the next module registered beside it is one.

    This reads the module tree only: a ReLU applied with ``F.relu`` inside
    ``forward`` is invisible here, which is why the spec can say ``relu: yes``.
    """
    modules = dict(model.named_modules())
    if isinstance(modules[name], (nn.ReLU, nn.ReLU6)):
        return True
    parent_name, _, child = name.rpartition(".")
    siblings = list(modules[parent_name].named_children())
    names = [n for n, _ in siblings]
    i = names.index(child)
    return i + 1 < len(siblings) and isinstance(siblings[i + 1][1], (nn.ReLU, nn.ReLU6))


@contextmanager
def probing(model: nn.Module, names: list[str]) -> Iterator[dict[str, object]]:
    """Record the first output of each named module, whatever its type, for a dry run.

    Unlike LayerRecorder the hooks never raise: a layer that returns None or a dict is
    recorded as such (so the caller can say which layer did it) and the forward pass
    goes on. Yields the dict that the hooks fill; hooks are removed on exit.
    """
    modules = dict(model.named_modules())
    seen: dict[str, object] = {}
    handles = []

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if name not in seen:
                first = output[0] if isinstance(output, (tuple, list)) and output else output
                seen[name] = first.detach() if isinstance(first, torch.Tensor) else first
        return hook

    try:
        for name in dict.fromkeys(names):
            handles.append(modules[name].register_forward_hook(hook_for(name)))
        yield seen
    finally:
        for h in handles:
            h.remove()
