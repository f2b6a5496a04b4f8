"""The report-wide parts of the active extensions (reportgen.core.extension): reduce, findings,
pictures and pages, in that order, after the report dict is built."""

from __future__ import annotations

from reportgen.analysis.findings import rank_key
from reportgen.core.extension import Extension, active
from reportgen.publish.site import ReportFiles
from reportgen.load.spec import ReportSpec

TAIL_KINDS = ("overview", "next_step")  # findings that close the list, after the ranked ones


def reduce_extensions(spec: ReportSpec, results, report: dict) -> list[tuple[Extension, dict]]:
    """Set ``report[name]`` to each active extension's reduce of its per-run values (run key ->
    value, in run order; runs it did not run on are left out). Returns (extension, values) pairs."""
    done = []
    for ext in active(spec):
        values = {r.run.key: r.extras[ext.name] for r in results if ext.name in r.extras}
        report[ext.name] = ext.reduce(spec, values, report)
        done.append((ext, values))
    return done


def with_extension_findings(findings: list[dict], done: list[tuple[Extension, dict]], report: dict,
                            analyses) -> list[dict]:
    """``findings`` with the extensions' findings ranked among them (severity, then value), the
    overview and next step kept last. A finding without a model is said of the report's only model."""
    extra = [f for ext, _ in done if ext.findings for f in ext.findings(report, analyses)]
    if not extra:
        return findings
    models = list(dict.fromkeys(r["model"] for r in report["runs"]))
    extra = [{**f, "model": f.get("model", models[0] if len(models) == 1 else None)} for f in extra]
    head = [f for f in findings if f.get("kind") not in TAIL_KINDS] + extra
    return (sorted(head, key=rank_key)
            + [f for f in findings if f.get("kind") in TAIL_KINDS])


def add_extension_files(spec: ReportSpec, done: list[tuple[Extension, dict]], report: dict,
                        files: ReportFiles) -> None:
    """Each extension's pictures under ``img/<name>/`` and its pages, into the report's files."""
    for ext, values in done:
        published: dict[str, str] = {}
        if ext.pictures:
            for key, data in ext.pictures(spec, report[ext.name], values).items():
                published[key] = files.add(f"img/{ext.name}/{key}", data)
        if ext.pages:
            for rel, text in ext.pages(spec, report, published).items():
                files.add(rel, text)
