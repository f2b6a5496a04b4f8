"""Every link and anchor of every page an example build writes resolves inside its report,
checked without MkDocs (tests/linkcheck.py), so that no MkDocs setting can hide a broken one."""

from __future__ import annotations

import pytest

from tests.conftest import copy_report
from tests.linkcheck import check_report


@pytest.mark.parametrize("example", ["towncenter_build", "edges_build", "colour_mlp_build"])
def test_every_link_and_anchor_of_an_example_resolves(example, request):
    result, docs, _ = request.getfixturevalue(example)
    problems, checked = check_report(result.out_dir)
    assert checked > 20  # the pages do link: the check saw them
    assert problems == []


def test_the_check_finds_a_missing_page_anchor_picture_and_an_escape(edges_build, tmp_path):
    out = copy_report(edges_build, tmp_path / "docs")
    index = out / "index.md"
    index.write_text(index.read_text() + "\n[a](methods.md#no-such-section) [b](nowhere.md) "
                     "[c](../outside.md) ![d](img/missing.png)\n[e](methods.md#findings)\n")
    problems, _ = check_report(out)
    assert len(problems) == 4
    assert any("methods.md has no anchor #no-such-section" in p for p in problems)
    assert any("no file nowhere.md" in p for p in problems)
    assert any("leaves the report" in p for p in problems)
    assert any("no file img/missing.png" in p for p in problems)
