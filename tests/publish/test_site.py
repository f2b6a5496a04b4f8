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
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from reportgen.build import build
from tests.conftest import ROOT
from tests.test_build import mkdocs_strict

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(example_site):
    """The repository's site with the three example reports (built once per session, tests/conftest.py)."""
    return example_site


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
    "root": "", "home": "towncenter/", "location": "towncenter/locations/loc08/", "layer": "towncenter/layers/conv1/",
    "units": "towncenter/units/loc01/conv2/", "stages": "towncenter/stages/", "trace": "colour-mlp/trace/colourmlp/",
    "filter": "towncenter/filters/loc08/conv1/", "filter-units": "towncenter/filters/loc01/conv2/",
    "edges": "edges/locations/edgenet/", "dense": "colour-mlp/locations/colourmlp/",
}
WIDTHS = (1400, 390)
MAX_SHOT_PX = 8000  # a filter page is 64 sections long: its screenshot keeps the top (grid and first filters)
EXAMPLES = {"towncenter": "TownCentre scene-specific networks", "edges": "Hand-made edge filters",
            "colour-mlp": "Black or white text? A 3-5-2-1 network, number by number"}

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


def _assert_shows_conv1_filter(crop, index: int) -> None:
    """The browser's pixels of a crop are filter ``index`` of loc08's conv1, computed here from
    the checkpoints: 0.5 + 0.5 w / s in RGB, s the largest |w| at any location (the shared scale)."""
    import io

    import numpy as np
    import torch
    from PIL import Image

    ckpts = sorted((ROOT / "examples" / "towncenter" / "checkpoints").glob("loc*.pt"))
    ws = {p.stem: torch.load(p, weights_only=True)["state_dict"]["conv1.weight"].double().numpy() for p in ckpts}
    s = max(np.abs(w).max() for w in ws.values())
    want = np.round(np.clip(0.5 + 0.5 * ws["loc08"][index] / s, 0, 1) * 255).transpose(1, 2, 0)
    shot = np.asarray(Image.open(io.BytesIO(crop.screenshot())).convert("RGB")).astype(int)
    kh, kw = want.shape[:2]
    ys = ((np.arange(kh) + 0.5) * shot.shape[0] / kh).astype(int)
    xs = ((np.arange(kw) + 0.5) * shot.shape[1] / kw).astype(int)
    assert np.abs(shot[ys][:, xs] - want).max() <= 3, "the crop does not show the filter"


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

    # the first run of tile pixels on each row: its longest is the first tile's width (a row
    # through the channel number stamped in its corner is cut short by the number's white)
    tile = max(r[0][1] for r in (runs(row) for row in tile_px) if r)
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
                    height = page.evaluate("document.documentElement.scrollHeight")
                    page.screenshot(path=str(SCREENSHOTS / f"{kind}-{width}.png"), full_page=True,
                                    clip={"x": 0, "y": 0, "width": width, "height": min(height, MAX_SHOT_PX)})
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
                    # the filter view: the linked tile grid at 48 px, the filter itself large, its maps
                    page.goto(f"{server}/towncenter/filters/loc08/conv1/")
                    _all_images_load(page)
                    grid_tile = page.locator('a[href="#filter-5"] img').first
                    assert grid_tile.bounding_box()["width"] >= 48 - 0.5
                    # the filter large: a crop of the layer's atlas that shows filter 5 and nothing else
                    tile = page.locator("#filter-5 ~ p img.rg-crop").first
                    assert tile.bounding_box()["width"] >= 128 - 0.5
                    _assert_shows_conv1_filter(tile, 5)
                    for a in page.locator('#filter-5 ~ p img.rg-crop[src$="activations_0.png"]').all()[:1]:
                        box = a.bounding_box()  # its feature map, a crop of the activation grid
                        assert max(box["width"], box["height"]) >= 96 - 0.5, box
                    grid_tile.click()
                    page.wait_for_url("**/filters/loc08/conv1/#filter-5")
                    page.goto(f"{server}/towncenter/units/loc01/conv2/")
                    _all_images_load(page)
                    # a card's pictures are crops of the unit grids, CARD_TILE CSS px each
                    from reportgen.render.unit_cards import CARD_TILE
                    cards = page.locator("#unit-0 ~ div img.rg-crop").all()
                    assert len(cards) >= 3 and all(c.bounding_box()["width"] >= CARD_TILE - 0.5 for c in cards[:3])
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


