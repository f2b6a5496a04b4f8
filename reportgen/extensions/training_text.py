"""The training page and findings, from report["training"] (see reportgen.extensions.training). Pure."""

from __future__ import annotations

from reportgen.analysis.evidence import distinct
from reportgen.analysis.wording import finding, listing, plural
from reportgen.core.names import anchor_id, code, md_escape

PAGE = "training.md"
CLEAR_FIT = 0.95  # R^2 a shape fit must reach before the findings name the shape
FIT_RATIO = 3.0  # ... and the other shape must leave at least this many times its unexplained variance


def training_page(section: dict, pics: dict[str, str]) -> str:
    """Markdown of training.md. pics: picture key -> the path it was published at (report-relative)."""
    from reportgen.render.pages import environment

    runs = [{**run, "layers": [{**lay, **_cells(lay)} for lay in run["layers"]]} for run in section["runs"]]
    return environment().get_template("training.md.j2").render(
        section=section, runs=runs, pictures=pics, still=f"{section['still_per_step']:.2%}")


def _cells(lay: dict) -> dict:
    """A layer's row of the table on training.md, and how its dying filters fell."""
    still_at = lay["stopped_moving"]
    return {
        "dead_cell": "–" if lay["dead"] is None else f"{lay['dead'][0]} → {lay['dead'][-1]} of {lay['filters']}",
        "died_cell": _died_text(lay) or "none",
        "norm_cell": f"{_num(lay['median_norm'][0])} → {_num(lay['median_norm'][-1])}",
        "distance_cell": _num(lay["distance_from_init"][-1]),
        "cosine_cell": _num(lay["cosine_to_final"][0]),
        "moving_cell": (f"step {still_at}" if still_at is not None and still_at > lay["steps"][0]
                        else "never moved" if still_at is not None else "still moving at the end"),
        "shrink_text": shrink_text(lay.get("shrink")),
    }


def _num(x) -> str:
    return "–" if x is None else f"{x:.3g}"


def _died_text(lay: dict) -> str:
    """'55: the first between step 40 and 50, half of them by step 80, ...' (deaths after the first step)."""
    n = sum(g["count"] for g in lay["died"] if g["after"] is not None)
    return f"{n}: {_when(lay, n)}" if n else ""


def shrink_text(shrink: dict | None) -> str:
    """How the filters that died fell, with the numbers: their average factor per step, the
    learning rate × weight decay that weight decay alone would need for it, and the shape of the
    fall when one shape (straight line or geometric) fits clearly better than the other."""
    if not shrink:
        return ""
    f = shrink["factor_per_step"]
    text = (f"their median norm fell from {shrink['from_norm']:.3g} at step {shrink['from_step']} to "
            f"{shrink['to_norm']:.3g} at step {shrink['to_step']}, by a factor of {f:.4f} per step on average "
            f"(weight decay alone shrinks by 1 − learning rate × weight decay per step: it would need "
            f"lr × wd ≈ {1 - f:.2g} for this)")
    lin, geo = shrink["linear_r2"], shrink["geometric_r2"]
    if lin >= CLEAR_FIT and 1 - geo >= FIT_RATIO * (1 - lin):
        text += (f"; the fall is a straight line (R² {lin:.2f}, geometric {geo:.2f}), about "
                 f"{-shrink['linear_slope']:.2g} per step: a constant-size pull towards zero, such as an L1 "
                 "penalty under Adam, rather than weight decay's constant factor")
    elif geo >= CLEAR_FIT and 1 - lin >= FIT_RATIO * (1 - geo):
        text += f"; the fall is geometric (R² {geo:.2f}, straight line {lin:.2f}), as weight decay's is"
    return text


def _when(lay: dict, n: int) -> str:
    """'between step 40 and 50' for one interval, else 'the first between step 40 and 50, half
    by step 60, the last by step 300'."""
    groups = [g for g in lay["died"] if g["after"] is not None]
    first = groups[0]
    if len(groups) == 1:
        return f"between step {first['after']} and {first['by']}"
    seen, half = 0, groups[-1]["by"]
    for g in groups:
        seen += g["count"]
        if 2 * seen >= n:
            half = g["by"]
            break
    return (f"the first between step {first['after']} and {first['by']}, half of them by step {half}, "
            f"the last by step {groups[-1]['by']}")


def training_findings(section: dict | None, analyses) -> list[dict]:
    """Per run: which filters died when (and, with clear evidence, how); when layers stopped moving."""
    if not section:
        return []
    warn = analyses.health.dead_share_warn
    out = []
    for run in section["runs"]:
        key = run["run"]
        link = f"{PAGE}#{anchor_id(key)}"
        died = [(lay, sum(g["count"] for g in lay["died"] if g["after"] is not None)) for lay in run["layers"]]
        died = [(lay, n) for lay, n in died if n]
        if died:
            parts, share = [], 0.0
            for lay, n in died:
                parts.append(f"{n} of {lay['filters']} {code(lay['layer'])} filters died, {_when(lay, n)}")
                why = shrink_text(lay.get("shrink"))
                if why:
                    parts[-1] += f"; {why}"
                share = max(share, lay["dead"][-1] / lay["filters"])
            text = f"**{md_escape(key)}** over training: " + "; ".join(parts) + f". [Training]({link})"
            out.append(finding("warning" if share >= warn else "info", text, run["location"], died[0][0]["layer"],
                               link, share, kind="training"))
        still = [lay for lay in run["layers"] if lay["stopped_moving"] is not None
                 and lay["stopped_moving"] > lay["steps"][0] and lay["stopped_moving"] < lay["steps"][-1]]
        moving = [lay for lay in run["layers"] if lay["stopped_moving"] is None]
        if still or moving:
            said = []
            if still:
                said.append("stopped moving: " + listing([f"{code(lay['layer'])} at step {lay['stopped_moving']}"
                                                          for lay in still]))
            if moving:
                said.append(listing([code(lay["layer"]) for lay in moving])
                            + (" was" if len(moving) == 1 else " were") + " still moving at the last step "
                            + f"({_pct_per_step(moving, section['still_per_step'])} of the size per step, "
                            + f"above the {distinct(section['still_per_step'], section['still_per_step'], percent=True)[1]} "
                            + "that counts as stopped)")
            text = (f"**{md_escape(key)}** over {plural(run['steps'][-1] - run['steps'][0], 'training step')}: "
                    + "; ".join(said) + f". [Training]({link})")
            out.append(finding("info", text, run["location"], (still or moving)[0]["layer"], link, 0.0,
                               kind="training"))
    return out


def _pct_per_step(layers: list[dict], bound: float) -> str:
    """Each layer's last change per step, printed with the digits that keep it apart from ``bound``."""
    return listing([distinct(lay["relative_change"][-1], bound, percent=True)[0]
                    if lay["relative_change"][-1] is not None else "–" for lay in layers])
