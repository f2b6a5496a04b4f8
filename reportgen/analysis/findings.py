"""Written findings: ranked sentences generated from report.json's numbers.

Pure: takes the report dict (the very numbers users read in report.json) and the
spec's analysis options; returns findings, most severe and largest first. Every
sentence quotes the numbers behind it and links to the view that shows them.
The rules and thresholds are documented in docs/reference/methods.md#findings.
"""

from __future__ import annotations

from statistics import median

import numpy as np

SEVERITY_ORDER = {"danger": 0, "warning": 1, "info": 2}
NORM_COLLAPSE = 0.25  # a run's median filter norm below this x the other runs' median
OUTLIER_GAP = 0.1  # minimum gap below the median similarity for an outlier


def findings(report: dict, analyses) -> list[dict]:
    """Each finding: ``severity``, ``text`` (Markdown), ``location``, ``layer``, ``link``, ``value``."""
    health = analyses.health
    runs: list[dict] = []
    unhealthy = []
    for run in report["runs"]:
        f = _run_health(run, report, health)
        if f:
            runs.append(f)
            if f["severity"] != "info":
                unhealthy.append(run["key"])
    gabor = _gabor(report, analyses.gabor.min_score)
    # Locations by severity and size of the problem; then the report-wide notes in reading
    # order (Gabor, stage trend and similarity layer by layer, per-layer patterns).
    runs.sort(key=lambda f: (SEVERITY_ORDER[f["severity"]], -f["value"], f["location"]))
    notes = gabor + _similarity(report, analyses.compare.similar) + _layer_notes(report, health)
    notes = sorted(notes, key=lambda f: SEVERITY_ORDER[f["severity"]])  # stable: keeps reading order
    out = [f for f in runs if f["severity"] != "info"] + notes + [f for f in runs if f["severity"] == "info"]
    out.append(_overview(report, unhealthy))
    nxt = _next_step(report, unhealthy, gabor)
    if nxt:
        out.append(nxt)
    return out


def anchor(layer: str) -> str:
    """HTML id of a layer's section on a location page."""
    return "layer-" + "".join(c if c.isalnum() else "-" for c in layer)


def _loc_link(run: dict, layer: str) -> str:
    return f"locations/{run['key']}.md#{anchor(layer)}"


def _run_health(run: dict, report: dict, health) -> dict | None:
    """One finding per run that looks broken, under-trained or over-regularised, with its reasons."""
    reasons, worst, worst_layer, severity = [], 0.0, None, "info"
    norm_ref = _median_norm_of_others(report, run)
    nz_ref = _median_by_layer(report, "near_zero_fraction")
    na_median = _median_by_layer(report, "never_active_share")
    for layer in run["layers"]:
        s, name = layer["summary"], layer["name"]
        link = _loc_link(run, name)
        if s["nonfinite"]:
            reasons.append(f"[{s['nonfinite']} of {s['filters']} `{name}` filters hold NaN or Inf]({link})")
            worst, worst_layer, severity = max(worst, 1.0), worst_layer or name, "danger"
        if s["filters"] and s["dead"] / s["filters"] >= health.dead_share_warn:
            share = s["dead"] / s["filters"]
            reasons.append(f"[{s['dead']} of {s['filters']} `{name}` filters ({share:.0%}) are dead]({link})")
            if share > worst:
                worst, worst_layer = share, name
            severity = "danger" if share >= 0.5 or severity == "danger" else "warning"
        ref = norm_ref.get(name)
        if ref and s["median_l2_norm"] is not None and s["median_l2_norm"] < NORM_COLLAPSE * ref:
            ratio = s["median_l2_norm"] / ref
            reasons.append(f"[`{name}`'s median filter norm is {ratio:.0%} of the other locations' median]({link}) "
                           f"({s['median_l2_norm']:.3g} vs {ref:.3g})")
            worst_layer = worst_layer or name
            worst = max(worst, 1 - ratio)
            severity = "danger" if severity == "danger" else "warning"
        nz, nzr = s["near_zero_fraction"], nz_ref.get((run["model"], name))
        if nz is not None and nzr is not None and nz >= max(2 * nzr, nzr + 0.15):
            reasons.append(f"[{nz:.0%} of `{name}`'s weights are near zero]({link}) (median over locations {nzr:.0%})")
            worst_layer = worst_layer or name
            worst = max(worst, nz)
            severity = "warning" if severity == "info" else severity
        # "Never fires" means something only after an activation; raw logits may well stay negative.
        # A share as high as the other locations' is the layer's pattern, reported once per layer.
        na_ref = na_median.get((run["model"], name))
        if (layer.get("activation", "relu" if layer["relu_applied"] else "none") != "none" and s["channels"]
                and s["never_active"] / s["channels"] >= health.never_active_share_warn
                and (na_ref is None or s["never_active"] / s["channels"] >= na_ref + 0.15)):
            share = s["never_active"] / s["channels"]
            reasons.append(f"[{s['never_active']} of {s['channels']} `{name}` channels ({share:.0%}) never activate]"
                           f"({link}) on the {len(run['images'])} test images")
            worst_layer = worst_layer or name
            worst = max(worst, share)
            severity = "warning" if severity == "info" else severity
    if not reasons:
        return None
    verdict = ("is broken" if any("NaN" in r for r in reasons)
               else "looks under-trained or over-regularised")
    text = f"**{run['key']}** {verdict}: " + "; ".join(reasons) + "."
    return _f(severity, text, run["key"], worst_layer, _loc_link(run, worst_layer), worst)


