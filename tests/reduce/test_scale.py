"""Memory that does not grow with the locations: spilled arrays, pairs by blocks, sampled bootstrap."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from reportgen.analysis import locations
from reportgen.analysis.compare import linear_cka, matched_correlation
from reportgen.analysis.uncertainty import interval
from reportgen.build import build
from tests.conftest import write_spec


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_spilled_build_equals_an_in_memory_one_and_survives_lost_spill_entries(project, monkeypatch, tmp_path):
    from reportgen import build as build_mod
    from reportgen.core.spill import NO_SPILL

    spec = write_spec(project)
    cache = tmp_path / "cache"
    build(spec, project / "spilled", device="cpu", cache_dir=cache)
    spilled = list((cache / "spill").rglob("*.rge"))
    # maps, stage maps and features of conv1, conv2 and fc for three runs (fc: (C,) outputs, no stage maps
    # beyond the first two shared images) -- at least one entry per layer and run
    assert len(spilled) >= 9
    with monkeypatch.context() as m:  # the same build holding every array in memory
        m.setattr(build_mod, "spill_store", lambda *a: contextlib.nullcontext(NO_SPILL))
        build(spec, project / "memory", device="cpu", cache_dir=None)
    assert snapshot(project / "spilled") == snapshot(project / "memory")
    # a layer entry whose spilled arrays are gone is recomputed, not half-used
    for p in spilled:
        p.unlink()
    again = build(spec, project / "again", device="cpu", cache_dir=cache)
    assert again.cache.misses["layer"] == 9
    assert snapshot(project / "again") == snapshot(project / "memory")


def test_block_pairs_visit_every_pair_once():
    for k in (1, 5, 16, 17, 40):
        pairs = list(locations.block_pairs(k, block=4))
        assert sorted(pairs) == [(i, j) for i in range(k) for j in range(i, k)]


def test_bootstrap_partners_give_each_run_the_same_number_of_neighbours():
    pairs = locations.bootstrap_partners(30, partners=16)
    assert len(pairs) == len(set(pairs)) == 30 * 8
    counts = np.bincount(np.array(pairs).ravel(), minlength=30)
    assert (counts == 16).all()
    assert (0, 29) in pairs and (0, 8) in pairs and (0, 9) not in pairs  # neighbours wrap around


def _features(k: int, rng) -> tuple[list[np.ndarray], np.ndarray]:
    images = np.repeat(np.arange(6), 8)  # 6 shared images, 8 sampled positions each
    base = rng.normal(size=(48, 4))
    return [base @ rng.normal(size=(4, 4)) + 0.3 * rng.normal(size=(48, 4)) for _ in range(k)], images


class _Lazy:
    """Features that count how often each run is loaded."""

    def __init__(self, feats):
        self.feats, self.loads = feats, 0

    def __len__(self):
        return len(self.feats)

    def __getitem__(self, i):
        self.loads += 1
        return self.feats[i]


def test_many_runs_compare_in_blocks_and_bootstrap_sampled_pairs(monkeypatch):
    rng = np.random.default_rng(0)
    k = 30
    feats, images = _features(k, rng)
    names = [f"r{i}" for i in range(k)]
    lazy = _Lazy(feats)
    c = locations.compare_layer(names, [None] * k, lazy, feature_images=images, resamples=20,
                                feature_rows=[48] * k)
    # point estimates of every pair, against the plain reference functions
    for i, j in [(0, 1), (3, 29), (17, 18), (5, 5)]:
        assert np.isclose(c.cka[i, j], linear_cka(feats[i], feats[j]), atol=1e-12)
        assert np.isclose(c.activations[i, j], matched_correlation(feats[i], feats[j]).mean, atol=1e-12)
    # features were loaded block by block: far fewer loads than once per pair
    assert lazy.loads < k * (k - 1) // 2
    # the same bootstrap over every pair (the small-report path), for reference
    monkeypatch.setattr(locations, "BOOTSTRAP_ALL_PAIRS", 1000)
    full = locations.compare_layer(names, [None] * k, feats, feature_images=images, resamples=20)
    d = c.to_dict()
    sampled = set(locations.bootstrap_partners(k))
    for i, j in [(0, 1), (0, 29), (12, 20), (0, 15), (3, 20)]:
        got = d["cka_ci"][i][j]
        if (min(i, j), max(i, j)) in sampled:  # a resampled pair: exactly the full bootstrap's interval
            assert got == interval(full.boot["cka"][i, j], full.cka[i, j])
        else:
            assert got is None
    # a run's mean-to-others interval: from its 16 partners' resamples, around its mean over all others
    partners = [j for j in range(k) if (min(0, j), max(0, j)) in sampled]
    row = np.mean(full.boot["cka"][0, partners], axis=0)
    mean0 = np.mean([c.cka[0, j] for j in range(1, k)])
    assert d["mean_to_others_ci"]["cka"][0] == pytest.approx(interval(row, mean0))
    lo, hi = d["median_over_pairs_ci"]["cka"]
    assert lo <= d["median_over_pairs"]["cka"] <= hi
