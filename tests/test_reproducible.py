"""The same report, byte for byte, however it was built: in this process or a pool of
workers, from nothing, from a full cache, and resumed from the cache a killed build left.

The spec is the TownCentre example cut down to two locations with the data, training,
concepts and importance analyses on: their findings tie on severity and value, and once came
out in an order that depended on which extension module the build happened to import first.
(The Ray executor gets the same check in tests/run/test_executors_ray.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reportgen.build import build
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "towncenter"


def why_spec(folder: Path) -> Path:
    """TownCentre at loc02 and loc08 with every 'why' analysis on (about 5 s to build)."""
    text = f"""\
report: why
title: Every why analysis
models:
  - name: scenenet
    arch: {EXAMPLE}/model.py:SceneNet
    arch_args: {{width: 64, keypoints: 5}}
    checkpoint: {EXAMPLE}/checkpoints/{{location}}.pt
    checkpoint_key: state_dict
    step_checkpoint: {EXAMPLE}/trajectories/{{location}}/step_{{step}}.pt
    steps:
      loc02: [0, 10, 20, 30, 40]
      loc08: [0, 10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 250, 300]
    locations: [loc02, loc08]
input:
  size: [96, 128]
  mean: [0.485, 0.456, 0.406]
  std: [0.229, 0.224, 0.225]
annotations: {EXAMPLE}/frames/annotations.coco.json
images:
  - {EXAMPLE}/frames/{{location}}/*.png
  - {EXAMPLE}/frames/shared/*.png
layers: [conv1, conv4]
analyses:
  activations: {{max_images: 1}}
  concepts: {{layers: [conv4]}}
  importance: {{layers: [conv1], locations: [loc08]}}
"""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "why.yaml"
    path.write_text(text)
    return path


def published(docs: Path) -> dict[str, bytes]:
    """Every file of the report in ``docs``, by path."""
    out = docs / "why"
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def differences(a: dict[str, bytes], b: dict[str, bytes]) -> list[str]:
    return sorted(set(a) ^ set(b)) + [k for k in sorted(set(a) & set(b)) if a[k] != b[k]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The report built in this process, one run after another, without a cache."""
    tmp = tmp_path_factory.mktemp("why")
    spec = why_spec(tmp)
    build(spec, tmp / "docs", device="cpu", cache_dir=None, jobs=1)
    files = published(tmp / "docs")
    # The analyses whose findings tied are all there.
    assert {"training.md", "concepts.md", "importance.md", "data.md", "report.json"} <= set(files)
    return spec, files


@pytest.mark.slow
def test_process_pool_build_is_byte_identical(reference, tmp_path):
    spec, ref = reference
    build(spec, tmp_path / "docs", device="cpu", cache_dir=None, jobs=2, executor="process")
    assert differences(published(tmp_path / "docs"), ref) == []


@pytest.mark.slow
def test_builds_from_a_full_cache_are_byte_identical(reference, tmp_path):
    spec, ref = reference
    cache = tmp_path / "cache"
    build(spec, tmp_path / "cold", device="cpu", cache_dir=cache, jobs=1)
    warm = build(spec, tmp_path / "warm", device="cpu", cache_dir=cache, jobs=2)
    assert sum(warm.cache.misses.values()) == 0  # every result came from the cache
    assert differences(published(tmp_path / "cold"), ref) == []
    assert differences(published(tmp_path / "warm"), ref) == []


@pytest.mark.slow
def test_a_build_resumed_after_a_kill_is_byte_identical(reference, tmp_path):
    """Killed (SIGKILL: no clean-up at all) while it analyses its second location, so the
    first location's results are in the cache; the next build reads those and computes the
    rest, in whatever order that imports the analyses."""
    spec, ref = reference
    cache, docs = tmp_path / "cache", tmp_path / "docs"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "reportgen", "build", str(spec), "--docs-dir", str(docs),
           "--cache-dir", str(cache), "--device", "cpu", "-j", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in proc.stdout:  # plain progress lines: output is not a terminal
            seen.append(line)
            if line.startswith("[2/2]"):  # loc02 is done and cached; loc08 is under way
                time.sleep(0.5)
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)  # it was killed mid-build, not finished
    assert not (docs / "why").exists()
    resumed = build(spec, docs, device="cpu", cache_dir=cache, jobs=1)
    assert sum(resumed.cache.hits.values()) > 0 and sum(resumed.cache.misses.values()) > 0
    assert differences(published(docs), ref) == []


@pytest.mark.slow
def test_the_order_of_the_extensions_does_not_depend_on_import_order(reference):
    """The analyses imported and registered in reverse order in a fresh interpreter, the entry
    points read in reverse, are still listed (and so their pages and findings made) in the same
    order."""
    spec, _ = reference
    code = ("import sys\n"
            "from importlib import metadata\n"
            "from reportgen.core import extension\n"
            "from reportgen.extensions.importance import ImportanceExtension\n"
            "from reportgen.extensions.concepts import ConceptsExtension\n"
            "from reportgen.load.spec import load_spec\n"
            "found = metadata.entry_points\n"
            "metadata.entry_points = lambda **kw: list(reversed(list(found(**kw))))\n"
            "extension.register(ImportanceExtension())\n"
            "extension.register(ConceptsExtension())\n"
            "print(' '.join(e.name for e in extension.active(load_spec(sys.argv[1]))))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["data", "training", "concepts", "importance"]


def test_findings_that_tie_rank_the_same_whatever_order_they_come_in():
    import random

    from reportgen.analysis.findings import rank_key

    def f(severity, value, kind, text):
        return {"severity": severity, "value": value, "kind": kind, "text": text}

    made = [f("warning", 0.5, "training", "b"), f("warning", 0.5, "concepts", "a"),
            f("warning", 0.5, "importance", "c"), f("danger", 0.1, "health", "d"),
            f("info", float("nan"), "data", "e"), f("info", 2.0, "data", "f"), f("warning", 0.5, "concepts", "0")]
    first = sorted(made, key=rank_key)
    for seed in range(20):
        shuffled = made[:]
        random.Random(seed).shuffle(shuffled)
        assert sorted(shuffled, key=rank_key) == first
    assert [x["text"] for x in first] == ["d", "0", "a", "c", "b", "f", "e"]
