"""Written findings: ranked sentences generated from report.json's numbers.

Pure: takes the report dict (the very numbers users read in report.json) and the
spec's analysis options; returns findings ranked by severity, then by how far from
normal (``value``), then the overview and the suggested next step. Every sentence
quotes the numbers behind it and links to the view that shows them. One finding per
pattern: a diagnosis shared by several locations, or a pattern seen at several layers,
is one line listing them. The rules are documented in docs/reference/methods.md#findings.
"""

from __future__ import annotations

from statistics import median

import numpy as np

from reportgen.analysis.findings_health import kept_initial_size, location_findings, pattern_findings
from reportgen.analysis.wording import finding, listing
from reportgen.core.names import code, slug

SEVERITY_ORDER = {"danger": 0, "warning": 1, "info": 2}
OUTLIER_GAP = 0.1  # minimum gap below the median similarity for an outlier


def rank_key(f: dict) -> tuple:
    """The order of ranked findings: severity, then how far from normal (``value``, largest
    first; NaN last), then kind, model and text, so that findings that tie on severity and
    value come out in the same order whatever order they were made in (executors, cache,
    import order)."""
    value = f["value"]
    return (SEVERITY_ORDER[f["severity"]], -value if value == value else float("inf"),
            f.get("kind") or "", f.get("model") or "", f["text"])


def findings(report: dict, analyses) -> list[dict]:
    """Each finding: ``severity``, ``kind``, ``text`` (Markdown), ``location`` (or null),
    ``locations`` (every location it names), ``layer``, ``link``, ``value``."""
    health = analyses.health
    verdicts = location_findings(report, health)
    gabor = _tag(gabor_findings(report, analyses.gabor.min_score), "gabor")
    sims = [dict(f, kind="trend" if f["link"] == "stages.md" else "similarity")
            for f in similarity_findings(report, analyses.compare.similar)]
    patterns = pattern_findings(report, health)
    ranked = sorted(verdicts + gabor + sims + patterns, key=rank_key)
    unhealthy = sorted({k for f in verdicts if f["severity"] != "info" for k in f["locations"]})
    notes = any(f["severity"] == "warning" or f.get("pattern") == "dead" for f in patterns)
    short = any(f.get("pattern") == "too_few_images" for f in patterns)
    out = ranked + [_overview(report, unhealthy, notes, verdicts, short)]
    nxt = _next_step(report, verdicts, gabor, patterns)
    if nxt:
        out.append(nxt)
    return out


def _tag(items: list[dict], kind: str) -> list[dict]:
    return [dict(f, kind=kind) for f in items]


Z_ABOVE_CHANCE = 3.0  # standard deviations above chance before two layers count as related


def similarity_verdict(value: float, chance: float | None, chance_sd: float | None, similar: float) -> str:
    """'unrelated' within Z_ABOVE_CHANCE sd of chance, 'similar' from ``similar`` up, else 'different'."""
    if chance is not None and chance_sd and (value - chance) / chance_sd < Z_ABOVE_CHANCE:
        return "unrelated"
    return "similar" if value >= similar else "different"


def _ci_text(ci) -> str:
    return f" (95% interval {ci[0]:.2f}–{ci[1]:.2f})" if ci and ci[0] is not None else ""


def similarity_findings(report: dict, similar: float) -> list[dict]:
    out = []
    cka_by_layer = []
    for c in report.get("comparisons", []):
        layer, runs = c["layer"], c["runs"]
        link = f"layers/{slug(layer)}.md#similarity"
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
        text = f"{code(layer)}: the locations learned {verdict} {what}: median {measure} over pairs is {pair_med:.2f}"
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
    trend = " → ".join(f"{code(name)} {v:.2f}" + (f" [{ci[0]:.2f}–{ci[1]:.2f}]" if ci and ci[0] is not None else "")
                       for name, v, ci in cka_by_layer)
    if max(vals) - min(vals) < 0.1:
        change = "agree about as much at every stage"
    elif (steps <= 0).all():
        change = "diverge with depth"
    elif (steps >= 0).all():
        change = "converge with depth"
    else:
        lo = int(np.argmin(vals))
        change = (f"neither converge nor diverge steadily (least alike at {code(cka_by_layer[lo][0])})")
    with_ci = any(ci and ci[0] is not None for _, _, ci in cka_by_layer)
    return _f("info", f"Across stages, the locations' activations {change}: median CKA {trend}"
              + (" (95% bootstrap intervals over the shared images)" if with_ci else "")
              + ". [See the same images at every stage](stages.md).", None, None, "stages.md", max(vals) - min(vals))


