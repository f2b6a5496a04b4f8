"""Networks that take one image at a time.

An ONNX graph exported with its batch fixed at 1 often bakes that 1 into its reshapes, so a
batch of two gives one image's output, silently. reportgen marks such a network when it
loads it (``one_image_at_a_time``): its forward pass then runs image by image and joins the
outputs, and every reader that watches layers through forward hooks (which fire once per
call) feeds it ``image_slices`` and joins what it saw, so statistics, unit views and
gradients are those of the whole batch.
"""

from __future__ import annotations

import types

import torch
from torch import nn

MARK = "reportgen_one_image_at_a_time"


def one_image_at_a_time(model: nn.Module) -> bool:
    """Whether ``model`` was marked to take one image per forward pass."""
    return bool(getattr(model, MARK, False))


def image_slices(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """``x`` as the model takes it: ``[x]``, or one (1, ...) slice per image for a marked model."""
    if one_image_at_a_time(model) and x.ndim > 0 and x.shape[0] > 1:
        return [x[i:i + 1] for i in range(x.shape[0])]
    return [x]


def join(outputs: list):
    """Per-slice outputs (tensors, or tuples, lists and dicts of them) joined along the batch."""
    first = outputs[0]
    if len(outputs) == 1:
        return first
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)
    if isinstance(first, dict):
        return {k: join([o[k] for o in outputs]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(join([o[i] for o in outputs]) for i in range(len(first)))
    return first


def run_one_image_at_a_time(model: nn.Module) -> nn.Module:
    """Mark ``model`` and make its forward pass run image by image: a bound method ``forward``
    over the class's own, so the module keeps its class, names and submodules, tracers
    (torch.fx reads the class's forward) see the graph as it is, and a copy (copy.deepcopy)
    is bound to itself. Only calls with more than one image split."""
    model.forward = types.MethodType(_forward_image_by_image, model)
    setattr(model, MARK, True)
    return model


def _forward_image_by_image(self: nn.Module, x, *args, **kwargs):
    whole = type(self).forward
    if not isinstance(x, torch.Tensor) or x.ndim == 0 or x.shape[0] <= 1:  # fx proxies, batches of one
        return whole(self, x, *args, **kwargs)
    return join([whole(self, x[i:i + 1], *args, **kwargs) for i in range(x.shape[0])])


def output_tensors(out) -> list[torch.Tensor]:
    """A module's outputs as a flat list of tensors, in order: a tensor, or tuples, lists and
    dicts of them (the order onnxruntime lists a graph's outputs in)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in output_tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in output_tensors(o)]
    return []
