"""Loading networks: a registry of loaders keyed by the spec's model kinds.

``state_dict``: an architecture (a class or factory from a file or a package)
plus an optional checkpoint, loaded with ``torch.load(weights_only=True)`` unless
the spec marks the file as trusted. ``torchscript``: a saved ScriptModule.
``onnx``: an ONNX graph converted to torch modules by onnx2torch (the optional
``reportgen[onnx]`` extra, then ``reportgen install-onnx`` for the converter). ``exported``: a
torch.export program (``.pt2``), unflattened into the exported model's modules
(reportgen.load.exported). Checkpoints may be torch pickles or ``.safetensors`` files;
weights saved under a prefix (Lightning's ``model.``, DataParallel's ``module.``, ...)
are matched to the architecture (see fit_prefix).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import pickle
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from reportgen.core.errors import DeviceError, ModelLoadError
from reportgen.load.exported import load_exported
from reportgen.load.formats import (
    fit_prefix,
    is_safetensors,
    load_onnx,
    read_safetensors,
)
from reportgen.load.spec import ReportSpec, Run
from reportgen.load.yamlsrc import format_key_path


@dataclass
class LoadedModel:
    """A network ready for analysis (eval mode, on its device)."""

    module: nn.Module
    kind: str  # a key of LOADERS
    hookable: bool  # TorchScript modules do not run Python forward hooks
    source: Path | None  # the checkpoint or TorchScript file, if any
    # Parameters read from quantized checkpoint tensors: name -> how (said on the layer's page).
    dequantized: dict[str, str] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' / 'cuda:N' must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device '{name}' was asked for but this machine has no CUDA GPU "
                "(or this torch build has no CUDA); use --device auto or cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device '{name}' does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type != "cpu":
        raise DeviceError(f"device '{name}' is not supported; use auto, cpu, cuda or cuda:N")
    return dev


def load_model(spec: ReportSpec, run: Run, device: torch.device | str = "cpu") -> LoadedModel:
    """Build the run's network with its weights, in eval mode, on ``device``."""
    loaded = LOADERS[model_kind(run.model)](spec, run)
    loaded.module.eval()
    loaded.module.to(device)
    return loaded


def model_kind(model) -> str:
    """The LOADERS key for a ModelSpec: 'onnx', 'exported', 'torchscript' or 'state_dict'.

    ``torchscript`` together with ``arch`` builds the Python architecture and loads the
    TorchScript file's weights into it, so forward hooks (activations) work.
    """
    if getattr(model, "onnx", None):
        return "onnx"
    if getattr(model, "exported", None):
        return "exported"
    if model.torchscript and not model.arch:
        return "torchscript"
    return "state_dict"


def runs_python_hooks(model) -> bool:
    """Whether the loaded network runs Python forward hooks (activations, units)."""
    return model_kind(model) != "torchscript"


NO_HOOKS_NOTE = ("this model was loaded from a TorchScript file, which cannot run Python forward hooks, so only weight "
                 "views are shown; add 'arch' (the Python class) to the model in the spec to see "
                 "activations too: reportgen then loads the TorchScript file's weights into it")


def _load_torchscript(spec: ReportSpec, run: Run) -> LoadedModel:
    path = run.torchscript
    assert path is not None  # the spec guarantees it for this kind
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError/ValueError for bad archives
        raise ModelLoadError(
            f"location '{run.location}': {path} is not a readable TorchScript file "
            f"({_first_line(exc)}); re-export it with torch.jit.save"
        ) from None
    return LoadedModel(module=module, kind="torchscript", hookable=False, source=path)


def _load_state_dict_model(spec: ReportSpec, run: Run) -> LoadedModel:
    module = build_architecture(spec, run)
    source = run.checkpoint
    if run.checkpoint is not None:
        state = read_checkpoint(run.checkpoint, run.location, run.model.trusted, run.model.checkpoint_key)
    elif run.torchscript is not None:  # weights from a TorchScript file, hooks from the Python class
        source = run.torchscript
        state = _load_torchscript(spec, run).module.state_dict()
    dequantized: dict[str, str] = {}
    if source is not None:
        state = fit_prefix(state, module, getattr(run.model, "checkpoint_prefix", None), run.location, source)
        state, dequantized = real_weights(state, module, run.location, source)
        apply_state_dict(module, state, run.location, source)
    return LoadedModel(module=module, kind="state_dict", hookable=True, source=source, dequantized=dequantized)


