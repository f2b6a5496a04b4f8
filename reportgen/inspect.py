"""``reportgen check``: everything a build does before computing, and a summary."""

from __future__ import annotations

import os
from pathlib import Path

from reportgen.build import check_layers
from reportgen.images import load_image
from reportgen.models import load_model
from reportgen.spec import load_spec


def check_spec(path: Path) -> str:
    """Validate the spec, load every run's checkpoint on the CPU, read every image.

    Returns a human-readable summary; raises a ReportgenError on the first
    failing stage (spec problems are all listed together).
    """
    spec = load_spec(path)
    check_layers(spec)
    lines = [f"Spec {path} is valid: report '{spec.report}', {len(spec.runs)} runs."]
    shapes: dict[str, list[str]] = {}
    for run in spec.runs:
        module = load_model(spec, run, "cpu").module
        if run.model.name not in shapes:
            mods = dict(module.named_modules())
            shapes[run.model.name] = [
                f"    {ls.name:<24} {type(mods[ls.name]).__name__:<14} "
                + ("x".join(map(str, mods[ls.name].weight.shape))
                   if getattr(mods[ls.name], "weight", None) is not None else "(no weights)")
                for ls in run.layers
            ]
        source = run.checkpoint or run.torchscript
        shown = os.path.relpath(source) if source else "(initial weights)"
        lines.append(f"  run {run.key}: {shown}, {len(run.images)} images")
    images = {p for run in spec.runs for p in run.images}
    # Each model reads the images through its own input spec; each (image, input) once.
    seen = {(p, run.input) for run in spec.runs for p in run.images}
    sizes = {tuple(load_image(p, inp).tensor.shape) for p, inp in sorted(seen, key=lambda x: str(x[0]))}
    for model, rows in shapes.items():
        lines.append(f"  layers of model '{model}':")
        lines += rows
    lines.append(f"  {len(images)} distinct images, input tensor shapes {sorted(sizes)}")
    return "\n".join(lines)


def layer_table(module, input_shape: tuple[int, int, int] | None) -> list[dict]:
    """Every named module: name, type, weight shape and (when input_shape is given and the
    module runs Python hooks) output shape for one input of that shape."""
    import torch

    from reportgen.capture import LayerRecorder, inference

    names = [n for n, _ in module.named_modules() if n]
    outputs: dict[str, tuple] = {}
    if input_shape is not None and not hasattr(module, "_c"):  # TorchScript has no hooks
        with inference(module), LayerRecorder(module, names, stop_early=False) as rec:
            # A model that cannot run on zeros still lists its layers, without output shapes.
            got = rec.run(torch.zeros(1, *input_shape), require_all=False)
            outputs = {k: tuple(v.shape[1:]) for k, v in got.items()}
    rows = []
    for name, m in module.named_modules():
        if not name:
            continue
        w = getattr(m, "weight", None)
        rows.append({
            "name": name,
            "type": getattr(m, "original_name", None) or type(m).__name__,
            "weight": tuple(w.shape) if w is not None and hasattr(w, "shape") and w.ndim >= 2 else None,
            "output": outputs.get(name),
            "leaf": not any(True for _ in m.children()),
        })
    return rows


def _shape(s) -> str:
    return "x".join(map(str, s)) if s else "-"


def format_layers(rows: list[dict]) -> str:
    width = max([len(r["name"]) for r in rows] + [5])
    lines = [f"{'layer':<{width}}  {'type':<16} {'weights':<14} output"]
    lines += [f"{r['name']:<{width}}  {r['type']:<16} {_shape(r['weight']):<14} {_shape(r['output'])}" for r in rows]
    return "\n".join(lines)


def list_layers(path: Path) -> str:
    """``reportgen layers``: every layer of every model of a spec, with shapes."""
    spec = load_spec(path)
    out = []
    seen = set()
    for run in spec.runs:
        if run.model.name in seen:
            continue
        seen.add(run.model.name)
        module = load_model(spec, run, "cpu").module
        shape = _input_shape(spec, run)
        out.append(f"model '{run.model.name}' (input {_shape(shape)}):")
        out.append(format_layers(layer_table(module, shape)))
    return "\n".join(out)


def _input_shape(spec, run) -> tuple[int, int, int] | None:
    channels = 3 if run.input.channels == "rgb" else 1
    if run.input.size:
        return (channels, *run.input.size)
    if run.images:
        t = load_image(run.images[0], run.input).tensor
        return tuple(t.shape)
    return None


