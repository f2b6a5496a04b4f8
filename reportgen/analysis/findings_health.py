"""Health findings: one verdict per diagnosis (locations that share it on one line) and
one line per health pattern across layers and locations. Pure: report dict in, findings
out (see findings.py for the ranking and docs/reference/methods.md#findings for the rules).
"""

from __future__ import annotations

from statistics import median

from reportgen.analysis.evidence import MIN_IMAGES, distinct, rate_upper_bound
from reportgen.analysis.init_check import MIN_WEIGHTS as INIT_MIN_WEIGHTS
from reportgen.analysis.wording import (
    anchor,
    channel_noun,
    filter_noun,
    finding,
    listing,
    plural,
)
from reportgen.core.names import code, slug

NORM_COLLAPSE = 0.25  # a run's median filter norm below this x the other runs' median
SPARSE_LIVE = 0.5  # live filters with this share of near-zero weights: zeros everywhere (L1-like)
INIT_EVERYWHERE = 0.75  # a layer at init at this share of locations is the layer's pattern
DIED_IN_TRAINING = 0.25  # never-active filters within this of their initial norm (x 1) kept their start

# Diagnoses from the most to the least severe; a location is named under its first.
DIAGNOSES = ["broken", "never trained", "collapsed", "untrained", "partly collapsed", "shrunk", "sparse", "silent"]


def location_findings(report: dict, health) -> list[dict]:
    """One finding per (diagnosis, layer, cause) group of locations that stand out."""
    ctx = _Context(report)
    groups: dict[tuple, list[tuple[dict, list[dict]]]] = {}
    for run in report["runs"]:
        reasons = _reasons(run, ctx, health)
        if not reasons:
            continue
        reasons.sort(key=lambda r: (DIAGNOSES.index(r["diagnosis"]), -r["value"]))
        main = reasons[0]
        groups.setdefault((main["diagnosis"], main["layer"], main.get("cause")), []).append((run, reasons))
    out = []
    for (diagnosis, layer, cause), members in groups.items():
        keys = [run["key"] for run, _ in members]
        entry = next((x for x in members[0][0]["layers"] if x["name"] == layer), {})
        head = _headline(diagnosis, layer, cause, len(keys), filter_noun(entry))
        parts = []
        for run, reasons in members:
            main = [r["text"] for r in reasons if (r["diagnosis"], r["layer"]) == (diagnosis, layer)]
            more = [r["text"] for r in reasons if (r["diagnosis"], r["layer"]) != (diagnosis, layer)]
            part = "; ".join(main) + (f". Also: {'; '.join(more)}" if more else "")
            parts.append(part if len(members) == 1 else f"{run['key']}: {part}")
        severity = "danger" if any(r["severity"] == "danger" for _, rs in members for r in rs) else "warning"
        text = f"{', '.join(f'**{k}**' for k in keys)} {head}: " + "; ".join(parts) + "."
        value = max(r["value"] for _, rs in members for r in rs)
        first = members[0][0]
        evidence = [{"location": run["key"], "layer": r["layer"], "diagnosis": r["diagnosis"], **r["evidence"]}
                    for run, rs in members for r in rs]
        out.append(finding(severity, text, keys[0] if len(keys) == 1 else None, layer,
                           _loc_link(first, layer), value, kind="location", locations=keys, diagnosis=diagnosis,
                           evidence=evidence))
    return out


def pattern_findings(report: dict, health) -> list[dict]:
    """Health patterns across layers and locations, one line each."""
    ctx = _Context(report)
    return [f for f in (_never_active_everywhere(ctx, health), _init_everywhere(ctx), _dead_below_warning(ctx, health),
                        _pairs(ctx, health, "duplicates"), _pairs(ctx, health, "on_off_pairs"), _saturated(ctx, health),
                        too_few_images(ctx))
            if f]


