"""Ablation: zero outgoing weights give zero effect; the only path gives the computed change."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from reportgen.run.ablation import (
    ablate_units,
    output_heads,
    ranking,
    relate_to_flags,
    zeroed,
)


class TwoHeads(nn.Module):
    """conv1: 1 -> 3 channels (1x1, weights 1, 2, -1, no bias), ReLU; two 1x1 heads."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 1, bias=False)
        self.relu = nn.ReLU()
        self.a = nn.Conv2d(3, 1, 1, bias=False)
        self.b = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([1.0, 2.0, -1.0]).reshape(3, 1, 1, 1))
            self.a.weight.copy_(torch.tensor([3.0, 0.0, 1.0]).reshape(1, 3, 1, 1))  # unit 1 does not reach a
            self.b.weight.copy_(torch.tensor([0.0, 0.0, 5.0]).reshape(1, 3, 1, 1))  # only unit 2 reaches b

    def forward(self, x):
        h = self.relu(self.conv1(x))
        return {"a": self.a(h), "b": self.b(h)}


def _images(n=5, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 1, 6, 7)).astype(np.float32))


def _reference(x: np.ndarray, drop: int) -> dict[str, float]:
    """The relative change of each head, computed with numpy from the hand-set weights."""
    h = np.maximum(np.stack([x, 2 * x, -x], axis=1), 0)  # (N, 3, H, W)
    wa, wb = np.array([3.0, 0.0, 1.0]), np.array([0.0, 0.0, 5.0])
    out = {}
    for name, wt in (("a", wa), ("b", wb)):
        y = np.einsum("c,nchw->nhw", wt, h)
        w2 = wt.copy()
        w2[drop] = 0
        d = np.einsum("c,nchw->nhw", w2, h) - y
        out[name] = float(np.mean(np.linalg.norm(d.reshape(len(x), -1), axis=1)
                                  / np.linalg.norm(y.reshape(len(x), -1), axis=1)))
    return out


@pytest.mark.parametrize("budget", [1, 1 << 30])
def test_effects_match_the_hand_computation(budget):
    net, x = TwoHeads(), _images()
    res = ablate_units(net, "conv1", x, [0, 1, 2], budget=budget)
    assert res.heads == ("a", "b")
    for u in range(3):
        ref = _reference(x[:, 0].numpy().astype(np.float64), u)
        assert res.effect[u] == pytest.approx([ref["a"], ref["b"]], rel=1e-5)
    assert res.effect[1].tolist() == [0.0, 0.0]  # zero outgoing weights: exactly no effect
    assert res.effect[2, 1] == pytest.approx(1.0)  # the only path to head b: its output vanishes
    assert res.effect[0, 1] == 0.0
    assert list(ranking(res.overall)) == [2, 0, 1]


def test_hook_is_removed_after_an_exception():
    net = TwoHeads()
    with pytest.raises(RuntimeError):
        with zeroed(net, "conv1", [0], group=1):
            raise RuntimeError("boom")
    assert not net.conv1._forward_hooks
    x = _images()
    before = net(x)["a"]
    with zeroed(net, "conv1", [0], group=x.shape[0]):
        pass
    assert torch.equal(net(x)["a"], before)


def test_output_heads_of_tuples_and_tensors():
    t = torch.ones(2)
    assert list(output_heads(t)) == ["output"]
    assert list(output_heads((t, t, "x"))) == ["0", "1"]
    with pytest.raises(TypeError):
        output_heads("nothing")


def test_flags_in_the_least_important_quarter():
    effect = np.array([0.9, 0.0, 0.5, 0.0, 0.7, 0.3, 0.8, 0.05])
    flagged = np.array([False, True, False, True, False, False, False, False])
    rel = relate_to_flags(effect, flagged)
    assert rel["least_important"] == 2 and rel["flagged_in_least"] == 2 and rel["flagged"] == 2
    assert rel["expected_in_least"] == pytest.approx(2 * 2 / 8)
    # chance that 2 random draws out of 8 are both the 2 flagged ones: 1 / C(8, 2)
    assert rel["p_value"] == pytest.approx(1 / 28)
    assert rel["spearman"] == pytest.approx(stats.spearmanr(effect, flagged).statistic)
    assert rel["spearman"] < 0  # flagged units matter less


