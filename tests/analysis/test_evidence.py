"""Known answers for the evidence rule behind every health label (docs/reference/methods.md#health):
images are the independent samples, a channel silent on n images fires on at most
1 - 0.05^(1/n) of images (95%), and a label is stated only from 29 images on."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from reportgen.analysis.activations import ChannelStats
from reportgen.analysis.evidence import (
    MIN_IMAGES,
    distinct,
    duplicate_chance,
    image_evidence,
    images_needed,
    rate_upper_bound,
)
from reportgen.analysis.filters import duplicate_evidence, near_duplicates


def test_the_rule_of_three_and_the_images_it_needs():
    for n in (1, 5, 9, 29, 60, 300):
        assert rate_upper_bound(n) == pytest.approx(1 - 0.05 ** (1 / n))
        if n >= 29:
            assert rate_upper_bound(n) == pytest.approx(3 / n, rel=0.1)  # the rule of three
    assert MIN_IMAGES == images_needed(0.10) == 29
    assert rate_upper_bound(29) <= 0.10 < rate_upper_bound(28)
    assert images_needed(0.05) == 59  # 1 - 0.05^(1/59) = 4.95%
    ev = image_evidence(5, 1)
    assert ev["enough"] is False and ev["rate_upper_bound"] == pytest.approx(0.451, abs=1e-3)


def _stats(acts: np.ndarray, kind: str = "relu") -> dict:
    s = ChannelStats(acts.shape[1], kind)
    for chunk in np.array_split(acts, 4):
        s.update(torch.from_numpy(chunk))
    return s.result(0.99)


def test_a_unit_active_on_one_image_in_a_hundred_is_not_never_active_at_50_images():
    """One active position on one of the 50 images, the rest ≤ 0: active, however small its
    share of positions (1 in 50 x 64)."""
    rng = np.random.default_rng(0)
    acts = -np.abs(rng.normal(size=(50, 2, 8, 8)))
    acts[17, 0, 3, 5] = 0.2  # image 17 of 50 (one image in a hundred of the network's inputs, say)
    got = _stats(acts)
    assert got["active_images"].tolist() == [1, 0]
    assert got["active_fraction"][0] == pytest.approx(1 / (50 * 64))
    assert got["never_active"].tolist() == [False, True]
    assert got["never_active_label"].tolist() == [False, True]  # 50 images: the silent one is labelled


def test_a_1x1_output_with_5_images_gets_no_never_active_label():
    """A layer whose output is 1x1 (after global pooling) has one value per image: 5 images are
    5 samples, too few to label anything."""
    acts = np.ones((5, 4, 1, 1))
    acts[:, 2] = -1.0  # silent on all five
    got = _stats(acts)
    assert got["never_active"].tolist() == [False, False, True, False]
    assert not got["never_active_label"].any()
    assert got["saturated"].tolist() == [True, True, False, True]  # positive on 5 of 5 images
    assert not got["saturated_label"].any()  # "saturated" is not said of 5 of 5 samples


def test_a_unit_silent_on_60_images_is_labelled_with_its_bound():
    acts = np.abs(np.random.default_rng(1).normal(size=(60, 3, 4, 4)))
    acts[:, 1] = -0.5
    got = _stats(acts)
    assert got["never_active_label"].tolist() == [False, True, False]
    # Findings say it with the bound: built through the same report functions a build uses.
    from reportgen.analysis.findings import findings
    from reportgen.load.spec import AnalysesSpec
    from tests.analysis.test_findings import _healthy, _report

    runs = {f"r{i}": _healthy(i) for i in range(3)}
    runs["r0"][0] = ("conv1", runs["r0"][0][1], {"never_active": [True] * 10 + [False] * 6})
    fs = findings(_report(runs, images=60), AnalysesSpec())
    silent = next(f for f in fs if f.get("diagnosis") == "silent")
    assert "10 of 16 channels of `conv1` (62%) never activate" in silent["text"]
    assert f"under {rate_upper_bound(60):.1%} of images (95% bound)" in silent["text"]
    ev = next(e for e in silent["evidence"] if e["diagnosis"] == "silent")
    assert ev["images"] == 60 and ev["enough"] and ev["rate_upper_bound"] == pytest.approx(rate_upper_bound(60))


def test_the_same_report_on_5_images_warns_about_nothing_and_says_what_cannot_be_told():
    from reportgen.analysis.findings import findings
    from reportgen.load.spec import AnalysesSpec
    from tests.analysis.test_findings import _healthy, _report

    runs = {f"r{i}": _healthy(i) for i in range(3)}
    runs["r0"][0] = ("conv1", runs["r0"][0][1], {"never_active": [True] * 10 + [False] * 6})
    fs = findings(_report(runs, images=5), AnalysesSpec())
    assert not [f for f in fs if f["severity"] != "info"]
    note = next(f for f in fs if f.get("pattern") == "too_few_images")
    assert "5 test images" in note["text"] and "45.1%" in note["text"] and "29 images" in note["text"]
    assert not any("retrain" in f["text"] or "learning rate" in f["text"] for f in fs)
    overview = next(f for f in fs if f["kind"] == "overview")
    assert "see above" not in overview["text"]


def test_the_rule_labels_few_units_that_fire_on_a_tenth_of_images():
    """Over many units that fire independently on 10% of images, 29 images label at most about
    5% of them never active (0.9^29 = 4.7%): the rule's promise, checked by simulation."""
    rng = np.random.default_rng(2)
    fires = rng.random((29, 4000)) < 0.10
    acts = np.where(fires, 1.0, -1.0)[:, :, None, None]
    labelled = _stats(acts)["never_active_label"].mean()
    assert labelled == pytest.approx(0.9 ** 29, abs=0.012)


