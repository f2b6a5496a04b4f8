"""``reportgen check``: everything a build does before computing, and a summary."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from reportgen.errors import ReportgenError, SpecError
from reportgen.images import load_image
from reportgen.models import load_model
from reportgen.spec import load_spec


def check_spec(path: Path) -> str:
    """Validate the spec, build and dry-run every model, load every run's checkpoint on
    the CPU, read every image.

    Returns a human-readable summary; raises SpecError listing every problem of every
    stage at once (a model whose own spec entry is wrong is not built, so its problems
    are not repeated by later stages).
    """
    from reportgen.preflight import check_models

    spec, problems, broken = _spec_collecting(path)
    if spec is None:
        raise SpecError(problems)
    model_problems, checks = check_models(spec, frozenset(broken))
    problems += model_problems
    lines = [f"Spec {path} is valid: report '{spec.report}', {len(spec.runs)} runs."]
    shapes: dict[str, list[str]] = {}
    for run in spec.runs:
        if run.model.name not in checks or any(f is not None and not f.is_file()
                                               for f in (run.checkpoint, run.torchscript)):
            continue  # said above
        try:
            module = load_model(spec, run, "cpu").module
        except ReportgenError as exc:
            problems.append(str(exc))
            continue
        if run.model.name not in shapes:
            mods = dict(module.named_modules())
            shapes[run.model.name] = [
                f"    {ls.name:<24} {type(mods[ls.name]).__name__:<14} "
                + ("x".join(map(str, mods[ls.name].weight.shape))
                   if getattr(mods[ls.name], "weight", None) is not None else "(no weights)")
                for ls in run.layers if ls.name in mods
            ]
        source = run.checkpoint or run.torchscript
        shown = os.path.relpath(source) if source else "(initial weights)"
        lines.append(f"  run {run.key}: {shown}, {len(run.images)} images")
    images = {p for run in spec.runs for p in run.images}
    sizes = set()
    # Each model reads the images through its own input spec; each (image, input) once.
    seen = {(p, run.input) for run in spec.runs for p in run.images}
    for p, inp in sorted(seen, key=lambda x: str(x[0])):
        try:
            sizes.add(tuple(load_image(p, inp).tensor.shape))
        except ReportgenError as exc:
            problems.append(str(exc))
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))
    for model, rows in shapes.items():
        lines.append(f"  layers of model '{model}':")
        lines += rows
    lines.append(f"  {len(images)} distinct images, input tensor shapes {sorted(sizes)}")
    return "\n".join(lines)


def _spec_collecting(path: Path):
    """(spec or None, schema problems, names of models whose entries have problems).

    When the schema rejects some keys, those keys are dropped (so their defaults
    apply) and the rest is validated and resolved again, so that missing files and
    the later stages are reported in the same run. Nothing is guessed for a
    missing required key: then only the schema problems are reported.
    """
    from pydantic import ValidationError

    from reportgen.spec import ReportSchema, spec_from_source
    from reportgen.yamlsrc import Located, load_yaml

    src = load_yaml(Path(path))
    problems: list[str] = []
    try:
        return spec_from_source(src, Path(path), problems), problems, set()
    except SpecError as exc:
        problems = list(exc.problems)
    data = copy.deepcopy(src.data)
    broken: set[str] = set()
    for _ in range(3):  # dropping a key can reveal a problem beneath it
        try:
            ReportSchema.model_validate(data)
            break
        except ValidationError as exc:
            errors = exc.errors()
        except Exception:
            return None, problems, broken
        for err in errors:
            loc = tuple(err["loc"])
            if err["type"] == "missing" or not _drop(data, loc):
                return None, problems, broken
            if len(loc) > 1 and loc[0] == "models" and isinstance(loc[1], int):
                model = data["models"][loc[1]] if isinstance(data.get("models"), list) else None
                broken.add(str(model.get("name")) if isinstance(model, dict) else "")
    try:
        spec = spec_from_source(Located(data, src.lines, src.path), Path(path), problems)
    except SpecError as exc:
        return None, list(dict.fromkeys(problems + exc.problems)), broken
    return spec, problems, broken


def _drop(data, loc: tuple) -> bool:
    """Delete the mapping key at ``loc`` (list items are kept, so that key paths and
    their line numbers stay valid); False when there is no such key to delete."""
    node = data
    for part in loc[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    if isinstance(node, dict) and loc and loc[-1] in node:
        del node[loc[-1]]
        return True
    return False


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
    from reportgen.models import apply_state_dict, construct, read_checkpoint, resolve_arch

    if out.exists():
        raise ReportgenError(f"{out} already exists; choose another path with -o or remove it")
    arch_args = arch_args or {}
    target, _, name = arch.rpartition(":")
    if not target:
        raise ReportgenError(f"arch '{arch}' must look like 'path/to/file.py:ClassName' or 'package.module:factory'")
    is_file = target.endswith(".py") or "/" in target
    factory = resolve_arch(arch, Path.cwd(), "--arch")
    module = construct(factory, arch_args, arch, "--arch", "--arch-args")
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
