"""Cross-location comparison through a whole build: known answers in report.json."""

from __future__ import annotations

import re

import numpy as np
import torch

from reportgen.build import build
from tests.conftest import SPEC, tiny_module, write_spec


def permuted_copy(sd: dict, perm: torch.Tensor) -> dict:
    """The same network with conv1's filters reordered (and conv2's inputs to match)."""
    out = {k: v.clone() for k, v in sd.items()}
    out["conv1.weight"] = sd["conv1.weight"][perm]
    out["conv1.bias"] = sd["conv1.bias"][perm]
    out["conv2.weight"] = sd["conv2.weight"][:, perm]
    return out


def test_self_and_planted_permutation_score_one(project):
    sd = tiny_module(seed=0).state_dict()
    perm = torch.tensor([2, 0, 3, 1])
    torch.save({"state_dict": sd}, project / "ckpt" / "b.pt")  # b is a itself
    torch.save({"state_dict": permuted_copy(sd, perm)}, project / "ckpt" / "c.pt")  # c is a, reordered
    result = build(write_spec(project), project / "docs", device="cpu")
    comps = {c["layer"]: c for c in result.report["comparisons"]}
    conv1 = comps["conv1"]
    assert conv1["runs"] == ["a", "b", "c"]
    w = np.array(conv1["weight_similarity"])
    np.testing.assert_allclose(w, 1.0, atol=1e-6)  # a=b exactly; c matches a after un-permuting
    np.testing.assert_allclose(np.array(conv1["cka"]), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.array(conv1["activation_similarity"]), 1.0, atol=1e-6)
    # conv2's outputs are identical functions of the input for all three: CKA 1 there too
    np.testing.assert_allclose(np.array(comps["conv2"]["cka"]), 1.0, atol=1e-6)
    assert 0 < conv1["weight_chance"] < 1


def test_unrelated_locations_score_lower_and_findings_trace_to_report_json(project):
    result = build(write_spec(project), project / "docs", device="cpu")
    report = result.report
    c = {c["layer"]: c for c in report["comparisons"]}["conv1"]
    w = np.array(c["weight_similarity"])
    assert np.allclose(np.diag(w), 1.0) and (w[~np.eye(3, dtype=bool)] < 0.99).all()
    sim = next(f for f in report["findings"] if f["layer"] == "conv1" and "matched |cos|" in f["text"])
    off = w[np.triu_indices(3, 1)]
    assert f"median matched |cos| of weights over pairs is {np.median(off):.2f}" in sim["text"]
    assert f"{c['weight_chance']:.2f} for independent random filters" in sim["text"]


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
    assert layer["gabor"]["share_gabor_like"] == 0.5
    finding = next(f for f in result.report["findings"] if "Gabor-like" in f["text"])
    assert re.search(r"median location has 50% of filters", finding["text"])


def test_prepared_fast_path_equals_reference_functions():
    from reportgen.analysis.compare import correlation_matrix, linear_cka, match
    from reportgen.analysis.locations import compare_layer

    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) for _ in range(3)]
    feats[1][:, 2] = 4.0  # a constant channel
    c = compare_layer(["a", "b", "c"], [None] * 3, feats)
    for i in range(3):
        for j in range(3):
            assert np.isclose(c.cka[i, j], linear_cka(feats[i], feats[j]), atol=1e-12)
            assert np.isclose(c.activations[i, j], match(correlation_matrix(feats[i], feats[j])).mean, atol=1e-12)
    assert c.weights is None