def test_positions_do_not_count_as_samples():
    """A 64x64 map gives 4096 positions per image; 5 images still give the 5-image bound."""
    acts = -np.ones((5, 1, 64, 64))
    s = ChannelStats(1)
    s.update(torch.from_numpy(acts))
    assert s.images == 5 and s.positions_per_image == 4096 and not s.result(0.99)["never_active_label"][0]


def test_near_duplicates_of_tiny_kernels_are_compared_with_chance():
    # Exact chance for two random directions: dim 2 is uniform on the circle, P(cos >= c) = acos(c) / pi.
    assert duplicate_chance(2, 0.95) == pytest.approx(np.arccos(0.95) / np.pi)
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(200000, 9))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    cos = np.einsum("ij,ij->i", vecs[:100000], vecs[100000:])
    assert duplicate_chance(9, 0.8) == pytest.approx((cos >= 0.8).mean(), rel=0.1)
    # 2x2 single-channel kernels (4 weights): 64 random filters give many cos >= 0.95 by chance.
    w = rng.normal(size=(64, 1, 2, 2))
    dup, opp = near_duplicates(w, 0.95)
    ev = duplicate_evidence(w, dup, opp, 0.95)
    assert ev["weights_per_filter"] == 4 and ev["pairs"] == 64 * 63 // 2
    assert (dup >= 0).sum() > 0 and not ev["duplicates"]["enough"]
    # 5x5x3 filters: one planted copy is far beyond chance.
    w = rng.normal(size=(32, 3, 5, 5))
    w[9] = w[4] * 1.3
    dup, opp = near_duplicates(w, 0.95)
    ev = duplicate_evidence(w, dup, opp, 0.95)
    assert dup[9] == 4 and ev["duplicates"]["enough"] and ev["expected_by_chance"] < 1e-20


def test_printed_values_never_round_onto_their_bound():
    assert distinct(1.011e-4, 1e-4, percent=True) == ("0.0101%", "0.01%")
    assert distinct(0.0283, 0.028) == ("0.0283", "0.028")
    assert distinct(0.5, 0.7) == ("0.5", "0.7")
    assert distinct(0.1, 0.1) == ("0.1", "0.1")