class Skip(nn.Module):
    """A residual block after the ablated layer, and a branch that reads the input again."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = h + torch.relu(self.conv2(h))
        return self.head(h) + x.mean()


def test_tail_and_hooks_agree():
    """Running only the network after the layer gives the same effects as zeroing hooks."""
    import reportgen.run.ablation as ab

    x = _images(3, seed=2)
    for net, layer in ((Skip(), "conv1"), (Skip(), "conv2"), (TwoHeads(), "conv1")):
        assert ab.tail_after(net, layer) is not None
        fast = ab.ablate_units(net, layer, x, list(range(3)))
        orig = ab.tail_after
        ab.tail_after = lambda *a: None  # force the hook path
        try:
            slow = ab.ablate_units(net, layer, x, list(range(3)))
        finally:
            ab.tail_after = orig
        np.testing.assert_allclose(fast.effect, slow.effect, rtol=1e-5, atol=1e-7)
        assert not any(m._forward_hooks for m in net.modules())


def test_ties_at_the_quarter_are_not_split():
    """Six units without effect: the least important group holds all six, not an arbitrary two."""
    effect = np.array([0.0, 0.4, 0.0, 0.0, 0.0, 0.3, 0.0, 0.0])
    flagged = np.array([True, False, False, True, True, False, True, False])
    rel = relate_to_flags(effect, flagged)
    assert rel["least_important"] == 6 and rel["flagged_in_least"] == 4
    assert rel["expected_in_least"] == pytest.approx(4 * 6 / 8)
    assert rel["p_value"] == pytest.approx(stats.hypergeom.sf(3, 8, 4, 6))
    assert rel["no_effect"] == 6 and rel["flagged_no_effect"] == 4


class Normed(nn.Module):
    """conv -> BatchNorm -> ReLU twice, two heads; ``branch`` adds data-dependent control flow,
    which torch.fx cannot trace (the zeroing-hook path)."""

    def __init__(self, branch: bool = False, running_stats: bool = True):
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8, track_running_stats=running_stats)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6, track_running_stats=running_stats)
        self.head = nn.Conv2d(6, 2, 1)
        self.pool = nn.Linear(6, 3)
        self.branch = branch
        with torch.no_grad():
            for bn in (self.bn1, self.bn2):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)
                if running_stats:
                    bn.running_mean.uniform_(-0.3, 0.3)
                    bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        if self.branch and bool(h.sum() > 0):
            h = h * 1.0
        h = torch.relu(self.bn2(self.conv2(h)))
        return self.head(h), self.pool(h.mean(dim=(2, 3)))


def _one_unit_at_a_time(net: nn.Module, layer: str, x: torch.Tensor, units: list[int]) -> np.ndarray:
    """The plain recipe: a forward of the images alone per unit, a hook zeroing its channel,
    the relative L2 change of each output per image in float64, averaged over the images."""
    net.eval()
    module = dict(net.named_modules())[layer]
    with torch.no_grad():
        base = [t.double().reshape(len(x), -1).numpy() for t in net(x)]
        rows = []
        for u in units:
            def hook(m, i, o, u=u):
                o = o.clone()
                o[:, u] = 0
                return o
            handle = module.register_forward_hook(hook)
            try:
                out = [t.double().reshape(len(x), -1).numpy() for t in net(x)]
            finally:
                handle.remove()
            rows.append([np.mean(np.linalg.norm(o - b, axis=1) / np.linalg.norm(b, axis=1))
                         for o, b in zip(out, base)])
    return np.array(rows)


@pytest.mark.parametrize("branch", [False, True])
def test_batched_passes_equal_one_forward_per_unit(branch):
    """Several passes of three units each give what one forward per unit gives."""
    import reportgen.run.ablation as ab

    net, x = Normed(branch=branch), torch.randn(4, 3, 10, 12, generator=torch.Generator().manual_seed(1))
    assert (ab.tail_after(net, "conv1") is None) == branch
    widest = 8 * 10 * 12 * 4  # bytes of conv1's output per image, the widest activation
    budget = 4 * len(x) * widest  # four blocks: the baseline and three units
    assert ab.units_per_pass(len(x), widest, budget) == 3
    calls = []
    handle = net.head.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        res = ab.ablate_units(net, "conv1", x, list(range(8)), budget=budget)
    finally:
        handle.remove()
    assert calls[1:] == [4 * len(x), 4 * len(x), 3 * len(x)]  # the baseline, then 3 + 3 + 2 units
    ref = _one_unit_at_a_time(net, "conv1", x, list(range(8)))
    np.testing.assert_allclose(res.effect, ref, rtol=1e-5, atol=1e-7)
    assert (res.effect > 0).all()
    one = ab.ablate_units(net, "conv1", x, list(range(8)), budget=1)  # one unit per pass
    np.testing.assert_allclose(one.effect, res.effect, rtol=1e-5, atol=1e-7)
    assert not any(m._forward_hooks for m in net.modules())


def test_a_model_that_mixes_the_batch_gets_a_pass_per_unit():
    """A BatchNorm without running statistics normalises with the batch: batching the ablations
    would let each change the others; each unit is ablated in a pass of its own."""
    import reportgen.run.ablation as ab

    net, x = Normed(running_stats=False), torch.randn(5, 3, 10, 12, generator=torch.Generator().manual_seed(2))
    assert ab.mixes_batch(net) and not ab.mixes_batch(Normed())
    res = ab.ablate_units(net, "conv1", x, list(range(8)), budget=1 << 30)
    np.testing.assert_allclose(res.effect, _one_unit_at_a_time(net, "conv1", x, list(range(8))), rtol=1e-5, atol=1e-7)


def test_units_per_pass_follows_the_budget():
    """Copies of the images, the baseline and one per unit, that fit the budget; at least one unit."""
    assert ab_units(10, 1000, 10 * 1000 * 5) == 4
    assert ab_units(10, 1000, 1) == 1  # less than one copy: still one unit per pass
    assert ab_units(1, 1 << 20, 64 << 20) == 63


def ab_units(images, image_bytes, budget):
    from reportgen.run.ablation import units_per_pass

    return units_per_pass(images, image_bytes, budget)
