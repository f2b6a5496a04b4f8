"""The map step: the per-run task (reportgen.run.task) for every run of a spec, through an
executor (reportgen.run.executors), results in run order."""

from __future__ import annotations

import functools
from typing import Callable

import torch

from reportgen.core.cache import Cache
from reportgen.core.results import RunResult
from reportgen.core.spill import NO_SPILL, Spill
from reportgen.load.spec import ReportSpec
from reportgen.run.conversion import conversion_warning
from reportgen.run.executors import Executor, Sequential
from reportgen.run.task import RunTask, remember_spec, run_task
from reportgen.run.trace import trace_batch

Log = Callable[[str], None]


def map_runs(spec: ReportSpec, device: torch.device, log: Log, cache: Cache | None = None,
            executor: Executor | None = None, spill: Spill = NO_SPILL) -> tuple[list[RunResult], list[str]]:
    """Map the per-run task over every run (in spec order, whatever the executor). Returns
    the results and the warnings: every
    run's notes, then the unit views', then the traces'. With a ``spill`` store, the
    results hold their heavy arrays there (reportgen.core.spill), not in memory."""
    cache = cache or Cache(None)
    executor = executor or Sequential()
    trace_batch(spec)  # a malformed trace batch is a spec error before any run starts
    tasks = [RunTask(spec_path=str(spec.path.resolve()), run_key=run.key, device=str(device),
                     cache_dir=str(cache.root.resolve()) if cache.enabled else None, spill_dir=spill.root)
             for run in spec.runs]
    remember_spec(spec)  # tasks in this process use the loaded spec
    cached: dict[int, RunResult] = {}
    if not isinstance(executor, Sequential) and cache.enabled:
        # Runs whose results are all cached are read here: starting workers (each imports
        # torch) is worth it only for runs with work to do.
        for i, task in enumerate(tasks):
            result = run_task(task, cached_only=True)
            if result is not None:
                cached[i] = result
        if len(tasks) - len(cached) <= 1:
            executor = Sequential()
    todo = [i for i in range(len(tasks)) if i not in cached]
    if not isinstance(executor, Sequential):
        # The heaviest runs first, so no worker is left with one long run at the end while
        # the others wait (the results still come in spec order).
        work = expected_work(spec)
        todo.sort(key=lambda i: -work[tasks[i].run_key])
    fn = functools.partial(run_task, log=log) if isinstance(executor, Sequential) else run_task
    got: dict[int, RunResult] = dict(cached)
    mapped = executor.map(fn, [tasks[i] for i in todo])
    try:
        for n, i in enumerate([*cached, *todo], 1):
            log(f"[{n}/{len(tasks)}] {tasks[i].run_key}")
            if i not in got:
                got[i] = next(mapped)
    finally:
        # At once, even when an interrupt arrived out here: the traceback would keep the
        # map's workers running until it is dropped (reportgen.run.executors ends them on close).
        close = getattr(mapped, "close", None)
        if close is not None:
            close()
    results = []
    shown: dict = {}
    for i in range(len(tasks)):
        _merge_cache_counts(cache, got[i])
        _share_images(got[i], shown)
        results.append(got[i])
    warnings = [f"{r.run.key}: {n}" for r in results for n in r.notes]
    warnings += [w for r in results if (w := conversion_warning(r.run.key, getattr(r, "conversion", None)))]
    warnings += [w for r in results for w in r.unit_notes] + [w for r in results for w in r.trace_notes]
    return results, warnings



def expected_work(spec: ReportSpec) -> dict[str, int]:
    """Run key -> a rough rank of how long its task takes (the order the pool starts them in):
    unit views (activation maximisation) weigh most, then each extension's per-run part."""
    from reportgen.core.extension import active, has_run_part
    from reportgen.run.units import unit_runs

    units = set(unit_runs(spec))
    parts = [ext for ext in active(spec) if has_run_part(ext)]
    return {run.key: 1 + 4 * len(spec.analyses.units.layers) * (run.key in units)
            + sum(ext.run_wanted(spec, run) for ext in parts) for run in spec.runs}


def _share_images(result: RunResult, shown: dict) -> None:
    """Runs that show the same image (same file, same pixels) hold one copy of it."""
    for attr in ("images", "shared_shown"):
        setattr(result, attr, [shown.setdefault((im.path, im.digest), im) for im in getattr(result, attr)])



def _merge_cache_counts(cache: Cache, result: RunResult) -> None:
    """A task's cache hits, misses and warning, counted with the build's own."""
    cache.hits.update(result.cache_hits)
    cache.misses.update(result.cache_misses)
    if result.cache_warnings and not cache.warnings:
        cache.warnings.extend(result.cache_warnings)