def _layer_notes(report: dict, health) -> list[dict]:
    """Per layer, one note per pattern across all runs: widespread never-active channels,
    near-duplicate filters, norm outliers, saturated channels."""
    out = []
    by_layer: dict[str, list[tuple[dict, dict]]] = {}
    for run in report["runs"]:
        for layer in run["layers"]:
            by_layer.setdefault(layer["name"], []).append((run, layer))
    for name, items in by_layer.items():
        link = f"layers/{name}.md"
        shares = [lay["summary"]["never_active"] / lay["summary"]["channels"] for _, lay in items
                  if lay.get("activation", "relu" if lay["relu_applied"] else "none") != "none"
                  and lay["summary"]["channels"]]
        if len(shares) >= 2 and median(shares) >= health.never_active_share_warn:
            n_img = median(len(r["images"]) for r, _ in items)
            out.append(_f("info", f"`{name}`: channels that never activate are common everywhere: a median of "
                          f"{median(shares):.0%} per location (range {min(shares):.0%}–{max(shares):.0%}) on "
                          f"{n_img:g} test images. Being shared by all locations, this is a property of the "
                          f"architecture, the data or the test images rather than of one location; more varied "
                          f"test images would tell which. [See the layer]({link}).", None, name, link,
                          median(shares)))
        for key, what, fmt in (
                ("duplicates", f"near-duplicate filters (|cos| ≥ {health.duplicate_cosine:g} with an earlier one)",
                 "filters"),
                ("norm_outliers", f"filters with unusually large norms (robust z > {health.outlier_z:g})",
                 "filters"),
                ("saturated", f"saturated channels (active at ≥ {health.saturated_fraction:.0%} of positions, "
                              "so they barely select)", "channels")):
            hits = [(r["key"], lay["summary"][key], lay["summary"][fmt]) for r, lay in items if lay["summary"].get(key)]
            if not hits:
                continue
            share = max(n / max(1, total) for _, n, total in hits)
            listing = ", ".join(f"{k} {n}/{total}" for k, n, total in sorted(hits, key=lambda h: -h[1])[:6])
            more = f" and {len(hits) - 6} more" if len(hits) > 6 else ""
            severity = "warning" if key == "duplicates" and share >= 0.1 else "info"
            out.append(_f(severity, f"`{name}`: {what} at {len(hits)} of {len(items)} locations: {listing}{more}. "
                          f"[See the statistics on each location's page]({link}).", None, name, link, share))
    return out


Z_ABOVE_CHANCE = 3.0  # standard deviations above chance before two layers count as related


def similarity_verdict(value: float, chance: float | None, chance_sd: float | None, similar: float) -> str:
    """'unrelated' within Z_ABOVE_CHANCE sd of chance, 'similar' from ``similar`` up, else 'different'."""
    if chance is not None and chance_sd and (value - chance) / chance_sd < Z_ABOVE_CHANCE:
        return "unrelated"
    return "similar" if value >= similar else "different"


def _ci_text(ci) -> str:
    return f" (95% interval {ci[0]:.2f}–{ci[1]:.2f})" if ci and ci[0] is not None else ""


