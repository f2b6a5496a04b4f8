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
from tests.conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("site")
    docs = tmp / "docs"
    shutil.copytree(ROOT / "docs", docs, ignore=shutil.ignore_patterns("towncenter", "edges", "colour-mlp", ".*"))
    for spec in ("towncenter.yaml", "edges.yaml"):
        build(ROOT / "specs" / spec, docs, device="cpu", cache_dir=tmp / "cache")
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