def test_every_filter_links_to_its_story(site):
    """Each filter of a location's statistics table and of its filter page's tile grid links
    to a section of its own that holds its weights, its match at every other location
    (by the comparison's matching in report.json) and its feature maps."""
    import json

    report = json.loads((site / "towncenter" / "report.json").read_text())
    cmp = next(c for c in report["comparisons"] if c["layer"] == "conv1")
    pair = next(m for m in cmp["weight_matching"] if m["a"] == "loc01" and m["b"] == "loc08")
    page = (site / "towncenter/filters/loc01/conv1/index.html").read_text()
    loc_page = (site / "towncenter/locations/loc01/index.html").read_text()
    for i in (0, 17, 63):
        assert f'href="../../filters/loc01/conv1/#filter-{i}"' in loc_page
        assert f'href="#filter-{i}"' in page  # the tile grid
        section = page[page.index(f'id="filter-{i}"'):]
        section = section[:section.index('id="filter-', 10)] if i < 63 else section
        # its tile (a crop of the filter atlas) and its feature maps (crops of the activation grids)
        assert "conv1/filter_atlas.png" in section and "conv1/activations_0.png" in section
        assert 'alt="map 0"' in section and 'alt="filter {i}"'.format(i=i) in section
        j = pair["b_index"][i]
        assert f'href="../../loc08/conv1/#filter-{j}"' in section, (i, j)
        others = set(re.findall(r'href="\.\./\.\./(loc\d+)/conv1/#filter-\d+"', section))
        assert others == set(cmp["runs"]) - {"loc01"}  # every other location


def test_navigation_names_reports_by_title(site):
    """The sidebar says each example's title, and the docs home links every example."""
    import html as html_lib

    home = html_lib.unescape((site / "index.html").read_text())
    nav = home[home.index('<nav class="md-nav md-nav--primary"'):]
    for folder, title in EXAMPLES.items():
        label = re.compile(rf'<a href="{folder}/" class="md-nav__link[^"]*">\s*<span class="md-ellipsis">\s*'
                           + re.escape(title))
        assert label.search(nav), title  # a link of its own in the sidebar, labelled with the title
        assert f'href="{folder}/"' in home[:home.index('<nav class="md-nav md-nav--primary"')] or \
            f'<a href="{folder}/">{title}</a>' in home  # and in the docs home's text
    assert "Towncenter" not in nav and "Colour mlp" not in nav


# --------------------------------------------------------------------------- files and names

import errno  # noqa: E402
import stat  # noqa: E402

from click.testing import CliRunner  # noqa: E402

from reportgen.cli import cli  # noqa: E402
from reportgen.core.errors import ReportgenError  # noqa: E402
from reportgen.core.files import ReportFiles  # noqa: E402
from reportgen.publish.site import build_lock, publish, staging  # noqa: E402
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


@pytest.mark.slow
def test_nothing_but_the_report_is_left_in_docs(project):
    docs = project / "docs"
    build(write_spec(project), docs, device="cpu", cache_dir=None)
    build(write_spec(project), docs, device="cpu", cache_dir=None)  # a rebuild swaps the old one out
    assert sorted(p.name for p in docs.iterdir()) == ["tiny"]


@pytest.mark.slow
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


def _report(docs: Path, slug: str, text: str) -> None:
    with build_lock(docs, slug), staging(docs, slug) as folder:
        files = ReportFiles(folder)
        files.add("index.md", text)
        files.add("img/a/x.png", text.encode() * 3)
        publish(files, docs, slug)