def _similarity(report: dict, similar: float) -> list[dict]:
    out = []
    cka_by_layer = []
    for c in report.get("comparisons", []):
        layer, runs = c["layer"], c["runs"]
        link = f"layers/{layer}.md#similarity"
        measure, key = next(((m, k) for m, k in (("matched |cos| of weights", "weight_similarity"),
                                                 ("CKA of activations", "cka")) if c[k] is not None), (None, None))
        if key is None:
            continue
        m = np.array(c[key], dtype=np.float64)
        iu = np.triu_indices(len(runs), 1)
        pair_med = float(np.nanmedian(m[iu]))
        means = np.array([np.nanmean(np.delete(m[i], i)) for i in range(len(runs))])
        order = np.argsort(-means)
        ranking = " > ".join(f"{runs[i]} ({means[i]:.2f})" for i in order)
        med = float(np.median(means))
        mad = float(np.median(np.abs(means - med))) * 1.4826
        outliers = [runs[i] for i in order if med - means[i] > max(OUTLIER_GAP, 3 * mad)]
        i, j = np.unravel_index(np.nanargmax(np.where(np.eye(len(runs), dtype=bool), -np.inf, m)), m.shape)
        weights = key == "weight_similarity"
        chance, sd = (c.get("weight_chance"), c.get("weight_chance_sd")) if weights else (None, None)
        verdict = similarity_verdict(pair_med, chance, sd, similar)
        what = "filters" if weights else "representations"
        text = f"`{layer}`: the locations learned {verdict} {what}: median {measure} over pairs is {pair_med:.2f}"
        if weights and chance is not None and sd:
            z = (pair_med - chance) / sd
            text += (f", {abs(z):.1f} sd {'above' if z >= 0 else 'below'} the {chance:.2f} ± {sd:.3f} that independent "
                     f"random filters of this shape reach (1 = identical up to order and sign; "
                     f"'unrelated' below {Z_ABOVE_CHANCE:g} sd above)")
        elif not weights:
            text += _ci_text((c.get("median_over_pairs_ci") or {}).get("cka")) + " (1 = the same up to rotation and scale)"
        text += f". Most alike: {runs[i]} and {runs[j]} ({m[i, j]:.2f})."
        if weights and c.get("alignment_note"):
            text += f" Compared in each location's own input-channel order: {c['alignment_note']}."
        if means.max() - means.min() >= 0.05:
            text += f" Ranked by mean similarity to the others: {ranking}."
        if outliers:
            text += f" Outlier{'s' if len(outliers) > 1 else ''}: {', '.join(f'**{o}**' for o in outliers)}."
        if c.get("cka") is not None:
            ck = np.array(c["cka"], dtype=np.float64)[iu]
            ci = (c.get("median_over_pairs_ci") or {}).get("cka")
            cka_by_layer.append((layer, float(np.nanmedian(ck)), ci))
            if weights:
                text += f" Median CKA of their activations on the shared images: {np.nanmedian(ck):.2f}{_ci_text(ci)}."
        text += f" [See the similarity matrices]({link})."
        out.append(_f("warning" if outliers else "info", text, None, layer, link, 1 - pair_med))
    if len(cka_by_layer) >= 2:  # the trend reads best before the layer-by-layer notes
        out.insert(0, _cka_trend(cka_by_layer))
    return out


def _cka_trend(cka_by_layer: list[tuple[str, float, list | None]]) -> dict:
    """One sentence on how the median CKA moves from stage to stage, as the sequence actually goes."""
    vals = [v for _, v, _ in cka_by_layer]
    steps = np.diff(vals)
    trend = " → ".join(f"`{name}` {v:.2f}" + (f" [{ci[0]:.2f}–{ci[1]:.2f}]" if ci and ci[0] is not None else "")
                       for name, v, ci in cka_by_layer)
    if max(vals) - min(vals) < 0.1:
        change = "agree about as much at every stage"
    elif (steps <= 0).all():
        change = "diverge with depth"
    elif (steps >= 0).all():
        change = "converge with depth"
    else:
        lo = int(np.argmin(vals))
        change = (f"neither converge nor diverge steadily (least alike at `{cka_by_layer[lo][0]}`)")
    with_ci = any(ci and ci[0] is not None for _, _, ci in cka_by_layer)
    return _f("info", f"Across stages, the locations' activations {change}: median CKA {trend}"
              + (" (95% bootstrap intervals over the shared images)" if with_ci else "")
              + ". [See the same images at every stage](stages.md).", None, None, "stages.md", max(vals) - min(vals))


