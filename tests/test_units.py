"""Unit views and the numeric trace through whole builds."""

from __future__ import annotations

import json

import numpy as np
import torch

from reportgen.build import build
from tests.conftest import ROOT, SPEC, write_spec


def test_unit_views_reach_pages_and_report_json(project):
    text = SPEC + "analyses:\n  units: {layers: [conv1, conv2], locations: [a, c], steps: 5, top_n: 3}\n"
    result = build(write_spec(project, text), project / "docs", device="cpu")
    runs = {r["key"]: r for r in result.report["runs"]}
    assert "units" not in runs["b"]["layers"][0]
    conv1 = runs["a"]["layers"][0]["units"]
    assert conv1["receptive_field"] == [3, 3] and conv1["jump"] == [1, 1] and conv1["decoded"] is True
    assert len(conv1["units"]) == 4 and len(conv1["units"][0]["top_values"]) == 3
    conv2 = runs["c"]["layers"][1]["units"]
    assert conv2["receptive_field"] == [8, 8] and conv2["jump"] == [2, 2]  # conv3 -> pool2 -> conv3
    # top values are the spatial maxima of the channel over the images, largest first
    vals = conv2["units"][0]["top_values"]
    assert vals == sorted(vals, reverse=True) and vals[0] <= runs["c"]["layers"][1]["channels"][0]["max"] + 1e-6
    page = (project / "docs/tiny/units/a/conv1.md").read_text()
    assert "## Unit 3 { #unit-3 }" in page and "../../img/a/conv1/units/unit_3.png" in page
    assert (project / "docs/tiny/img/c/conv2/units/top_patches.png").is_file()
    layer_page = (project / "docs/tiny/layers/conv2.md").read_text()
    assert "[a](../units/a/conv2.md), [c](../units/c/conv2.md)" in layer_page


def test_unit_options_are_validated(project):
    from reportgen.errors import SpecError
    import pytest

    text = SPEC + "analyses:\n  units: {layers: [pool], locations: [z]}\n"
    with pytest.raises(SpecError) as info:
        build(write_spec(project, text), project / "docs", device="cpu")
    assert [p.split("spec.yaml")[1] for p in info.value.problems] == [
        ":19: analyses.units.layers[0]: 'pool' is not among the inspected layers; add it to 'layers' first",
        ":19: analyses.units.locations[0]: no run 'z'; use one of the run names",
    ]


def test_colour_mlp_trace_matches_a_hand_forward(tmp_path):
    result = build(ROOT / "specs/colour_mlp.yaml", tmp_path / "docs", device="cpu", cache_dir=None)
    run = result.report["runs"][0]
    assert run["trace"]["finite_difference_max_error"] < 1e-6
    sd = torch.load(ROOT / "examples/colour_mlp/checkpoint.pt", weights_only=True)["state_dict"]
    x = np.array(json.loads((ROOT / "examples/colour_mlp/batch.json").read_text())["inputs"])
    w, b = sd["hidden1.weight"].double().numpy(), sd["hidden1.bias"].double().numpy()
    z = x @ w.T + b
    hidden1 = next(lay for lay in run["layers"] if lay["name"] == "hidden1")
    np.testing.assert_allclose(hidden1["trace"]["Z"], z, rtol=1e-12)
    np.testing.assert_allclose(hidden1["trace"]["A"], 1 / (1 + np.exp(-z)), rtol=1e-12)
    page = (tmp_path / "docs/colour-mlp/trace/colourmlp.md").read_text()
    assert "| 6 | mid grey | 0.500, 0.500, 0.500 | 0 |" in page