def test_files_stream_into_the_staging_folder_that_publish_swaps_in(tmp_path):
    docs = tmp_path / "docs"
    _report(docs, "r", "old")
    with build_lock(docs, "r"), staging(docs, "r") as folder:
        assert folder.parent == docs and folder.name.startswith(".r~staging-")
        files = ReportFiles(folder)
        files.add("index.md", "new")
        assert (folder / "index.md").read_text() == "new"  # on disk before publishing
        assert (docs / "r" / "index.md").read_text() == "old"
        out = publish(files, docs, "r")
    assert out == (docs / "r").resolve() and files.root == out
    assert (out / "index.md").read_text() == "new" and not (out / "img").exists()
    assert sorted(p.name for p in docs.iterdir()) == ["r"]  # no staging, old copy or lock left


@pytest.mark.parametrize("stop", [RuntimeError("a bug"), KeyboardInterrupt()])
def test_a_failed_render_removes_its_staging_folder_and_keeps_the_report(tmp_path, stop):
    docs = tmp_path / "docs"
    _report(docs, "r", "old")
    before = {p.relative_to(docs): p.read_bytes() for p in docs.rglob("*") if p.is_file()}
    with pytest.raises(type(stop)):
        with build_lock(docs, "r"), staging(docs, "r") as folder:
            files = ReportFiles(folder)
            files.add("index.md", "half")
            raise stop
    assert not folder.exists()
    assert {p.relative_to(docs): p.read_bytes() for p in docs.rglob("*") if p.is_file()} == before


def test_a_write_error_in_the_staging_folder_is_one_line_and_others_pass(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    with pytest.raises(ReportgenError, match=r"cannot write the report to .*r: No space left on device; free"):
        with staging(docs, "r") as folder:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "img" / "x.png"))
    elsewhere = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "cache" / "x"))
    with pytest.raises(OSError) as info:
        with staging(docs, "r"):
            raise elsewhere
    assert info.value is elsewhere
    assert list(docs.iterdir()) == []


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


# --------------------------------------------------------------------------- filter and unit views

TINY_UNITS = SPEC + "analyses:\n  units: {layers: [conv2], steps: 2, fourier_steps: 2, top_n: 2, maximise: plain}\n"


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory):
    """The tiny report with unit views of conv2 at its first location, built with the
    minimal mkdocs.yml of `reportgen init` (every broken link or anchor fails --strict)."""
    from tests.conftest import make_project
    from tests.sites import strict_lone_site

    tmp = tmp_path_factory.mktemp("tinysite")
    project = make_project(tmp / "project")
    build(write_spec(project, TINY_UNITS), tmp / "docs", device="cpu", cache_dir=None)
    proc = strict_lone_site(tmp / "docs", tmp)
    assert proc.returncode == 0, proc.stderr
    return tmp / "docs" / "tiny", tmp / "site" / "tiny"


def test_filter_pages_are_paged_by_64():
    from reportgen.render.pages import filter_page

    assert filter_page("loc01", "conv1", 0) == "filters/loc01/conv1.md#filter-0"
    assert filter_page("loc01", "conv1", 63) == "filters/loc01/conv1.md#filter-63"
    assert filter_page("loc01", "features.3", 64) == "filters/loc01/features.3-2.md#filter-64"
    assert filter_page("loc01", "conv1", 200) == "filters/loc01/conv1-4.md#filter-200"


