"""The example site builds with what comes after MkDocs 1.x and Material for MkDocs, from the
committed mkdocs.yml, unchanged (docs/publishing.md, "After Material for MkDocs"):

- ProperDocs, the drop-in continuation of MkDocs 1.x: the same site as `mkdocs build`, byte
  for byte but for the generator's name;
- Zensical: every report page, admonitions and tabs rendered, and no picture that needs the
  lightbox plugin (mkdocs-glightbox, which Zensical does not run): each is shown in the page,
  and a link around it opens the file itself.

Both come with the `dev` extra (pyproject.toml). Without one, its tests are skipped, unless
REPORTGEN_REQUIRE_BUILDERS=1 (set by CI) turns the skip into a failure.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.conftest import ROOT

# Pages of every kind that must exist in each build: the reports' home pages and a layer page.
KEY_PAGES = ["index.html", "publishing/index.html", "towncenter/index.html", "towncenter/layers/conv1/index.html",
             "towncenter/locations/loc01/index.html", "edges/index.html", "edges/layers/edges/index.html",
             "colour-mlp/index.html"]
GENERATOR = re.compile(r'<meta name="generator" content="[^"]*">')
# Each builder's warning about MkDocs 2.0, which the pins in pyproject.toml rule out.
QUIET = {"NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true", "PATH": ""}


def _builder_or_skip(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        if os.environ.get("REPORTGEN_REQUIRE_BUILDERS") == "1":
            pytest.fail(f"{module} is not installed; `pip install -e '.[dev]'` installs it")
        pytest.skip(f"{module} is not installed (`pip install -e '.[dev]'`; REPORTGEN_REQUIRE_BUILDERS=1 "
                    "makes this a failure)")


def site_config(docs: Path, site: Path, config: Path, drop_plugins: tuple[str, ...] = ()) -> Path:
    """The committed mkdocs.yml, as it is but for the docs and site folders (relative to the
    file: Zensical wants both inside the folder that holds its configuration), at ``config``."""
    text = (ROOT / "mkdocs.yml").read_text()
    assert "\ndocs_dir: docs\n" in text
    rel = functools.partial(os.path.relpath, start=config.parent)
    text = text.replace("\ndocs_dir: docs\n", f"\ndocs_dir: {rel(docs)}\nsite_dir: {rel(site)}\n")
    for plugin in drop_plugins:  # "  - name" and the indented options below it
        text, n = re.subn(rf"\n  - {re.escape(plugin)}\b:?\n(?:      .*\n)*", "\n", text)
        assert n == 1, plugin
    config.write_text(text)
    return config


def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          env=QUIET, timeout=600)


def _article(page: Path) -> str:
    text = page.read_text()
    return text[text.index("<article"):text.index("</article>")]


def _resolves(page: Path, target: str, site: Path) -> bool:
    """Whether a page-relative link leads to a file of the site, as a static server serves it."""
    path = (page.parent / unquote(urlsplit(target).path)).resolve()
    if path.is_dir():
        path = path / "index.html"
    return path.is_file() and site.resolve() in path.parents


IMG = re.compile(r"<img\b[^>]*>")
LINKED_IMG = re.compile(r"<a\b([^>]*)>\s*(<img\b[^>]*>)")
ATTR = re.compile(r'\b(href|src)="([^"]*)"')


def pictures_stand_alone(site: Path, pages: list[str]) -> int:
    """Check that every picture of ``pages`` works without a lightbox: its file is there, and a
    link around it is a plain one that leads to a file of the site. Returns the pictures seen."""
    seen = 0
    for name in pages:
        page = site / name
        html = _article(page)
        for img in IMG.findall(html):
            src = dict(ATTR.findall(img))["src"]
            assert _resolves(page, src, site), f"{name}: picture {src} is missing"
            seen += 1
        for attrs, img in LINKED_IMG.findall(html):
            href = dict(ATTR.findall(attrs)).get("href", "")
            assert href and not href.startswith(("#", "javascript:")), f"{name}: {attrs} needs a script"
            assert _resolves(page, href, site), f"{name}: the link around {img} leads nowhere: {href}"
    return seen


def _rendered(site: Path) -> None:
    """The extensions did their work: admonitions and tabs, no Markdown left as text."""
    home = (site / "towncenter/index.html").read_text()
    assert 'class="admonition' in home and "!!!" not in _article(site / "towncenter/index.html")
    assert 'class="tabbed-set' in (site / "towncenter/layers/conv1/index.html").read_text()
    for page in site.glob("*/**/*.html"):
        article = _article(page) if "<article" in page.read_text() else ""
        assert not re.search(r"<p>(!!!|\?\?\?|===) ", article), f"{page}: Markdown shown as text"


def test_properdocs_builds_the_same_site_as_mkdocs(example_docs, example_site, tmp_path):
    _builder_or_skip("properdocs")
    site = tmp_path / "site"
    cfg = site_config(example_docs, site, tmp_path / "mkdocs.yml")
    proc = run("properdocs", "build", "--strict", "-f", str(cfg), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    for page in KEY_PAGES:
        assert (site / page).is_file(), page
    ours = sorted(p.relative_to(example_site) for p in example_site.rglob("*") if p.is_file())
    assert sorted(p.relative_to(site) for p in site.rglob("*") if p.is_file()) == ours
    different = [str(p) for p in ours if p.suffix == ".html" and
                 GENERATOR.sub("", (site / p).read_text()) != GENERATOR.sub("", (example_site / p).read_text())]
    assert different == [], different[:10]
    assert 'class="glightbox"' in (site / "towncenter/layers/conv1/index.html").read_text()  # the same plugins


def test_zensical_builds_the_site_and_no_picture_needs_the_lightbox_plugin(example_docs):
    _builder_or_skip("zensical")
    # beside the docs (Zensical builds only a docs folder inside the configuration's own)
    site = example_docs.parent / "site-zensical"
    cfg = site_config(example_docs, site, example_docs.parent / "zensical-mkdocs.yml")
    proc = run("zensical", "build", "--strict", "-f", str(cfg), cwd=example_docs.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page in KEY_PAGES:
        assert (site / page).is_file(), page
    _rendered(site)
    pages = [p for p in KEY_PAGES if "/" in p and not p.startswith("publishing")]
    assert pictures_stand_alone(site, pages) > 50


@pytest.mark.parametrize("builder", ["mkdocs", "zensical"])
def test_pages_without_any_lightbox_show_every_picture(builder, edges_build, colour_mlp_build, tmp_path):
    """The committed mkdocs.yml less the glightbox plugin (as on a site without it): every
    picture is still in its page, at its size, with no link that needs a script."""
    if builder != "mkdocs":
        _builder_or_skip(builder)
    from tests.conftest import copy_report

    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(ROOT / "docs" / "index.md", docs / "index.md")
    for example in (edges_build, colour_mlp_build):
        copy_report(example, docs)
    site = tmp_path / "site"
    cfg = site_config(docs, site, tmp_path / "mkdocs.yml", drop_plugins=("glightbox",))
    assert "glightbox" not in cfg.read_text()
    # not --strict: the home page links to reports this site leaves out
    proc = run(builder, "build", "-f", str(cfg), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pages = ["edges/index.html", "edges/layers/edges/index.html", "edges/locations/edgenet/index.html",
             "colour-mlp/index.html", "colour-mlp/layers/hidden1/index.html"]
    assert pictures_stand_alone(site, pages) > 10
    layer = _article(site / "edges/layers/edges/index.html")
    assert re.search(r'<img [^>]*width="\d+"', layer)  # at the size it was drawn for
    assert "glightbox" not in layer
