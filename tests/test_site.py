"""The built example site as a visitor sees it: every link and image resolves, and in a
real browser (Debian's Chromium driven by Playwright) pages load, the lightbox opens,
search finds a location, and nothing is logged as an error.

The browser test needs the `playwright` package and /usr/bin/chromium (`.ci/run` installs
both). Without them it is skipped, unless REPORTGEN_REQUIRE_BROWSER=1 (set by CI) turns
the skip into a failure.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from reportgen.build import build
from tests.test_build import mkdocs_strict
from tests.conftest import ROOT, copy_report

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, towncenter_build, edges_build, colour_mlp_build):
    """The repository's site with the three example reports (built once per session)."""
    tmp = tmp_path_factory.mktemp("site")
    docs = tmp / "docs"
    shutil.copytree(ROOT / "docs", docs, ignore=shutil.ignore_patterns("towncenter", "edges", "colour-mlp", ".*"))
    for example in (towncenter_build, edges_build, colour_mlp_build):
        copy_report(example, docs)
    proc = mkdocs_strict(docs, tmp)
    assert proc.returncode == 0, proc.stderr
    return tmp / "site"


ATTR = re.compile(r'(?:href|src)="([^"]+)"')


def test_every_link_and_image_in_the_site_resolves(site):
    broken = []
    # 404.html is served at any missing path, so MkDocs gives it absolute links from site_url.
    pages = [p for p in site.rglob("*.html") if p.name != "404.html"]
    assert len(pages) > 20
    for page in pages:
        for target in ATTR.findall(page.read_text()):
            parts = urlsplit(target)
            if parts.scheme or target.startswith(("#", "mailto:", "data:", "//")):
                continue
            assert not target.startswith("/"), f"{page}: absolute link {target} breaks sub-path hosting"
            path = (page.parent / unquote(parts.path)).resolve()
            if path.is_dir():
                path = path / "index.html"
            if not path.exists():
                broken.append(f"{page.relative_to(site)} -> {target}")
    assert not broken, "\n".join(broken[:20])


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not Path(CHROMIUM).exists():
        if os.environ.get("REPORTGEN_REQUIRE_BROWSER") == "1":
            pytest.fail("the browser test needs playwright and /usr/bin/chromium (see .ci/run)")
        pytest.skip("playwright or /usr/bin/chromium not installed")
    return sync_playwright


