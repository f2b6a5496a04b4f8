"""torch.export programs (``.pt2`` files written by ``torch.export.save``) as modules every view reads.

An ExportedProgram holds a graph of ATen operations and the weights; ``ExportedProgram.module()``
runs it as one flat graph, in which no submodule is ever called, so forward hooks (activations,
unit views) would see nothing. reportgen unflattens it instead (``torch.export.unflatten``):
the module tree of the exported model comes back, with its names, and each module is called
as the original one was. Its leaves are still graph interpreters; each whose graph is a single
convolution, linear layer, batch norm, pooling or activation (what the original torch.nn layer
computed) is replaced by that torch.nn module, holding the same weights, so a layer has its
class, kernel size, stride and padding as before export. The rebuilt module is checked
against the program on the example input the file stores before it is used; where they
differ, the unflattened module is used as it is.

Layer names are the exported model's own ``named_modules()`` names (``backbone.layer1.0.conv1``).

Safety: ``torch.export.load`` unpickles parts of the archive (weights stored with pickle,
custom objects) without ``weights_only``. Unless the spec trusts the file (``trusted: true``),
reportgen refuses archives holding custom or opaque Python objects and loads the rest with
torch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` switch set, so every ``torch.load`` inside reads
tensors only, as checkpoints are read.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from reportgen.core.batching import output_tensors, run_one_image_at_a_time
from reportgen.core.errors import ModelLoadError


def load_exported(path: Path, location: str, where: str | None = None, trusted: bool = False) -> nn.Module:
    """The program in ``path`` as a module with the exported model's names, on the CPU."""
    head = f"{where}: " if where else ""
    what = f"{head}location '{location}': exported program {path}"
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{what} is not a torch.export archive (a .pt2 file from torch.export.save); "
                             "save the program with torch.export.save(torch.export.export(model, args), 'model.pt2')")
    if not trusted:
        objects = _python_objects(path)
        if objects:
            raise ModelLoadError(f"{what} holds Python objects ({objects}) that torch.export.load unpickles, which "
                                 "can run code; export the model without them, or set 'trusted: true' on the model "
                                 "if you trust the file")
    try:
        with _weights_only(not trusted):
            program = torch.export.load(str(path))
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(f"{what} stores weights as Python objects that safe loading (weights_only) refuses "
                             f"({_first(exc)}); save it again with torch.export.save, or set 'trusted: true' on "
                             "the model if you trust the file") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds on damaged or foreign archives
        raise ModelLoadError(f"{what} cannot be loaded by torch.export.load ({_first(exc)}); save it again with "
                             f"torch.export.save from torch {torch.__version__.split('+')[0]} or the version it "
                             "was exported with") from None
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in
              set(program.graph_signature.user_inputs)]
    if len(inputs) != 1:
        raise ModelLoadError(f"{what} takes {len(inputs)} inputs, not one image tensor; export it with one "
                             "input of shape (N, C, H, W)")
    val = inputs[0].meta.get("val")
    shape = tuple(val.shape) if val is not None else ()
    try:
        module = torch.export.unflatten(program)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{what}: torch.export.unflatten cannot rebuild its modules ({_first(exc)}); "
                             "export it with torch.export.export in strict or non-strict mode again") from None
    example = _example(program, shape)
    rebuild_layers(module, example)
    for m in module.modules():  # export's fake tensors in node metadata: nothing runs on them, and
        graph = getattr(m, "graph", None)  # copy.deepcopy (receptive fields) cannot copy them
        if isinstance(graph, torch.fx.Graph):
            for node in graph.nodes:
                node.meta.clear()
    batch = shape[0] if shape else None
    if isinstance(batch, int):
        if batch != 1:
            raise ModelLoadError(f"{what} was exported for a batch of exactly {batch}; export it with a batch of 1 "
                                 "or a dynamic one (dynamic_shapes={'x': {0: torch.export.Dim('batch')}})")
        run_one_image_at_a_time(module)  # the program's guards accept one image, no more
    module.reportgen_exported_input = shape
    return module


