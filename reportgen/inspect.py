"""``reportgen check``: everything a build does before computing, and a summary."""

from __future__ import annotations

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
        lines.append(f"  run {run.key}: {run.checkpoint or run.torchscript or '(initial weights)'}, "
                     f"{len(run.images)} images")
    images = {p for run in spec.runs for p in run.images}
    sizes = {tuple(load_image(p, spec.input).tensor.shape) for p in sorted(images)}
    for model, rows in shapes.items():
        lines.append(f"  layers of model '{model}':")
        lines += rows
    lines.append(f"  {len(images)} distinct images, input tensor shapes {sorted(sizes)}")
    return "\n".join(lines)
