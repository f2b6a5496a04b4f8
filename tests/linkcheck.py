"""Every link and anchor of a built report, checked without MkDocs.

Each page is rendered with Python-Markdown and the extensions a report needs (the same
library MkDocs uses, but none of its configuration, plugins or validation), then every
``href`` and ``src`` of the HTML is resolved against the report's files and every
``#fragment`` against the ids of the page it names. MkDocs' own ``validation`` settings can
be changed or switched off; this check cannot.
"""

from __future__ import annotations

import posixpath
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import markdown

from reportgen.publish.siteconfig import MARKDOWN_EXTENSIONS

# The extensions a report says it needs, and nothing else: a page that used another one would
# show here as it would on a site that has only these.
EXTENSIONS = list(MARKDOWN_EXTENSIONS)
EXTENSION_CONFIG = {name: options for name, options in MARKDOWN_EXTENSIONS.items() if options}


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str]] = []  # (attribute, value)

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name") and (name == "id" or tag == "a"):
                self.ids.add(value)
            elif name in ("href", "src"):
                self.refs.append((name, value))


def _render(text: str) -> _Collect:
    md = markdown.Markdown(extensions=EXTENSIONS, extension_configs=EXTENSION_CONFIG)
    collect = _Collect()
    collect.feed(md.convert(text))
    return collect


def check_report(out: Path) -> tuple[list[str], int]:
    """Problems with the links of the report in ``out`` (``docs/<report>``), one line each,
    and the number of links checked. A link must stay inside the report, name a file it
    has, and, with a fragment, an id that the target page defines."""
    out = out.resolve()
    pages = {p.relative_to(out).as_posix(): _render(p.read_text(encoding="utf-8")) for p in out.rglob("*.md")}
    problems: list[str] = []
    checked = 0
    for rel, page in sorted(pages.items()):
        for attr, ref in page.refs:
            parts = urlsplit(ref)
            if parts.scheme or parts.netloc:  # an absolute URL: outside this check
                continue
            checked += 1
            path = unquote(parts.path)
            if path.startswith("/"):
                problems.append(f"{rel}: absolute path {ref} (breaks sub-path hosting)")
                continue
            target = posixpath.normpath(posixpath.join(posixpath.dirname(rel), path)) if path else rel
            if target == ".." or target.startswith("../"):
                problems.append(f"{rel}: {ref} leaves the report")
                continue
            if target not in pages and not (out / target).is_file():
                problems.append(f"{rel}: {ref}: no file {target}")
                continue
            if parts.fragment:
                if target not in pages:
                    problems.append(f"{rel}: {ref}: a fragment on {target}, which is not a page")
                elif unquote(parts.fragment) not in pages[target].ids:
                    problems.append(f"{rel}: {ref}: {target} has no anchor #{parts.fragment}")
    return problems, checked
