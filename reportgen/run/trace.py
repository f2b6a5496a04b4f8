"""The numeric trace of one run: a forward and backward pass on the spec's trace batch."""

from __future__ import annotations

import copy
import json

from reportgen.errors import SpecError
from reportgen.results import RunResult
from reportgen.run.model import LazyModel
from reportgen.spec import ReportSpec


def trace_batch(spec: ReportSpec) -> dict | None:
    """The spec's trace batch (``analyses.trace.batch``), or None when it has none."""
    if not spec.analyses.trace.batch:
        return None
    path = spec.base_dir / spec.analyses.trace.batch
    try:
        batch = json.loads(path.read_text())
        batch["inputs"], batch["labels"], batch.get("loss", "mse")
    except (ValueError, KeyError, TypeError) as exc:
        raise SpecError(f"{spec.where(('analyses', 'trace', 'batch'))}: analyses.trace.batch: {path} must be JSON "
                        f"with 'inputs', 'labels' and optionally 'loss' ({type(exc).__name__}: {exc})") from None
    return batch


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
    except (ValueError, TypeError) as exc:
        return [f"{result.run.key}: no numeric trace: {exc}"]
    result.trace = {"trace": trace, "fd_error": finite_difference_check(module, x, y, loss),
                    "names": _batch_names(batch)}
    return []


def _batch_names(batch: dict) -> list[str] | None:
    """Optional example names: 'names' (strings) or 'colours' (objects with a 'name')."""
    names = batch.get("names") or [c.get("name") for c in batch.get("colours", []) if isinstance(c, dict)]
    return [str(n) for n in names] if names and len(names) == len(batch["inputs"]) else None
