"""Unit views and the numeric trace through whole builds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reportgen.build import build
from tests.conftest import ROOT, SPEC, write_spec


@pytest.mark.slow
def test_unit_views_reach_pages_and_report_json(project):
    text = SPEC + ("analyses:\n  units: {layers: [conv1, conv2], locations: [a, c], steps: 5, top_n: 3, "
                   "maximise: both, fourier_steps: 4}\n")
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
    assert "## Unit 3 { #unit-3 }" in page
    card = page.split("## Unit 3 ")[1].split("## Unit 4 ")[0]  # crops of the grids, each the same cell
    assert "../../img/a/conv1/units/maximise_plain.png" in card and "../../img/a/conv1/units/top_patches.png" in card
    # each maximisation with its objective, the clipped image's objective and the share out of range
    u0 = conv1["units"][0]
    assert 0 <= u0["plain_outside"] <= 1 and u0["fourier_outside"] == 0
    assert u0["fourier_clipped_loss"] == u0["fourier_loss"]
    row = page.split("## Unit 0 ")[1].split("## Unit 1 ")[0]
    assert (f"plain {u0['plain_loss']:.3g} · {u0['plain_clipped_loss']:.3g} · {100 * u0['plain_outside']:.0f}%"
            in row)
    far = [u for u in conv1["units"] if u["plain_outside"] > 0.01]
    assert ("Plain maximisation leaves the valid pixel range" in page) == bool(far)
    assert f"{u0['fidelity']:.2g}" in row and conv1["pooling"] == "average"
    assert (project / "docs/tiny/img/c/conv2/units/top_patches.png").is_file()
    layer_page = (project / "docs/tiny/layers/conv2.md").read_text()
    assert "[a](../units/a/conv2.md), [c](../units/c/conv2.md)" in layer_page


def test_unit_options_are_validated(project):
    import pytest

    from reportgen.core.errors import SpecError

    text = SPEC + "analyses:\n  units: {layers: [pool], locations: [z]}\n"
    with pytest.raises(SpecError) as info:
        build(write_spec(project, text), project / "docs", device="cpu")
    assert [p.split("spec.yaml")[1] for p in info.value.problems] == [
        ":19: analyses.units.layers[0]: 'pool' is not among the inspected layers; add it to 'layers' first",
        ":19: analyses.units.locations[0]: no run 'z'; use one of the run names",
    ]


def test_colour_mlp_trace_matches_a_hand_forward(colour_mlp_build):
    result, docs, _ = colour_mlp_build  # the example built once per session (tests/conftest.py)
    run = result.report["runs"][0]
    assert run["trace"]["finite_difference_max_error"] < 1e-6
    sd = torch.load(ROOT / "examples/colour_mlp/checkpoint.pt", weights_only=True)["state_dict"]
    x = np.array(json.loads((ROOT / "examples/colour_mlp/batch.json").read_text())["inputs"])
    w, b = sd["hidden1.weight"].double().numpy(), sd["hidden1.bias"].double().numpy()
    z = x @ w.T + b
    hidden1 = next(lay for lay in run["layers"] if lay["name"] == "hidden1")
    np.testing.assert_allclose(hidden1["trace"]["Z"], z, rtol=1e-12)
    np.testing.assert_allclose(hidden1["trace"]["A"], 1 / (1 + np.exp(-z)), rtol=1e-12)
    page = (docs / "colour-mlp/trace/colourmlp.md").read_text()
    assert "| 6 | mid grey | 0.500, 0.500, 0.500 | 0 |" in page


def _plant_dead_conv1_unit(project, loc="a", unit=1):
    """Checkpoint ``loc`` with conv1 unit ``unit`` zeroed and biased below 0: never active after its ReLU."""
    path = project / "ckpt" / f"{loc}.pt"
    ck = torch.load(path, weights_only=True)
    ck["state_dict"]["conv1.weight"][unit] = 0.0
    ck["state_dict"]["conv1.bias"][unit] = -1.0
    torch.save(ck, path)


def test_never_active_unit_is_flagged_and_gets_no_crops(project):
    _plant_dead_conv1_unit(project)
    text = SPEC + "analyses:\n  units: {layers: [conv1], locations: [a], fourier_steps: 4, top_n: 3}\n"
    result = build(write_spec(project, text), project / "docs", device="cpu")
    units = result.report["runs"][0]["layers"][0]["units"]
    assert units["inactive_count"] == 1
    dead = units["units"][1]
    assert dead["inactive"] is True and dead["max_activation"] <= 0
    assert dead["top_values"] == [] and dead["top_images"] == [] and dead["top_positions"] == []
    for u in (units["units"][0], units["units"][2], units["units"][3]):
        assert u["inactive"] is False and len(u["top_values"]) == 3 and u["max_activation"] > 0
    page = (project / "docs/tiny/units/a/conv1.md").read_text()
    sections = page.split("## Unit ")
    assert "**Silent on the test images**" in sections[2] and sections[2].startswith("1 {")
    assert all("Silent on the test images" not in s for i, s in enumerate(sections[1:]) if i != 1)
    assert "1 of 4 units silent on all" in page


def test_unit_crops_are_nms_top_n_over_all_positions_and_the_nf_their_weighted_mean(project):
    import torch.nn.functional as F

    from reportgen.load.images import load_image
    from reportgen.load.spec import load_spec
    from reportgen.run.unit_views import compute_units
    from tests.conftest import tiny_module

    _plant_dead_conv1_unit(project)
    spec = load_spec(write_spec(project, SPEC + "analyses:\n  units: {layers: [conv1], maximise: none, top_n: 4}\n"))
    images = [load_image(p, spec.input) for p in spec.runs[0].images]
    model = tiny_module(seed=0)
    model.load_state_dict(torch.load(project / "ckpt/a.pt", weights_only=True)["state_dict"])
    u = compute_units(model.eval(), "conv1", images, spec.analyses.units, True, spec.input.mean, spec.input.std,
                      torch.device("cpu"))
    # independent: conv1 by hand; its 3x3 field with padding 1 is the window centred on the unit
    x = torch.stack([im.tensor for im in images]).double()
    with torch.no_grad():
        acts = F.relu(F.conv2d(x, model.conv1.weight.double(), model.conv1.bias.double(), padding=1)).numpy()
    pixels = np.stack([im.pixels.transpose(2, 0, 1) for im in images]) / 255.0
    padded = np.pad(pixels, ((0, 0), (0, 0), (1, 1), (1, 1)))
    assert u.inactive.tolist() == [False, True, False, False]
    assert np.isnan(u.patches[1]).all() and np.isnan(u.nf[1]).all()
    assert np.isnan(u.deconv[1]).all() and np.isnan(u.guided[1]).all()
    for k in (0, 2, 3):
        img, pos, val = u.patch_images[k], u.patch_positions[k], u.patch_values[k]
        assert len(val) == 4 and val[0] == pytest.approx(acts[:, k].max(), rel=1e-5)  # the global max first
        np.testing.assert_allclose(val, acts[img, k, pos[:, 0], pos[:, 1]], rtol=1e-5)
        for a in range(4):  # 3x3 crops overlap by more than half only when next to each other in a row or column
            for b in range(a + 1, 4):
                d = np.abs(pos[a] - pos[b])
                assert img[a] != img[b] or max(0, 3 - d[0]) * max(0, 3 - d[1]) <= 4.5
        crops = np.stack([padded[i, :, r:r + 3, c:c + 3] for i, (r, c) in zip(img, pos)])
        np.testing.assert_allclose(u.patches[k], crops, atol=1e-12)
        # NF: weights a_j / a_max; a pixel that a crop has only as padding is left out of that crop's term
        inside = np.pad(np.ones(pixels.shape[2:]), 1)
        w = (val / val.max())[:, None, None] * np.stack([inside[r:r + 3, c:c + 3] for r, c in pos])
        with np.errstate(invalid="ignore"):
            nf = np.einsum("khw,kchw->chw", w, crops) / w.sum(axis=0)
        np.testing.assert_allclose(u.nf[k], nf, rtol=1e-9)
    # conv1's pre-activation is linear in the image: its template explains it fully; the planted unit is constant
    np.testing.assert_allclose(u.fidelity[[0, 2, 3]], 1.0, atol=1e-5)
    assert np.isnan(u.fidelity[1])


def test_never_active_tiles_are_blank_and_framed():
    from reportgen.render.unit_cards import BLANK_RGB, unit_grids, unit_tiles
    from reportgen.run.unit_views import UnitViews

    rng = np.random.default_rng(0)
    patches = rng.uniform(0, 1, (2, 3, 3, 5, 5))
    patches[1] = np.nan  # the never-active unit has no crops
    patches[0, 2] = np.nan  # and unit 0 only two separate responses
    none = np.full((3, 5, 5), np.nan)
    u = UnitViews(layer="conv", rf_size=(5, 5), rf_jump=(1, 1), image_size=(8, 8), plain=None, plain_loss=None,
                  stuck=None, fourier=rng.uniform(0, 1, (2, 3, 8, 8)), fourier_loss=np.array([1.0, -1.0]),
                  decoded=rng.normal(size=(2, 3, 5, 5)), decode_note=None, patches=patches,
                  patch_values=np.array([[2.0, 1.0, np.nan], [np.nan] * 3]),
                  patch_images=np.array([[0, 0, -1], [-1] * 3]), nf=np.stack([patches[0, 0], none]),
                  colour_index=np.array([0.2, np.nan]), deconv=np.stack([rng.normal(size=(3, 5, 5)), none]),
                  guided=np.stack([rng.normal(size=(3, 5, 5)), none]),
                  inactive=np.array([False, True]))
    tiles = unit_tiles(u)
    for name in ("neuron_feature", "deconvnet", "guided_backprop"):
        assert (tiles[name][1] == BLANK_RGB).all() and not (tiles[name][0] == BLANK_RGB).all()
    # the maximisation and the decoded filter depend on the weights only: still drawn
    assert not (tiles["maximise_fourier"][1] == BLANK_RGB).all() and not (tiles["decoded"][1] == BLANK_RGB).all()
    grid = unit_grids(u)["top_patches"]
    assert (grid == BLANK_RGB).all(axis=-1).sum() >= 4 * 5 * 5  # three missing crops of unit 1, one of unit 0
    assert (grid == np.array([220, 20, 20], dtype=np.uint8)).all(axis=-1).any()  # red frame on unit 1's row
