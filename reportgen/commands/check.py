"""``reportgen check SPEC``: everything a build does before computing (validate the spec,
build and dry-run every model, load every checkpoint on the CPU, read every image), and a
summary."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from reportgen.core.errors import ReportgenError, SpecError
from reportgen.load.images import load_image
from reportgen.load.models import load_model


def check_spec(path: Path) -> str:
    """Validate the spec, build and dry-run every model, load every run's checkpoint on
    the CPU, read every image.

    Returns a human-readable summary; raises SpecError listing every problem of every
    stage at once (a model whose own spec entry is wrong is not built, so its problems
    are not repeated by later stages).
    """
    from reportgen.run.preflight import dry_run_models
    from reportgen.run.trace import trace_batch

    spec, problems, broken = _spec_collecting(path)
    if spec is None:
        raise SpecError(problems)
    model_problems, checks = dry_run_models(spec, frozenset(broken))
    problems += model_problems
    try:
        trace_batch(spec)
    except SpecError as exc:
        problems += exc.problems
    lines = [f"Spec {path} is valid: report '{spec.report}', {len(spec.runs)} runs."]
    shapes: dict[str, list[str]] = {}
    for run in spec.runs:
        if run.model.name not in checks or any(f is not None and not f.is_file()
                                               for f in (run.checkpoint, run.torchscript, run.onnx, run.exported)):
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
        source = run.checkpoint or run.torchscript or run.onnx or run.exported
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

    from reportgen.load.spec import ReportSchema, spec_from_source
    from reportgen.load.yamlsrc import Located, load_yaml

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
