"""The per-run parts of the active extensions (reportgen.core.extension), while the model is at hand."""

from __future__ import annotations

from typing import Any

import torch

from reportgen.core.cache import Cache, digest
from reportgen.core.extension import RunContext, active, has_run_part
from reportgen.load.images import LoadedImage
from reportgen.core.results import RunResult
from reportgen.run.model import LazyModel
from reportgen.load.spec import ReportSpec
from reportgen.core.spill import NO_SPILL, Spill


def run_extensions(spec: ReportSpec, result: RunResult, images: list[LoadedImage], model: LazyModel,
                   device: torch.device, cache: Cache, spill: Spill = NO_SPILL) -> dict[str, Any]:
    """Extension name -> the value of its ``run_part`` for this run, each cached under
    ``ext-<name>`` by the extension's version, the run's layer keys and ``run_key(ctx)``.

    ``run_key`` sees the context before the model is loaded (``ctx.model`` is None then), so
    a run whose values are all cached never loads its model.
    """
    out: dict[str, Any] = {}
    run = result.run
    for ext in active(spec):
        if not has_run_part(ext) or not ext.run_wanted(spec, run):
            continue
        ctx = RunContext(spec=spec, run=run, model=None, device=device, images=images,
                         layers={lr.name: lr for lr in result.layers})
        key = digest(ext.name, ext.version, [lr.key for lr in result.layers], ext.run_key(ctx))

        def compute(ctx=ctx, ext=ext) -> Any:
            loaded = model.get()
            ctx.model = loaded.module if loaded.hookable else None
            ctx.layers = {lr.name: spill.restored(lr) for lr in result.layers}  # with maps and features
            return ext.run_part(ctx)

        out[ext.name] = cache.memo(f"ext-{ext.name}", key, compute)
    return out
