"""The sequencer: the one place that runs the steps of a build in order.

    load spec -> check layers -> map runs -> reduce -> render -> publish

*map*: the per-run task (reportgen.run.run_task) for every run, through an executor
(reportgen.run.executors): each run's model is loaded once, and only when some result is
not cached. *reduce*: health pooled per model and layer, comparisons of locations, the
reference and models (reportgen.reduce.compare, reportgen.reduce.crossmodel). *render*: pictures,
report.json, findings and pages in memory (reportgen.render.report). *publish*: an atomic
swap into docs/<report>/ (reportgen.publish.site). Everything between loading and publishing
takes values and returns values.
"""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from reportgen.reduce.extensions import reduce_extensions
from reportgen.reduce.findings import report_findings
from reportgen.reduce.health import pool_health
from reportgen.reduce.report import report_dict
from reportgen.render.report import render_report
from reportgen.core.cache import default_dir as default_cache_dir
from reportgen.core.cache import Cache
from reportgen.reduce.compare import run_comparisons
from reportgen.reduce.crossmodel import cross_model_cka
from reportgen.core.errors import SpecError, StrictWarningsError
from reportgen.run.executors import Executor, Sequential, make_executor
from reportgen.load.models import resolve_device
from reportgen.core.results import RunResult
from reportgen.run.layers import activation_problems
from reportgen.run.task import RunTask, remember_spec, run_task
from reportgen.run.trace import trace_batch
from reportgen.publish.site import build_lock, publish
from reportgen.load.spec import ReportSpec, load_spec
from reportgen.core.spill import NO_SPILL, Spill, spill_store
from reportgen.publish.uptodate import build_key, stamp
from reportgen.publish.siteconfig import site_warnings
from reportgen.core.stopping import building, shielded

Log = Callable[[str], None]


@dataclass
class BuildResult:
    out_dir: Path
    pages: int
    images: int
    seconds: float
    warnings: list[str]
    report: dict
    cache: Cache


def build(spec_path: str | Path, docs_dir: str | Path = "docs", device: str = "auto",
          strict: bool = False, log: Log = lambda msg: None,
          cache_dir: str | Path | None | bool = True, jobs: int = 1, executor: Executor | str | None = None,
          ray_address: str | None = None) -> BuildResult:
    """Build the report of ``spec_path`` into ``docs_dir/<report>/``.

    ``cache_dir``: where results are cached between builds; True: the default
    (``$REPORTGEN_CACHE_DIR`` or ``.reportgen-cache``); None or False: no cache.
    ``executor``: where the per-run tasks run: an Executor, or a name of
    ``reportgen.run.executors.EXECUTORS`` made with ``jobs`` and ``ray_address``; None: a
    process pool of ``jobs`` workers when ``jobs`` > 1 and the spec has several runs, else
    this process. The output is the same whichever runs the tasks.
    """
    t0 = time.perf_counter()
    spec = load_spec(spec_path)
    dev = resolve_device(device)
    key = build_key(spec, str(dev))  # before any input is read: a file changed meanwhile rebuilds next time
    given = executor
    executor = choose_executor(executor, jobs, ray_address, len(spec.runs))
    docs = Path(docs_dir)
    cache = Cache(default_cache_dir() if cache_dir is True else (cache_dir or None))
    building(docs / spec.report)
    with _closed_after(None if executor is given else executor), build_lock(docs, spec.report), \
            spill_store(cache, docs, spec.report) as spill:
        check_layers(spec)
        results, warnings = analyse(spec, dev, log, cache, executor, spill)
        log("comparing locations")
        comp = run_comparisons(spec, results, dev, cache, spill)
        comp.models = cross_model_cka(spec, results, spill)
        warnings += comp.warnings
        if strict and warnings:
            raise StrictWarningsError(
                f"{len(warnings)} warning(s) and --strict was given: " + "; ".join(warnings)
            )
        report = report_dict(spec, results, comp, dev)
        done = reduce_extensions(spec, results, report)
        report["findings"] = report_findings(report, done, spec.analyses)
        log("drawing pictures and writing pages")
        files = render_report(spec, results, comp, report, done, cache, spill)
        stamp(files, key, warnings, report)  # lets the next build see that nothing changed (reportgen.publish.uptodate)
        out = publish(files, docs, spec.report)
    # A cache that could not be used is reported but never fails the build (not even --strict);
    # nor does a site's mkdocs.yml that lacks a Markdown extension the pages use (the report is right).
    warnings += cache.warnings + site_warnings(docs)
    return BuildResult(
        out_dir=out, pages=files.count(".md"), images=files.count(".png"),
        seconds=time.perf_counter() - t0, warnings=warnings, report=report, cache=cache,
    )


@contextmanager
def _closed_after(made: Executor | None) -> Iterator[None]:
    """Close ``made``, an executor the build made rather than got (a local Ray it started),
    when the build ends: finished, failed or stopped (reportgen.core.stopping)."""
    try:
        yield
    finally:
        if hasattr(made, "close"):
            with shielded():
                made.close()


def choose_executor(executor: Executor | str | None, jobs: int, address: str | None, runs: int) -> Executor:
    """The executor of a build (see ``build``); never more workers than runs."""
    if executor is None:
        executor = "process" if jobs > 1 and runs > 1 else "sequential"
    if isinstance(executor, str):
        return make_executor(executor, max(1, min(jobs, runs)), address)
    return executor


def check_layers(spec: ReportSpec) -> dict[str, dict[str, nn.Module]]:
    """Build each architecture once (no checkpoint), resolve every layer name and run
    a dry forward pass at the spec's input size (reportgen.run.preflight).

    Layer names and shapes depend on the architecture only, so one instance per
    model serves all its locations. Raises SpecError listing every problem.
    Returns model name -> {layer name: module} of that instance.
    """
    from reportgen.run.preflight import check_models

    problems, checks = check_models(spec)
    for name, c in checks.items():
        run = next(r for r in spec.runs if r.model.name == name)
        problems = list(problems) + activation_problems(spec, run, c.module)
    if problems:
        raise SpecError(problems)
    return {name: dict(c.module.named_modules()) for name, c in checks.items()}


def analyse(spec: ReportSpec, device: torch.device, log: Log, cache: Cache | None = None,
            executor: Executor | None = None, spill: Spill = NO_SPILL) -> tuple[list[RunResult], list[str]]:
    """Map the per-run task over every run (in spec order, whatever the executor), then pool
    the health statistics per model and layer. Returns the results and the warnings: every
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
    todo = [task for i, task in enumerate(tasks) if i not in cached]
    fn = functools.partial(run_task, log=log) if isinstance(executor, Sequential) else run_task
    results = []
    shown: dict = {}
    mapped = executor.map(fn, todo)
    try:
        for i, task in enumerate(tasks, 1):
            log(f"[{i}/{len(tasks)}] {task.run_key}")
            result = cached[i - 1] if i - 1 in cached else next(mapped)
            _merge_cache_counts(cache, result)
            _share_images(result, shown)
            results.append(result)
    finally:
        # At once, even when an interrupt arrived out here: the traceback would keep the
        # map's workers running until it is dropped (reportgen.run.executors ends them on close).
        close = getattr(mapped, "close", None)
        if close is not None:
            close()
    warnings = [f"{r.run.key}: {n}" for r in results for n in r.notes]
    warnings += [w for r in results for w in r.unit_notes] + [w for r in results for w in r.trace_notes]
    pool_health(spec, results)
    return results, warnings


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


