"""Tiny models with hand-set weights and helpers that write specs to tmp dirs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

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


@pytest.fixture(scope="session")
def towncenter_build(tmp_path_factory):
    """The TownCentre example built once per test session (minutes on a shared CPU), into an
    empty docs folder: the report must be a site of its own for `mkdocs build --strict`.
    Returns (BuildResult, docs folder, a scratch folder)."""
    from reportgen.build import build

    tmp = tmp_path_factory.mktemp("towncenter")
    docs = tmp / "docs"
    result = build(ROOT / "specs" / "towncenter.yaml", docs, device="cpu", cache_dir=None)
    return result, docs, tmp


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