class _BiasApart(nn.Module):
    """conv (no bias) + a bias parameter added in forward -> identity -> ReLU6, and a residual."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bias = nn.Parameter(torch.tensor([0.5, -0.5, 1.0, -2.0]).reshape(1, 4, 1, 1))
        self.keep = nn.Identity()
        self.act = nn.ReLU6()
        self.conv2 = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.act(self.keep(self.conv(x) + self.bias))
        return y + self.conv2(y)  # conv2's output is added to y: a residual, no activation


def test_auto_activation_follows_a_bias_added_apart_and_an_identity():
    from reportgen.run.hooks import LayerRecorder, apply_activation, find_activations, inference

    model = _BiasApart().eval()
    found = find_activations(model, ["conv", "conv2"])
    act = found["conv"]
    assert act.kind == "relu6" and "a constant added" in act.source and "'keep'" in act.source
    assert found["conv2"].kind == "none" and "residual" in found["conv2"].note
    x = torch.randn(2, 3, 6, 6)
    with inference(model), LayerRecorder(model, ["conv"]) as rec:
        raw = rec.run(x)["conv"]
        got = apply_activation(act, dict(model.named_modules()), raw)
    torch.testing.assert_close(got, torch.clamp(raw + model.bias.detach(), 0, 6))


def _onnx_model(tmp_path, opset: int):
    """A small network exported by torch.onnx (the TorchScript exporter) and converted back by
    onnx2torch, with the patterns exporters write: a bias Add before a Clip(0, 6), SiLU and
    HardSwish written out as products, a Clip(0, 3), a hard sigmoid."""
    import importlib.util
    import io

    onnx = pytest.importorskip("onnx")
    if importlib.util.find_spec("onnx2torch") is None:
        pytest.skip("onnx2torch is not installed")

    from reportgen.load.formats import load_onnx

    class Exported(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 4, 3, bias=False)
            self.b = nn.Parameter(torch.randn(1, 4, 1, 1))
            self.c2, self.c3, self.c4, self.c5 = (nn.Conv2d(4, 4, 1) for _ in range(4))

        def forward(self, x):
            x = nn.functional.relu6(self.c1(x) + self.b)
            x = nn.functional.silu(self.c2(x))
            x = nn.functional.hardswish(self.c3(x))
            x = torch.clamp(self.c4(x), 0, 3.0)
            return nn.functional.hardsigmoid(self.c5(x))

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.onnx.export(Exported().eval(), torch.randn(1, 3, 8, 8), buf, dynamo=False, opset_version=opset)
    graph = onnx.load_from_string(buf.getvalue())
    # onnx2torch reads Clip bounds from initializers only: Constant nodes become initializers.
    kept = []
    for node in graph.graph.node:
        if node.op_type == "Constant":
            t = onnx.helper.get_attribute_value(node.attribute[0])
            t.name = node.output[0]
            graph.graph.initializer.append(t)
        else:
            kept.append(node)
    del graph.graph.node[:]
    graph.graph.node.extend(kept)
    path = tmp_path / f"m{opset}.onnx"
    onnx.save(graph, str(path))
    return load_onnx(path, "x")


@pytest.mark.parametrize("opset", [11, 17])
def test_auto_activation_in_converted_onnx_graphs(tmp_path, opset):
    from reportgen.run.hooks import LayerRecorder, apply_activation, find_activations, inference

    model = _onnx_model(tmp_path, opset)
    modules = dict(model.named_modules())
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    found = find_activations(model, convs)
    kinds = [found[c].kind for c in convs]
    assert kinds == ["relu6", "silu", "hardswish", "module", "hardsigmoid"], kinds
    assert "a constant added" in found[convs[0]].source  # the bias Add is followed, then the Clip
    assert "clamp to [0.0, 3.0]" in found[convs[3]].source
    # Replaying what was followed gives exactly what the graph computes next: the input of the next conv.
    x = torch.randn(1, 3, 8, 8)  # the exported graph fixes its batch at 1 (images go through one at a time)
    nxt = {convs[i]: convs[i + 1] for i in range(len(convs) - 1)}
    with inference(model):
        inputs = {}
        hooks = [modules[c].register_forward_pre_hook(lambda m, a, c=c: inputs.__setitem__(c, a[0].clone()))
                 for c in convs]
        try:
            with LayerRecorder(model, convs, stop_early=False) as rec:
                raw = rec.run(x)
            for c, d in nxt.items():
                torch.testing.assert_close(apply_activation(found[c], modules, raw[c]), inputs[d])
        finally:
            for h in hooks:
                h.remove()


def test_gabor_likeness_applies_to_image_filters_only():
    from reportgen.reduce.compare import gabor_applies, gabor_note

    first = np.zeros((8, 3, 5, 5))
    depthwise = np.zeros((256, 1, 5, 5))
    assert gabor_applies(first) and gabor_note(first) is None
    assert not gabor_applies(depthwise, groups=256) and "depthwise" in gabor_note(depthwise, groups=256)
    assert gabor_applies(depthwise[:8], groups=1)  # a grey first layer


def test_spec_docs_say_what_auto_does():
    """spec.md and methods.md agree with the code: auto goes through a BatchNorm (no 'list bn'),
    and CKA samples ceil(max_samples / images) positions per image, the same in every image."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = (root / "docs/reference/spec.md").read_text()
    methods = (root / "docs/reference/methods.md").read_text()
    assert "so list `bn`" not in spec and "BatchNorm" in spec
    for page in (spec, methods):
        assert "⌈max_samples / S⌉" in page or "⌈`max_samples` / S⌉" in page
    assert f"{MIN_IMAGES} images" in methods
    text = textwrap.dedent(methods)
    assert "adjusted R²" in text and "centre-surround" in text
