"""Alignment through the network, the constant rule and the uncertainty of comparisons.

Known answers: a network against a copy of itself with every layer's channels permuted
(filters, biases, BatchNorm and the next layer's inputs together: the same function)
scores 1 for weights, activations and CKA at every layer, dead channels included, and
the planted permutation is read back at every layer. References are plain torch forwards,
numpy's corrcoef and scipy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from reportgen.analysis.align import align_chain, permute_inputs
from reportgen.analysis.compare import (
    linear_cka,
    matched_correlation,
    matched_similarity,
)
from reportgen.analysis.locations import best_matches, compare_layer
from reportgen.analysis.uncertainty import (
    BootRun,
    chance_similarity,
    interval,
    resample_counts,
)
from reportgen.run.chain import layer_chains, trace_links


class BNNet(nn.Module):
    """conv-BN-ReLU, conv-BN-ReLU-pool, conv-ReLU, spatial mean, dense: a chain."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(8, 5, 3)
        self.relu3 = nn.ReLU()
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        x = self.pool(self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))))
        return self.fc(self.relu3(self.conv3(x)).mean(dim=(2, 3)))


class FlatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv1(x)), 1))


class ResNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = x + torch.relu(self.conv2(x))  # a residual add joins conv1's and conv2's channels
        return self.conv3(x)


def _bn_net(seed: int = 0) -> BNNet:
    torch.manual_seed(seed)
    net = BNNet().eval()
    with torch.no_grad():
        for bn in (net.bn1, net.bn2):  # trained-looking BatchNorm statistics
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
        # dead channels: conv1's 0 and 4 and conv2's 3 never fire (zero filters, BN bias far below 0)
        for conv, bn, dead in ((net.conv1, net.bn1, [0, 4]), (net.conv2, net.bn2, [3])):
            conv.weight[dead] = 0.0
            bn.bias[dead] = torch.tensor([-50.0, -60.0][: len(dead)])
    return net


