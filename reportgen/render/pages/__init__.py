"""Markdown pages from templates: report dict + image paths -> {path: text}.

Pure: no disk access beyond reading the packaged templates. Images are linked
with page-relative paths so the site works under any sub-path.
"""

from __future__ import annotations

import html
import posixpath
import re
from functools import lru_cache
from typing import Iterator

from jinja2 import Environment, PackageLoader, StrictUndefined

from reportgen.analysis.wording import anchor
from reportgen.core.names import anchor_id, code, md_escape, slug
from reportgen.load.spec import ReportSpec
from reportgen.render.unit_cards import CARD_NAMES

TOP_FINDINGS = 10  # findings on the home page; the rest are on findings.md


def html_escape_only(text: object) -> str:
    """Markdown is kept but raw HTML is not injected (use ``user_markdown`` for user text)."""
    return html.escape(str(text), quote=False)


# Link targets a user may write; anything else (javascript:, vbscript:, data:, file:, ...)
# loses its link syntax and shows as plain text.
SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
# "](" starts an inline link's or image's target, "]:" a reference definition's.
_LINK_TARGET = re.compile(r"\]\s*[(:]")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_IGNORED_IN_URL = re.compile(r"[\x00-\x20\\]")  # browsers drop tabs and newlines inside URLs


def user_markdown(text: object) -> str:
    """Markdown written by the spec's author (the description), made safe to publish.

    Kept: emphasis, code, lists, headings, and links and images to http(s), mailto and
    relative targets. Removed: raw HTML (escaped, so it shows as text), attribute lists
    (``{ onclick=... }``: braces are escaped) and link syntax whose target has any other
    scheme. HTML entities cannot spell a scheme either: '&' is escaped first.
    """
    text = html.escape(str(text), quote=False).replace("{", "\\{").replace("}", "\\}")
    out, pos = [], 0
    for m in _LINK_TARGET.finditer(text):
        head = _IGNORED_IN_URL.sub("", text[m.end():m.end() + 64])
        head = head.removeprefix("&lt;")  # <target> form; '<' was escaped above
        scheme = _SCHEME.match(head)
        if scheme and scheme.group(1).lower() not in SAFE_SCHEMES:
            out.append(text[pos:m.start()] + "&#93;")  # an entity ']' closes no link text
            pos = m.start() + 1
    return "".join(out) + text[pos:]


_MD_LINK = re.compile(r"\]\((?!https?:|#|/|mailto:)([^)\s]+)\)")


def relink(text: str, prefix: str) -> str:
    """Rebase Markdown links written relative to the report root for a page ``prefix`` deep.

    Findings are written once (report.json) with links from the report's home page;
    a page in ``locations/`` shows them with ``prefix='../'``.
    """
    return _MD_LINK.sub(lambda m: f"]({prefix}{m.group(1)})", text)


