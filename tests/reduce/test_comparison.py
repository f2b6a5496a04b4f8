"""Cross-location comparison through a whole build: known answers in report.json."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from reportgen.build import build
from tests.conftest import SPEC, tiny_module, write_spec


def permuted_copy(sd: dict, p1: torch.Tensor, p2: torch.Tensor) -> dict:
    """The same network with conv1's and conv2's channels reordered (new channel j = old p[j]),
    each next layer's inputs reordered to match: the same function."""
    out = {k: v.clone() for k, v in sd.items()}
    out["conv1.weight"], out["conv1.bias"] = sd["conv1.weight"][p1], sd["conv1.bias"][p1]
    out["conv2.weight"], out["conv2.bias"] = sd["conv2.weight"][:, p1][p2], sd["conv2.bias"][p2]
    out["fc.weight"] = sd["fc.weight"][:, p2]
    return out


@pytest.mark.slow
def test_self_and_permuted_copy_score_one_at_every_layer_through_a_build(project):
    from tests.tinynet import TinyNet

    net = tiny_module(seed=0)
    with torch.no_grad():  # two dead conv1 channels: zero filters that never fire
        net.conv1.weight[[1, 3]] = 0.0
        net.conv1.bias[[1, 3]] = torch.tensor([-1.0, -2.0])
    sd = net.state_dict()
    p1, p2 = torch.tensor([2, 0, 3, 1]), torch.tensor([5, 7, 0, 2, 6, 1, 4, 3])
    copy_sd = permuted_copy(sd, p1, p2)
    x = torch.rand(2, 3, 16, 16)
    copy = TinyNet(4)
    copy.load_state_dict(copy_sd)
    with torch.no_grad():
        torch.testing.assert_close(net(x), copy(x))  # the copy is the same function
    torch.save({"state_dict": sd}, project / "ckpt" / "a.pt")
    torch.save({"state_dict": sd}, project / "ckpt" / "b.pt")  # b is a itself
    torch.save({"state_dict": copy_sd}, project / "ckpt" / "c.pt")  # c is a, reordered
    rng = np.random.default_rng(1)
    for i in range(3, 6):  # 6 shared images: enough for bootstrap intervals
        Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(project / "img" / f"im{i}.png")
    result = build(write_spec(project), project / "docs", device="cpu")
    comps = {c["layer"]: c for c in result.report["comparisons"]}
    assert list(comps) == ["conv1", "conv2", "fc"]
    for layer, c in comps.items():
        assert c["runs"] == ["a", "b", "c"] and c["aligned"] is True and c["alignment_note"] is None
        for key in ("weight_similarity", "activation_similarity", "cka"):
            np.testing.assert_allclose(np.array(c[key]), 1.0, atol=1e-6, err_msg=f"{layer} {key}")
        pairs = {(m["a"], m["b"]): m["b_index"] for m in c["weight_matching"]}
        planted = {"conv1": p1, "conv2": p2, "fc": torch.arange(3)}[layer].numpy()
        assert pairs[("a", "c")] == np.argsort(planted).tolist()  # a's channel i is c's channel argsort(p)[i]
        assert pairs[("a", "b")] == list(range(len(planted)))
        for lo, hi in np.array(c["cka_ci"], dtype=float).reshape(-1, 2):
            assert lo == pytest.approx(1.0, abs=1e-6) and hi == pytest.approx(1.0, abs=1e-6)
    assert 0 < comps["conv1"]["weight_chance"] < 1 and comps["conv1"]["weight_chance_sd"] > 0
    page = (project / "docs/tiny/layers/conv2.md").read_text()
    assert "after aligning this layer's input channels" in page


def test_no_interval_from_too_few_images(tiny_build):
    result, _ = tiny_build  # the tiny project's 3 shared images (built once per session)
    c = result.report["comparisons"][0]
    assert c["cka"] is not None and c["cka_ci"] is None and c["median_over_pairs_ci"]["cka"] is None


