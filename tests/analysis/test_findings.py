"""Findings a reader can act on: one line per pattern, ranked, worded for the layer type.

The reports here are built from weights and activation flags with the same functions a
build uses (health, pairs, init test, summary), so every finding traces to numbers that
numpy recomputes in the test.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from reportgen.analysis.filters import (
    filter_health,
    near_duplicates,
    norm_over_init,
    pooled_scale,
)
from reportgen.analysis.findings import findings
from reportgen.analysis.init_check import init_likeness
from reportgen.analysis.wording import plural
from reportgen.load.spec import AnalysesSpec
from reportgen.analysis.evidence import image_evidence
from reportgen.reduce.report import CHANNEL_KEYS, FILTER_KEYS, layer_summary, table_rows

IMAGES = 40  # test images per run in these reports: enough to state every label (29 are needed)


def _trained_like(shape, seed):
    """Weights that left their init law: heavy-tailed, larger than at init."""
    rng = np.random.default_rng(seed)
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_t(3, size=shape) * 1.5 / np.sqrt(fan_in)).astype(np.float32)


def _fresh(module_factory, seed):
    torch.manual_seed(seed)
    return module_factory().weight.detach().numpy().copy()


def _layer(name, w, scale, never_active=None, relu=True, type_="Conv2d", saturated=None, images=IMAGES):
    h = filter_health(w, scale, 0.1, 0.1)
    dup, opp = near_duplicates(w, 0.95, h["dead"] | h["nonfinite"])
    h.update(duplicate_of=dup, opposite_of=opp, norm_over_init=norm_over_init(w))
    n = len(w)
    na = np.zeros(n, bool) if never_active is None else np.asarray(never_active)
    sat = np.zeros(n, bool) if saturated is None else np.asarray(saturated)
    ev = image_evidence(images, 16)
    stats = {"mean": np.where(na, 0.0, 1.0), "max": np.where(na, 0.0, 2.0), "active_fraction": np.where(na, 0.0, 0.5),
             "active_images": np.where(na, 0, images), "never_active": na, "never_active_label": na & ev["enough"],
             "saturated": sat, "saturated_label": sat & ev["enough"]}
    entry = {"name": name, "type": type_, "weight_shape": list(w.shape), "relu_applied": relu,
             "init_check": init_likeness(w), "filters": table_rows(h, FILTER_KEYS),
             "channels": table_rows(stats, CHANNEL_KEYS), "evidence": ev}
    entry["summary"] = layer_summary(entry)
    return entry


def _report(layers_by_run: dict[str, list[tuple]], images: int = IMAGES) -> dict:
    """layers_by_run: run key -> [(name, weights, kwargs)]; scales pooled per layer name; each run
    seen on ``images`` test images."""
    names = {n for spec in layers_by_run.values() for n, _, _ in spec}
    scales = {n: pooled_scale([w for spec in layers_by_run.values() for m, w, _ in spec if m == n]) for n in names}
    runs = [{"key": k, "model": "m", "location": k, "images": [f"{i}.png" for i in range(images)],
             "layers": [_layer(n, w, scales[n], images=images, **kw) for n, w, kw in spec]}
            for k, spec in layers_by_run.items()]
    return {"runs": runs, "comparisons": [], "reference": None,
            "thresholds": {"dead_norm_ratio": 0.1, "saturated_fraction": 0.99}}


OPTS = AnalysesSpec()


def _healthy(seed):
    return [("conv1", _trained_like((16, 3, 5, 5), seed), {}), ("fc", _trained_like((10, 64), seed + 50),
                                                                {"relu": False, "type_": "Linear"})]


def _texts(fs):
    return [f["text"] for f in fs]


def test_one_dead_filter_gets_a_finding():
    runs = {f"r{i}": _healthy(i) for i in range(3)}
    runs["r1"][0][1][5] = 0  # one of 16 conv1 filters zeroed
    fs = findings(_report(runs), OPTS)
    dead = [f for f in fs if f.get("pattern") == "dead"]
    assert len(dead) == 1 and "r1 `conv1` 1 of 16 filters" in dead[0]["text"] and dead[0]["locations"] == ["r1"]
    overview = next(f for f in fs if f["kind"] == "overview")
    assert "pass every health check" not in overview["text"]


def test_dense_layers_say_units_and_logits_are_never_called_never_active():
    runs = {f"r{i}": _healthy(i) for i in range(3)}
    for k in runs:  # logits that stay negative: max <= 0 everywhere, but no ReLU follows
        runs[k][1] = ("fc", runs[k][1][1], {"relu": False, "type_": "Linear", "never_active": [True] * 10})
    w = runs["r2"][1][1]
    w[:6] *= 1e-5  # 6 of 10 dense units dead
    fs = findings(_report(runs), OPTS)
    loc = next(f for f in fs if f["kind"] == "location")
    assert "6 of 10 units (60%) dead" in loc["text"] and "filters" not in loc["text"].split("dead")[0]
    assert not any("never activate" in t for t in _texts(fs))


def test_sign_flipped_pair_is_reported_as_on_off_not_as_duplicate():
    runs = {f"r{i}": _healthy(i) for i in range(3)}
    w = runs["r0"][0][1]
    w[7] = -w[3]
    fs = findings(_report(runs), OPTS)
    pats = {f.get("pattern"): f for f in fs}
    assert "duplicates" not in pats
    assert pats["on_off_pairs"]["severity"] == "info" and "r0 1/16" in pats["on_off_pairs"]["text"]
    layer = _report(runs)["runs"][0]["layers"][0]
    assert layer["filters"][7]["opposite_of"] == 3 and layer["filters"][7]["duplicate_of"] is None


def test_trained_filters_are_not_called_outliers_and_dead_relus_are_explained():
    """Half the channels never fire and kept their initial weights; the other half trained
    and grew. Nothing calls the grown ones a problem; the silent ones are explained by
    their norms, recomputed here with numpy."""
    runs = {}
    for i in range(3):
        fresh = _fresh(lambda: nn.Conv2d(32, 16, 3), i)
        w = fresh.copy()
        w[:8] = _trained_like((8, 32, 3, 3), i) * 2  # trained and grown
        runs[f"r{i}"] = [("conv2", w, {"never_active": [False] * 8 + [True] * 8})]
    rep = _report(runs)
    fs = findings(rep, OPTS)
    assert not any(re.search("outlier|unusually large", t) for t in _texts(fs))
    na = next(f for f in fs if f.get("pattern") == "never_active")
    ratio = np.median([np.linalg.norm(r[1][8:].reshape(8, -1), axis=1) * np.sqrt(3) for r in
                       (runs[k][0] for k in runs)])
    assert f"`conv2` {ratio:.2f}×" in na["text"] and "lost in training" in na["text"]
    assert not [f for f in fs if f["kind"] == "location"]  # shared by all: a pattern, no location blamed


def test_same_diagnosis_at_two_locations_is_one_line_and_ranking_is_by_severity_then_value():
    runs = {f"r{i}": _healthy(i) for i in range(5)}
    runs["r1"][0][1][:6] = 0  # 6/16 dead: partly collapsed
    runs["r3"][0][1][:5] = 0  # 5/16
    runs["r4"][0][1][:12] = 0  # 12/16: collapsed (danger)
    fs = findings(_report(runs), OPTS)
    locs = [f for f in fs if f["kind"] == "location"]
    assert [f["locations"] for f in locs] == [["r4"], ["r1", "r3"]]
    assert locs[0]["severity"] == "danger" and locs[1]["severity"] == "warning"
    assert "6 of 16 filters (38%) dead" in locs[1]["text"] and "5 of 16 filters (31%) dead" in locs[1]["text"]
    order = [(f["severity"], f["value"]) for f in fs if f["kind"] not in ("overview", "next_step")]
    rank = {"danger": 0, "warning": 1, "info": 2}
    assert order == sorted(order, key=lambda o: (rank[o[0]], -o[1]))
    assert fs[-2]["kind"] == "overview" and fs[-1]["kind"] == "next_step"


def test_location_still_at_its_initialisation_is_named_with_numbers():
    runs = {f"r{i}": _healthy(i) for i in range(4)}
    fresh = _fresh(lambda: nn.Conv2d(3, 16, 5), 7)
    runs["r2"][0] = ("conv1", fresh, {})
    fs = findings(_report(runs), OPTS)
    f = next(f for f in fs if f["kind"] == "location")
    c = init_likeness(fresh)
    assert f["locations"] == ["r2"] and f["diagnosis"] == "untrained" and f["severity"] == "warning"
    assert "still looks like its initialisation" in f["text"]
    assert f"KS distance {c['families']['pytorch-default']['ks']:.3f}" in f["text"]
    assert f"excess kurtosis {c['excess_kurtosis']:+.2f}" in f["text"]


def test_plurals_with_one_location():
    fs = findings(_report({"only": _healthy(0)}), OPTS)
    text = " ".join(_texts(fs))
    assert "All 1 locations" not in text and "1 locations" not in text and "The location passes" in text
    assert plural(1, "run") == "1 run" and plural(3, "run") == "3 runs"


def test_towncenter_findings_name_each_broken_location_for_its_reason(towncenter_build):
    """The example's four planted problems (examples/towncenter/README.md), each with its
    reason, among the 10 findings of the home page; no trained filter called an outlier."""
    result, docs, _ = towncenter_build
    report = result.report
    ranked = [f for f in report["findings"] if f["kind"] not in ("overview", "next_step")]
    top = ranked[:10]
    by_loc = {k: f for f in top if f["kind"] == "location" for k in f["locations"]}
    assert set(by_loc) == {"loc02", "loc04", "loc06", "loc08"}
    assert by_loc["loc08"]["severity"] == "danger" and by_loc["loc08"]["diagnosis"] == "collapsed"
    assert "L1 penalty" in by_loc["loc08"]["text"]
    assert by_loc["loc04"] is by_loc["loc06"] and by_loc["loc04"]["diagnosis"] == "partly collapsed"
    assert "group lasso" in by_loc["loc04"]["text"]
    assert by_loc["loc02"]["diagnosis"] == "untrained" and by_loc["loc02"]["layer"] == "conv1"
    assert "`conv1` still looks like its initialisation" in by_loc["loc02"]["text"]
    # no trained filter is an outlier: no such flag, no such sentence
    layers = [lay for r in report["runs"] for lay in r["layers"]]
    assert not any("norm_outlier" in f for lay in layers for f in lay["filters"])
    assert not any(re.search("unusually large|norm outlier", f["text"]) for f in report["findings"])
    # the silent channels kept their initial size while the active ones grew, at every location
    # that trained (at loc02, 40 steps, nothing grew)
    for run in report["runs"]:
        for lay in run["layers"][1:]:
            s = lay["summary"]
            assert s["never_active_norm_over_init"] < 1.25, (run["key"], lay["name"])
            if run["key"] != "loc02":
                assert s["active_norm_over_init"] > s["never_active_norm_over_init"], (run["key"], lay["name"])
    # home page: 10 findings and a link to the rest
    index = (docs / "towncenter" / "index.md").read_text()
    home = index.split("## Findings")[1].split("## Overview")[0]
    assert home.count("!!! ") == 10 and "(findings.md)" in home
    page = (docs / "towncenter" / "findings.md").read_text()
    assert page.count("!!! ") == len(ranked)


@pytest.mark.parametrize("n_locations", [1, 3])
def test_a_freshly_initialised_network_is_flagged(n_locations):
    """A user's one untrained checkpoint, or every location left untrained: a danger."""
    layers = lambda i: [("conv1", _fresh(lambda: nn.Conv2d(3, 16, 5), i), {}),  # noqa: E731
                        ("fc", _fresh(lambda: nn.Linear(128, 10), i + 10), {"relu": False, "type_": "Linear"})]
    fs = findings(_report({f"r{i}": layers(i) for i in range(n_locations)}), OPTS)
    top = fs[0]
    assert top["severity"] == "danger", _texts(fs)
    if n_locations == 1:
        assert top["diagnosis"] == "never trained" and top["locations"] == ["r0"]
    else:
        assert top.get("pattern") == "init_everywhere" and "`conv1` at 3 of 3 locations" in top["text"]
        assert "`fc` at 3 of 3 locations" in top["text"]
