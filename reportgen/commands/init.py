"""``reportgen init ARCH``: a commented spec for a model, its input size found by a dry
forward pass, and a minimal mkdocs.yml and docs/index.md where they are absent."""

from __future__ import annotations

import json
from pathlib import Path

from reportgen.commands.layers import format_shape, layer_table

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
{source}    # One run per location; with several, put {{location}} in the checkpoint path:
    # checkpoint: ../runs/{{location}}/best.pt
    # locations: [run1, run2]
input:
  size: [{height}, {width}]     # {size_reason}
  channels: {channels}
{normalise}images:
  - {images}
# Layers to inspect ({n_conv} convolutions and {n_dense} dense layers found, {n_chosen} selected).
# Comment out or add layers as you like; shapes are weights (out x in x kh x kw) and
# outputs (channels x height x width) for one {height}x{width} image.
layers:
{layers}"""

NORMALISE = {
    "none": (None, None),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# Sizes tried, most common first, when the user gives none.
CANDIDATE_SIZES = (224, 32, 28, 64, 96, 128, 256, 299, 48, 24, 12, 16, 40, 80, 112, 160, 192, 227, 288, 320)
MAX_LAYERS = 12  # a first report that stays quick to build and to read


def _runs_at(module, channels: int, size: int) -> bool:
    """Whether one zero image of ``size`` x ``size`` goes through ``module``."""
    import torch

    from reportgen.run.hooks import inference

    try:
        with inference(module):
            module(torch.zeros(1, channels, size, size))
        return True
    except Exception:  # any failure means "not this size"; the user's model may raise anything
        return False


def infer_input_size(module, channels: int) -> tuple[int | None, str]:
    """An input side the model accepts, and why it was chosen.

    A model whose first weighted layer is a Linear reads flattened images, so its
    ``in_features`` = channels x side x side gives the side. Otherwise sizes are tried
    by a dry forward pass: a model that accepts exactly one (a dense head sized for it)
    gets that one; one that accepts several (global pooling) gets the first of the
    common sizes, 224. Returns (None, reason) when nothing fits.
    """
    import math

    from torch import nn

    weighted = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if weighted and isinstance(weighted[0], nn.Linear):
        side = math.isqrt(weighted[0].in_features // channels)
        if side * side * channels == weighted[0].in_features and _runs_at(module, channels, side):
            n = weighted[0].in_features
            return side, f"from the first Linear layer's in_features ({n} = {channels} x {side} x {side})"
    works = []
    for size in CANDIDATE_SIZES:
        if _runs_at(module, channels, size):
            works.append(size)
            if len(works) == 2:
                return works[0], f"the model accepts several sizes ({works[0]}, {works[1]}, ...): {works[0]} chosen"
    if works:
        return works[0], f"the only size tried ({', '.join(map(str, CANDIDATE_SIZES))}) that the model accepts"
    return None, "no size tried runs through the model"


def pick_layers(rows: list[dict], limit: int = MAX_LAYERS) -> set[str]:
    """Every convolution and dense layer when there are at most ``limit``; otherwise 1x1
    convolutions (which only mix channels) go first, then ``limit`` of the rest are
    spread evenly from the first to the last (both kept)."""
    weighted = [r["name"] for r in rows if r["weight"] is not None and len(r["weight"]) in (2, 4)]
    if len(weighted) <= limit:
        return set(weighted)
    spatial = [r["name"] for r in rows if r["weight"] is not None
               and (len(r["weight"]) == 2 or (len(r["weight"]) == 4 and max(r["weight"][2:]) > 1))]
    weighted = spatial if len(spatial) >= limit else weighted
    step = (len(weighted) - 1) / (limit - 1)
    return {weighted[round(i * step)] for i in range(limit)}


def init_spec(arch: str, out: Path, checkpoint: str | None = None, arch_args: dict | None = None,
              images: str = "../images/*.jpg", size: int | None = None, channels: str = "rgb",
              trusted: bool = False, normalise: str = "none", site_dir: Path | None = None) -> str:
    """Write a commented spec for a user's model; return a summary of what was found and chosen.

    ``arch`` and ``checkpoint`` are given as the user would type them (relative to the
    current directory) and written relative to the spec's folder. Without ``size`` the
    input size is inferred (infer_input_size). ``site_dir`` (default: the current
    directory) gets a minimal mkdocs.yml and docs/index.md where they are absent.
    """
    import os

    from reportgen.core.errors import ReportgenError
    from reportgen.load.formats import fit_prefix
    from reportgen.load.models import (
        apply_state_dict,
        construct,
        read_checkpoint,
        resolve_arch,
    )
    from reportgen.publish.scaffold import index_md, mkdocs_yml, write_if_absent

    if out.exists():
        raise ReportgenError(f"{out} already exists; choose another path with -o or remove it")
    if normalise not in NORMALISE:
        raise ReportgenError(f"--normalise must be one of {', '.join(NORMALISE)}")
    arch_args = arch_args or {}
    reason = ""
    base = out.resolve().parent

    def rel(p: str) -> str:
        return os.path.relpath(Path(p).resolve(), base)

    if arch.endswith(".onnx"):  # the file is the architecture and the weights
        from reportgen.load.formats import load_onnx

        if not Path(arch).is_file():
            raise ReportgenError(f"ONNX file not found: {arch}")
        module = load_onnx(Path(arch), "(init)")
        name, source = Path(arch).stem, f"    onnx: {rel(arch)}\n"
        checkpoint = None
        if size is None and _onnx_input_side(Path(arch)):
            size, reason = _onnx_input_side(Path(arch)), "from the ONNX graph's input shape"
    elif arch.endswith(".pt2"):  # a torch.export program: the architecture and the weights
        from reportgen.load.exported import load_exported

        if not Path(arch).is_file():
            raise ReportgenError(f"exported program not found: {arch}")
        module = load_exported(Path(arch), "(init)", trusted=trusted)
        name, source = Path(arch).stem, f"    exported: {rel(arch)}\n" + ("    trusted: true\n" if trusted else "")
        checkpoint = None
        side = getattr(module, "reportgen_exported_input", ())[2:]
        if size is None and len(side) == 2 and all(isinstance(d, int) for d in side) and side[0] == side[1]:
            size, reason = side[0], "from the exported program's input shape"
    else:
        target, _, name = arch.rpartition(":")
        if not target:
            raise ReportgenError(f"arch '{arch}' must look like 'path/to/file.py:ClassName', "
                                 "'package.module:factory', 'model.pt2' or 'model.onnx'")
        is_file = target.endswith(".py") or "/" in target
        factory = resolve_arch(arch, Path.cwd(), "--arch")
        module = construct(factory, arch_args, arch, "--arch", "--arch-args")
        source = (f"    arch: {rel(target) + ':' + name if is_file else arch}\n"
                  + (f"    arch_args: {json.dumps(arch_args)}\n" if arch_args else "")
                  + ((f"    checkpoint: {rel(checkpoint)}\n" + ("    trusted: true\n" if trusted else ""))
                     if checkpoint else ""))
    if checkpoint:
        state = read_checkpoint(Path(checkpoint), "(init)", trusted, None)
        state = fit_prefix(state, module, None, "(init)", Path(checkpoint))
        apply_state_dict(module, state, "(init)", Path(checkpoint))
    n_channels = 3 if channels == "rgb" else 1
    if size is None:
        size, reason = infer_input_size(module, n_channels)
        if size is None:
            raise ReportgenError(f"cannot tell the input size of '{arch}': {reason}; give it with --size")
    reason = reason or "given with --size"
    size_note = f"Input size {size}x{size}: {reason}."
    shape = (n_channels, size, size)
    rows = layer_table(module, shape)
    weighted = [r for r in rows if r["weight"] is not None]
    convs = [r for r in weighted if len(r["weight"]) == 4]
    dense = [r for r in weighted if len(r["weight"]) == 2]
    chosen = pick_layers(rows)
    lines = []
    for r in weighted:
        mark = "" if r["name"] in chosen else "# "
        shown = json.dumps(r["name"]) if not _plain_yaml(r["name"]) else r["name"]
        lines.append(f"  {mark}- {shown:<28} # {r['type']}, weights {format_shape(r['weight'])}, "
                     f"output {format_shape(r['output'])}")
    mean, std = NORMALISE[normalise]
    if mean is None:
        norm_text = ("  # No normalisation: pixels in [0, 1]. If the model was trained on normalised\n"
                     "  # inputs, give the same mean/std (e.g. `reportgen init ... --normalise imagenet`):\n"
                     "  # mean: [0.485, 0.456, 0.406]\n  # std: [0.229, 0.224, 0.225]\n")
    else:
        norm_text = (f"  mean: {list(mean)[:n_channels]}  # {normalise} normalisation (--normalise)\n"
                     f"  std: {list(std)[:n_channels]}\n")
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in out.stem).strip("-") or "report"
    schema = out.parent / "spec.schema.json"
    text = INIT_TEMPLATE.format(
        schema="./" + schema.name,  # relative to the spec file, where it is written below
        spec_name=out, slug=slug, title=f"What {name} learned", model_name=slug,
        source=source,
        height=size, width=size, size_reason=reason, channels=channels, normalise=norm_text,
        images=images, n_conv=len(convs), n_dense=len(dense), n_chosen=len(chosen),
        layers="\n".join(lines) + "\n",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if not schema.exists():  # lets editors complete and check the spec
        from reportgen.load.spec import json_schema

        schema.write_text(json_schema())
    site = site_dir or Path.cwd()
    docs_rel = "docs"
    wrote = [str(p) for p, t in ((site / "mkdocs.yml", mkdocs_yml("Reports", docs_rel)),
                                 (site / docs_rel / "index.md", index_md([])))
             if write_if_absent(p, t)]
    return "\n".join([
        f"Wrote {out}: {len(convs)} convolutions and {len(dense)} dense layers listed, {len(chosen)} selected.",
        size_note + ("" if normalise != "none" else " No normalisation (--normalise imagenet for ImageNet's)."),
        *([f"Wrote {', '.join(wrote)} (a minimal MkDocs site for `reportgen serve`)."] if wrote else []),
        f"Next: check 'images' in the spec, then `reportgen check {out}`.",
    ])


def _onnx_input_side(path: Path) -> int | None:
    """The side of a square image input fixed in an ONNX graph (N x C x S x S), else None."""
    import onnx

    inputs = onnx.load(str(path), load_external_data=False).graph.input
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim] if inputs else []
    return dims[2] if len(dims) == 4 and dims[2] > 0 and dims[2] == dims[3] else None


def _plain_yaml(name: str) -> bool:
    """Whether a layer name can stand unquoted in YAML."""
    import re

    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name) is not None