def _python_objects(path: Path) -> str:
    """The archive's members that torch.export.load reads with pickle outside weights_only."""
    from torch.export.pt2_archive import constants as c

    custom = getattr(c, "CUSTOM_OBJ_FILENAME_PREFIX", "custom_obj_")
    opaque = getattr(c, "OPAQUE_OBJ_FILENAME_PREFIX", "opaque_obj_")
    with zipfile.ZipFile(path) as zf:
        names = [Path(n).name for n in zf.namelist()]
    found = [n for n in names if n.startswith((custom, opaque))]
    return ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")


@contextmanager
def _weights_only(on: bool):
    """torch's own switch that makes every torch.load read tensors only, for the block."""
    if not on:
        yield
        return
    before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = before


def _example(program, shape: tuple) -> torch.Tensor | None:
    """An input the program accepts: its stored example, else a fixed random one of its shape."""
    args = getattr(program, "example_inputs", None)
    if args and args[0] and isinstance(args[0][0], torch.Tensor):
        return args[0][0].detach()
    if shape and all(isinstance(d, int) for d in shape):
        return torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return None


# -- leaves back to torch.nn modules ----------------------------------------------------------

_A = torch.ops.aten


def _conv(args, get):
    x, w, b, stride, padding, dilation, groups = _fill(args, [None, None, None, [1], [0], [1], 1])
    weight = get(w)
    rank = weight.ndim - 2
    cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[rank]
    m = cls(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=_n(stride, rank),
            padding=padding if isinstance(padding, str) else _n(padding, rank), dilation=_n(dilation, rank),
            groups=groups, bias=b is not None)
    return _params(m, weight=weight, bias=get(b))


def _conv_transpose(args, get):
    x, w, b, stride, padding, output_padding, groups, dilation = _fill(args, [None, None, None, [1], [0], [0], 1, [1]])
    weight = get(w)
    rank = weight.ndim - 2
    cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[rank]
    m = cls(weight.shape[0], weight.shape[1] * groups, tuple(weight.shape[2:]), stride=_n(stride, rank),
            padding=_n(padding, rank), output_padding=_n(output_padding, rank), groups=groups,
            bias=b is not None, dilation=_n(dilation, rank))
    return _params(m, weight=weight, bias=get(b))


def _linear(args, get):
    x, w, b = _fill(args, [None, None, None])
    weight = get(w)
    return _params(nn.Linear(weight.shape[1], weight.shape[0], bias=b is not None), weight=weight, bias=get(b))


def _batch_norm(args, get, ty: str):
    x, w, b, mean, var, training, momentum, eps = _fill(args, [None] * 5 + [False, 0.1, 1e-5])[:8]
    cls = {"BatchNorm1d": nn.BatchNorm1d, "BatchNorm3d": nn.BatchNorm3d}.get(ty.rsplit(".", 1)[-1], nn.BatchNorm2d)
    count = get(mean).shape[0] if mean is not None else get(w).shape[0]
    m = cls(count, eps=eps, momentum=momentum, affine=w is not None, track_running_stats=mean is not None)
    m = _params(m, weight=get(w), bias=get(b))
    if mean is not None:
        m.running_mean.copy_(get(mean))
        m.running_var.copy_(get(var))
    return m


def _max_pool(args, get):
    x, k, stride, padding, dilation, ceil = _fill(args, [None, None, [], [0], [1], False])
    return nn.MaxPool2d(_n(k, 2), stride=_n(stride, 2) if stride else None, padding=_n(padding, 2),
                        dilation=_n(dilation, 2), ceil_mode=ceil)


def _avg_pool(args, get):
    x, k, stride, padding, ceil, include, divisor = _fill(args, [None, None, [], [0], False, True, None])
    return nn.AvgPool2d(_n(k, 2), stride=_n(stride, 2) if stride else None, padding=_n(padding, 2), ceil_mode=ceil,
                        count_include_pad=include, divisor_override=divisor)


def _simple(cls):
    return lambda args, get: cls()