def test_filter_sections_match_the_hungarian_assignment(tiny_site):
    """conv1 has no layer below it, so its matching is the plain optimal assignment of |cos|:
    scipy's, on numpy's cosines, names the same filter and the same |cos| on the page."""
    import json

    import numpy as np
    import torch
    from scipy.optimize import linear_sum_assignment

    report_dir, site_dir = tiny_site
    project = report_dir.parents[1] / "project"
    w = {loc: torch.load(project / "ckpt" / f"{loc}.pt")["state_dict"]["conv1.weight"].numpy().reshape(4, -1)
         for loc in "abc"}
    key = json.loads((report_dir / "report.json").read_text())["runs"][0]["key"]
    text = (report_dir / "filters" / key / "conv1.md").read_text()
    for other in ("b", "c"):
        okey = key[:-1] + other
        a, b = w["a"], w[other]
        cos = np.abs((a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T)
        rows, cols = linear_sum_assignment(-cos)
        for i, j in zip(rows, cols):
            section = text[text.index(f"{{ #filter-{i} }}"):].splitlines()

            def cells(head: str) -> list[str]:
                row = next(ln for ln in section if ln.startswith(head))
                return [c.strip() for c in row.strip(" |").split(" | ")][1:]

            col = [c.split("]")[0].lstrip("[") for c in cells("| Matched at")].index(okey)
            cell = cells("| Filter, \\|cos\\|")[col]
            assert cell.startswith(f"[{j}](../{okey}/conv1.md#filter-{j})"), (i, j)  # from filters/<key>/
            assert cell.endswith(f", {cos[i, j]:.2g}"), (i, j, cos[i, j])
    html = (site_dir / "filters" / key / "conv1" / "index.html").read_text()
    assert html.count('href="#filter-') >= 4 and 'id="filter-3"' in html


def test_unit_page_opens_with_units_ranked_by_activation(tiny_site):
    import json

    report_dir, _ = tiny_site
    report = json.loads((report_dir / "report.json").read_text())
    run = report["runs"][0]
    units = next(lay for lay in run["layers"] if lay["name"] == "conv2")["units"]["units"]
    text = (report_dir / "units" / run["key"] / "conv2.md").read_text()
    overview = text[text.index("## Units ranked"):text.index("## All units")]
    shown = [int(m) for m in re.findall(r"\| \d+ \| \[unit (\d+)\]\(#unit-\d+\)", overview)]
    active = [u for u in units if u["max_activation"] is not None]
    assert shown == [u["index"] for u in sorted(active, key=lambda u: -u["max_activation"])]
    assert "### Unit 0 { #unit-0 }" in text and "[back to the ranking](#overview)" in text
    # a card names its tiles in its header row, and the legend explains every name
    card = text[text.index("### Unit 0 "):]
    header = re.search(r"^\| weights \|(.*)\|$", card, re.M).group(1)
    for name in ("weights", "max. plain", "feature"):
        assert f"*{name}*" in text and (name == "weights" or f" {name} " in header)
    assert "crops that drive the unit most" in text


def test_a_concept_shows_when_the_units_data_has_one(tiny_site):
    """Room for an optional best concept per unit (``concept``, ``concept_iou``)."""
    import json

    from reportgen.render.atlas import Atlas
    from reportgen.render.pages import crop, environment

    report_dir, _ = tiny_site
    report = json.loads((report_dir / "report.json").read_text())
    run = report["runs"][0]
    lay = next(x for x in run["layers"] if x["name"] == "conv2")
    lay["units"]["units"][1].update(concept="stripes", concept_iou=0.31)
    text = environment().get_template("units.md.j2").render(
        run=run, lay=lay, pics={"grids": {}, "atlases": {"top_patches": Atlas("t.png", 30, 80, 3, 10, 10,
                                                                                item_cells=3)}},
        report=report, layer_page=lambda m, l: "layers/x.md", has_filter_page=lambda k, l: False,
        filter_page=lambda *a: "f.md", unit_flags=lambda u, f: [], crop=crop, card_names={}, filter_atlas={})
    assert "Concept (IoU)" in text and "stripes (0.31)" in text and "concept **stripes** (IoU 0.31)" in text


@pytest.mark.slow
def test_a_build_gives_a_site_without_a_home_page_one(project, tmp_path):
    """`reportgen build` into docs without an index.md writes one listing every report by its
    title, so the site's root is not a 404; a home page of the user's own is left alone."""
    docs = tmp_path / "docs"
    args = ["build", str(write_spec(project)), "--docs-dir", str(docs), "--no-cache", "--device", "cpu", "-q"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert "- [Tiny report](tiny/index.md)" in (docs / "index.md").read_text()
    (docs / "index.md").write_text("# Mine\n")
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert (docs / "index.md").read_text() == "# Mine\n"
