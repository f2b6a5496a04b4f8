"""Written findings: ranked sentences generated from report.json's numbers.

Pure: takes the report dict (the same numbers users read in report.json) and
the health thresholds; returns findings, most severe and largest first. Every
sentence quotes the number behind it and links to the view that shows it.
"""

from __future__ import annotations

from statistics import median

SEVERITY_ORDER = {"danger": 0, "warning": 1, "info": 2}


def findings(report: dict, health) -> list[dict]:
    """Each finding: ``severity``, ``text`` (Markdown), ``location``, ``layer``, ``link``, ``value``."""
    out: list[dict] = []
    near_zero_median = _median_by_layer(report, "near_zero_fraction")
    for run in report["runs"]:
        for layer in run["layers"]:
            s = layer["summary"]
            link = f"locations/{run['key']}.md#{anchor(layer['name'])}"
            where = f"**{run['key']}** · `{layer['name']}`"
            if s["nonfinite"]:
                out.append(_f("danger", f"{where}: {s['nonfinite']} of {s['filters']} filters contain NaN "
                              "or Inf weights (magenta in the filter grids); the checkpoint is broken "
                              "or training diverged.", run, layer, link, s["nonfinite"] / s["filters"]))
            if s["filters"] and s["dead"] / s["filters"] >= health.dead_share_warn:
                share = s["dead"] / s["filters"]
                ref = layer.get("pooled_scale", {}).get("median_norm")
                out.append(_f(
                    "danger" if share >= 0.5 else "warning",
                    f"{where}: {s['dead']} of {s['filters']} filters ({share:.0%}) are dead: their L2 norm "
                    f"is below {health.dead_norm_ratio:g} × the layer's median filter norm over all "
                    f"locations ({_num(ref)}). This location looks under-trained or over-regularised.",
                    run, layer, link, share))
            nz, nz_ref = s["near_zero_fraction"], near_zero_median.get((run["model"], layer["name"]))
            if nz is not None and nz_ref is not None and nz >= max(2 * nz_ref, nz_ref + 0.15):
                out.append(_f(
                    "warning",
                    f"{where}: {nz:.0%} of the weights are near zero (|w| < {health.near_zero_ratio:g} × "
                    f"the layer's RMS weight), against a median of {nz_ref:.0%} over locations.",
                    run, layer, link, nz))
            if s["channels"] and s["never_active"] / s["channels"] >= health.never_active_share_warn:
                share = s["never_active"] / s["channels"]
                out.append(_f(
                    "warning",
                    f"{where}: {s['never_active']} of {s['channels']} channels ({share:.0%}) never activate "
                    f"(max ≤ 0) on the {len(run['images'])} test images.", run, layer, link, share))
            if s["channels"] and s["saturated"]:
                share = s["saturated"] / s["channels"]
                out.append(_f(
                    "info",
                    f"{where}: {s['saturated']} of {s['channels']} channels are active at ≥ "
                    f"{health.saturated_fraction:.0%} of positions (saturated: they barely select).",
                    run, layer, link, share))
    out.sort(key=lambda f: (SEVERITY_ORDER[f["severity"]], -f["value"], f["location"], f["layer"]))
    out.append(_overview(report, out))
    return out


def _overview(report: dict, flagged: list[dict]) -> dict:
    runs = [r["key"] for r in report["runs"]]
    bad = sorted({f["location"] for f in flagged if f["severity"] in ("danger", "warning")},
                 key=runs.index)
    if bad:
        text = (f"{len(runs) - len(bad)} of {len(runs)} locations show no health problem at the inspected "
                f"layers; look first at {', '.join(f'**{b}**' for b in bad)}.")
    else:
        text = f"All {len(runs)} locations pass every health check at the inspected layers."
    return {"severity": "info", "text": text, "location": None, "layer": None, "link": None,
            "value": len(bad) / max(1, len(runs))}


def _f(severity: str, text: str, run: dict, layer: dict, link: str, value: float) -> dict:
    return {"severity": severity, "text": text, "location": run["key"], "layer": layer["name"],
            "link": link, "value": float(value)}


def _median_by_layer(report: dict, key: str) -> dict[tuple[str, str], float]:
    vals: dict[tuple[str, str], list[float]] = {}
    for run in report["runs"]:
        for layer in run["layers"]:
            v = layer["summary"][key]
            if v is not None:
                vals.setdefault((run["model"], layer["name"]), []).append(v)
    return {k: median(v) for k, v in vals.items() if len(v) >= 3}


def anchor(layer: str) -> str:
    """HTML id of a layer's section on a location page."""
    return "layer-" + "".join(c if c.isalnum() else "-" for c in layer)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"
