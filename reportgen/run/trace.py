"""The numeric trace of one run: a forward and backward pass on the spec's trace batch."""

from __future__ import annotations

from reportgen.errors import SpecError
from reportgen.models import load_model
from reportgen.results import RunResult
from reportgen.spec import ReportSpec


def add_traces(spec: ReportSpec, results: list[RunResult]) -> list[str]:
    """Forward and backward pass of each run's network on the spec's trace batch (tiny dense nets)."""
    import json

    from reportgen.analysis.trace import finite_difference_check, trace_mlp

    if not spec.analyses.trace.batch:
        return []
    path = spec.base_dir / spec.analyses.trace.batch
    try:
        batch = json.loads(path.read_text())
        x, y, loss = batch["inputs"], batch["labels"], batch.get("loss", "mse")
    except (ValueError, KeyError, TypeError) as exc:
        raise SpecError(f"{spec.where(('analyses', 'trace', 'batch'))}: analyses.trace.batch: {path} must be JSON "
                        f"with 'inputs', 'labels' and optionally 'loss' ({type(exc).__name__}: {exc})") from None
    warnings = []
    for r in results:
        model = load_model(spec, r.run, "cpu").module
        try:
            trace = trace_mlp(model, x, y, loss)
        except (ValueError, TypeError) as exc:
            warnings.append(f"{r.run.key}: no numeric trace: {exc}")
            continue
        r.trace = {"trace": trace, "fd_error": finite_difference_check(model, x, y, loss),
                   "names": _batch_names(batch)}
    return warnings


def _batch_names(batch: dict) -> list[str] | None:
    """Optional example names: 'names' (strings) or 'colours' (objects with a 'name')."""
    names = batch.get("names") or [c.get("name") for c in batch.get("colours", []) if isinstance(c, dict)]
    return [str(n) for n in names] if names and len(names) == len(batch["inputs"]) else None