def _fmt(x: object, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else ""
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _pct1(x: float | None) -> str:
    """A percentage with one decimal: a bound of 9.8% must not print as the 10% it is compared with."""
    return "–" if x is None else f"{100 * x:.1f}%"


def _shape(s: list | int | None) -> str:
    if isinstance(s, int) and not isinstance(s, bool):
        return str(s)
    return "–" if not s else "×".join(map(str, s))


def _offdiag_median(m: list | None) -> float | None:
    """Median of a square matrix's off-diagonal entries (pairs of different runs)."""
    if not m or len(m) < 2:
        return None
    import numpy as np

    a = np.array(m, dtype=np.float64)
    vals = a[~np.eye(len(a), dtype=bool)]
    vals = vals[np.isfinite(vals)]
    return float(np.median(vals)) if vals.size else None


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The template environment of the report's pages and the extensions' pages, built once per
    process (templates compile on first use): StrictUndefined, no autoescaping (Markdown; escape
    values with ``|md``), the filters below."""
    env = Environment(
        loader=PackageLoader("reportgen.render.pages", "templates"),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown output; values are escaped explicitly with |md
    )
    env.filters.update(md=md_escape, html_only=html_escape_only, user_md=user_markdown, fmt=_fmt, pct=_pct,
                       pct1=_pct1, shape=_shape, anchor=anchor, anchor_id=anchor_id, slug=slug, code=code,
                       offdiag_median=_offdiag_median, relink=relink)
    return env


def layer_page(model: str, layer: str, multi: bool) -> str:
    """Path of a layer's page: ``layers/<layer>.md``, or ``layers/<model>/<layer>.md`` when
    the report has several models (each model's layers compared among its own runs);
    ``<layer>`` is names.slug of the module name."""
    return f"layers/{model}/{slug(layer)}.md" if multi else f"layers/{slug(layer)}.md"


FILTERS_PER_PAGE = 64  # sections per filter page: a layer of 512 filters gets 8 pages
# Other locations a filter's section shows its match at: a page of 64 filters grows with the
# locations, so with many locations the first 24 are shown (report.json holds every matching).
MATCHES_SHOWN = 24
# Weight histograms on a layer page: those of the first 25 locations (five rows of five); the
# strip chart of norms above them shows every location.
HISTOGRAMS_SHOWN = 25
# A layer page's grids of filters and of activations: those of the first 24 locations, then
# a link to each other location's page (where its grids are); 40 locations of a ResNet-sized
# network made a 15 MB page.
LAYER_CARDS_SHOWN = 24


def filter_page(run: str, layer: str, index: int) -> str:
    """Link from the report root to filter ``index``'s section on its run's filter pages:
    ``filters/<run>/<layer>.md#filter-<index>`` for filters 0-63, then ``<layer>-2.md``, ...
    (``<layer>``: names.slug of the module name)."""
    part = index // FILTERS_PER_PAGE
    return f"filters/{run}/{slug(layer)}{'' if part == 0 else f'-{part + 1}'}.md#filter-{index}"


def filter_page_from_filters(run: str, layer: str, index: int) -> str:
    """``filter_page`` as linked from a filter page (``filters/<run>/``): ``../<run>/<layer>.md#...``,
    shorter in the sections that link each filter's matches."""
    return "../" + filter_page(run, layer, index).removeprefix("filters/")


def filter_flags(lay: dict) -> list[list[str]]:
    """Per filter of a report.json layer, its health flags in words (empty: healthy)."""
    fs, cs = lay.get("filters", []), lay.get("channels", [])
    out = []
    for i in range(max(len(fs), len(cs))):
        f = fs[i] if i < len(fs) else {}
        c = cs[i] if i < len(cs) else {}
        flags = [name for key, name in (("dead", "dead"), ("nonfinite", "NaN/Inf")) if f.get(key)]
        if f.get("duplicate_of") is not None:
            chance = not ((lay.get("duplicate_evidence") or {}).get("duplicates") or {}).get("enough", True)
            flags.append(f"≈ {f['duplicate_of']}" + (" (as often as chance)" if chance else ""))
        n = (lay.get("evidence") or {}).get("images")
        images = f"all {n} test images" if n else "every test image"
        enough = (lay.get("evidence") or {}).get("enough", "never_active_label" not in c)
        if c.get("never_active"):
            flags.append("never active" if c.get("never_active_label", enough) else f"silent on {images}")
        if c.get("saturated"):
            flags.append("saturated" if c.get("saturated_label", enough) else f"saturated on {images}")
        out.append(flags)
    return out


def unit_flags(u: dict, low_fit: float) -> list[str]:
    """A unit's flags in words (report.json ``units.units[i]``): silent on the test images, stuck,
    low fit."""
    flags = ["silent on the test images"] if u.get("inactive") else []
    if u.get("stuck"):
        flags.append("stuck")
    if u.get("fidelity") is not None and u["fidelity"] < low_fit:
        flags.append("low fit")
    return flags


def _filter_pages(env, runs: list[dict], filter_pics: dict, unit_pages: dict, ctx: dict) -> Iterator[tuple[str, str]]:
    """The filter pages of every (run, layer) with per-filter pictures (see filter_page), one at a time."""
    for (key, layer), pics in filter_pics.items():
        run = next(r for r in runs if r["key"] == key)
        lay = next(x for x in run["layers"] if x["name"] == layer)
        n = pics["n"]
        n_pages = -(-n // FILTERS_PER_PAGE)
        for p in range(n_pages):
            first, last = p * FILTERS_PER_PAGE, min(n, (p + 1) * FILTERS_PER_PAGE) - 1
            path = filter_page(key, layer, first).partition("#")[0]
            yield path, env.get_template("filters.md.j2").render(
                run=run, lay=lay, pics=pics, units=unit_pages.get((key, layer)), first=first, last=last,
                page_no=p, n_pages=n_pages, n_filters=n, per_page=FILTERS_PER_PAGE, cols=8,
                flags=filter_flags(lay), root="../../", map_images=run["images"][:len(pics["maps"])],
                max_matches=MATCHES_SHOWN, **ctx)


NARROW_CSS = 340  # CSS px of the content column on a phone (390 px wide)


def _px(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".") + "px"


def crop(atlas, cell: int, href: str | None, alt: str, root: str = "", width: float | None = None, span: int = 1,
         at_most: float | None = None, rows: int = 1) -> str:
    """Markdown showing one cell of an atlas (render.atlas; ``span`` cells of its row) as a
    picture of its own (and the same cells of the ``rows - 1`` rows below): each cell
    ``width`` CSS px wide (None: the atlas's natural size), the whole crop at most ``at_most``
    CSS px wide; linked to ``href`` when given (else the lightbox opens the whole atlas).

    The image is the whole atlas in a box of the cell's size in atlas pixels, placed by
    ``object-position`` (``object-fit: none`` in report.css) and enlarged by CSS ``zoom``
    (``--z``, CSS px per atlas pixel) with square pixels: one element and an attribute list,
    no script, so it shows the same offline and with JavaScript off, and each atlas is
    downloaded once however many of its cells a page shows.
    """
    x, y, w, h = atlas.box(cell, span, rows=rows)
    s = width / atlas.box(cell)[2] if width else 1 / atlas.density  # CSS px per picture px
    if at_most and w * s > at_most:
        s = at_most / w
    wide = " .rg-wide" if w * s > NARROW_CSS else ""  # halved on a phone (report.css)
    img = (f"![{md_escape(alt)}]({root}{atlas.path}){{ .rg-crop{wide} loading=lazy "
           f'style="width:{_px(w)};height:{_px(h)};object-position:-{_px(x)} -{_px(y)};--z:{_num(s)}" }}')
    return f"[{img}]({href})" if href else img


def _num(v: float) -> str:
    return f"{v:.4f}".rstrip("0").rstrip(".")


# ![alt](target){ loading=lazy ... } as the templates write images, unless a width is set
_LAZY_IMAGE = re.compile(r"(!\[[^\]\n]*\]\(([^)\s]+)\))\{ loading=lazy(?=[ }])(?![^}\n]*\bwidth=)")


def size_images(text: str, page: str, widths: dict[str, int]) -> str:
    """Give every picture of a page the CSS width it is drawn for: ``width=N`` (an
    attribute list, so no raw HTML) for each image whose report-relative path is in
    ``widths``. Pictures are drawn at DENSITY x that width; the lightbox opens the file.

    page: the page's path in the report (``layers/conv1.md``); widths: image path in
    the report -> CSS px (see render.colour.display_width).
    """
    base = posixpath.dirname(page)

    def add(m: re.Match) -> str:
        width = widths.get(posixpath.normpath(posixpath.join(base, m.group(2))))
        return f"{m.group(1)}{{ loading=lazy width={int(width)}" if width else m.group(0)

    return _LAZY_IMAGE.sub(add, text)


@lru_cache(maxsize=1)
def page_style() -> str:
    """The report's CSS as a <style> block for the end of each page (see report.css)."""
    from importlib.resources import files

    css = files("reportgen.render.pages").joinpath("report.css").read_text(encoding="utf-8")
    lines = [ln.strip() for ln in css.splitlines() if ln.strip()]  # a blank line would end the HTML block
    return "\n\n<style>\n" + "\n".join(lines) + "\n</style>\n"


def render_pages(spec: ReportSpec, report: dict, images: dict[tuple[str, str], dict[str, str]],
                 layer_imgs: dict[tuple[str, str], dict[str, list[tuple[str, str]]]],
                 shared_inputs: dict[str, list[str]], unit_pages: dict | None = None,
                 cross_imgs: dict[str, str] | None = None, widths: dict[str, int] | None = None,
                 filter_pics: dict | None = None) -> Iterator[tuple[str, str]]:
    """All Markdown pages of a report, (path relative to the report directory, text), one at a
    time: the caller writes each and lets it go (a report's filter pages grow with its
    locations).

    images: (run key, layer) -> {view name: path relative to the report directory};
    ("reference", "__ref__") holds the reference's views and (run, "__stages__") the
    stage strips. layer_imgs: (model, layer) -> kind -> [(model, path)] for charts and
    comparisons. shared_inputs: model -> the shared images shown on the stages page.
    cross_imgs: "modelA|modelB" -> the cross-model CKA heatmap. widths:
    image path -> the CSS width it is drawn for (see ``size_images``). filter_pics:
    (run key, layer) -> each filter's pictures and matches (assemble._filter_pictures).
    """
    env = environment()
    runs = report["runs"]
    model_names = list(dict.fromkeys(r["model"] for r in runs))
    multi = len(model_names) > 1
    models = []
    for name in model_names:
        own = [r for r in runs if r["model"] == name]
        models.append({"name": name, "runs": own, "input": own[0].get("input", {}),
                       "layers": list(dict.fromkeys(lay["name"] for r in own for lay in r["layers"])),
                       "shared_inputs": shared_inputs.get(name, [])})
    layer_names = list(dict.fromkeys(lay["name"] for r in runs for lay in r["layers"]))
    ctx = {
        "report": report,
        "description": spec.description,
        "layers": layer_names,
        "models": models,
        "multi": multi,
        "layer_page": lambda model, layer: layer_page(model, layer, multi),
        "images": {f"{k}|{layer}": v for (k, layer), v in images.items()},
        "findings": report["findings"],
        "comparisons": {f"{c['model']}|{c['layer']}": c for c in report.get("comparisons", [])},
        "reference": report.get("reference"),
        "has_stages": any(k[1] == "__stages__" for k in images),
        "unit_pages": {f"{k}|{layer}": v for (k, layer), v in (unit_pages or {}).items()},
        "cross_imgs": cross_imgs or {},
        "model_comparisons": report.get("model_comparisons", []),
        "filter_page": filter_page,
        "filter_page_from_filters": filter_page_from_filters,
        "unit_flags": unit_flags,
        "has_filter_page": lambda key, layer: (key, layer) in (filter_pics or {}),
        "filter_atlas": {f"{k}|{layer}": v["atlas"] for (k, layer), v in (filter_pics or {}).items()},
        "filter_count": {f"{k}|{layer}": v["n"] for (k, layer), v in (filter_pics or {}).items()},
        "filter_inputs": {f"{k}|{layer}": v["inputs"] for (k, layer), v in (filter_pics or {}).items()},
        "crop": crop,
        "card_names": CARD_NAMES,
        "cards_shown": LAYER_CARDS_SHOWN,
    }
    def page(path: str, text: str) -> tuple[str, str]:
        return path, size_images(text, path, widths or {}) + page_style()

    yield page("index.md", env.get_template("index.md.j2").render(top_findings=TOP_FINDINGS, **ctx))
    yield page("findings.md", env.get_template("findings.md.j2").render(**ctx))
    # Ships inside every report, so its links never leave docs/<report>/.
    yield page("methods.md", env.get_template("methods.md.j2").render(**ctx))
    for run in runs:
        yield page(f"locations/{run['key']}.md", env.get_template("location.md.j2").render(run=run, **ctx))
    ref = ctx["reference"]
    for m in models:
        for layer in m["layers"]:
            entries = [(r, lay) for r in m["runs"] for lay in r["layers"] if lay["name"] == layer]
            keys = {r["key"] for r, _ in entries}
            path = layer_page(m["name"], layer, multi)
            yield page(path, env.get_template("layer.md.j2").render(
                layer=layer, model=m["name"], entries=entries, imgs=layer_imgs.get((m["name"], layer), {}),
                root="../" * path.count("/"),
                ref_here=bool(ref and ref["against"] == layer and any(p["run"] in keys for p in ref["per_run"])),
                **ctx))
    for run in runs:
        if run.get("trace"):
            yield page(f"trace/{run['key']}.md", env.get_template("trace.md.j2").render(
                run=run, traced=[lay for lay in run["layers"] if lay.get("trace")],
                all_layers={lay["name"]: lay for lay in run["layers"]}, **ctx))
    for (key, layer), pics in (unit_pages or {}).items():
        run = next(r for r in runs if r["key"] == key)
        lay = next(x for x in run["layers"] if x["name"] == layer)
        yield page(f"units/{key}/{slug(layer)}.md", env.get_template("units.md.j2").render(
            run=run, lay=lay, pics=pics, **ctx))
    for path, text in _filter_pages(env, runs, filter_pics or {}, unit_pages or {}, ctx):
        yield page(path, text)
    if ctx["has_stages"]:
        yield page("stages.md", env.get_template("stages.md.j2").render(**ctx))
    if ctx["model_comparisons"]:
        yield page("models.md", env.get_template("models.md.j2").render(**ctx))
