"""Tiny models with hand-set weights, helpers that write specs to tmp dirs, and the example
reports built once per test session.

`make test` runs the suite on parallel workers (pytest-xdist, ``--dist worksteal``); the tests
of the example reports come first (``pytest_collection_modifyitems`` below), so one worker
builds each example once while the others run the rest.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import tests.workers  # noqa: F401  (first: shares the cores out before torch is imported)

ROOT = Path(__file__).resolve().parents[1]

# An architecture file as a user would write it; tests copy it next to their spec.
TINY_ARCH = (ROOT / "tests" / "tinynet.py").read_text()


def tiny_module(width: int = 4, seed: int = 0) -> nn.Module:
    from tests.tinynet import TinyNet

    torch.manual_seed(seed)
    return TinyNet(width)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread than on threads fighting over a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """Each test builds with a cache of its own, never the working directory's."""
    monkeypatch.setenv("REPORTGEN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    # CLI builds run in the test's process (patches apply; no worker start-up); tests of the
    # process pool ask for it.
    monkeypatch.setenv("REPORTGEN_JOBS", "1")


def _build_example(tmp_path_factory, spec_name: str):
    """An example spec built without a cache into an empty docs folder of its own (the report
    must be a site of its own for `mkdocs build --strict`).
    Returns (BuildResult, docs folder, a scratch folder). Tests only read the docs folder;
    one that changes files works on a copy (``copy_report``)."""
    from reportgen.build import build

    tmp = tmp_path_factory.mktemp(spec_name.split(".")[0])
    docs = tmp / "docs"
    # REPORTGEN_SITE_CACHE: a cache kept between runs (make screenshots, a reviewer's reruns).
    cache = os.environ.get("REPORTGEN_SITE_CACHE") or None
    result = build(ROOT / "specs" / spec_name, docs, device="cpu", cache_dir=cache)
    return result, docs, tmp


@pytest.fixture(scope="session")
def towncenter_build(tmp_path_factory):
    """The TownCentre example built once per test session (the longest build of the suite)."""
    return _build_example(tmp_path_factory, "towncenter.yaml")


@pytest.fixture(scope="session")
def edges_build(tmp_path_factory):
    """The edges example built once per test session."""
    return _build_example(tmp_path_factory, "edges.yaml")


@pytest.fixture(scope="session")
def colour_mlp_build(tmp_path_factory):
    """The colour MLP example built once per test session."""
    return _build_example(tmp_path_factory, "colour_mlp.yaml")


@pytest.fixture(scope="session")
def example_docs(tmp_path_factory, towncenter_build, edges_build, colour_mlp_build) -> Path:
    """The example site's sources: the repository's docs/ with the three example reports
    (built once per session). Tests only read it; builds write their site elsewhere."""
    docs = tmp_path_factory.mktemp("site") / "docs"
    shutil.copytree(ROOT / "docs", docs, ignore=shutil.ignore_patterns("towncenter", "edges", "colour-mlp", ".*"))
    for example in (towncenter_build, edges_build, colour_mlp_build):
        copy_report(example, docs)
    return docs


@pytest.fixture(scope="session")
def example_site(example_docs) -> Path:
    """The example site built by `mkdocs build --strict` from the committed mkdocs.yml: its
    site folder (beside ``example_docs``)."""
    from tests.test_build import mkdocs_strict

    proc = mkdocs_strict(example_docs, example_docs.parent)
    assert proc.returncode == 0, proc.stderr
    return example_docs.parent / "site"


def copy_report(build: tuple, docs: Path) -> Path:
    """Copy a session-built report into ``docs`` (a folder the test owns); returns its folder."""
    result, built_docs, _ = build
    name = result.out_dir.name
    return Path(shutil.copytree(built_docs / name, docs / name))


@pytest.fixture
def project(tmp_path: Path):
    """A folder with the tiny architecture, checkpoints for three locations and images."""
    return make_project(tmp_path)


def make_project(tmp_path: Path) -> Path:
    """The ``project`` fixture's folder, for fixtures of a wider scope."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "arch.py").write_text(TINY_ARCH)
    (tmp_path / "ckpt").mkdir()
    for i, loc in enumerate(["a", "b", "c"]):
        m = tiny_module(seed=i)
        torch.save({"state_dict": m.state_dict(), "epoch": 3}, tmp_path / "ckpt" / f"{loc}.pt")
    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(tmp_path / "img" / f"im{i}.png")
    return tmp_path


SPEC = """\
report: tiny
title: Tiny report
description: Three locations of a tiny network.
models:
  - name: tiny
    arch: arch.py:TinyNet
    arch_args: {width: 4}
    checkpoint: ckpt/{location}.pt
    locations: [a, b, c]
input:
  size: [16, 16]
images:
  - img/*.png
layers:
  - conv1
  - conv2
  - fc
"""


def write_spec(folder: Path, text: str = SPEC, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory):
    """The ``project`` fixture's folder with SPEC built into its docs/ without a cache, once
    per session (per worker): (BuildResult, project folder). For tests that only read it."""
    from reportgen.build import build

    project = make_project(tmp_path_factory.mktemp("tiny") / "project")
    result = build(write_spec(project), project / "docs", device="cpu", cache_dir=None)
    return result, project


# The example reports above, built once per session (per worker).
EXAMPLES = ("towncenter_build", "edges_build", "colour_mlp_build")


def _uses_an_example(item) -> bool:
    callspec = getattr(item, "callspec", None)  # a parameter naming one: request.getfixturevalue
    named = [v for v in callspec.params.values() if isinstance(v, str)] if callspec else []
    return any(name in item.fixturenames or name in named for name in EXAMPLES)


def pytest_collection_modifyitems(config, items):
    """The tests of the example reports run first, together. Under ``--dist worksteal`` the
    first worker gets the first half of this order: it builds each example once and runs
    that chain (the longest of the suite: the builds, the site, the browser) while the other
    worker runs the second half; either takes tests from the end of the other's queue when
    it runs out, so the examples stay on one worker. Those tests are also marked ``slow``."""
    for item in items:
        if _uses_an_example(item):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: not _uses_an_example(item))
