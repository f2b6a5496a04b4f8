"""``reportgen layers SPEC``: every layer of the spec's models with weight and output shapes."""

from __future__ import annotations

from pathlib import Path

from reportgen.load.images import load_image
from reportgen.load.models import load_model
from reportgen.load.spec import load_spec


def layer_table(module, input_shape: tuple[int, int, int] | None) -> list[dict]:
    """Every named module: name, type, weight shape and (when input_shape is given and the
    module runs Python hooks) output shape for one input of that shape."""
    import torch

    from reportgen.run.hooks import LayerRecorder, inference

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


def format_shape(s) -> str:
    return "x".join(map(str, s)) if s else "-"


def format_layers(rows: list[dict]) -> str:
    width = max([len(r["name"]) for r in rows] + [5])
    lines = [f"{'layer':<{width}}  {'type':<16} {'weights':<14} output"]
    lines += [f"{r['name']:<{width}}  {r['type']:<16} {format_shape(r['weight']):<14} {format_shape(r['output'])}" for r in rows]
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
        shape = input_shape(spec, run)
        out.append(f"model '{run.model.name}' (input {format_shape(shape)}):")
        out.append(format_layers(layer_table(module, shape)))
    return "\n".join(out)


def input_shape(spec, run) -> tuple[int, int, int] | None:
    channels = 3 if run.input.channels == "rgb" else 1
    if run.input.size:
        return (channels, *run.input.size)
    if run.images:
        t = load_image(run.images[0], run.input).tensor
        return tuple(t.shape)
    return None
