"""The report's findings: each model's, said of that model, with the extensions' findings
ranked among them (reportgen.analysis.findings makes the sentences)."""

from __future__ import annotations

from reportgen.analysis.findings import findings as make_findings
from reportgen.analysis.findings import rank_key
from reportgen.core.extension import Extension


TAIL_KINDS = ("overview", "next_step")  # findings that close the list, after the ranked ones



def model_findings(report: dict, analyses) -> list[dict]:
    """Findings of a one-model report as they are; with several models, each model's findings
    from its own runs and comparisons, said of that model and linked to its layer pages."""
    models = list(dict.fromkeys(r["model"] for r in report["runs"]))
    if len(models) < 2:
        return [{**f, "model": models[0] if models else None} for f in make_findings(report, analyses)]
    out = []
    ref = report.get("reference")
    for model in models:
        runs = [r for r in report["runs"] if r["model"] == model]
        keys = {r["key"] for r in runs}
        sub = {**report, "runs": runs,
               "comparisons": [c for c in report.get("comparisons", []) if c["model"] == model],
               "reference": ref if ref and any(p["run"] in keys for p in ref["per_run"]) else None}
        for f in make_findings(sub, analyses):
            text = relink_layers(f["text"], model)
            link = relink_layers(f"]({f['link']})", model)[2:-1] if f["link"] else None
            said = text if text.startswith(f"**{model}") else f"Model **{model}**: {text}"
            out.append({**f, "text": said, "link": link, "model": model})
    # Ranked findings of all models together; each model's overview and next step after them.
    tail = ("overview", "next_step")
    out = (sorted((f for f in out if f.get("kind") not in tail), key=rank_key)
           + [f for f in out if f.get("kind") == "overview"] + [f for f in out if f.get("kind") == "next_step"])
    if not report.get("model_comparisons") and analyses.compare.enabled and analyses.activations.enabled:
        out.append({"severity": "info", "kind": "next_step", "text": "Suggested next step: list test images "
                    "that every model sees (the same files in each model's images) to compare the models "
                    "with CKA.", "location": None, "locations": [], "layer": None, "link": None, "value": 0.0,
                    "model": None})
    return out



def relink_layers(text: str, model: str) -> str:
    """Point links to ``layers/<layer>.md`` at the model's own ``layers/<model>/<layer>.md``."""
    return text.replace("](layers/", f"](layers/{model}/")



def with_extension_findings(findings: list[dict], done: list[tuple[Extension, dict]], report: dict,
                            analyses) -> list[dict]:
    """``findings`` with the extensions' findings ranked among them (severity, then value), the
    overview and next step kept last. A finding without a model is said of the report's only model."""
    extra = [f for ext, _ in done for f in ext.findings(report, analyses)]
    if not extra:
        return findings
    models = list(dict.fromkeys(r["model"] for r in report["runs"]))
    extra = [{**f, "model": f.get("model", models[0] if len(models) == 1 else None)} for f in extra]
    head = [f for f in findings if f.get("kind") not in TAIL_KINDS] + extra
    return (sorted(head, key=rank_key)
            + [f for f in findings if f.get("kind") in TAIL_KINDS])


def report_findings(report: dict, done: list[tuple[Extension, dict]], analyses) -> list[dict]:
    """Every finding of the report, ranked: each model's, then the extensions' among them."""
    return with_extension_findings(model_findings(report, analyses), done, report, analyses)