def test_residual_model_falls_back_to_own_order_with_a_note_in_report_and_page(project):
    (project / "res.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Res(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)\n"
        "        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)\n        self.conv3 = nn.Conv2d(4, 4, 3, padding=1)\n\n"
        "    def forward(self, x):\n        x = torch.relu(self.conv1(x))\n"
        "        x = x + torch.relu(self.conv2(x))\n        return self.conv3(x)\n")
    # plain state dicts named like Res's modules
    for i, loc in enumerate("abc"):
        torch.manual_seed(i)
        sd = {f"conv{k}.{p}": t for k in (1, 2, 3) for p, t in
              zip(("weight", "bias"), (torch.randn(4, 3 if k == 1 else 4, 3, 3), torch.randn(4)))}
        torch.save(sd, project / "ckpt" / f"{loc}.pt")
    text = SPEC.replace("arch.py:TinyNet", "res.py:Res").replace("arch_args: {width: 4}", "arch_args: {}") \
        .replace("  - fc\n", "  - conv3\n")
    result = build(write_spec(project, text), project / "docs", device="cpu")
    comps = {c["layer"]: c for c in result.report["comparisons"]}
    assert comps["conv2"]["aligned"] is True
    assert comps["conv3"]["aligned"] is False and "add" in comps["conv3"]["alignment_note"]
    assert "own input-channel order" in (project / "docs/tiny/layers/conv3.md").read_text()


def test_unrelated_locations_score_lower_and_findings_trace_to_report_json(tiny_build):
    result, _ = tiny_build  # built once per session (tests/conftest.py)
    report = result.report
    c = {c["layer"]: c for c in report["comparisons"]}["conv1"]
    w = np.array(c["weight_similarity"])
    assert np.allclose(np.diag(w), 1.0) and (w[~np.eye(3, dtype=bool)] < 0.99).all()
    sim = next(f for f in report["findings"] if f["layer"] == "conv1" and "matched |cos|" in f["text"])
    off = w[np.triu_indices(3, 1)]
    assert f"median matched |cos| of weights over pairs is {np.median(off):.2f}" in sim["text"]
    assert f"the {c['weight_chance']:.2f} ± {c['weight_chance_sd']:.3f} that independent random" in sim["text"]


def test_reference_comparison_and_gabor(project):
    torch.manual_seed(5)
    big = torch.nn.Conv2d(3, 6, 5)  # a 5x5 reference: resampled to the locations' 3x3
    torch.save({"conv1.weight": big.weight.detach(), "conv1.bias": big.bias.detach()}, project / "ref.pt")
    (project / "ref.py").write_text("from torch import nn\n\n\nclass Ref(nn.Module):\n    def __init__(self):\n"
                                    "        super().__init__()\n        self.conv1 = nn.Conv2d(3, 6, 5)\n")
    text = SPEC + "reference:\n  arch: ref.py:Ref\n  checkpoint: ref.pt\n  layer: conv1\n"
    result = build(write_spec(project, text), project / "docs", device="cpu")
    ref = result.report["reference"]
    assert ref["against"] == "conv1" and ref["weight_shape"] == [6, 3, 5, 5] and ref["resized"] is True
    assert [p["run"] for p in ref["per_run"]] == ["a", "b", "c"]
    assert all(0 < p["matched_similarity"] <= 1 for p in ref["per_run"])
    assert ref["gabor"] is not None and len(ref["gabor"]["orientation_histogram"]) == 8
    page = (project / "docs/tiny/layers/conv1.md").read_text()
    assert "## Reference model" in page and "../img/reference/filters_per_layer.png" in page
    # the locations' conv1 is 3x3: too small for Gabor fits, so none are reported
    assert "gabor" not in result.report["runs"][0]["layers"][0]