def _permuted(net: BNNet, perms: dict[str, torch.Tensor]) -> BNNet:
    """The same function with every hidden layer's channels reordered: new channel j = old perms[j]."""
    out = BNNet().eval()
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    order = [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", None)]
    prev = None
    for conv, bn in order:
        p = perms[conv]
        w = sd[f"{conv}.weight"]
        if prev is not None:
            w = w[:, prev]
        sd[f"{conv}.weight"], sd[f"{conv}.bias"] = w[p], sd[f"{conv}.bias"][p]
        if bn:
            for k in ("weight", "bias", "running_mean", "running_var"):
                sd[f"{bn}.{k}"] = sd[f"{bn}.{k}"][p]
        prev = p
    sd["fc.weight"] = sd["fc.weight"][:, prev]
    out.load_state_dict(sd)
    return out


def _features(net: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, np.ndarray]:
    """Post-ReLU (post-BN) outputs as (images * positions, C) float64, by a plain forward."""
    outs = {}
    with torch.no_grad():
        a1 = net.relu1(net.bn1(net.conv1(x)))
        a2 = net.relu2(net.bn2(net.conv2(a1)))
        a3 = net.relu3(net.conv3(net.pool(a2)))
        fc = net.fc(a3.mean(dim=(2, 3)))
    for name, a in (("conv1", a1), ("conv2", a2), ("conv3", a3), ("fc", fc)):
        if name in names:
            a = a if a.ndim == 2 else a.permute(0, 2, 3, 1).reshape(-1, a.shape[1])
            outs[name] = a.double().numpy()
    return outs


PERMS = {"conv1": torch.tensor([3, 0, 5, 1, 4, 2]), "conv2": torch.tensor([7, 2, 0, 3, 6, 1, 5, 4]),
         "conv3": torch.tensor([4, 2, 0, 1, 3])}
NAMES = ["conv1", "conv2", "conv3", "fc"]


def test_trace_finds_the_chain_and_batchnorm():
    links, note = trace_links(_bn_net())
    assert note is None
    assert {k: (v["producer"], v["bn"], v["note"]) for k, v in links.items()} == {
        "conv1": (None, "bn1", None), "conv2": ("conv1", "bn2", None), "conv3": ("conv2", None, None),
        "fc": ("conv3", None, None)}


def test_permuted_copy_is_the_same_function():
    net = _bn_net()
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(net(x), _permuted(net, PERMS)(x))


def test_permuted_copy_scores_one_everywhere_and_the_permutation_is_read_back():
    net = _bn_net()
    copy = _permuted(net, PERMS)
    chains = [layer_chains(n, NAMES) for n in (net, net, copy)]
    x = torch.randn(4, 3, 10, 10)
    feats = [_features(n, x, NAMES) for n in (net, net, copy)]
    dead = {"conv1": 2, "conv2": 1}
    for name, n_dead in dead.items():  # the planted dead channels never fire
        assert (feats[0][name].max(axis=0) <= 0).sum() >= n_dead
    for name in NAMES:
        c = compare_layer(["a", "b", "c"], [ch[name][0][-1]["weight"] for ch in chains], [f[name] for f in feats],
                          chains=[ch[name][0] for ch in chains])
        assert c.aligned
        for measure in ("weights", "activations", "cka"):
            np.testing.assert_allclose(c.matrix(measure), 1.0, atol=1e-9, err_msg=f"{name} {measure}")
        if name in PERMS:
            # c's channel j is a's channel PERMS[j]: a's channel i is c's argsort(PERMS)[i]
            np.testing.assert_array_equal(c.matching[(0, 2)], np.argsort(PERMS[name].numpy()))
            np.testing.assert_array_equal(c.matching[(0, 1)], np.arange(len(PERMS[name])))
            # seen from c, a's matched channels are the planted permutation itself (the across view uses this)
            idx, sign, score = best_matches(chains[2][name][0][-1]["weight"], [chains[0][name][0][-1]["weight"]],
                                            [c.matched_to(2)[0]])[0]
            np.testing.assert_array_equal(idx, PERMS[name].numpy())
            assert (sign == 1).all()


def test_without_alignment_deeper_layers_are_not_recognised():
    # what the report did before alignment: conv2 of the same function compared in its own input order
    net = _bn_net()
    copy = _permuted(net, PERMS)
    w2a, w2c = net.conv2.weight.detach().numpy(), copy.conv2.weight.detach().numpy()
    assert matched_similarity(w2a, w2c).mean < 0.9
    chains = [layer_chains(n, ["conv2"])["conv2"][0] for n in (net, copy)]
    assert align_chain(*chains)[-1].mean == pytest.approx(1.0, abs=1e-12)


def test_dense_after_flatten_permutes_blocks_of_inputs():
    torch.manual_seed(1)
    net = FlatNet()
    chain = layer_chains(net, ["fc"])["fc"][0]
    assert [l["name"] for l in chain] == ["conv1", "fc"] and chain[1]["block"] == 4
    p = torch.tensor([2, 0, 3, 1])
    copy = FlatNet()
    sd = net.state_dict()
    sd2 = {"conv1.weight": sd["conv1.weight"][p], "conv1.bias": sd["conv1.bias"][p],
           "fc.weight": sd["fc.weight"].reshape(3, 4, 4)[:, p].reshape(3, 16), "fc.bias": sd["fc.bias"]}
    copy.load_state_dict(sd2)
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(net(x), copy(x))  # the same function
    m = align_chain(chain, layer_chains(copy, ["fc"])["fc"][0])
    assert m[-1].mean == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(m[0].cols, np.argsort(p.numpy()))
    # hand check of the block permutation: input 4*c + k of the aligned layer is input 4*order[c] + k
    w = np.arange(2 * 8).reshape(2, 8)
    np.testing.assert_array_equal(permute_inputs(w, np.array([1, 0]), 4), w[:, [4, 5, 6, 7, 0, 1, 2, 3]])


def test_residual_add_is_not_a_chain_and_says_so():
    chains = layer_chains(ResNetLike(), ["conv1", "conv2", "conv3"])
    assert chains["conv1"][0] is not None and chains["conv2"][0] is not None
    assert chains["conv3"][0] is None and "add" in chains["conv3"][1]
    rng = np.random.default_rng(0)
    w = [rng.normal(size=(4, 4, 3, 3)) for _ in range(2)]
    c = compare_layer(["a", "b"], w, [None, None], chains=[None, None], chain_note=chains["conv3"][1])
    assert not c.aligned and "add" in c.to_dict()["alignment_note"]
    assert c.weights[0, 1] == pytest.approx(matched_similarity(w[0], w[1]).mean)  # own input order


def test_untraceable_model_falls_back_with_a_note():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.conv1(x) if x.sum() > 0 else -self.conv1(x)  # data-dependent: fx cannot trace

    chain, note = layer_chains(Branchy(), ["conv1"])["conv1"]
    assert chain is None and "torch.fx" in note


def test_constant_channels_make_exact_one_in_compare_layer():
    rng = np.random.default_rng(2)
    x = np.maximum(rng.normal(size=(400, 32)), 0)
    x[:, :17] = 0.0  # 17 dead channels: self-similarity was 15/32 before
    perm = rng.permutation(32)
    c = compare_layer(["a", "b"], [None, None], [x, x[:, perm]])
    np.testing.assert_allclose(c.activations, 1.0, atol=1e-12)
    np.testing.assert_allclose(c.cka, 1.0, atol=1e-12)


def test_chance_has_a_spread_and_matches_an_independent_simulation():
    from scipy.optimize import linear_sum_assignment

    mean, sd = chance_similarity((16, 3, 3, 3), (16, 3, 3, 3))
    rng = np.random.default_rng(123)  # another seed: an independent estimate
    vals = []
    for _ in range(100):
        a, b = rng.standard_normal((16, 27)), rng.standard_normal((16, 27))
        cos = np.abs((a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T)
        r, col = linear_sum_assignment(-cos)
        vals.append(cos[r, col].mean())
    assert sd > 0
    assert abs(mean - np.mean(vals)) < 4 * np.std(vals) / np.sqrt(50)
    assert 0.5 < sd / np.std(vals) < 2


def test_bootstrap_units_and_counts():
    images = np.repeat([0, 1, 2], [10, 10, 3])
    units, counts = resample_counts(images, n_resamples=50, blocks=4)
    assert units.max() + 1 == 4 + 4 + 3 and counts.shape == (50, 11)
    np.testing.assert_array_equal(units[:10], [0, 0, 0, 1, 1, 1, 2, 2, 3, 3])  # contiguous blocks
    per_image = np.stack([counts[:, :4].sum(1) / 4, counts[:, 4:8].sum(1) / 4, counts[:, 8:].sum(1) / 3], 1)
    assert (per_image.sum(axis=1) == 3).all()  # 3 images drawn per resample, each with all its block draws


def test_bootstrap_of_the_full_sample_equals_the_direct_numbers():
    rng = np.random.default_rng(6)
    xa = np.maximum(rng.normal(size=(60, 5)), 0)
    xa[:, 0] = 0.0
    xb = xa @ rng.normal(size=(5, 4)) + 0.3 * rng.normal(size=(60, 4))
    units = np.repeat(np.arange(6), 10)
    counts = np.ones((1, 6), dtype=np.int64)  # every unit once: the data themselves
    act, cka = BootRun(xa, units, counts).pair(BootRun(xb, units, counts))
    assert act[0] == pytest.approx(matched_correlation(xa, xb).mean, abs=1e-10)
    assert cka[0] == pytest.approx(linear_cka(xa, xb), abs=1e-10)
    counts = np.array([[2, 0, 1, 0, 3, 0]])  # a resample: the same as repeating the rows
    rows = np.concatenate([np.repeat(np.arange(u * 10, u * 10 + 10)[None], c, 0).ravel()
                           for u, c in enumerate(counts[0])])
    act, cka = BootRun(xa, units, counts).pair(BootRun(xb, units, counts))
    assert act[0] == pytest.approx(matched_correlation(xa[rows], xb[rows]).mean, abs=1e-10)
    assert cka[0] == pytest.approx(linear_cka(xa[rows], xb[rows]), abs=1e-10)


def test_bootstrap_intervals_cover_and_shrink_with_more_images():
    rng = np.random.default_rng(7)

    def width(n_img: int) -> tuple[float, float, float]:
        z = rng.normal(size=(n_img * 20, 3))
        xa = z + 0.8 * rng.normal(size=z.shape)
        xb = z + 0.8 * rng.normal(size=z.shape)
        images = np.repeat(np.arange(n_img), 20)
        c = compare_layer(["a", "b"], [None, None], [xa, xb], feature_images=images, resamples=200)
        lo, hi = c.to_dict()["cka_ci"][0][1]
        return lo, hi, c.cka[0, 1]

    lo, hi, point = width(5)
    assert lo <= point <= hi
    lo2, hi2, point2 = width(80)
    assert lo2 <= point2 <= hi2 and hi2 - lo2 < hi - lo
    assert interval(np.array([np.nan, 1.0, 1.0])) == [1.0, 1.0]


def _report(values: dict[str, float], chance=(0.14, 0.003), cka: dict[str, float] | None = None) -> dict:
    comps = []
    for layer, v in values.items():
        m = np.full((3, 3), v)
        np.fill_diagonal(m, 1.0)
        ck = None
        if cka:
            ck = np.full((3, 3), cka[layer])
            np.fill_diagonal(ck, 1.0)
            ck = ck.tolist()
        comps.append({"layer": layer, "runs": ["a", "b", "c"], "weight_similarity": m.tolist(),
                      "weight_chance": chance[0], "weight_chance_sd": chance[1], "cka": ck,
                      "alignment_note": None, "median_over_pairs_ci": {"cka": [0.1, 0.9]} if cka else {}})
    return {"comparisons": comps}


def test_labels_come_from_standard_deviations_above_chance():
    from reportgen.analysis.findings import similarity_findings, similarity_verdict

    # the example's conv3: 0.16 against 0.14 +- 0.003 is ~7 sd above chance: related, not 'unrelated'
    text = similarity_findings(_report({"conv3": 0.16}), similar=0.5)[0]["text"]
    assert "learned different filters" in text and "6.7 sd above the 0.14 ± 0.003" in text
    assert "learned unrelated filters" in similarity_findings(_report({"conv3": 0.145}), similar=0.5)[0]["text"]
    # a wide chance band: 0.16 is within it
    assert similarity_verdict(0.16, 0.14, 0.01, 0.5) == "unrelated"
    assert similarity_verdict(0.8, 0.14, 0.01, 0.5) == "similar"
    assert similarity_verdict(0.8, None, None, 0.5) == "similar"


def test_trend_sentence_follows_the_actual_sequence():
    from reportgen.analysis.findings import similarity_findings

    def trend(cka):
        out = similarity_findings(_report({k: 0.3 for k in cka}, cka=cka), similar=0.5)
        return out[0]["text"]

    assert "neither converge nor diverge steadily (least alike at `l2`)" in trend({"l1": 0.5, "l2": 0.17, "l3": 0.74})
    assert "diverge with depth" in trend({"l1": 0.95, "l2": 0.48, "l3": 0.31})
    assert "converge with depth" in trend({"l1": 0.2, "l2": 0.5})
    assert "[0.10–0.90]" in trend({"l1": 0.2, "l2": 0.5})


def test_bias_corrected_interval_follows_the_point():
    rng = np.random.default_rng(8)
    boot = rng.normal(0.5, 0.1, 4000)
    lo, hi = interval(boot)
    assert lo == pytest.approx(np.percentile(boot, 2.5)) and hi == pytest.approx(np.percentile(boot, 97.5))
    # the point at the bootstrap median: no correction
    np.testing.assert_allclose(interval(boot, float(np.median(boot))), [lo, hi], atol=0.01)
    # resamples biased upward (point at their 10th percentile): the interval moves down to hold it
    point = float(np.percentile(boot, 10))
    blo, bhi = interval(boot, point)
    assert blo < lo and bhi < hi and blo <= point <= bhi
