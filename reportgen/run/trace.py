"""The numeric trace of one run: a forward and backward pass on the spec's trace batch."""

from __future__ import annotations

import copy
import json
import math

from reportgen.core.errors import SpecError
from reportgen.core.results import RunResult
from reportgen.load.spec import ReportSpec
from reportgen.run.model import LazyModel


def trace_batch(spec: ReportSpec) -> dict | None:
    """The spec's trace batch (``analyses.trace.batch``), or None when it has none.

    Raises SpecError (one line: the spec's line and key, the batch file, the key inside it
    and how to fix it) when the file is not JSON of the shape the trace needs."""
    if not spec.analyses.trace.batch:
        return None
    path = spec.base_dir / spec.analyses.trace.batch
    where = f"{spec.where(('analyses', 'trace', 'batch'))}: analyses.trace.batch: {path}"
    try:
        batch = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpecError(f"{where}: not valid JSON ({exc}); write an object with 'inputs', 'labels' and "
                        "optionally 'loss'") from None
    problem = batch_problem(batch)
    if problem:
        raise SpecError(f"{where}: {problem}")
    return batch


LOSSES = ("mse", "bce")


def batch_problem(batch) -> str | None:
    """What is wrong with a trace batch, or None: an object with ``inputs`` (B rows of D
    numbers), ``labels`` (B numbers, or B rows of K numbers) and optionally ``loss``
    (one of LOSSES; with 'bce' every label lies in [0, 1])."""
    if not isinstance(batch, dict):
        return "the file must hold a JSON object with 'inputs', 'labels' and optionally 'loss'"
    for key in ("inputs", "labels"):
        if key not in batch:
            return f"'{key}' is missing; add it ('inputs': one row of numbers per example, 'labels': one per example)"
    inputs, labels = batch["inputs"], batch["labels"]
    problem = _rows("inputs", inputs, scalars=False)
    if problem:
        return problem
    problem = _rows("labels", labels, scalars=True)
    if problem:
        return problem
    if len(labels) != len(inputs):
        return (f"'labels' has {len(labels)} entries and 'inputs' {len(inputs)} rows; give one label "
                "(or row of labels) per input row")
    loss = batch.get("loss", "mse")
    if loss not in LOSSES:
        return f"'loss' is {json.dumps(loss)}; use one of {', '.join(repr(x) for x in LOSSES)}"
    if loss == "bce":
        flat = [v for row in labels for v in (row if isinstance(row, list) else [row])]
        if any(not 0 <= v <= 1 for v in flat):
            return "'loss' is 'bce' but a label lies outside [0, 1]; use labels in [0, 1] or 'loss': 'mse'"
    return None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _rows(key: str, value, scalars: bool) -> str | None:
    """A problem with a list of rows of finite numbers (or, with ``scalars``, of numbers)."""
    what = "numbers or rows of numbers" if scalars else "rows of numbers, one row per example"
    if not isinstance(value, list) or not value:
        return f"'{key}' must be a non-empty list of {what}"
    width = None
    for i, row in enumerate(value):
        if scalars and not isinstance(row, list):
            if not _is_number(row):
                return f"{key}[{i}] is {json.dumps(row)}, not a finite number; '{key}' must hold {what}"
            row_width = 0
        else:
            if not isinstance(row, list) or not row:
                return f"{key}[{i}] is {json.dumps(row)}, not a row of numbers; '{key}' must hold {what}"
            bad = next((j for j, v in enumerate(row) if not _is_number(v)), None)
            if bad is not None:
                return (f"{key}[{i}][{bad}] is {json.dumps(row[bad])}, not a finite number; "
                        f"'{key}' must hold {what}")
            row_width = len(row)
        if width is None:
            width = row_width
        elif row_width != width:
            return (f"{key}[{i}] has {row_width or 'no row of'} numbers where {key}[0] has {width or 'a single'}; "
                    f"every entry of '{key}' must have the same length")
    return None


def run_trace(spec: ReportSpec, result: RunResult, model: LazyModel) -> list[str]:
    """Forward and backward pass of the run's network on the trace batch (tiny dense nets) into
    ``result.trace``; returns warnings. Runs on the CPU whatever the build's device."""
    from reportgen.analysis.trace import finite_difference_check, trace_mlp

    batch = trace_batch(spec)
    if batch is None:
        return []
    x, y, loss = batch["inputs"], batch["labels"], batch.get("loss", "mse")
    module = model.get().module
    if model.device.type != "cpu":
        module = copy.deepcopy(module).to("cpu")
    try:
        trace = trace_mlp(module, x, y, loss)
    except (ValueError, TypeError, RuntimeError) as exc:  # the batch does not fit the network
        return [f"{result.run.key}: no numeric trace on {spec.analyses.trace.batch} "
                f"({spec.where(('analyses', 'trace', 'batch'))}): {exc}"]
    result.trace = {"trace": trace, "fd_error": finite_difference_check(module, x, y, loss),
                    "names": _batch_names(batch)}
    return []


def _batch_names(batch: dict) -> list[str] | None:
    """Optional example names: 'names' (strings) or 'colours' (objects with a 'name')."""
    names = batch.get("names") or [c.get("name") for c in batch.get("colours", []) if isinstance(c, dict)]
    return [str(n) for n in names] if names and len(names) == len(batch["inputs"]) else None