class _Context:
    """Per (model, layer): the runs' layer entries, for medians over locations."""

    def __init__(self, report: dict):
        self.report = report
        self.layers: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
        for run in report["runs"]:
            for lay in run["layers"]:
                self.layers.setdefault((run["model"], lay["name"]), []).append((run, lay))

    def others(self, run: dict, lay: dict) -> list[dict]:
        return [x for r, x in self.layers[(run["model"], lay["name"])] if r is not run]

    def median_of(self, run: dict, lay: dict, get, include_self: bool = True, at_least: int = 3) -> float | None:
        entries = self.layers[(run["model"], lay["name"])] if include_self else [
            (r, x) for r, x in self.layers[(run["model"], lay["name"])] if r is not run]
        vals = [v for v in (get(x) for _, x in entries) if v is not None]
        return median(vals) if len(vals) >= at_least else None

    def init_share(self, run: dict, lay: dict) -> float:
        """Share of the model's locations whose layer looks like its initialisation."""
        flags = [bool(x["summary"].get("looks_like_init")) for _, x in self.layers[(run["model"], lay["name"])]]
        return sum(flags) / len(flags)

    def init_is_pattern(self, run: dict, lay: dict) -> bool:
        """The layer is at its initialisation at most of several locations: reported once, as a pattern."""
        return len(self.layers[(run["model"], lay["name"])]) >= 2 and self.init_share(run, lay) >= INIT_EVERYWHERE

    def by_layer(self) -> dict[str, list[tuple[dict, dict]]]:
        out: dict[str, list[tuple[dict, dict]]] = {}
        for (_, name), items in self.layers.items():
            out.setdefault(name, []).extend(items)
        return out


def _loc_link(run: dict, layer: str | None) -> str:
    return f"locations/{run['key']}.md" + (f"#{anchor(layer)}" if layer else "")


def _weights_evidence(ctx: _Context, run: dict, lay: dict, rule: str, **extra) -> dict:
    """What a weight-based diagnosis rests on: the layer's filters and the locations its scale is
    pooled over. Weights need no test image: the evidence is the weights themselves."""
    pooled = lay.get("pooled_scale") or {}
    return {"basis": "weights", "rule": rule, "filters": lay["summary"]["filters"],
            "weights_per_filter": _per_filter(lay), "locations": len(ctx.layers[(run["model"], lay["name"])]),
            "pooled_median_norm": pooled.get("median_norm"), "enough": True, **extra}


def _per_filter(lay: dict) -> int | None:
    shape = lay.get("weight_shape")
    if not shape:
        return None
    n = 1
    for d in shape[1:]:
        n *= d
    return n


def image_evidence_of(lay: dict, n_images: int) -> dict:
    """The layer's ``evidence`` entry (report.json), or one made from the run's image count for
    reports written before it existed."""
    ev = lay.get("evidence")
    if ev:
        return ev
    bound = rate_upper_bound(n_images)
    return {"images": n_images, "positions_per_image": None, "confidence": 0.95, "max_rate": 0.1,
            "min_images": MIN_IMAGES, "rate_upper_bound": bound, "enough": n_images >= MIN_IMAGES}


def label_count(lay: dict, key: str, n_images: int | None = None) -> int:
    """How many channels carry the label ``key`` ('never_active', 'saturated'): those observed
    on every test image, counted only with enough images (``<key>_label`` in the summary; for
    reports without it, the observed count when the evidence allows it, else 0)."""
    s = lay["summary"]
    if f"{key}_label" in s:
        return s[f"{key}_label"]
    ev = lay.get("evidence") or (image_evidence_of(lay, n_images) if n_images is not None else {})
    return s[key] if ev.get("enough") else 0


