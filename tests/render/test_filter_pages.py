"""Filter pages at many locations: each filter's section shows its match at a bounded number
of other locations, so a page, its atlas and the build's memory grow with the locations, not
with their square."""

from __future__ import annotations

import re

import pytest

from reportgen.build import build
from tests.conftest import write_spec


@pytest.mark.slow
def test_a_section_shows_its_matches_at_the_first_few_other_locations(project, monkeypatch):
    import reportgen.render.report as render_report

    monkeypatch.setattr(render_report, "MATCHES_SHOWN", 1)
    build(write_spec(project), project / "docs", device="cpu", cache_dir=None)
    page = (project / "docs/tiny/filters/a/conv1.md").read_text()
    assert "(the first 1 of the 2 other locations; report.json holds every matching)" in page
    section = page[page.index("## Filter 0 "):page.index("## Filter 1 ")]
    assert re.search(r"^\| Matched at \| b \| ?$", section, re.M)  # b only, not c
    assert "filters/c/conv1.md" not in section
    # the layer page's weight histograms: the first HISTOGRAMS_SHOWN locations, said so
    layer = (project / "docs/tiny/layers/conv1.md").read_text()
    assert "Weight values of the first" not in layer  # three locations: all shown


@pytest.mark.slow
def test_a_layer_page_shows_the_first_few_locations_and_links_the_others(project, monkeypatch):
    import numpy as np
    from PIL import Image

    import reportgen.render.report as render_report

    import reportgen.render.pages as pages

    monkeypatch.setattr(render_report, "HISTOGRAMS_SHOWN", 2)
    monkeypatch.setattr(pages, "LAYER_CARDS_SHOWN", 1)  # the layer page's grids too
    build(write_spec(project), project / "docs", device="cpu", cache_dir=None)
    layer = (project / "docs/tiny/layers/conv1.md").read_text()
    assert "Weight values of the first 2 of the 3 locations, in run order (the norms above show every location):" in layer
    assert ("The first 1 of the 3 locations; the others' grids are on their own pages: "
            "[b](../locations/b.md#layer-conv1), [c](../locations/c.md#layer-conv1).") in layer
    assert ("The first 1 of the 3 locations; the others' activations are on their own pages: "
            "[b](../locations/b.md#layer-conv1), [c](../locations/c.md#layer-conv1).") in layer
    assert "img/a/conv1/activations_0.png" in layer and "img/b/conv1/activations_0.png" not in layer
    img = np.asarray(Image.open(project / "docs/tiny/img/tiny/conv1/histograms.png").convert("L"))
    # two panels side by side in one row, not three
    monkeypatch.setattr(render_report, "HISTOGRAMS_SHOWN", 25)
    build(write_spec(project), project / "docs2", device="cpu", cache_dir=None)
    three = np.asarray(Image.open(project / "docs2/tiny/img/tiny/conv1/histograms.png").convert("L"))
    assert img.shape[0] == three.shape[0] and img.shape[1] < three.shape[1]
    assert "Weight values of the first" not in (project / "docs2/tiny/layers/conv1.md").read_text()