@pytest.fixture(scope="module")
def server(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _all_images_load(page) -> list[str]:
    """Make lazy images eager, wait for them, return the sources that failed."""
    page.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
    page.wait_for_function("[...document.images].every(i => i.complete)", timeout=20000)
    return page.evaluate("[...document.images].filter(i => i.naturalWidth === 0).map(i => i.src)")


def test_site_in_a_real_browser(server):
    sync_playwright = _browser_or_skip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            page.goto(f"{server}/towncenter/")
            assert "TownCentre" in page.title()
            assert page.locator(".admonition").count() >= 3  # the findings
            assert _all_images_load(page) == []

            page.get_by_role("link", name="loc08", exact=True).first.click()
            page.wait_for_url("**/towncenter/locations/loc08/")
            assert page.locator("h1").inner_text().rstrip("¶") == "loc08"
            assert _all_images_load(page) == []

            page.get_by_role("link", name="All locations").first.click()
            page.wait_for_url("**/towncenter/layers/conv1/")
            assert _all_images_load(page) == []
            page.locator("a.glightbox").first.click()  # a filter grid opens in the lightbox
            page.locator(".gslide-image img").first.wait_for(state="visible", timeout=10000)
            page.keyboard.press("Escape")

            page.goto(f"{server}/")
            search = page.locator("input.md-search__input")
            search.click()
            search.fill("loc05")
            result = page.locator(".md-search-result__item").first
            result.wait_for(state="visible", timeout=15000)
            assert "loc05" in page.locator(".md-search-result").inner_text()
            assert errors == [], errors
        finally:
            browser.close()


# --------------------------------------------------------------------------- visual check

# Every kind of page, screenshotted at a desktop and a phone width into SCREENSHOTS (kept
# for a reviewer: `make screenshots`, and CI leaves the folder behind).
SCREENSHOTS = Path(os.environ.get("REPORTGEN_SCREENSHOTS", ROOT / "screenshots"))
PAGE_KINDS = {
    "home": "towncenter/", "location": "towncenter/locations/loc08/", "layer": "towncenter/layers/conv1/",
    "units": "towncenter/units/loc01/conv2/", "stages": "towncenter/stages/", "trace": "colour-mlp/trace/colourmlp/",
    "edges": "edges/locations/edgenet/", "dense": "colour-mlp/locations/colourmlp/",
}
WIDTHS = (1400, 390)

# Rendered size, in CSS px, of one tile of a picture: the first run of non-white pixels
# along a row through the middle of its first row of tiles, scaled by how the page shows it.
FIRST_TILE_JS = """img => ({shown: img.getBoundingClientRect().width, natural: img.naturalWidth,
                            attr: +img.getAttribute('width') || 0, src: img.getAttribute('src')})"""

OVERFLOW_JS = """() => {
  const vw = document.documentElement.clientWidth, content = document.querySelector('.md-content');
  const bad = [];
  for (const el of content.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.right <= vw + 1) continue;
    let p = el.parentElement, scrolls = false;
    for (; p && p !== content; p = p.parentElement) {
      if (['auto', 'scroll'].includes(getComputedStyle(p).overflowX)) { scrolls = true; break; }
    }
    if (!scrolls) bad.push(`${el.tagName}.${el.className} right=${Math.round(r.right)}`);
  }
  return {page: document.documentElement.scrollWidth, vw, bad: bad.slice(0, 8)};
}"""


def _tile_css_px(site: Path, page, selector: str) -> float:
    """CSS px of the first tile of the first picture matching ``selector``, as rendered."""
    import numpy as np
    from PIL import Image

    img = page.locator(selector).first
    info = img.evaluate(FIRST_TILE_JS)
    rel = (Path(urlsplit(page.url).path.lstrip("/")) / info["src"])
    pixels = np.asarray(Image.open(site / os.path.normpath(rel)).convert("RGB"))
    # background and the frames of flagged filters (red, orange, blue, magenta) are not the tile
    frames = np.array([[255, 255, 255], [220, 20, 20], [245, 150, 0], [30, 100, 230], [255, 0, 255]])
    tile_px = ~(pixels[:, :, None, :] == frames[None, None]).all(axis=-1).any(axis=-1)

    def runs(mask):  # (start, length) of each run of True
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
        return list(zip(edges[::2], edges[1::2] - edges[::2]))

    col = np.flatnonzero(tile_px.any(axis=0))[0] + 2  # inside the first column of tiles
    top, height = runs(tile_px[:, col])[0]
    _, tile = runs(tile_px[top + height // 2])[0]
    return float(tile * info["shown"] / info["natural"])


def _show_all_tabs(page) -> None:
    page.evaluate("document.querySelectorAll('.tabbed-block').forEach(b => b.style.display = 'block')")


def test_every_page_kind_as_a_reviewer_sees_it(site, server):
    """Screenshots of every page kind at 1400 and 390 px; pictures at their minimum sizes;
    nothing wider than a phone; the lightbox enlarges; no escapes; no console errors."""
    sync_playwright = _browser_or_skip()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            errors: list[str] = []
            for width in WIDTHS:
                page = browser.new_page(viewport={"width": width, "height": 1000})
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                for kind, path in PAGE_KINDS.items():
                    page.goto(f"{server}/{path}")
                    assert _all_images_load(page) == [], (kind, width)
                    page.screenshot(path=str(SCREENSHOTS / f"{kind}-{width}.png"), full_page=True)
                    text = page.locator("article").inner_text()
                    assert "\\_" not in text and "\\*" not in text, (kind, "a Markdown escape shows")
                    if width < 500:
                        _show_all_tabs(page)
                        res = page.evaluate(OVERFLOW_JS)
                        assert res["page"] <= res["vw"] and not res["bad"], (kind, res)
                if width == 1400:
                    page.goto(f"{server}/towncenter/locations/loc08/")
                    _all_images_load(page)
                    assert _tile_css_px(site, page, 'img[src$="conv1/filters_per_layer.png"]') >= 48
                    assert _tile_css_px(site, page, 'img[src$="conv2/filters_mean.png"]') >= 48
                    _show_all_tabs(page)
                    assert _tile_css_px(site, page, 'img[src$="conv1/activations_0.png"]') >= 96
                    assert _tile_css_px(site, page, 'img[src$="conv4/activations_0.png"]') >= 96
                    page.goto(f"{server}/towncenter/layers/conv1/")
                    _all_images_load(page)
                    assert _tile_css_px(site, page, 'img[src$="loc01/conv1/filters_per_layer.png"]') >= 48
                    page.goto(f"{server}/colour-mlp/locations/colourmlp/")
                    _all_images_load(page)
                    _show_all_tabs(page)
                    for img in page.locator('img[src$="weights_heatmap.png"]').all():
                        box = img.bounding_box()
                        assert box["width"] >= 96 and box["height"] >= 96, box
                    # the lightbox opens the picture larger than the page shows it
                    page.set_viewport_size({"width": 1400, "height": 1400})
                    page.goto(f"{server}/towncenter/locations/loc08/")
                    _all_images_load(page)
                    inline = page.locator('img[src$="conv1/filters_per_layer.png"]').first
                    shown = inline.bounding_box()["width"]
                    inline.click()
                    big = page.locator(".gslide-image img").first
                    big.wait_for(state="visible", timeout=10000)
                    page.wait_for_timeout(600)  # the opening animation
                    natural = big.evaluate("i => i.naturalWidth")
                    assert big.bounding_box()["width"] >= min(2 * shown, natural) - 1 and natural >= 2 * shown - 1
                    page.screenshot(path=str(SCREENSHOTS / "lightbox-1400.png"))
                    page.keyboard.press("Escape")
                page.close()
            assert errors == [], errors
        finally:
            browser.close()


# --------------------------------------------------------------------------- files and names

import stat  # noqa: E402

from click.testing import CliRunner  # noqa: E402

from reportgen.cli import cli  # noqa: E402
from tests.conftest import SPEC, write_spec  # noqa: E402


def _modes(folder: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in [folder, *folder.rglob("*")]}


@pytest.mark.parametrize("umask,dirs,files", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_published_files_honour_the_umask(project, umask, dirs, files):
    old = os.umask(umask)
    try:
        build(write_spec(project), project / "docs", device="cpu", cache_dir=None)
    finally:
        os.umask(old)
    assert _modes(project / "docs" / "tiny") == {("dir", dirs), ("file", files)}


def test_nothing_but_the_report_is_left_in_docs(project):
    docs = project / "docs"
    build(write_spec(project), docs, device="cpu", cache_dir=None)
    build(write_spec(project), docs, device="cpu", cache_dir=None)  # a rebuild swaps the old one out
    assert sorted(p.name for p in docs.iterdir()) == ["tiny"]


def test_cleanup_touches_only_its_own_report(project):
    """Another report may be called 'tiny.old-1'; its files must survive a build of 'tiny'."""
    docs = project / "docs"
    others = [docs / "tiny.old-1", docs / ".tiny.old-1.staging-abc", docs / ".tiny.old-1~staging-abc",
              docs / ".tiny.old-1~old-abc", docs / ".tiny.staging-1~old-x"]
    for p in others:
        p.mkdir(parents=True)
        (p / "index.md").write_text(p.name)
    build(write_spec(project), docs, device="cpu", cache_dir=None)
    for p in others:
        assert (p / "index.md").read_text() == p.name
    # its own leftovers from a killed build are removed
    (docs / ".tiny~staging-dead").mkdir()
    build(write_spec(project), docs, device="cpu", cache_dir=None)
    assert not (docs / ".tiny~staging-dead").exists()


def test_report_as_another_user_sees_it(tiny_build):
    """The reason for the modes: 'other' users (mkdocs run by a web server) can read every file."""
    _, project = tiny_build  # built once per session under the default umask (tests/conftest.py)
    for p in [project / "docs" / "tiny", *(project / "docs" / "tiny").rglob("*")]:
        mode = p.stat().st_mode
        assert mode & stat.S_IROTH and (not p.is_dir() or mode & stat.S_IXOTH), p


# --------------------------------------------------------------------------- no markup injection

HOSTILE = {
    "title": "'<script>alert(1)</script> [t](javascript:alert(1)){ onclick=\"alert(1)\" }'",
    "description": ("'[x](javascript:alert(1)) [y](#){ onmouseover=\"alert(2)\" } ![i](data:text/html,x) "
                    "[v](VBScript:msgbox(1)) [d](data:text/html;base64,PHNjcmlwdD4=) <img src=x onerror=alert(3)> "
                    "[r][1] [c](<javascript:alert(4)>) [t](java\\tscript:alert(5))\n\n"
                    "  [1]: javascript:alert(6)\n\n"
                    "  # Head {: onclick=\"alert(7)\" }\n\n"
                    "  Kept: *em*, `code`, [site](https://example.com) and [home](../index.md).'"),
}
EVENT_ATTR = re.compile(r"<[^>]*\son[a-z]+\s*=", re.I)
URL_ATTR = re.compile(r"""(href|src|action|formaction|xlink:href)\s*=\s*["']?\s*([^"'\s>]*)""", re.I)
SCRIPT_URL = re.compile(r"^\s*(javascript|vbscript|data):", re.I)


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory):
    from tests.conftest import make_project

    tmp = tmp_path_factory.mktemp("hostile")
    project = make_project(tmp / "project")
    text = SPEC.replace("title: Tiny report", f"title: {HOSTILE['title']}").replace(
        "description: Three locations of a tiny network.", f"description: {HOSTILE['description']}")
    (project / "img" / "im0.png").rename(project / "img" / "x{ onmouseover=alert(8) }[y](javascript:alert(9)).png")
    res = CliRunner().invoke(cli, ["build", str(write_spec(project, text)), "--docs-dir", str(tmp / "docs"),
                                   "--no-cache", "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    (tmp / "docs" / "index.md").write_text("# Home\n\n[Tiny](tiny/index.md)\n")
    proc = mkdocs_strict(tmp / "docs", tmp)
    assert proc.returncode == 0, proc.stderr
    return tmp / "site" / "tiny"


def test_no_script_reaches_the_report_html(hostile_site):
    import html as html_lib

    pages = sorted(hostile_site.rglob("*.html"))
    assert pages
    for page in pages:
        text = page.read_text()
        main = text[text.index('<article'):text.index('</article>')]  # the report's content
        assert not EVENT_ATTR.search(main), (page, EVENT_ATTR.search(main).group(0))
        for attr, url in URL_ATTR.findall(main):
            url = html_lib.unescape(url)
            assert not SCRIPT_URL.match(re.sub(r"[\x00-\x20]", "", url)), (page, attr, url)
        assert "<script" not in main.lower() and "<img src=x" not in main


def test_legitimate_markdown_of_the_description_survives(hostile_site):
    text = (hostile_site / "index.html").read_text()
    assert "<em>em</em>" in text and "<code>code</code>" in text
    assert '<a href="https://example.com">site</a>' in text
    assert '<a href="../">home</a>' in text or '<a href="../index.html">home</a>' in text
    # the hostile parts show as text
    assert "javascript:alert(1)" in text and "onmouseover" in text
