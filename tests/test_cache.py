"""Incremental builds: nothing changed -> nothing computed; a change recomputes only its part."""

from __future__ import annotations

import io
import os

import pytest
import torch

from reportgen.build import build
from reportgen.cache import Cache
from reportgen.progress import Progress
from tests.conftest import SPEC, tiny_module, write_spec


def run(project, cache_dir, text=SPEC):
    return build(write_spec(project, text), project / "docs", device="cpu", cache_dir=cache_dir)


def test_unchanged_rebuild_computes_nothing_and_gives_the_same_report(project, tmp_path):
    cache = tmp_path / "cache"
    first = run(project, cache)
    # only repeated pictures hit on a first build (the same input image shown for every location)
    assert set(first.cache.hits) <= {"png"} and first.cache.misses["layer"] == 9  # 3 runs x 3 layers
    second = run(project, cache)
    assert sum(second.cache.misses.values()) == 0
    assert second.report == first.report


def test_changed_checkpoint_recomputes_only_its_location(project, tmp_path):
    cache = tmp_path / "cache"
    run(project, cache)
    torch.save({"state_dict": tiny_module(seed=7).state_dict()}, project / "ckpt" / "b.pt")
    again = run(project, cache)
    assert again.cache.misses["layer"] == 3  # b's three layers
    assert again.cache.hits["layer"] == 6
    # per layer and measure, the pairs with b: (a,b), (b,b), (b,c) -> 3 of 6 entries
    pairs = again.cache.misses["pair"]
    assert pairs and pairs == again.cache.hits["pair"]
    fresh = build(write_spec(project), project / "docs2", device="cpu", cache_dir=None)
    assert again.report["comparisons"] == fresh.report["comparisons"]
    assert again.report["runs"] == fresh.report["runs"]


def test_changed_option_recomputes_only_what_depends_on_it(project, tmp_path):
    cache = tmp_path / "cache"
    run(project, cache)
    text = SPEC + "analyses:\n  health: {duplicate_cosine: 0.5}\n"
    again = run(project, cache, text)
    assert again.cache.misses["layer"] == 0 and again.cache.misses["pair"] == 0
    assert again.cache.misses["health"] == 9  # the duplicate rule uses the threshold


def test_no_cache_stores_nothing(project, tmp_path):
    result = run(project, None)
    assert not result.cache.enabled and sum(result.cache.hits.values()) == 0
    assert not (tmp_path / "cache").exists()


def test_corrupt_entry_is_a_miss_and_is_replaced(project, tmp_path):
    cache = tmp_path / "cache"
    run(project, cache)
    entries = sorted((cache / "layer").rglob("*.rge"))
    entries[0].write_bytes(b"\x80garbage")
    again = run(project, cache)
    assert again.cache.misses["layer"] == 1
    assert sum(run(project, cache).cache.misses.values()) == 0


def test_interrupted_write_leaves_no_entry(tmp_path, monkeypatch):
    cache = Cache(tmp_path)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        cache.put("layer", "ab" * 32, {"x": 1})
    monkeypatch.undo()
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # no temp file, no entry
    assert cache.get("layer", "ab" * 32) is None


def test_progress_plain_lines_off_a_terminal():
    out = io.StringIO()
    with Progress(stream=out) as log:
        log("[1/2] a")
        log("[2/2] b")
        log("comparing locations")
    assert out.getvalue() == "[1/2] a\n[2/2] b\ncomparing locations\n"
    quiet = io.StringIO()
    with Progress(enabled=False, stream=quiet) as log:
        log("[1/2] a")
    assert quiet.getvalue() == ""