def gabor_findings(report: dict, min_score: float) -> list[dict]:
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
    link = f"layers/{slug(layer_name)}.md#gabor-likeness"
    few = ""
    if unranked:
        few = (" Not ranked, too few live filters to say: "
               + ", ".join(f"{k} ({g['share_gabor_like']:.0%} of {_live(g)})" for k, g in unranked.items()) + ".")
    if not ranked:
        text = (f"{code(layer_name)}: no location has enough live filters to say how Gabor-like its filters are: "
                + ", ".join(f"{k} {g['share_gabor_like']:.0%} of {_live(g)}" for k, g in summaries.items())
                + f". [See the fits]({link}).")
        return [_f("info", text, None, layer_name, link, 0.0)]
    med = median(g["share_gabor_like"] for g in ranked.values())
    best = max(ranked, key=lambda k: ranked[k]["share_gabor_like"])
    text = (f"{code(layer_name)}: few filters are Gabor-like" if med < 0.5 else f"{code(layer_name)}: most filters are Gabor-like")
    margin = next((g["margin"] for g in ranked.values() if g.get("margin") is not None), None)
    text += (f": the median location has {med:.0%} of its live filters whose Gabor fit reaches an adjusted R² of "
             f"{min_score:g}" + (f" and beats a centre-surround (blob) fit by {margin:g} or more" if margin else "")
             + f" (highest: {best}, {ranked[best]['share_gabor_like']:.0%} of {_live(ranked[best])}).")
    blobs = sorted((g.get("blob_like") or 0, k) for k, g in ranked.items())
    if blobs and blobs[-1][0]:
        text += (f" Fits that reach {min_score:g} but a blob explains as well are not counted (up to "
                 f"{blobs[-1][0]} at {blobs[-1][1]}).")
    text += few
    ref = report.get("reference")
    severity, value = "info", 1 - med
    if ref and ref.get("gabor") and ref["gabor"]["share_gabor_like"] is not None:
        rs = ref["gabor"]["share_gabor_like"]
        text += f" The reference ({ref['name']}, {code(ref['layer'])}) has {rs:.0%} of {_live(ref['gabor'])}."
        matched = [p["matched_similarity"] for p in ref["per_run"]]
        if matched:
            text += (f" Matched similarity of each location's {code(ref['against'])} to the reference: median "
                     f"{median(matched):.2f}.")
        if rs - med >= 0.3:
            severity = "warning"
    text += f" [See the fits]({link})."
    return [_f(severity, text, None, layer_name, link, value)]


def _live(g: dict) -> str:
    """'8 live filters' (or 'its filters' for summaries written before live counts)."""
    n = g.get("live")
    return "its filters" if n is None else f"{n} live filter{'s' if n != 1 else ''}"


def _overview(report: dict, unhealthy: list[str], notes: bool, verdicts: list[dict] = (),
              short: bool = False) -> dict:
    """``notes``: health patterns (dead filters, layers at init everywhere) that name no one location.
    ``short``: too few test images to tell which channels never activate (a finding says so).
    The overview heads the findings, so it points down to them, and names what they diagnose."""
    runs = [r["key"] for r in report["runs"]]
    n = len(runs)
    images = (" Too few test images to tell yet which channels never activate or saturate: a finding below "
              "says how many would." if short else "")
    if unhealthy:
        ok = n - len(unhealthy)
        first = ", ".join(f"**{b}**" for b in unhealthy)
        if ok == 0 and n == 1:
            what = listing(list(dict.fromkeys(
                f"{f['diagnosis']} at {code(f['layer'])}" for f in verdicts if f["severity"] != "info")))
            text = f"The location shows a health problem: {what}; the findings below give the numbers."
        elif ok == 0:
            text = f"Every location shows a health problem at the inspected layers; look first at {first}."
        else:
            text = (f"{ok} of {n} locations show no health problem at the inspected layers; "
                    f"look first at {first}.")
    elif notes:
        text = ("No location stands out from the others at the inspected layers, but the health notes below "
                "apply" + ("." if n > 1 else " to it."))
    else:
        everyone = "The location passes" if n == 1 else "Both locations pass" if n == 2 else f"All {n} locations pass"
        text = f"{everyone} every health check at the inspected layers" + (" that the test images allow." if short
                                                                             else ".")
    return _f("info", text + images, None, None, None, len(unhealthy) / max(1, n), kind="overview")


