"""Module names that are not file names: slugs, escaping, and a strict site that links up."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from reportgen.build import build
from reportgen.core.names import anchor_id, code, slug
from tests.conftest import write_spec
from tests.sites import strict_lone_site

ODD = ["a/b", "c:d", "é x", "<b>"]

ARCH = '''
import torch
from torch import nn


class OddNames(nn.Module):
    """Modules named like ONNX graph nodes and worse."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleDict({
            "a/b": nn.Conv2d(3, 4, 3, padding=1),
            "c:d": nn.ReLU(),
            "é x": nn.Conv2d(4, 6, 3),
            "<b>": nn.Linear(6, 2),
        })

    def forward(self, x):
        b = self.blocks
        x = torch.relu(b["é x"](b["c:d"](b["a/b"](x))))
        return b["<b>"](x.mean(dim=(2, 3)))
'''


def test_slugs_are_safe_unique_and_stable():
    names = ODD + ["features.0", "a-b", "a_b", "model/0/conv/Conv", "model:0:conv:Conv", "..", "x" * 200, "名前"]
    slugs = [slug(n) for n in names]
    assert len(set(slugs)) == len(names)
    for s in slugs:
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.~-]*", s), s
        assert len(s) <= 80 and not s.startswith(".")
    assert slug("features.0") == "features.0" and slug("a-b") == "a-b"  # ordinary names keep their paths
    assert slug("a/b") == slug("a/b") and slug("a/b") != slug("a:b")
    assert anchor_id("features.0") == "features-0"
    assert re.fullmatch(r"[A-Za-z0-9-]+", anchor_id("<b>"))
    assert code("conv1") == "`conv1`" and code("a`b") == "<code>a\\`b</code>"


@pytest.fixture
def odd_project(tmp_path):
    (tmp_path / "odd.py").write_text(ARCH)
    import importlib.util

    spec = importlib.util.spec_from_file_location("odd_arch", tmp_path / "odd.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for i, loc in enumerate(["p", "q"]):
        torch.manual_seed(i)
        torch.save(mod.OddNames().state_dict(), tmp_path / f"{loc}.pt")
    (tmp_path / "img").mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
            tmp_path / "img" / f"{i}.png")
    return tmp_path


@pytest.mark.slow
def test_odd_module_names_build_a_strict_site(odd_project, one_thread):
    names = ["blocks.a/b", "blocks.c:d", "blocks.é x", "blocks.<b>"]
    layers = "\n".join(f"  - {{name: {n!r}}}".replace("'", '"') for n in names)
    spec = write_spec(odd_project, f"""\
report: odd
title: Odd names
models:
  - name: odd
    arch: odd.py:OddNames
    checkpoint: "{{location}}.pt"
    locations: [p, q]
input: {{size: 16}}
images: ["img/*.png"]
layers:
{layers}
analyses:
  units: {{layers: ["blocks.a/b"], maximise: plain, steps: 2, top_n: 2, max_units: 2, baselines: false}}
""")
    docs = odd_project / "docs"
    result = build(spec, docs, device="cpu")
    out = docs / "odd"
    names = [lay["name"] for lay in result.report["runs"][0]["layers"]]
    assert names == ["blocks.a/b", "blocks.c:d", "blocks.é x", "blocks.<b>"]
    # Every file of the report sits directly in the folders reportgen means: no folder per '/'.
    for n in names:
        assert (out / "layers" / f"{slug(n)}.md").is_file()
        assert (out / "img" / "p" / slug(n)).is_dir()
    assert (out / "units" / "p" / f"{slug('blocks.a/b')}.md").is_file()
    assert not (out / "layers" / "blocks.a").exists() and not (out / "img" / "p" / "blocks.a").exists()
    for p in out.rglob("*"):
        assert re.fullmatch(r"[A-Za-z0-9_.~/-]+", str(p.relative_to(out))), p
    proc = strict_lone_site(docs, odd_project)
    assert proc.returncode == 0, proc.stderr
    # Shown escaped: the name appears as text, never as a tag.
    html = (odd_project / "site" / "odd" / "layers" / slug("blocks.<b>") / "index.html").read_text()
    assert "<code>blocks.&lt;b&gt;</code>" in html and "<b>" not in html
    loc = (odd_project / "site" / "odd" / "locations" / "p" / "index.html").read_text()
    assert "blocks.é x" in loc and f'id="layer-{anchor_id("blocks.é x")}"' in loc