def _reasons(run: dict, ctx: _Context, health) -> list[dict]:
    out = []
    weighted = [lay for lay in run["layers"] if lay["summary"]["filters"]]
    at_init = [lay for lay in weighted if lay["summary"].get("looks_like_init")]
    never_trained = (len(weighted) >= 1 and len(at_init) == len(weighted)
                     and not all(ctx.init_is_pattern(run, lay) for lay in weighted))
    for lay in run["layers"]:
        s, name = lay["summary"], lay["name"]
        link = _loc_link(run, name)
        fn, cn = filter_noun(lay), channel_noun(lay)
        collapsed = False
        if s["nonfinite"]:
            out.append(_r("broken", "danger", name, 1.0, f"[{s['nonfinite']} of {plural(s['filters'], fn)} of "
                          f"{code(name)} hold NaN or Inf]({link})",
                          evidence=_weights_evidence(ctx, run, lay, "a NaN or Inf weight")))
        if s["filters"] and s["dead"] / s["filters"] >= health.dead_share_warn:
            collapsed = True
            share = s["dead"] / s["filters"]
            live_nz = [f["near_zero_fraction"] for f in lay["filters"]
                       if not f["dead"] and f["near_zero_fraction"] is not None]
            cause = ("all" if not live_nz else "l1" if sum(live_nz) / len(live_nz) >= SPARSE_LIVE else "pruned")
            text = f"[{s['dead']} of {plural(s['filters'], fn)} ({share:.0%}) dead]({link})"
            nz_ref = ctx.median_of(run, lay, lambda x: x["summary"]["near_zero_fraction"])
            if s["near_zero_fraction"] is not None and nz_ref is not None:
                text += f", {s['near_zero_fraction']:.0%} of weights near zero (median over locations {nz_ref:.0%})"
            norm_ref = ctx.median_of(run, lay, lambda x: x["summary"]["median_l2_norm"], include_self=False, at_least=2)
            if norm_ref and s["median_l2_norm"] is not None:
                text += (f", median {fn} norm {_ratio(s['median_l2_norm'] / norm_ref)} the other locations' "
                         f"({s['median_l2_norm']:.3g} vs {norm_ref:.3g})")
            out.append(_r("collapsed" if share >= 0.5 else "partly collapsed", "danger" if share >= 0.5 else "warning",
                          name, share, text, cause=cause, evidence=_weights_evidence(
                              ctx, run, lay, f"L2 norm below {ctx.report['thresholds']['dead_norm_ratio']:g} x the "
                              "layer's median filter norm pooled over its locations", dead=s["dead"])))
        norm_ref = ctx.median_of(run, lay, lambda x: x["summary"]["median_l2_norm"], include_self=False, at_least=2)
        if (not collapsed and norm_ref and s["median_l2_norm"] is not None
                and s["median_l2_norm"] < NORM_COLLAPSE * norm_ref):
            ratio = s["median_l2_norm"] / norm_ref
            out.append(_r("shrunk", "warning", name, 1 - ratio, f"[{code(name)}'s median {fn} norm is {_ratio(ratio)} "
                          f"the other locations' median]({link}) ({s['median_l2_norm']:.3g} vs {norm_ref:.3g})",
                          evidence=_weights_evidence(ctx, run, lay, f"median filter norm below {NORM_COLLAPSE:g} x "
                                                     "the median of at least 2 other locations")))
        nz, nzr = s["near_zero_fraction"], ctx.median_of(run, lay, lambda x: x["summary"]["near_zero_fraction"])
        if not collapsed and nz is not None and nzr is not None and nz >= max(2 * nzr, nzr + 0.15):
            out.append(_r("sparse", "warning", name, nz, f"[{nz:.0%} of {code(name)}'s weights are near zero]({link}) "
                          f"(median over locations {nzr:.0%})",
                          evidence=_weights_evidence(ctx, run, lay, "near-zero share at least twice, and 15 points "
                                                     "above, the median of at least 3 locations")))
        init = lay.get("init_check")
        if s.get("looks_like_init") and init and not ctx.init_is_pattern(run, lay):
            fam = init["families"][init["family"]]
            others = [x["init_check"]["families"][init["family"]]["ks"] for x in ctx.others(run, lay)
                      if x.get("init_check") and x["init_check"].get("families")]
            ks, limit = distinct(fam["ks"], init["ks_limit"], digits=2)
            text = (f"[its weights still follow {fam['description']}, {fam['law']}]({link}): KS distance "
                    f"{ks}, within the {limit} that sampling allows for its {init['weights']} weights"
                    + (f" (other locations: median {median(others):.3f})" if others else "")
                    + f"; excess kurtosis {init['excess_kurtosis']:+.2f}"
                    + (" (a uniform law: −1.2)" if "U(" in fam["law"] else " (a normal law: 0)")
                    + f"; max |w| {init['max_abs_over_bound']:.2f}× the init bound 1/√fan-in")
            out.append(_r("never trained" if never_trained else "untrained", "danger" if never_trained else "warning",
                          name, max(0.0, 1 - fam["ks"] / init["ks_limit"]) if init["ks_limit"] else 0.0, text,
                          evidence={"basis": "weights", "rule": "KS distance, kurtosis and range of all weights within "
                                    "what sampling allows for an init law", "weights": init["weights"],
                                    "min_weights": INIT_MIN_WEIGHTS, "ks": fam["ks"], "ks_limit": init["ks_limit"],
                                    "enough": init["weights"] >= INIT_MIN_WEIGHTS}))
        # max <= 0 means "never fires" only for rectified outputs; raw logits may well stay negative.
        # A share as high as the other locations' is the layer's pattern, reported once. The count
        # is of the label, which needs enough test images (analysis/evidence.py).
        na_ref = ctx.median_of(run, lay, _na_share)
        labelled = label_count(lay, "never_active", len(run["images"]))
        if (activated(lay) and s["channels"] and not collapsed
                and labelled / s["channels"] >= health.never_active_share_warn
                and (na_ref is None or labelled / s["channels"] >= na_ref + 0.15)):
            share = labelled / s["channels"]
            ev = image_evidence_of(lay, len(run["images"]))
            out.append(_r("silent", "warning", name, share,
                          f"[{labelled} of {plural(s['channels'], cn)} of {code(name)} ({share:.0%}) never "
                          f"activate]({link}) on any of the {plural(ev['images'], 'test image')}, so each one fires on "
                          f"under {ev['rate_upper_bound']:.1%} of images (95% bound)"
                          + (f" (median over locations {na_ref:.0%})" if na_ref is not None else ""),
                          evidence={"basis": "images", "rule": f"silent on every position of each of at least "
                                    f"{MIN_IMAGES} images", **ev}))
    return out


