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
