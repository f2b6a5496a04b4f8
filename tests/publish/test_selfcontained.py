"""Every report is a self-contained site: with every analysis on, a site that holds only
that report and a minimal mkdocs.yml builds with `mkdocs build --strict`."""

from __future__ import annotations

import re

import pytest

from reportgen.build import build
from tests.conftest import ROOT, write_spec
from tests.sites import strict_lone_site

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _links_stay_inside(out) -> list[str]:
    """Links in the report's pages that leave docs/<report>/ (absolute URLs are allowed)."""
    bad = []
    for page in out.rglob("*.md"):
        for target in _LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            resolved = (page.parent / target.split("#")[0]).resolve()
            if not resolved.is_relative_to(out.resolve()):
                bad.append(f"{page.relative_to(out)} -> {target}")
    return bad


@pytest.mark.slow
def test_tiny_report_with_every_analysis_is_a_site_of_its_own(project, one_thread):
    spec = write_spec(project, """\
report: tiny
title: Tiny, every analysis
models:
  - name: tiny
    arch: arch.py:TinyNet
    arch_args: {width: 4}
    checkpoint: ckpt/{location}.pt
    locations: [a, b]
input: {size: 16}
images: [img/*.png]
layers: [conv1, conv2, fc]
reference: {arch: arch.py:TinyNet, arch_args: {width: 4}, checkpoint: ckpt/c.pt, layer: conv1}
analyses:
  units: {layers: [conv2], maximise: both, fourier_steps: 2, steps: 2, top_n: 2, max_units: 2}
""")
    docs = project / "docs"
    result = build(spec, docs, device="cpu")
    out = docs / "tiny"
    assert (out / "units" / "a" / "conv2.md").is_file() and result.report["reference"]
    methods = (out / "methods.md").read_text()
    assert "| 0.1 × median |" in methods  # this build's thresholds are on the page
    assert "](../../methods.md#units)" in (out / "units" / "a" / "conv2.md").read_text()
    assert _links_stay_inside(out) == []
    proc = strict_lone_site(docs, project)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_edges_with_units_is_a_site_of_its_own(tmp_path, one_thread):
    text = (ROOT / "specs/edges.yaml").read_text().replace("../examples", str(ROOT / "examples"))
    text = text.replace("input:\n", "input:\n  size: 64\n")  # unit views need one image size
    text += "analyses:\n  units: {layers: [strided], maximise: both, steps: 2, top_n: 2, max_units: 2, fourier_steps: 2}\n"
    spec = write_spec(tmp_path, text)
    docs = tmp_path / "docs"
    build(spec, docs, device="cpu")
    assert (docs / "edges" / "units").is_dir()
    assert _links_stay_inside(docs / "edges") == []
    proc = strict_lone_site(docs, tmp_path)
    assert proc.returncode == 0, proc.stderr