def _r(diagnosis: str, severity: str, layer: str, value: float, text: str, cause: str | None = None,
       evidence: dict | None = None) -> dict:
    return {"diagnosis": diagnosis, "severity": severity, "layer": layer, "value": float(value), "text": text,
            "cause": cause, "evidence": evidence or {}}


def _ratio(r: float) -> str:
    """'24% of', '0.04% of', '3e-06 times': a ratio with enough digits to be non-zero."""
    return f"{r:.0%} of" if r >= 0.01 else f"{r:.2%} of" if r >= 0.0001 else f"{r:.0e} times"


def _headline(diagnosis: str, layer: str, cause: str | None, n: int, noun: str = "filter") -> str:
    look = "looks" if n == 1 else "look"
    if diagnosis == "broken":
        return f"{'is' if n == 1 else 'are'} broken: {code(layer)} holds NaN or Inf weights"
    if diagnosis == "never trained":
        return f"{look} never trained: every inspected layer still looks like its initialisation"
    if diagnosis == "untrained":
        return f"{look} under-trained: {code(layer)} still looks like its initialisation"
    if diagnosis in ("collapsed", "partly collapsed") and cause == "all":
        return f"{look} collapsed: nothing in {code(layer)} is alive"
    if diagnosis in ("collapsed", "partly collapsed"):
        how = ("weights driven to zero throughout, the pattern of an L1 penalty or strong weight decay"
               if cause == "l1" else f"whole {noun}s zeroed while the rest keep their weights, the pattern of a "
               f"{noun}-pruning penalty such as group lasso")
        return f"{look} over-regularised: {code(layer)} {diagnosis} ({how})"
    if diagnosis == "shrunk":
        return f"{look} over-regularised: {code(layer)}'s weights shrank"
    if diagnosis == "sparse":
        return f"{look} over-regularised: {code(layer)} is sparse"
    return f"{'has' if n == 1 else 'have'} many silent channels at {code(layer)}"


def _na_share(lay: dict) -> float | None:
    """The share of the layer's channels labelled never active (None without an activation)."""
    s = lay["summary"]
    return label_count(lay, "never_active") / s["channels"] if activated(lay) and s["channels"] else None


def kept_initial_size(a: float | None, b: float | None) -> bool:
    """Silent channels' filters at their initial size (median ``norm_over_init`` within
    DIED_IN_TRAINING of 1) while the active ones' grew (at least 1.2 x that)."""
    return a is not None and b is not None and abs(a - 1) <= DIED_IN_TRAINING and b >= 1.2 * a


def _died_in_training(items: list[tuple[dict, dict]]) -> tuple[float, float] | None:
    """Median ``norm_over_init`` of the silent channels' filters and of the active ones', when
    the silent ones kept their initial size while the active ones grew: units that stopped firing
    early in training and got no gradient since. None otherwise, and None where a BatchNorm
    comes between the layer and its activation: the norm then rescales the channel whatever the
    filter's size, and ``norm_over_init`` assumes PyTorch's default init."""
    items = [(r, lay) for r, lay in items if not lay.get("normalised_before_activation")]
    na = [v for v in (lay["summary"].get("never_active_norm_over_init") for _, lay in items) if v is not None]
    act = [v for v in (lay["summary"].get("active_norm_over_init") for _, lay in items) if v is not None]
    if not na or not act:
        return None
    a, b = median(na), median(act)
    return (a, b) if kept_initial_size(a, b) else None


