"""Weights and networks in formats other than a plain torch state_dict.

- ``.safetensors`` checkpoints: tensors only, read without unpickling anything.
- Prefixed state_dicts (Lightning's ``model.``, DataParallel's ``module.``,
  ``torch.compile``'s ``_orig_mod.``, ...): matched to the architecture's own names.
- ONNX graphs, made convertible (reportgen.load.onnxgraph) and converted to torch modules by
  the installed onnx2torch (``pip install "reportgen[onnx]"`` adds onnx, onnxslim and
  onnxruntime; ``reportgen install-onnx`` adds onnx2torch without its torchvision
  requirement, which it imports here with a stand-in). Their module names are the ONNX node names
  (``model/0/conv/Conv``); pages and pictures use names.slug of them.

Every failure is a ModelLoadError of one line that says how to fix it.
"""

from __future__ import annotations

import struct
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from reportgen.core.batching import run_one_image_at_a_time
from reportgen.core.errors import ModelLoadError


def _why(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# -- safetensors --------------------------------------------------------------------


def is_safetensors(path: Path) -> bool:
    """By suffix, or by the format's header: an 8-byte little-endian length, then JSON."""
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 0 < n <= size - 8


def read_safetensors(path: Path, where: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, by name, on the CPU."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ModelLoadError(f"{where} is a safetensors file; install the 'safetensors' package "
                             "(pip install safetensors)") from None
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError on damaged files
        raise ModelLoadError(f"{where} is not a readable safetensors file ({_why(exc)}); "
                             "save it again with safetensors.torch.save_file") from None
    if not state:
        raise ModelLoadError(f"{where} holds no tensors")
    return state


# -- prefixes -----------------------------------------------------------------------


def _prefixes(keys, depth: int = 3) -> list[str]:
    """Leading dotted segments shared by keys: 'model.', 'model.net.', ... (most common first)."""
    counts: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        for d in range(1, min(depth, len(parts) - 1) + 1):
            p = ".".join(parts[:d]) + "."
            counts[p] = counts.get(p, 0) + 1
    return sorted(counts, key=lambda p: (-counts[p], p))


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def fit_prefix(state: dict[str, torch.Tensor], module: nn.Module, prefix: str | None,
               location: str, path: Path) -> dict[str, torch.Tensor]:
    """The entries of ``state`` that belong to ``module``, with their prefix removed.

    With ``prefix`` (the spec's ``checkpoint_prefix``) only the keys that start with it
    are kept. Without one, a state whose names already match is returned as it is;
    otherwise the prefix whose stripped keys are exactly the module's own names is
    removed (entries outside it, such as a Lightning module's loss weights, are
    dropped). No match leaves ``state`` as it is for apply_state_dict to explain.
    """
    where = f"location '{location}': checkpoint {path}"
    if prefix:
        sub = _strip(state, prefix)
        if not sub:
            sample = ", ".join(list(state)[:4])
            raise ModelLoadError(f"{where}: no weight name starts with checkpoint_prefix '{prefix}' "
                                 f"(names look like: {sample}); fix 'checkpoint_prefix'")
        return sub
    own = set(module.state_dict())
    if not own or set(state) == own:
        return state
    exact = [p for p in _prefixes(state) if set(_strip(state, p)) == own]
    if len(exact) > 1:
        raise ModelLoadError(f"{where}: the weights fit the architecture under several prefixes "
                             f"({', '.join(exact[:4])}); name one with 'checkpoint_prefix'")
    return _strip(state, exact[0]) if exact else state


# -- ONNX ---------------------------------------------------------------------------


# onnx2torch's own requirement on torchvision is left out (its wheels from the package index
# replace a CPU build of torch with a CUDA one): `reportgen install-onnx` installs it so.
ONNX2TORCH = "onnx2torch>=1.5,<2"
ONNX_EXTRA = 'ONNX models need the optional extra: pip install "reportgen[onnx]" (onnx, onnxslim, onnxruntime)'
INSTALL_CONVERTER = ("run `reportgen install-onnx` (installs the converter without its torchvision "
                     "requirement)")
_TORCHVISION_OPS = ("NonMaxSuppression", "RoiAlign")  # the only converters of onnx2torch that use it


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def onnx_available() -> bool:
    """Whether ONNX models can be loaded: the optional extra (onnx, onnxslim) and the converter
    (onnx2torch, installed by ``reportgen install-onnx``)."""
    return all(_installed(m) for m in ("onnx", "onnxslim", "onnx2torch"))


def _torchvision_installed() -> bool:
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"] is not None  # None: a caller's way of saying it is absent
    return _installed("torchvision")


@contextmanager
def torchvision_optional() -> Iterator[None]:
    """Let onnx2torch import without torchvision, which only its NonMaxSuppression and
    RoiAlign converters use: a stand-in whose functions fail in one line, removed afterwards
    so nothing else mistakes it for the real package. (load_onnx refuses graphs with those
    operations before converting them when torchvision is absent.)"""
    if _torchvision_installed():
        yield
        return

    def missing(*_a, **_k):
        raise ModelLoadError("this ONNX graph uses NonMaxSuppression or RoiAlign, which need torchvision; "
                             "install the torchvision build that matches your torch")

    stub = types.ModuleType("torchvision")
    stub.ops = types.ModuleType("torchvision.ops")  # type: ignore[attr-defined]
    for name in ("nms", "roi_align", "box_convert", "batched_nms"):
        setattr(stub.ops, name, missing)  # type: ignore[attr-defined]
    before = {name: sys.modules.get(name, stub) for name in ("torchvision", "torchvision.ops")}
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = stub, stub.ops  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for name, old in before.items():
            if sys.modules.get(name) in (stub, stub.ops):  # type: ignore[attr-defined]
                if old is stub:
                    del sys.modules[name]
                else:
                    sys.modules[name] = old  # None: a caller's way of saying it is absent


def import_onnx2torch(what: str):
    """The installed onnx2torch package, imported without torchvision; a one-line
    ModelLoadError (starting with ``what``) when it is absent or does not import."""
    if not _installed("onnx2torch"):
        raise ModelLoadError(f"{what}: the ONNX converter (onnx2torch) is not installed; {INSTALL_CONVERTER}")
    try:
        with torchvision_optional():
            import onnx2torch
            from onnx2torch.node_converters import get_converter  # noqa: F401 - imported with the stand-in
    except Exception as exc:  # noqa: BLE001 - an onnx2torch that does not fit this onnx or torch
        raise ModelLoadError(f"{what}: the installed onnx2torch does not import ({_why(exc)}); "
                             f"{INSTALL_CONVERTER.replace('installs', 'reinstalls')}") from None
    return onnx2torch


def load_onnx(path: Path | None, location: str, where: str | None = None,
              input_size: tuple[int, int] | None = None) -> nn.Module:
    """An ONNX file as a torch module (an fx GraphModule whose submodules carry the
    ONNX node names), in float32 on the CPU.

    The graph is first made convertible (reportgen.load.onnxgraph.normalise: opset, Constant
    and Identity nodes, SAME padding), then checked node by node against onnx2torch's converters,
    so a node none converts is named before converting. A graph that fixes its batch at 1 is
    marked to take one image at a time (reportgen.core.batching). The module's
    ``reportgen_onnx`` holds the GraphFacts. ``where``: the spec's ``file:line: key`` of the
    file, for errors.
    """
    head = f"{where}: " if where else ""
    what = f"{head}location '{location}': ONNX file {path}"
    if path is None:
        raise ModelLoadError(f"{what}: no ONNX file given")
    if not (_installed("onnx") and _installed("onnxslim")):
        then = "" if _installed("onnx2torch") else f"; then {INSTALL_CONVERTER}"
        raise ModelLoadError(f"{what}: {ONNX_EXTRA}{then}")
    import onnx

    from reportgen.load import onnxgraph

    onnx2torch = import_onnx2torch(what)
    try:
        graph = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelLoadError(f"{what} is not a readable ONNX model ({_why(exc)})") from None
    try:
        graph, facts = onnxgraph.normalise(graph, input_size)
    except onnxgraph.GraphError as exc:
        raise ModelLoadError(f"{what}: {exc}; {exc.fix}") from None
    problem = _first_unconvertible(graph, facts)
    if problem:
        raise ModelLoadError(f"{what}: {problem}")
    try:
        module = onnx2torch.convert(graph)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - a converter's own refusal, or the graph building
        node = _node_being_converted(exc)
        if node is not None:
            failure = _conversion_failure(node, _opset(graph, node.domain), _why(exc), facts)
            raise ModelLoadError(f"{what}: {failure}") from None
        raise ModelLoadError(f"{what}: onnx2torch cannot convert it ({_why(exc)}); export it at "
                             f"opset {onnxgraph.CONVERTER_OPSET} (opset_version=17)") from None
    if facts.fixed_batch == 1:
        run_one_image_at_a_time(module)
    module.reportgen_onnx = facts
    return module


def _opset(graph, domain: str) -> int | None:
    return next((o.version for o in graph.opset_import if o.domain == domain), None)


def _converts(op_type: str, domain: str, opset: int) -> bool:
    """Whether onnx2torch has a converter for ``op_type`` at ``opset`` (its registry picks the
    one registered for the operator's version in force at that opset)."""
    from onnx2torch.node_converters import get_converter

    try:
        get_converter(operation_type=op_type, version=opset, domain=domain)
    except NotImplementedError:
        return False
    return True


def _first_unconvertible(graph, facts) -> str | None:
    """One line about the first node onnx2torch cannot convert (no converter for its operation
    at the graph's opset, or one that needs a torchvision that is absent), or None."""
    from onnx2torch.onnx_graph import OnnxGraph

    from reportgen.load.onnxgraph import CONVERTER_OPSET, OLDEST_OPSET

    torchvision = _torchvision_installed()
    for node in OnnxGraph(graph.graph).nodes.values():  # named as the converted modules will be
        opset = _opset(graph, node.domain)
        if opset is None:
            return (f"node '{node.unique_name}' ({node.operation_type}) is of the domain '{node.domain}', "
                    "which the graph's opset_import leaves out; export the model without that operation")
        if not _converts(node.operation_type, node.domain, opset):
            where = [v for v in range(OLDEST_OPSET, CONVERTER_OPSET + 1)
                     if _converts(node.operation_type, node.domain, v)]
            if where:
                span = f"{where[0]} to {where[-1]}" if where == list(range(where[0], where[-1] + 1)) else \
                    ", ".join(map(str, where))
                why = (f"onnx2torch has no converter for {node.operation_type} at opset {opset} "
                       f"(it converts it at opsets {span})")
                fix = f"export the model at opset {where[-1]} (opset_version={where[-1]}) or without that operation"
            else:
                why = f"onnx2torch has no converter for {node.operation_type} at any opset"
                fix = "export the model without that operation"
            return _conversion_failure(node, opset, why, facts, fix)
        if node.operation_type in _TORCHVISION_OPS and node.domain in ("", "ai.onnx") and not torchvision:
            return _conversion_failure(node, opset, "onnx2torch runs it with torchvision, which is not installed",
                                       facts, "install the torchvision build that matches your torch")
    return None


def _node_being_converted(exc: BaseException):
    """The onnx2torch node whose converter raised ``exc`` (read from the frame of
    onnx2torch.convert in the traceback), or None when the failure came from elsewhere."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "convert" and frame.f_globals.get("__name__") == "onnx2torch.converter":
            callee = tb.tb_next.tb_frame.f_globals.get("__name__", "") if tb.tb_next else ""
            node = frame.f_locals.get("onnx_node")
            ok = callee.startswith("onnx2torch.node_converters") and hasattr(node, "unique_name")
            return node if ok else None
        tb = tb.tb_next
    return None


def _conversion_failure(node, opset: int | None, why: str, facts, fix: str | None = None) -> str:
    """One line: the node, its op, why, what to try."""
    after = (f" (after onnx's version converter took the graph from opset {facts.converted_from} to {opset})"
             if facts.converted_from else "")
    domain = "" if node.domain in ("", "ai.onnx") else f" of {node.domain}"
    if facts.checker:
        why += f" (onnx's checker also faults the graph: {facts.checker})"
    if fix is None:
        other = 13 if opset == 17 else 17
        fix = f"export the model at another opset (opset_version={other}) or without that operation"
    return f"node '{node.unique_name}' ({node.operation_type}{domain}, opset {opset}){after} cannot be " \
           f"converted to torch: {why}; {fix}"
