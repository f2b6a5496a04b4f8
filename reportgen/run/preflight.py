"""Before any work: build each model once and run it dry on the spec's input.

``dry_run_models(spec)`` builds every model's architecture (no checkpoint: names and
shapes depend on the architecture only), resolves the listed layers, refuses layer
kinds the analyses cannot show, and runs one forward pass of a zero batch at the
spec's input size (or at each distinct test-image size when ``input.size`` is not
set), on the CPU, under ``torch.no_grad``. Every problem becomes one line
``file:line: key.path: what is wrong; how to fix it``; all are returned together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from reportgen.core.errors import ImageError, ReportgenError, SpecError
from reportgen.load.images import image_size
from reportgen.load.models import (
    build_architecture,
    load_model,
    model_identity,
    resolve_layers,
)
from reportgen.load.spec import MAX_INPUT_SIDE, ReportSpec, Run, shown_path
from reportgen.load.yamlsrc import format_key_path
from reportgen.run.hooks import inference, probing
from reportgen.run.layers import activation_problems

# Layer kinds whose weights or outputs have no 2-D picture: named in the error.
UNSUPPORTED = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose3d)
SUPPORTED_TEXT = ("reportgen shows Conv2d and Linear layers and any layer whose output is "
                  "(N, C, H, W) or (N, features)")
# Sizes tried when the spec's size fails, after those inferred from the model.
COMMON_SIDES = (32, 28, 64, 224, 96, 128, 227, 256, 299, 112, 48, 16, 512)
SEARCH_SECONDS = 10.0
DRY_RUN_MAX_PIXELS = 1024 * 1024


@dataclass
class ModelCheck:
    """What the dry run of one model found."""

    module: nn.Module
    problems: list[str] = field(default_factory=list)
    outputs: dict[str, tuple] = field(default_factory=dict)  # layer -> output shape (without batch)


def dry_run_models(spec: ReportSpec, skip: frozenset[str] = frozenset()) -> tuple[list[str], dict[str, ModelCheck]]:
    """Every problem of every model (one line each), and model name -> its check.
    Models named in ``skip`` are not built (``check`` passes those with spec errors)."""
    problems: list[str] = []
    found: dict[str, ModelCheck] = {}
    failed: set[str] = set()  # models that did not build: said once, not once per location
    for run in spec.runs:
        if run.model.name in found or run.model.name in failed or run.model.name in skip:
            continue
        if any(p is not None and not p.is_file() for p in (run.torchscript, run.onnx, run.exported)):
            continue  # the spec check said so
        try:
            # TorchScript, ONNX and exported files are their own architecture; with 'arch' the class is.
            module = (load_model(spec, run, "cpu").module if run.model.arch is None
                      else build_architecture(spec, run))
        except ReportgenError as exc:
            problems.append(str(exc))
            failed.add(run.model.name)
            continue
        check = ModelCheck(module=module)
        found[run.model.name] = check
        check.problems += resolve_layers(spec, run, module)
        _dry_run(spec, run, check)
        problems += check.problems
    return problems, found


def _layer_kp(spec: ReportSpec, run: Run) -> tuple:
    return model_identity(spec, run) + ("layers",) if run.model.layers is not None else ("layers",)


def _dry_run(spec: ReportSpec, run: Run, check: ModelCheck) -> None:
    module = check.module
    modules = dict(module.named_modules())
    lkp = _layer_kp(spec, run)
    names = [ls.name for ls in run.layers if ls.name in modules]
    at = {ls.name: lkp + (i,) for i, ls in enumerate(run.layers)}

    def say(kp: tuple, text: str) -> None:
        check.problems.append(f"{spec.where(kp)}: {format_key_path(kp)}: {text}")

    for name in names:
        m = modules[name]
        if isinstance(m, UNSUPPORTED):
            say(at[name], f"layer '{name}' is a {type(m).__name__}, which is not supported; {SUPPORTED_TEXT}")
    names = [n for n in names if not isinstance(modules[n], UNSUPPORTED)]
    shapes = _input_shapes(spec, run, say)
    hookable = not hasattr(module, "_c")  # TorchScript modules run no Python hooks
    for (c, h, w), kp, what in shapes:
        try:
            with inference(module), probing(module, names if hookable else []) as seen:
                module(torch.zeros(1, c, h, w))
        except Exception as exc:
            say(*_forward_problem(run, module, exc, (c, h, w), what, kp))
            return
        if not hookable:
            continue
        for name in names:
            out = seen.get(name, _NEVER)
            if out is _NEVER:
                say(at[name], f"layer '{name}' never runs in the forward pass of model '{run.model.name}'; "
                    "list a layer that forward() calls ('reportgen layers' shows them with output shapes)")
            elif not isinstance(out, torch.Tensor):
                say(at[name], f"layer '{name}' returns {type(out).__name__}, not a tensor, so there is "
                    "nothing to show; list the layer whose output you want to see")
            elif out.ndim not in (2, 4):
                say(at[name], f"layer '{name}' ({type(modules[name]).__name__}) outputs "
                    f"{out.ndim}-D tensors {tuple(out.shape)}, which is not supported; {SUPPORTED_TEXT}")
            else:
                check.outputs[name] = tuple(out.shape[1:])
        # the other listed sizes would only repeat the layer problems above
        if check.problems:
            return
    _check_units(spec, run, check, say)


_NEVER = object()


def _check_units(spec: ReportSpec, run: Run, check: ModelCheck, say) -> None:
    modules = dict(check.module.named_modules())
    listed = {ls.name for ls in run.layers}
    for i, name in enumerate(spec.analyses.units.layers):
        if name not in listed or name not in modules:
            continue
        shape = check.outputs.get(name)
        if isinstance(modules[name], nn.Linear) or (shape is not None and len(shape) != 3):
            say(("analyses", "units", "layers", i),
                f"layer '{name}' is a {type(modules[name]).__name__} with output "
                f"{'x'.join(map(str, shape)) if shape else '(features)'}; unit views need a convolutional "
                "layer (output channels x height x width); list a Conv2d layer here")


def _input_shapes(spec: ReportSpec, run: Run, say) -> list[tuple[tuple[int, int, int], tuple, str]]:
    """The input shapes to try: (C, H, W), the key path to blame, and how to name the size."""
    # A model with its own `input` is run at that one (models[i].input).
    inp = run.input
    base: tuple = ("input",)
    if run.model.input is not None:
        base = ("models", [m.name for m in spec.models].index(run.model.name), "input")
    label = "input" if len(base) == 1 else f"models[{base[1]}].input"
    c = 3 if inp.channels == "rgb" else 1
    if inp.size is not None:
        h, w = inp.size
        return [((c, h, w), base + ("size",), f"{label}.size [{h}, {w}]")]
    sizes: dict[tuple[int, int], Path] = {}
    for r in spec.runs:
        if r.model.name != run.model.name:
            continue
        for p in r.images:
            try:
                hw = image_size(p)
            except ImageError:
                continue  # reading the image later says what is wrong with it
            sizes.setdefault(hw, p)
    ordered = sorted(sizes.items(), key=lambda kv: kv[0][0] * kv[0][1])
    # The smallest image is the one most likely to fail; the largest is also tried when a
    # CPU pass at its size is cheap (photos of many sizes would cost one pass each).
    tried = ordered[:1] + [kv for kv in ordered[1:][-1:] if kv[0][0] * kv[0][1] <= DRY_RUN_MAX_PIXELS]
    return [((c, h, w), base + ("size",), f"image {shown_path(p)} ({h}x{w}, {label}.size not set)")
            for (h, w), p in tried]


def _forward_problem(run: Run, module: nn.Module, exc: Exception, shape: tuple[int, int, int], what: str,
                     kp: tuple) -> tuple[tuple, str]:
    """Why the dry forward failed, as (key path to blame, message with the fix)."""
    c = shape[0]
    first = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.in_channels != c and first.in_channels in (1, 3):
        want = "rgb" if first.in_channels == 3 else "grey"
        return kp[:-1] + ("channels",), (
            f"model '{run.model.name}' expects {first.in_channels} input channel"
            f"{'s' if first.in_channels > 1 else ''} but input.channels gives {c}; set input.channels: {want}")
    reason = _short(exc)
    works, how = suggest_size(module, c)
    if works is not None:
        fix = f"set input.size: [{works[0]}, {works[1]}] ({how})"
    else:
        fix = ("its forward() fails at every size tried, so the fault is in the model, not the size; "
               "fix forward() so that it takes one batch of images (N, C, H, W)")
    return kp, f"model '{run.model.name}' cannot run at {what}: {reason}; {fix}"


def _short(exc: Exception) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def suggest_size(module: nn.Module, channels: int) -> tuple[tuple[int, int] | None, str]:
    """A square input size at which ``module`` runs, and how it was found.

    First the sides implied by the first Linear layer (its in_features over the
    channels of the convolution before it gives a square map; times the product of
    the conv and pool strides up to there, plus up to stride - 1 for rounding),
    then common sizes. Each candidate is checked with a forward pass.
    """
    t0 = time.perf_counter()
    inferred = _inferred_sides(module)
    tried = set()
    for side in list(inferred) + list(COMMON_SIDES):
        if side in tried or not 1 <= side <= MAX_INPUT_SIDE:
            continue
        tried.add(side)
        if time.perf_counter() - t0 > SEARCH_SECONDS:
            break
        try:
            with inference(module):
                module(torch.zeros(1, channels, side, side))
        except Exception:
            continue
        if side in inferred:
            return (side, side), "inferred from the first Linear layer's in_features and the strides before it; checked by a forward pass"
        return (side, side), "found by trying common sizes; checked by a forward pass"
    return None, ""


def _inferred_sides(module: nn.Module) -> list[int]:
    """Input sides that give the first Linear layer its in_features, assuming the modules
    registered before it run in order (a plain CNN): the square map side it implies,
    taken back through each conv and pool (n_in = (n_out - 1) s + d (k - 1) + 1 - 2 p)."""
    ops, channels = [], None
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if isinstance(m.padding, str):
                return []
            ops.append((_first(m.kernel_size), _first(m.stride), _first(m.padding), _first(m.dilation)))
            channels = m.out_channels
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            k = _first(m.kernel_size)
            ops.append((k, _first(m.stride or k), _first(m.padding), _first(getattr(m, "dilation", 1))))
        elif isinstance(m, nn.Linear):
            if not channels or m.in_features % channels:
                return []
            side = round((m.in_features // channels) ** 0.5)
            if side * side * channels != m.in_features:
                return []
            for k, st, pad, dil in reversed(ops):
                side = (side - 1) * st + dil * (k - 1) + 1 - 2 * pad
            total = 1
            for _, st, _, _ in ops:
                total *= st
            return [side + j for j in range(total)]  # floor division: these all give the same map
    return []


def _first(v) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


def preflight(spec: ReportSpec) -> dict[str, dict[str, nn.Module]]:
    """Build each architecture once (no checkpoint), resolve every layer name and run
    a dry forward pass at the spec's input size (``dry_run_models``), and check that each layer's activation can be found.

    Layer names and shapes depend on the architecture only, so one instance per
    model serves all its locations. Raises SpecError listing every problem.
    Returns model name -> {layer name: module} of that instance.
    """
    problems, checks = dry_run_models(spec)
    for name, c in checks.items():
        run = next(r for r in spec.runs if r.model.name == name)
        problems = list(problems) + activation_problems(spec, run, c.module)
    if problems:
        raise SpecError(problems)
    return {name: dict(c.module.named_modules()) for name, c in checks.items()}