def _never_active_everywhere(ctx: _Context, health) -> dict | None:
    parts, values, layers, died, evidence = [], [], [], [], []
    for name, items in ctx.by_layer().items():
        shares = [v for v in (_na_share(lay) for _, lay in items) if v is not None]
        if len(shares) < 2 or median(shares) < health.never_active_share_warn:
            continue
        layers.append(name)
        values.append(median(shares))
        noun = channel_noun(items[0][1])
        parts.append(f"{code(name)} {median(shares):.0%} of {noun}s (range {min(shares):.0%}–{max(shares):.0%})")
        d = _died_in_training(items)
        if d:
            died.append((name, *d))
        evidence += [{"location": r["key"], "layer": name, "basis": "images",
                      **image_evidence_of(lay, len(r["images"]))} for r, lay in items]
    if not layers:
        return None
    link = f"layers/{slug(layers[0])}.md"
    n_img = min(e["images"] for e in evidence)
    text = (f"{noun.capitalize()}s that never activate are common at every location: a median of "
            f"{listing(parts)}, each silent on every one of at least {plural(n_img, 'test image')} "
            f"(so it fires on under {rate_upper_bound(n_img):.1%} of images, 95% bound). ")
    if died:
        nums = listing([f"{code(n)} {a:.2f}× (active ones {b:.2f}×)" for n, a, b in died])
        text += (f"Their filters kept the size they were initialised with (median norm over the initial norm: {nums}), "
                 "so they stopped firing early in training and received no gradient since: units lost in training "
                 "(dead ReLUs), not a property of the test images. A lower learning rate, warm-up or a leaky "
                 "activation usually keeps them alive.")
    else:
        text += ("Their filters moved away from their initial size as much as the active ones', so they learned "
                 "and then fell silent on these images: a property of the data or of the test images; more varied "
                 "test images would tell which.")
    return finding("info", text + f" [See the layer]({link}).", None, layers[0], link, max(values), kind="pattern",
                   pattern="never_active", evidence=evidence)


def too_few_images(ctx: _Context) -> dict | None:
    """What the test images cannot tell yet: channels silent (or saturated) on every one of too few
    images to call them never active (saturated). One line, so a report on few images says what
    was measured and how many images would settle it, without an alarm."""
    silent, always, short = [], [], []
    for name, items in ctx.by_layer().items():
        judged = [(run, lay) for run, lay in items if activated(lay) and lay["summary"]["channels"]
                  and not image_evidence_of(lay, len(run["images"]))["enough"]]
        if not judged:
            continue
        short += [image_evidence_of(lay, len(run["images"]))["images"] for run, lay in judged]
        lay0 = judged[0][1]
        ppi = image_evidence_of(lay0, 0).get("positions_per_image")
        one = " (one value per image)" if ppi == 1 else ""
        for key, out in (("never_active", silent), ("saturated", always)):
            counts = [(lay["summary"].get(key) or 0, lay["summary"]["channels"]) for _, lay in judged]
            if not any(k for k, _ in counts):
                continue
            shares = [k / c for k, c in counts]
            if len(counts) == 1:
                said = f"{code(name)} {counts[0][0]} of {plural(counts[0][1], channel_noun(lay0))}{one}"
            elif median(shares) == 0:
                top = max(range(len(shares)), key=lambda i: shares[i])
                said = (f"{code(name)} none at most locations, up to {shares[top]:.0%} of {channel_noun(lay0)}s{one} "
                        f"(at {judged[top][0]['key']})")
            else:
                said = (f"{code(name)} a median of {median(shares):.0%} of {channel_noun(lay0)}s{one} (range "
                        f"{min(shares):.0%}–{max(shares):.0%} over {len(counts)} locations)")
            out.append((median(shares), said, name, items))
    if not short:
        return None
    lo, hi = min(short), max(short)
    images = plural(hi, "test image") if lo == hi else f"{lo} to {hi} test images"
    head = (f"Not enough test images to call any channel never active or saturated: with {images}, a "
            f"channel silent on all of them could still fire on up to {rate_upper_bound(lo):.1%} of images (95% "
            f"bound; positions within an image are not independent, so images are counted, not positions). "
            f"{MIN_IMAGES} images bound that at 10%, which is when reportgen names them. ")
    body = []
    silent.sort(key=lambda x: -x[0])
    always.sort(key=lambda x: -x[0])
    if silent:
        body.append(f"Silent on every test image: {listing([t for _, t, _, _ in silent], 4)}")
        died = [(name, *d) for _, _, name, items in silent for d in [_died_in_training(items)] if d]
        if died:
            nums = listing([f"{code(nm)} {a:.2f}× (active ones {b:.2f}×)" for nm, a, b in died])
            body[-1] += (f"; their filters kept their initial size (median norm over the initial norm: {nums}), "
                         "which points to units that stopped firing early in training; more images would confirm it")
    if always:
        body.append(f"active at ≥ {ctx.report['thresholds']['saturated_fraction']:.0%} of the positions of every "
                    f"test image: {listing([t for _, t, _, _ in always], 4)}")
    if not body:  # nothing silent or saturated on these images: nothing to settle
        return None
    text = head + "; ".join(body) + "."
    evidence = [{"basis": "images", "rule": f"a label needs at least {MIN_IMAGES} images", "images": k,
                 "min_images": MIN_IMAGES, "rate_upper_bound": rate_upper_bound(k), "enough": False}
                for k in sorted(set(short))]
    first = silent[0][2] if silent else None
    return finding("info", text, None, first, f"layers/{slug(first)}.md" if first else None, 0.0, kind="pattern",
                   pattern="too_few_images", evidence=evidence)