INIT_TEMPLATE = """\
# yaml-language-server: $schema={schema}
# A reportgen spec written by `reportgen init`. Every key is explained in
# docs/reference/spec.md; `reportgen check {spec_name}` validates it and
# `reportgen build {spec_name}` builds the report into docs/{slug}/.
report: {slug}
title: {title}
description: |
  What these networks are and what you want to learn from them (Markdown).
models:
  - name: {model_name}
    arch: {arch}
{arch_args}{checkpoint}    # One run per location; with several, put {{location}} in the checkpoint path:
    # checkpoint: ../runs/{{location}}/best.pt
    # locations: [run1, run2]
input:
  size: [{height}, {width}]     # resize test images to [height, width]
  channels: {channels}
  mean: [0.485, 0.456, 0.406]  # the normalisation your model was trained with
  std: [0.229, 0.224, 0.225]
images:
  - {images}
# Layers to inspect ({n_conv} convolutions and {n_dense} dense layers found).
# Uncomment the ones you want; shapes are weights (out x in x kh x kw) and
# outputs (channels x height x width) for one {height}x{width} image.
layers:
{layers}"""


def init_spec(arch: str, out: Path, checkpoint: str | None = None, arch_args: dict | None = None,
              images: str = "../images/*.jpg", size: int = 224, channels: str = "rgb",
              trusted: bool = False) -> str:
    """Write a commented spec for a user's model; return a summary of what was found.

    ``arch`` and ``checkpoint`` are given as the user would type them (relative to the
    current directory) and written relative to the spec's folder.
    """
    import os

    from reportgen.errors import ReportgenError
    from reportgen.models import apply_state_dict, read_checkpoint, resolve_arch

    if out.exists():
        raise ReportgenError(f"{out} already exists; choose another path with -o or remove it")
    arch_args = arch_args or {}
    target, _, name = arch.rpartition(":")
    if not target:
        raise ReportgenError(f"arch '{arch}' must look like 'path/to/file.py:ClassName' or 'package.module:factory'")
    is_file = target.endswith(".py") or "/" in target
    factory = resolve_arch(arch, Path.cwd(), "--arch")
    try:
        module = factory(**arch_args)
    except TypeError as exc:
        raise ReportgenError(f"cannot build '{arch}' with arch args {arch_args}: {exc}") from None
    if checkpoint:
        state = read_checkpoint(Path(checkpoint), "(init)", trusted, None)
        apply_state_dict(module, state, "(init)", Path(checkpoint))
    shape = (3 if channels == "rgb" else 1, size, size)
    rows = layer_table(module, shape)
    weighted = [r for r in rows if r["weight"] is not None]
    convs = [r for r in weighted if len(r["weight"]) == 4]
    dense = [r for r in weighted if len(r["weight"]) == 2]
    spatial = [r for r in convs if r["weight"][2] > 1] or convs  # 1x1 convs mix channels only
    chosen = {r["name"] for r in (convs[:1] + spatial[len(spatial) // 2:len(spatial) // 2 + 1] + convs[-1:]
                                  + dense[-1:])}
    lines = []
    for r in weighted:
        mark = "" if r["name"] in chosen else "# "
        lines.append(f"  {mark}- {r['name']:<28} # {r['type']}, weights {_shape(r['weight'])}, "
                     f"output {_shape(r['output'])}")
    base = out.resolve().parent

    def rel(p: str) -> str:
        return os.path.relpath(Path(p).resolve(), base)

    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in out.stem).strip("-") or "report"
    text = INIT_TEMPLATE.format(
        schema="spec.schema.json",
        spec_name=out, slug=slug, title=f"What {name} learned", model_name=slug,
        arch=f"{rel(target)}:{name}" if is_file else arch,
        arch_args=f"    arch_args: {arch_args}\n" if arch_args else "",
        checkpoint=(f"    checkpoint: {rel(checkpoint)}\n" + ("    trusted: true\n" if trusted else ""))
        if checkpoint else "",
        height=size, width=size, channels=channels, images=images, n_conv=len(convs), n_dense=len(dense),
        layers="\n".join(lines) + "\n",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    schema = out.parent / "spec.schema.json"
    if not schema.exists():  # lets editors complete and check the spec
        from reportgen.spec import json_schema

        schema.write_text(json_schema())
    return (f"Wrote {out}: {len(convs)} convolutions and {len(dense)} dense layers listed, "
            f"{len(chosen)} selected. Next: set 'images', then `reportgen check {out}`.")