def real_weights(state: dict[str, torch.Tensor], module: nn.Module, location: str,
                 path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Checkpoint tensors that go into the module's floating-point parameters and buffers,
    read faithfully: quantized ones dequantized (returned by name, with how, for the pages);
    integer, bool or complex ones refused, because copying them into a float parameter would
    round or drop their values silently (load_state_dict casts)."""
    own = module.state_dict()
    out, how = dict(state), {}
    for k, t in state.items():
        target = own.get(k)
        if target is None or not target.is_floating_point() or t.is_floating_point():
            continue
        kind = str(t.dtype).removeprefix("torch.")
        if t.is_quantized:
            out[k] = t.dequantize()
            how[k] = f"dequantized from the checkpoint's {kind}: the values the layer computes with"
            continue
        raise ModelLoadError(
            f"location '{location}': checkpoint {path}: tensor '{k}' is {kind}, but the model's is "
            f"{str(target.dtype).removeprefix('torch.')}; copying it would {'drop its imaginary part' if t.is_complex() else 'read integers as weights'} "
            "without a word; save the checkpoint with the floating-point weights the model was trained with"
        )
    return out, how


def build_architecture(spec: ReportSpec, run: Run) -> nn.Module:
    """The run's architecture with its initial weights (no checkpoint): import, check
    ``arch_args`` against the factory's signature, construct, check it is a module."""
    kp = model_identity(spec, run)
    arch = run.model.arch or ""
    where_arch = f"{spec.where(kp + ('arch',))}: {format_key_path(kp + ('arch',))}"
    factory = resolve_arch(arch, spec.base_dir, where_arch)
    return construct(factory, run.model.arch_args, arch, where_arch,
                     f"{spec.where(kp + ('arch_args',))}: {format_key_path(kp + ('arch_args',))}")


def construct(factory: Callable[..., Any], args: dict, arch: str, where_arch: str, where_args: str) -> nn.Module:
    """``factory(**args)`` as a user error when it cannot work: a misspelt or missing
    argument (with a did-you-mean from the signature), a constructor that raises
    (SystemExit and KeyboardInterrupt included: an architecture must not end the
    process), or a result that is not an ``nn.Module``."""
    if not callable(factory):
        raise ModelLoadError(
            f"{where_arch}: '{arch}' is a {type(factory).__name__}, not a class or function; "
            "point 'arch' at the model class or at a function that returns the model"
        )
    _check_arch_args(factory, args, arch, where_args)
    with _user_code(f"{where_arch}: building '{arch}'", "check the constructor and 'arch_args'"):
        module = factory(**args)
    if not isinstance(module, nn.Module):
        raise ModelLoadError(
            f"{where_arch}: '{arch}' returned {type(module).__name__}, not a torch.nn.Module; "
            "point 'arch' at the model class or at a function that returns the model"
        )
    return module


def _check_arch_args(factory: Callable[..., Any], args: dict, arch: str, where: str) -> None:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins and some C types have no signature: let the call decide
        return
    params = sig.parameters
    named = [n for n, p in params.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    shown = f"{getattr(factory, '__name__', arch)}({', '.join(named)})"
    if not takes_any:
        for key in args:
            if key not in named:
                close = difflib.get_close_matches(str(key), named, n=1, cutoff=0.5)
                hint = f"did you mean '{close[0]}'?" if close else f"it takes: {', '.join(named) or 'nothing'}"
                raise ModelLoadError(f"{where}: '{key}' is not an argument of {shown}; {hint}")
    needed = [n for n in named if params[n].default is params[n].empty and n not in args]
    if needed:
        raise ModelLoadError(f"{where}: {shown} needs '{needed[0]}'; add it to arch_args")


@contextmanager
def _user_code(what: str, fix: str):
    """Run an architecture's own code (import or constructor): anything it raises becomes
    one error line. SystemExit and KeyboardInterrupt are caught too, because a
    ``sys.exit(0)`` in a model file must not end a build with success; this also
    turns a Ctrl-C pressed during exactly this call into the error (elsewhere Ctrl-C
    interrupts as usual)."""
    try:
        yield
    except ModelLoadError:
        raise
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        if isinstance(exc, SystemExit):
            cause = f"called sys.exit({exc.code!r})"
            fix = "remove the exit, or guard script code with `if __name__ == '__main__':`"
        elif isinstance(exc, KeyboardInterrupt):
            cause = "raised KeyboardInterrupt (or Ctrl-C was pressed during it)"
        else:
            cause = f"raised {_first_line(exc)}"
        raise ModelLoadError(f"{what} {cause}; {fix}") from None


LOADERS: dict[str, Callable[[ReportSpec, Run], LoadedModel]] = {
    "state_dict": _load_state_dict_model,
    "torchscript": _load_torchscript,
    "onnx": lambda spec, run: LoadedModel(module=load_onnx(run.onnx, run.location, source_where(spec, run, "onnx"),
                                                           run.input.size), kind="onnx", hookable=True,
                                          source=run.onnx),
    "exported": lambda spec, run: LoadedModel(
        module=load_exported(run.exported, run.location, source_where(spec, run, "exported"), run.model.trusted),
        kind="exported", hookable=True, source=run.exported),
}


def source_where(spec: ReportSpec, run: Run, key: str) -> str:
    """``file:line: models[i].key`` of the spec key that names a run's model file."""
    kp = model_identity(spec, run) + (key,)
    return f"{spec.where(kp)}: {format_key_path(kp)}"

_ARCH_CACHE: dict[tuple[str, str], Callable[..., Any]] = {}


def resolve_arch(arch: str, base_dir: Path, where: str) -> Callable[..., Any]:
    """'file.py:Name' (relative to base_dir) or 'pkg.module:Name' -> the callable."""
    if ":" not in arch:
        raise ModelLoadError(
            f"{where}: arch '{arch}' must look like 'path/to/file.py:ClassName' or 'package.module:factory'"
        )
    target, name = arch.rsplit(":", 1)
    cache_key = (str(base_dir), arch)
    is_file = target.endswith(".py") or "/" in target
    if is_file:
        file = (base_dir / target).resolve()
        try:  # an edited file is imported again
            stat = file.stat()
            cache_key += (stat.st_mtime_ns, stat.st_size)
        except OSError:
            raise ModelLoadError(f"{where}: architecture file not found: {file}") from None
    if cache_key in _ARCH_CACHE:
        return _ARCH_CACHE[cache_key]
    if is_file:
        mod_name = "reportgen_arch_" + hashlib.sha1(str(file).encode()).hexdigest()[:12]
        writes_bytecode = sys.dont_write_bytecode
        sys.dont_write_bytecode = True  # no __pycache__ beside the user's file: a build writes only docs/ and its cache
        try:
            with _user_code(f"{where}: importing {target}", "fix the file so that it imports"):
                try:
                    mod_spec = importlib.util.spec_from_file_location(mod_name, file)
                    module = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
                    sys.modules[mod_name] = module
                    mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
                except BaseException:
                    sys.modules.pop(mod_name, None)
                    raise
        finally:
            sys.dont_write_bytecode = writes_bytecode
    else:
        with _user_code(f"{where}: importing module '{target}'", "check the module name and that it imports"):
            module = importlib.import_module(target)
    if not hasattr(module, name):
        names = [n for n in dir(module) if not n.startswith("_")]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ModelLoadError(f"{where}: '{target}' has no '{name}'{hint}")
    _ARCH_CACHE[cache_key] = getattr(module, name)
    return _ARCH_CACHE[cache_key]


def read_checkpoint(path: Path, location: str, trusted: bool, key: str | None) -> dict[str, torch.Tensor]:
    """Load a checkpoint file and return its state_dict (tensors by parameter name)."""
    where = f"location '{location}': checkpoint {path}"
    if is_safetensors(path):
        return read_safetensors(path, where)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        blocked = re.search(r"unsupported GLOBAL (\S+)", str(exc))
        if not trusted and blocked:
            raise ModelLoadError(
                f"{where} contains Python objects ({blocked.group(1)}) that safe loading "
                "(weights_only=True) refuses, because unpickling them can run code; re-save it as a "
                "plain state_dict, or set 'trusted: true' on the model if you trust the file"
            ) from None
        raise ModelLoadError(f"{where} is corrupt or not a PyTorch checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # torch raises many types on damaged files (IndexError, EOFError, ...)
        raise ModelLoadError(
            f"{where} is truncated, corrupt or not a PyTorch checkpoint ({_first_line(exc)}); "
            "re-save it with torch.save"
        ) from None
    state = _pick_state_dict(obj, key, where)
    _check_dense(state, where)
    # Checkpoints saved from nn.DataParallel prefix every key with 'module.'.
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _pick_state_dict(obj: Any, key: str | None, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{where} holds a {type(obj).__name__}, not a state_dict")
    if key is not None:
        if key not in obj:
            keys = ", ".join(map(str, list(obj)[:8]))
            raise ModelLoadError(
                f"{where} has no key '{key}' (it has: {keys}); fix 'checkpoint_key'"
            )
        obj = obj[key]
        if isinstance(obj, nn.Module):
            return obj.state_dict()
    elif not _is_state_dict(obj):
        for guess in ("state_dict", "model_state_dict", "model", "net"):
            if guess in obj and _is_state_dict(obj[guess]):
                return obj[guess]
        keys = ", ".join(map(str, list(obj)[:8]))
        raise ModelLoadError(
            f"{where} is a dict whose entries are not all tensors (keys: {keys}); "
            "name the entry holding the weights with 'checkpoint_key'"
        )
    if not _is_state_dict(obj):
        raise ModelLoadError(f"{where}: entry '{key}' is not a state_dict of tensors")
    return obj


def _check_dense(state: dict[str, torch.Tensor], where: str) -> None:
    """Weights must be ordinary dense tensors with values: sparse layouts and meta
    tensors (shapes without data) cannot be copied into a model's parameters."""
    for k, t in state.items():
        if t.layout != torch.strided:
            raise ModelLoadError(
                f"{where}: tensor '{k}' is stored as {str(t.layout).removeprefix('torch.')}, not as a dense "
                "tensor; re-save the checkpoint with dense tensors ({k: v.to_dense() ...})"
            )
        if t.is_meta:
            raise ModelLoadError(
                f"{where}: tensor '{k}' is a meta tensor (a shape without values), so the file holds no "
                "weights for it; save the state_dict of a model whose weights were loaded or trained"
            )


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def apply_state_dict(module: nn.Module, state: dict[str, torch.Tensor], location: str, path: Path) -> None:
    """Strictly load ``state`` into ``module`` with an error that names what differs."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own if k in state and state[k].shape != own[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"missing keys {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_few(unexpected)}")
    if wrong:
        parts.append(f"wrong shapes (checkpoint vs model) {_few(wrong)}")
    if parts:
        raise ModelLoadError(
            f"location '{location}': checkpoint {path} does not fit the architecture: "
            + "; ".join(parts)
            + "; check 'arch' and 'arch_args' or the checkpoint path"
        )
    module.load_state_dict(state, strict=True)


def _few(items: list[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _first_line(exc: BaseException) -> str:
    """The first clause of an exception's message: enough to tell causes apart, short
    enough for a one-line error (torch's messages run to paragraphs)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    first = first.split(". ")[0].rstrip(".")
    return f"{type(exc).__name__}: {first[:120]}" if first else type(exc).__name__


def model_identity(spec: ReportSpec, run: Run) -> tuple:
    """Key path of the spec entry that defines ``run``'s model (for file:line in errors)."""
    if spec.reference is not None and run.model is spec.reference:
        return ("reference",)
    return ("models", [m.name for m in spec.models].index(run.model.name))


def resolve_layers(spec: ReportSpec, run: Run, module: nn.Module) -> list[str]:
    """Check that every layer of ``run`` exists in ``module``; return the problems."""
    names = [n for n, _ in module.named_modules() if n]
    problems = []
    mi = model_identity(spec, run)
    layer_kp = mi + ("layers",) if run.model.layers is not None else ("layers",)
    for li, layer in enumerate(run.layers):
        if layer.name not in names:
            close = difflib.get_close_matches(layer.name, names, n=3, cutoff=0.5)
            hint = (
                "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
                if close else "run 'reportgen check' to list the model's layers"
            )
            problems.append(
                f"{spec.where(layer_kp + (li,))}: {format_key_path(layer_kp + (li,))}: model '{run.model.name}' "
                f"has no layer '{layer.name}'; {hint}"
            )
    return problems