def _init_everywhere(ctx: _Context) -> dict | None:
    hits, judged = [], 0
    for (model, name), items in ctx.layers.items():
        flags = [lay["summary"].get("looks_like_init") for _, lay in items]
        judged += any(f is not None for f in flags)
        if ctx.init_is_pattern(*items[0]):
            hits.append((name, sum(bool(f) for f in flags), len(flags)))
    if not hits:
        return None
    # Every judged layer at its initialisation nearly everywhere: nothing was trained.
    severity = "danger" if len(hits) == judged else "warning"
    layers = listing([f"{code(n)} at {k} of {plural(t, 'location')}" for n, k, t in hits])
    link = f"layers/{slug(hits[0][0])}.md"
    return finding(severity, f"Layers that still look like their initialisation almost everywhere: {layers}. A "
                   "layer left at its initial weights at every location is frozen, not loaded from the "
                   f"checkpoint, or never reached by the loss. [See the layer]({link}).", None, hits[0][0], link,
                   max(k / t for _, k, t in hits), kind="pattern", pattern="init_everywhere")


def _dead_below_warning(ctx: _Context, health) -> dict | None:
    """Every dead filter gets a line, even one below the warning share."""
    hits = []
    for run in ctx.report["runs"]:
        for lay in run["layers"]:
            s = lay["summary"]
            if s["dead"] and s["dead"] / s["filters"] < health.dead_share_warn:
                hits.append((run["key"], lay, s["dead"], s["filters"]))
    if not hits:
        return None
    hits.sort(key=lambda h: -h[2] / h[3])
    items = [f"[{k} {code(lay['name'])} {d} of {plural(n, filter_noun(lay))}]({_loc_link({'key': k}, lay['name'])})"
             for k, lay, d, n in hits]
    locs = sorted({h[0] for h in hits})
    text = (f"A few dead {filter_noun(hits[0][1])}s (norm below {ctx.report['thresholds']['dead_norm_ratio']:g}× the "
            f"layer's median over locations), fewer than the {health.dead_share_warn:.0%} that makes a warning: "
            f"{listing(items)}. A dead filter wastes its channel; a few are common after strong weight decay.")
    return finding("info", text, locs[0] if len(locs) == 1 else None, hits[0][1]["name"],
                   _loc_link({"key": hits[0][0]}, hits[0][1]["name"]), max(d / n for _, _, d, n in hits),
                   kind="pattern", locations=locs, pattern="dead")