BUILDERS = {
    _A.conv2d.default: _conv, _A.conv1d.default: _conv, _A.conv3d.default: _conv,
    _A.conv2d.padding: _conv,
    _A.conv_transpose2d.input: _conv_transpose, _A.conv_transpose1d.default: _conv_transpose,
    _A.linear.default: _linear, _A.batch_norm.default: _batch_norm,
    _A.max_pool2d.default: _max_pool, _A.avg_pool2d.default: _avg_pool,
    _A.adaptive_avg_pool2d.default: lambda args, get: nn.AdaptiveAvgPool2d(tuple(args[1])),
    _A.relu.default: _simple(nn.ReLU), _A.relu_.default: _simple(nn.ReLU),
    _A.silu.default: _simple(nn.SiLU), _A.silu_.default: _simple(nn.SiLU),
    _A.sigmoid.default: _simple(nn.Sigmoid), _A.tanh.default: _simple(nn.Tanh),
    _A.hardswish.default: _simple(nn.Hardswish), _A.hardswish_.default: _simple(nn.Hardswish),
    _A.hardsigmoid.default: _simple(nn.Hardsigmoid),
    _A.gelu.default: lambda args, get: nn.GELU(),
    _A.leaky_relu.default: lambda args, get: nn.LeakyReLU(*_fill(args, [None, 0.01])[1:]),
    _A.leaky_relu_.default: lambda args, get: nn.LeakyReLU(*_fill(args, [None, 0.01])[1:]),
    _A.hardtanh.default: lambda args, get: (nn.ReLU6() if tuple(_fill(args, [None, -1.0, 1.0])[1:]) == (0.0, 6.0)
                                            else nn.Hardtanh(*_fill(args, [None, -1.0, 1.0])[1:])),
    _A.hardtanh_.default: lambda args, get: (nn.ReLU6() if tuple(_fill(args, [None, -1.0, 1.0])[1:]) == (0.0, 6.0)
                                             else nn.Hardtanh(*_fill(args, [None, -1.0, 1.0])[1:])),
}


def rebuild_layers(module: nn.Module, example: torch.Tensor | None) -> list[str]:
    """Replace each leaf of the unflattened ``module`` whose graph is one op of ``BUILDERS`` by
    the torch.nn module it was; returns the names replaced. With ``example``, the result must
    compute what the unflattened module does on it, else every replacement is undone."""
    from torch.export.unflatten import InterpreterModule

    before = None
    if example is not None:
        with torch.no_grad():
            before = output_tensors(module(example))
    done: list[tuple[nn.Module, str, nn.Module]] = []
    for name, leaf in list(module.named_modules()):
        if not name or not isinstance(leaf, InterpreterModule) or any(True for _ in leaf.children()):
            continue
        new = _rebuilt(leaf)
        if new is None:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        done.append((parent, child, leaf))
        setattr(parent, child, new)
    if done and before is not None:
        with torch.no_grad():
            after = output_tensors(module(example))
        same = len(after) == len(before) and all(
            a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5) for a, b in zip(after, before))
        if not same:
            for parent, child, leaf in done:
                setattr(parent, child, leaf)
            return []
    return [f"{p}.{c}" for p, c, _ in done]


def _rebuilt(leaf) -> nn.Module | None:
    calls = [n for n in leaf.graph.nodes if n.op == "call_function"]
    if len(calls) != 1 or calls[0].target not in BUILDERS:
        return None
    node = calls[0]
    attrs = {n.name: n.target for n in leaf.graph.nodes if n.op == "get_attr"}

    def get(arg):
        if arg is None:
            return None
        target = attrs.get(getattr(arg, "name", None))
        if target is None:
            raise LookupError(arg)
        return _attr(leaf, target).detach().clone()

    ty = str(getattr(leaf, "_ty", "") or "")
    try:
        if any(isinstance(a, torch.fx.Node) and a.name not in attrs for a in node.args[1:]):
            return None  # a weight computed in the graph, not a stored one
        new = _batch_norm(node.args, get, ty) if node.target == _A.batch_norm.default else BUILDERS[node.target](node.args, get)
    except (LookupError, TypeError, ValueError, RuntimeError):
        return None
    new.eval()
    return new



def _attr(m: nn.Module, target: str):
    for part in target.split("."):
        m = getattr(m, part)
    return m


def _fill(args, defaults: list) -> list:
    return list(args) + defaults[len(args):]


def _n(v, rank: int) -> tuple:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return tuple(v * rank if len(v) == 1 else v)


def _params(m: nn.Module, **tensors) -> nn.Module:
    with torch.no_grad():
        for k, t in tensors.items():
            if t is not None:
                getattr(m, k).copy_(t)
    return m


def _first(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
