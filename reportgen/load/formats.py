"""Weights and networks in formats other than a plain torch state_dict.

- ``.safetensors`` checkpoints: tensors only, read without unpickling anything.
- Prefixed state_dicts (Lightning's ``model.``, DataParallel's ``module.``,
  ``torch.compile``'s ``_orig_mod.``, ...): matched to the architecture's own names.
- ONNX graphs, converted to torch modules by onnx2torch (``pip install "reportgen[onnx]"``).
  Their module names are the ONNX node names (``model/0/conv/Conv``); pages and
  pictures use names.slug of them.

Every failure is a ModelLoadError of one line that says how to fix it.
"""

from __future__ import annotations

import struct
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from reportgen.core.errors import ModelLoadError

# onnx2torch's converters cover opsets up to this one; newer graphs are converted down first.
ONNX_OPSET = 17


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


@contextmanager
def _torchvision_optional() -> Iterator[None]:
    """Let onnx2torch import without torchvision, which only its NMS and RoIAlign
    converters use: a stand-in that fails when those ops are met, removed afterwards
    so nothing else mistakes it for the real package."""
    import importlib.util

    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        yield  # the real package, or something already standing in for it
        return

    def missing(*_a, **_k):
        raise ModelLoadError("this ONNX graph uses NMS or RoIAlign, which need torchvision; "
                             "install torchvision to load it")

    stub = types.ModuleType("torchvision")
    stub.ops = types.ModuleType("torchvision.ops")  # type: ignore[attr-defined]
    for name in ("nms", "roi_align", "box_convert", "batched_nms"):
        setattr(stub.ops, name, missing)  # type: ignore[attr-defined]
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = stub, stub.ops  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for name in ("torchvision", "torchvision.ops"):
            if sys.modules.get(name) in (stub, stub.ops):  # type: ignore[attr-defined]
                del sys.modules[name]


def onnx_available() -> bool:
    """Whether the optional ONNX extra (onnx and onnx2torch) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnx2torch"))


def load_onnx(path: Path | None, location: str) -> nn.Module:
    """An ONNX file as a torch module (an fx GraphModule whose submodules carry the
    ONNX node names), in float32 on the CPU."""
    where = f"location '{location}': ONNX file {path}"
    if path is None:
        raise ModelLoadError(f"{where}: no ONNX file given")
    try:
        import onnx

        with _torchvision_optional():
            import onnx2torch
    except ImportError:
        raise ModelLoadError(f"{where}: ONNX models need the optional extra: "
                             "pip install \"reportgen[onnx]\" (onnx and onnx2torch)") from None
    try:
        graph = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelLoadError(f"{where} is not a readable ONNX model ({_why(exc)})") from None
    opset = max((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), default=0)
    try:
        return onnx2torch.convert(graph)
    except NotImplementedError as first:
        hint = "onnx2torch has no converter for it; re-export the model without that operation"
        if opset > ONNX_OPSET:
            # onnx2torch lags behind the newest opsets; the ONNX version converter bridges many.
            try:
                from onnx import version_converter

                return onnx2torch.convert(version_converter.convert_version(graph, ONNX_OPSET))
            except Exception:
                hint = f"export it with an older opset (e.g. opset_version={ONNX_OPSET})"
        raise ModelLoadError(f"{where}: onnx2torch cannot convert this graph ({_why(first)}); {hint}") from None
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{where}: onnx2torch failed to convert it ({_why(exc)})") from None