def _next_step(report: dict, verdicts: list[dict], gabor: list[dict], patterns: list[dict]) -> dict | None:
    steps = []
    if any(f.get("pattern") == "init_everywhere" for f in patterns):
        steps.append("check that the checkpoints' weights reach the layers that still look like their "
                     "initialisation (state_dict keys, checkpoint_key) and that training updates them")
    by_kind: dict[str, list[str]] = {}
    for f in verdicts:
        if f["severity"] != "info":
            for k in f["locations"]:
                by_kind.setdefault(f["diagnosis"], []).append(k)
    if by_kind.get("broken"):
        steps.append(f"find where {', '.join(by_kind['broken'])} went non-finite (lower the learning rate, "
                     "clip gradients) and retrain")
    if by_kind.get("untrained"):
        steps.append(f"train {', '.join(by_kind['untrained'])} longer: "
                     f"{'it still looks' if len(by_kind['untrained']) == 1 else 'they still look'} "
                     "like the initialisation")
    shrunk = by_kind.get("collapsed", []) + by_kind.get("partly collapsed", []) + by_kind.get("shrunk", [])
    if shrunk:
        steps.append(f"retrain {', '.join(sorted(shrunk))} with a lighter penalty (L1, group lasso, weight decay) "
                     "and rebuild")
    if by_kind.get("silent"):
        died = [k for k in by_kind["silent"] if _silent_died(report, k)]
        learned = [k for k in by_kind["silent"] if k not in died]
        if died:
            steps.append(f"retrain {', '.join(died)} with a lower learning rate, warm-up or a leaky activation: its "
                         "never-active channels' filters kept their initial size, so they died early in training")
        if learned:
            steps.append(f"run {', '.join(learned)} on images closer to its own data: its never-active channels' "
                         "filters learned, so they may answer something these test images lack")
    ref = report.get("reference")
    runs = report["runs"]
    if gabor and ref and ref.get("gabor") and gabor[0]["severity"] == "warning":
        steps.append(f"the healthy locations' first layers are far less Gabor-like than the reference's; "
                     f"to tell the multi-task setup from under-training, train one location longer, or start "
                     f"its {code(ref['against'])} from the reference, and compare the Gabor share")
    if len(runs) > 1 and not any(c.get("cka") for c in report.get("comparisons", [])):
        steps.append("add test images shared by all locations (same file in every location's image list) "
                     "to compare their activations with CKA")
    if not steps:
        return None
    return _f("info", "Suggested next step: " + "; ".join(steps) + ".", None, None, None, 0.0, kind="next_step")


def _f(severity: str, text: str, location: str | None, layer: str | None, link: str | None, value: float,
       kind: str = "note", locations: list[str] | None = None) -> dict:
    return finding(severity, text, location, layer, link, value, kind=kind, locations=locations)


def _silent_died(report: dict, key: str) -> bool:
    """Whether run ``key``'s never-active channels kept their initial filter size while its active
    ones grew (the evidence of units lost in training, findings_health.DIED_IN_TRAINING)."""
    run = next(r for r in report["runs"] if r["key"] == key)
    for lay in run["layers"]:
        a, b = lay["summary"].get("never_active_norm_over_init"), lay["summary"].get("active_norm_over_init")
        if lay["summary"].get("never_active") and not lay.get("normalised_before_activation") \
                and kept_initial_size(a, b):
            return True
    return False