def test_gabor_scores_reach_report_json(project):
    from reportgen.analysis.gabor import gabor
    from tests.tinynet import TinyNet

    # every location's conv1 becomes 5x5: 2 Gabors (one colour-opponent) and 2 noise patterns
    (project / "arch5.py").write_text((project / "arch.py").read_text().replace(
        "nn.Conv2d(3, width, 3, padding=1)", "nn.Conv2d(3, width, 5, padding=2)"))
    rng = np.random.default_rng(0)
    for i, loc in enumerate("abc"):
        m = TinyNet(4)
        m.conv1 = torch.nn.Conv2d(3, 4, 5, padding=2)
        sd = m.state_dict()
        g = gabor((5, 5), theta=0.5 * i, freq=0.25, sigma=1.3)
        w = np.stack([np.stack([g, g, g]), np.stack([-g, g, 0 * g]), rng.normal(size=(3, 5, 5)),
                      rng.normal(size=(3, 5, 5))])
        sd["conv1.weight"] = torch.tensor(w, dtype=torch.float32)
        torch.save(sd, project / "ckpt" / f"{loc}.pt")
    text = SPEC.replace("arch.py:TinyNet", "arch5.py:TinyNet")
    result = build(write_spec(project, text), project / "docs", device="cpu")
    layer = result.report["runs"][0]["layers"][0]
    scores = [f["gabor_score"] for f in layer["filters"]]
    assert scores[0] > 0.95 and scores[1] > 0.95 and max(scores[2:]) < 0.7
    g = layer["gabor"]
    assert g["share_gabor_like"] == 0.5 and g["live"] == 4 and g["filters"] == 4 and g["gabor_like"] == 2
    assert g["ranked"] is False  # 4 live filters are too few to rank a location by
    finding = next(f for f in result.report["findings"] if "Gabor" in f["text"])
    assert "no location has enough live filters" in finding["text"]
    assert re.search(r"a 50% of 4 live filters", finding["text"])
    page = (project / "docs/tiny/layers/conv1.md").read_text()
    assert "| 4 of 4 |" in page and "too few to rank" in page


def test_prepared_fast_path_equals_reference_functions():
    from reportgen.analysis.compare import linear_cka, matched_correlation
    from reportgen.analysis.locations import compare_layer

    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) for _ in range(3)]
    feats[1][:, 2] = 4.0  # a constant channel
    c = compare_layer(["a", "b", "c"], [None] * 3, feats)
    for i in range(3):
        for j in range(3):
            assert np.isclose(c.cka[i, j], linear_cka(feats[i], feats[j]), atol=1e-12)
            assert np.isclose(c.activations[i, j], matched_correlation(feats[i], feats[j]).mean, atol=1e-12)
    assert c.weights is None


def test_chance_levels_are_computed_once_per_shape_and_cached(project, tmp_path):
    """The chance level of weight similarity depends only on the filters' shapes: one entry per
    pair of shapes (conv1, conv2 and fc of the tiny net all differ), the value
    chance_similarity gives, read back by the next build."""
    from reportgen.analysis.uncertainty import chance_similarity

    spec = write_spec(project)
    cache = tmp_path / "cache"
    first = build(spec, project / "a", device="cpu", cache_dir=cache)
    shapes = {tuple(lay["weight_shape"]) for lay in first.report["runs"][0]["layers"] if lay.get("weight_shape")}
    assert first.cache.misses["chance"] == len(shapes) == 3 and first.cache.hits["chance"] == 0
    for cmp in first.report["comparisons"]:
        if cmp["weight_similarity"] is None:
            continue
        shape = next(tuple(lay["weight_shape"]) for lay in first.report["runs"][0]["layers"]
                     if lay["name"] == cmp["layer"])
        assert (cmp["weight_chance"], cmp["weight_chance_sd"]) == pytest.approx(chance_similarity(shape, shape))
    again = build(spec, project / "b", device="cpu", cache_dir=cache)
    assert again.cache.hits["chance"] == first.cache.misses["chance"] and again.cache.misses["chance"] == 0
    assert again.report["comparisons"] == first.report["comparisons"]
