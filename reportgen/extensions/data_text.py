"""Words for the data extension: its findings and its page. Pure: report dict in, text out."""

from __future__ import annotations

import posixpath
from statistics import median

from reportgen.analysis.wording import finding, listing, plural
from reportgen.core.names import code, slug

PAGE = "data.md"
LINK = f"{PAGE}#mantel-tests"
DATA_NAMES = {"background": "the background", "colour": "colour", "spectrum": "the power spectrum",
              "scale": "object scale", "position": "object position"}
NET_NAMES = {"weights": "weights, 1 − matched |cos|", "cka": "activations, 1 − CKA"}


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.2g}" if p < 0.1 else f"{p:.2f}"


def _stat(t: dict) -> str:
    return f"[Mantel r = {t['r']:.2f}, p = {_p(t['p'])}]({LINK})"


def _layer_name(t: dict, multi: bool) -> str:
    return (f"{t['model']} · " if multi else "") + code(t["layer"])


def findings(report: dict) -> list[dict]:
    """Per layer: which data measure its differences follow best (and one they do not);
    then one finding on how many tests were run and what their p-values can show."""
    data = report.get("data") or {}
    tests = [t for t in (data.get("mantel") or {}).get("results", []) if t["r"] is not None]
    if not tests:
        return []
    multi = len({t["model"] for t in tests}) > 1
    family = len(tests)
    out = []
    for key in dict.fromkeys((t["model"], t["layer"]) for t in tests):
        mine = [t for t in tests if (t["model"], t["layer"]) == key]
        best = max(mine, key=lambda t: (t["r"], -t["p"]))
        same_net = [t for t in mine if t["network"] == best["network"] and t["data"] != best["data"]]
        worst = min(same_net, key=lambda t: t["r"]) if same_net else None
        name = _layer_name(best, multi)
        how = f"({NET_NAMES[best['network']]}: {_stat(best)}"
        locs = best["runs"]
        if best["survives"]:
            text = (f"{name} differences follow {DATA_NAMES[best['data']]} {how}; Holm-adjusted p = "
                    f"{_p(best['p_holm'])} over {family} tests)")
            also = sorted((t for t in same_net if t["survives"]), key=lambda t: -t["r"])
            if also:
                text += ", and " + listing([f"{DATA_NAMES[t['data']]} (r = {t['r']:.2f})" for t in also])
            severity = "info"
        elif best["p"] <= data["mantel"]["alpha"]:
            text = (f"{name} differences may follow {DATA_NAMES[best['data']]} {how}), but not after "
                    f"Holm's correction for {family} tests (adjusted p = {_p(best['p_holm'])}): a lead to check "
                    "with more locations, not a result")
            severity = "info"
        else:
            text = (f"{name} differences follow none of the data measures clearly: the strongest is "
                    f"{DATA_NAMES[best['data']]} {how}; by chance r exceeds {best['null_r_95']:.2f} in 5% of "
                    "relabellings)")
            severity = "info"
        if worst is not None and best["p"] <= data["mantel"]["alpha"] and worst["p"] > data["mantel"]["alpha"]:
            text += f"; they do not follow {DATA_NAMES[worst['data']]} (r = {worst['r']:.2f}, p = {_p(worst['p'])})"
        loo = best.get("r_leave_one_out")
        if loo and best["p"] <= data["mantel"]["alpha"]:
            text += f"; leaving out any one location, r stays between {loo[0]:.2f} and {loo[1]:.2f}"
        if best["left_out"]:
            text += f" ({listing(best['left_out'])} left out: no finite distance)"
        # without "model" the build says it of the report's only model
        out.append(finding(severity, text + ".", None, best["layer"], LINK, abs(best["r"]), kind="data",
                           locations=list(locs), **({"model": best["model"]} if multi else {})))
    out.append(_caution(data, tests))
    return out


def _caution(data: dict, tests: list[dict]) -> dict:
    n = max(t["n"] for t in tests)
    layers = len({(t["model"], t["layer"]) for t in tests})
    nets = len({t["network"] for t in tests})
    measures = len({t["data"] for t in tests})
    kept = [t for t in tests if t["survives"]]
    floor = min(t["smallest_p"] for t in tests)
    chance = median(t["null_r_95"] for t in tests)
    draws = ("every relabelling" if all(t["exact"] for t in tests)
             else f"{data['mantel']['permutations']} random relabellings of the locations")
    text = (f"How far the data tests go: [{plural(len(tests), 'Mantel test')}]({LINK}) "
            f"({plural(measures, 'data measure')} × "
            f"{plural(nets, 'network measure')} × {plural(layers, 'layer')}) over {plural(n, 'location')}, that is "
            f"{n * (n - 1) // 2} pairs that share locations; p comes from {draws}, so no p is below {_p(floor)}. "
            f"After Holm's correction {_kept(len(kept))} below {data['mantel']['alpha']}. With {n} locations "
            f"a correlation below about {chance:.2f} cannot be told from chance, so \"does not follow\" means "
            "no strong relation was found, not that there is none; and the data measures overlap (a "
            "background differs in colour too), so one relation can show under several names.")
    return finding("info", text, None, None, LINK, 0.0, kind="data")


def _kept(k: int) -> str:
    return "no test stays" if k == 0 else f"{plural(k, 'test')} {'stays' if k == 1 else 'stay'}"


def page(report: dict, pictures: dict[str, str]) -> str:
    from reportgen.render.pages import environment

    data = report["data"]
    models = list(dict.fromkeys(e["model"] for e in data["locations"]))
    # picture key "<model slug>/<view>.png" -> its path from this page, per model and view
    views = {m: {k.split("/", 1)[1][:-4]: posixpath.relpath(v, posixpath.dirname(PAGE) or ".")
                 for k, v in pictures.items() if k.split("/", 1)[0] == slug(m)} for m in models}
    grouped: dict[tuple, dict] = {}  # (model, layer, data measure) -> network measure -> test
    for t in data["mantel"]["results"]:
        grouped.setdefault((t["model"], t["layer"], t["data"]), {})[t["network"]] = t
    return environment().get_template("data.md.j2").render(
        data=data, views=views, models=models, multi=len(models) > 1, grouped=grouped,
        networks=list(NET_NAMES), net_names=NET_NAMES, data_names=DATA_NAMES, p=_p,
        findings=[f for f in report.get("findings", []) if f.get("kind") == "data"])