def _pairs(ctx: _Context, health, key: str) -> dict | None:
    """Near-duplicates (or on/off pairs) per layer; a layer counts only where its pairs are more
    than independent random filters of its size reach by chance (``duplicate_evidence``)."""
    by_layer, chance_only, evidence = [], [], []
    for name, items in ctx.by_layer().items():
        hits, within = [], []
        for r, lay in items:
            if not lay["summary"].get(key):
                continue
            ev = lay.get("duplicate_evidence") or {}
            enough = bool((ev.get(key) or {}).get("enough", True))
            entry = (r["key"], lay["summary"].get(key, 0), lay["summary"]["filters"])
            (hits if enough else within).append(entry)
            evidence.append({"location": r["key"], "layer": name, "basis": "weights",
                             **{k: v for k, v in ev.items() if k not in ("duplicates", "on_off_pairs")},
                             **(ev.get(key) or {}), "enough": enough})
        if hits:
            by_layer.append((name, items, hits))
        if within:
            d = (items[0][1].get("duplicate_evidence") or {})
            chance_only.append(f"{code(name)} ({listing([f'{k} {n}/{t}' for k, n, t in within], 4)}; "
                               f"{d.get('weights_per_filter')} weights per filter, "
                               f"{d.get('expected_by_chance', 0):.2g} pairs expected by chance)")
    if not by_layer and not chance_only:
        return None
    parts, share = [], 0.0
    for name, items, hits in by_layer:
        hits.sort(key=lambda h: -h[1])
        share = max(share, max(n / max(1, t) for _, n, t in hits))
        parts.append(f"{code(name)} at {len(hits)} of {plural(len(items), 'location')} "
                     f"({listing([f'{k} {n}/{t}' for k, n, t in hits], 4)})")
    first = (by_layer[0][0] if by_layer else None) or next(iter(ctx.by_layer()))
    link = f"layers/{slug(first)}.md"
    noun = filter_noun((by_layer[0][1] if by_layer else ctx.by_layer()[first])[0][1])
    chance = (f" Not counted, as many as independent random {noun}s of that size would give: "
              f"{'; '.join(chance_only)}." if chance_only else "")
    if key == "duplicates":
        if by_layer:
            text = (f"Near-duplicate {noun}s (cosine ≥ {health.duplicate_cosine:g} with an earlier one, more often "
                    f"than independent random {noun}s of that size reach it: two copies of one detector): "
                    f"{'; '.join(parts)}.")
        else:
            text = f"No near-duplicate {noun}s beyond chance (cosine ≥ {health.duplicate_cosine:g})."
        severity = "warning" if share >= 0.1 else "info"
    else:
        text = (f"On/off {noun} pairs (cosine ≤ −{health.duplicate_cosine:g}: the same pattern with opposite sign, "
                f"which after a ReLU answers the opposite contrast, like a dark-to-light and a light-to-dark edge; "
                f"a second feature, not redundancy): {'; '.join(parts) if parts else 'none beyond chance'}.")
        severity = "info"
    return finding(severity, text + chance + f" [See the statistics on each location's page]({link}).", None, first,
                   link, share, kind="pattern", pattern=key, evidence=evidence)


def _saturated(ctx: _Context, health) -> dict | None:
    """Channels saturated on every one of enough test images (the label's count)."""
    parts, share, first, evidence = [], 0.0, None, []
    for name, items in ctx.by_layer().items():
        hits = [(r["key"], label_count(lay, "saturated", len(r["images"])), lay["summary"]["channels"])
                for r, lay in items if activated(lay)]
        hits = [h for h in hits if h[1]]
        if not hits:
            continue
        first = first or name
        hits.sort(key=lambda h: -h[1])
        share = max(share, max(n / max(1, t) for _, n, t in hits))
        parts.append(f"{code(name)} at {len(hits)} of {plural(len(items), 'location')} "
                     f"({listing([f'{k} {n}/{t}' for k, n, t in hits], 4)})")
        evidence += [{"location": r["key"], "layer": name, "basis": "images",
                      **image_evidence_of(lay, len(r["images"]))} for r, lay in items]
    if not parts:
        return None
    link = f"layers/{slug(first)}.md"
    n_img = min(e["images"] for e in evidence)
    return finding("info", f"Saturated channels (positive at ≥ {health.saturated_fraction:.0%} of the positions of "
                   f"every one of at least {plural(n_img, 'test image')}, so they barely select; each selects on "
                   f"under {rate_upper_bound(n_img):.1%} of images, 95% bound): {'; '.join(parts)}. [See the "
                   f"statistics on each location's page]({link}).",
                   None, first, link, share, kind="pattern", pattern="saturated", evidence=evidence)


def activated(lay: dict) -> bool:
    """Whether the layer's statistics come after an activation (``report.json``'s ``activation``;
    reports without that key: ``relu_applied``). "Never active" means nothing on a raw output."""
    return lay.get("activation", "relu" if lay["relu_applied"] else "none") != "none"