def _gabor(report: dict, min_score: float) -> list[dict]:
    """Gabor shares are of live filters, each with its count; too few live filters are not ranked."""
    summaries = {}
    layer_name = None
    for run in report["runs"]:
        for layer in run["layers"]:
            g = layer.get("gabor")
            if g and g["share_gabor_like"] is not None and layer_name in (None, layer["name"]):
                layer_name = layer["name"]
                summaries[run["key"]] = g
    if not summaries:
        return []
    ranked = {k: g for k, g in summaries.items() if g.get("ranked", True)}
    unranked = {k: g for k, g in summaries.items() if k not in ranked}
    link = f"layers/{layer_name}.md#gabor-likeness"
    few = ""
    if unranked:
        few = (" Not ranked, too few live filters to say: "
               + ", ".join(f"{k} ({g['share_gabor_like']:.0%} of {_live(g)})" for k, g in unranked.items()) + ".")
    if not ranked:
        text = (f"`{layer_name}`: no location has enough live filters to say how Gabor-like its filters are: "
                + ", ".join(f"{k} {g['share_gabor_like']:.0%} of {_live(g)}" for k, g in summaries.items())
                + f". [See the fits]({link}).")
        return [_f("info", text, None, layer_name, link, 0.0)]
    med = median(g["share_gabor_like"] for g in ranked.values())
    best = max(ranked, key=lambda k: ranked[k]["share_gabor_like"])
    text = (f"`{layer_name}`: few filters are Gabor-like" if med < 0.5 else f"`{layer_name}`: most filters are Gabor-like")
    text += (f": the median location has {med:.0%} of its live filters whose Gabor fit reaches an adjusted R² of "
             f"{min_score:g} (highest: {best}, {ranked[best]['share_gabor_like']:.0%} of {_live(ranked[best])}).")
    text += few
    ref = report.get("reference")
    severity, value = "info", 1 - med
    if ref and ref.get("gabor") and ref["gabor"]["share_gabor_like"] is not None:
        rs = ref["gabor"]["share_gabor_like"]
        text += f" The reference ({ref['name']}, `{ref['layer']}`) has {rs:.0%} of {_live(ref['gabor'])}."
        matched = [p["matched_similarity"] for p in ref["per_run"]]
        if matched:
            text += (f" Matched similarity of each location's `{ref['against']}` to the reference: median "
                     f"{median(matched):.2f}.")
        if rs - med >= 0.3:
            severity = "warning"
    text += f" [See the fits]({link})."
    return [_f(severity, text, None, layer_name, link, value)]


def _live(g: dict) -> str:
    """'8 live filters' (or 'its filters' for summaries written before live counts)."""
    n = g.get("live")
    return "its filters" if n is None else f"{n} live filter{'s' if n != 1 else ''}"


def _overview(report: dict, unhealthy: list[str]) -> dict:
    runs = [r["key"] for r in report["runs"]]
    if unhealthy:
        text = (f"{len(runs) - len(unhealthy)} of {len(runs)} locations show no health problem at the "
                f"inspected layers; look first at {', '.join(f'**{b}**' for b in unhealthy)}.")
    else:
        text = f"All {len(runs)} locations pass every health check at the inspected layers."
    return _f("info", text, None, None, None, len(unhealthy) / max(1, len(runs)))


def _next_step(report: dict, unhealthy: list[str], gabor: list[dict]) -> dict | None:
    steps = []
    if unhealthy:
        steps.append(f"retrain {', '.join(unhealthy)} (more steps or lighter weight decay / L1) and rebuild: "
                     "their statistics, not the architecture, set them apart")
    ref = report.get("reference")
    runs = report["runs"]
    if gabor and ref and ref.get("gabor") and gabor[0]["severity"] == "warning":
        steps.append(f"the healthy locations' first layers are far less Gabor-like than the reference's; "
                     f"to tell the multi-task setup from under-training, train one location longer, or start "
                     f"its `{ref['against']}` from the reference, and compare the Gabor share")
    if len(runs) > 1 and not any(c.get("cka") for c in report.get("comparisons", [])):
        steps.append("add test images shared by all locations (same file in every location's image list) "
                     "to compare their activations with CKA")
    if not steps:
        return None
    return _f("info", "Suggested next step: " + "; ".join(steps) + ".", None, None, None, 0.0)


def _f(severity: str, text: str, location: str | None, layer: str | None, link: str | None, value: float) -> dict:
    return {"severity": severity, "text": text, "location": location, "layer": layer, "link": link,
            "value": float(value)}


def _median_norm_of_others(report: dict, run: dict) -> dict[str, float]:
    out = {}
    for layer in run["layers"]:
        vals = [lay["summary"]["median_l2_norm"] for r in report["runs"] if r is not run and r["model"] == run["model"]
                for lay in r["layers"] if lay["name"] == layer["name"] and lay["summary"]["median_l2_norm"] is not None]
        if len(vals) >= 2:
            out[layer["name"]] = median(vals)
    return out


def _median_by_layer(report: dict, key: str) -> dict[tuple[str, str], float]:
    """Median of a summary value per (model, layer) over runs (3 runs at least)."""
    vals: dict[tuple[str, str], list[float]] = {}
    for run in report["runs"]:
        for layer in run["layers"]:
            s = layer["summary"]
            v = (s["never_active"] / s["channels"] if s["channels"] else None) if key == "never_active_share" else s[key]
            if v is not None:
                vals.setdefault((run["model"], layer["name"]), []).append(v)
    return {k: median(v) for k, v in vals.items() if len(v) >= 3}
