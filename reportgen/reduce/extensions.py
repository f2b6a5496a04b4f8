"""The report-wide part of the active extensions (reportgen.core.extension), after the report
dict is built: their findings join the report's in reportgen.reduce.findings, their pictures
and pages are drawn by reportgen.render.report."""

from __future__ import annotations

from reportgen.core.extension import Extension, active
from reportgen.load.spec import ReportSpec


def reduce_extensions(spec: ReportSpec, results, report: dict) -> list[tuple[Extension, dict]]:
    """Set ``report[name]`` to each active extension's reduce of its per-run values (run key ->
    value, in run order; runs it did not run on are left out). Returns (extension, values) pairs."""
    done = []
    for ext in active(spec):
        values = {r.run.key: r.extras[ext.name] for r in results if ext.name in r.extras}
        report[ext.name] = ext.reduce(spec, values, report)
        done.append((ext, values))
    return done


