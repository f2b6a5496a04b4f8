"""The sequencer: the one place that runs the steps of a build in order.

    load spec -> check layers -> map runs -> reduce -> render -> publish

*map*: the per-run task (reportgen.run.run_task) for every run, through an executor
(reportgen.run.executors): each run's model is loaded once, and only when some result is
not cached. *reduce*: health pooled per model and layer, comparisons of locations, the
reference and models (reportgen.reduce.compare, reportgen.reduce.crossmodel). *render*: pictures,
report.json, findings and pages, each written as it is made into a staging folder beside the
report (reportgen.render.report). *publish*: an atomic swap of that folder into docs/<report>/
(reportgen.publish.site). Everything between loading and publishing
takes values and returns values.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from reportgen.core.cache import Cache
from reportgen.core.cache import default_dir as default_cache_dir
from reportgen.core.errors import StrictWarningsError
from reportgen.core.spill import spill_store
from reportgen.core.stopping import building, shielded
from reportgen.load.models import resolve_device
from reportgen.load.spec import load_spec
from reportgen.publish.site import build_lock, publish, staging
from reportgen.publish.siteconfig import site_warnings
from reportgen.publish.uptodate import build_key, stamp
from reportgen.reduce.compare import run_comparisons
from reportgen.reduce.crossmodel import cross_model_cka
from reportgen.reduce.extensions import reduce_extensions
from reportgen.reduce.findings import report_findings
from reportgen.reduce.health import pool_health
from reportgen.reduce.report import report_dict
from reportgen.render.report import render_report
from reportgen.run.executors import Executor, make_executor
from reportgen.run.map import map_runs
from reportgen.run.preflight import preflight

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
        preflight(spec)
        results, warnings = map_runs(spec, dev, log, cache, executor, spill)
        pool_health(spec, results)
        log("comparing locations")
        comp = run_comparisons(spec, results, dev, cache, spill, executor)
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
        with staging(docs, spec.report) as folder, _workers_ended_on_error(executor):
            # the files are written there as they are made, some by the pool's workers: those
            # are ended before a failed build removes the folder
            files = render_report(spec, results, comp, report, done, folder, cache, spill, executor)
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


@contextmanager
def _workers_ended_on_error(executor: Executor) -> Iterator[None]:
    """End a local pool's running workers (``close``) when the block fails or is stopped, before
    the staging folder they write into is removed."""
    try:
        yield
    except BaseException:
        if getattr(executor, "warm", False):
            with shielded():
                executor.close()
        raise


def choose_executor(executor: Executor | str | None, jobs: int, address: str | None, runs: int) -> Executor:
    """The executor of a build (see ``build``); never more workers than runs."""
    if executor is None:
        executor = "process" if jobs > 1 and runs > 1 else "sequential"
    if isinstance(executor, str):
        return make_executor(executor, max(1, min(jobs, runs)), address)
    return executor


