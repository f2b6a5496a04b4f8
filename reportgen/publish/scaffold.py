"""The smallest MkDocs site that shows reportgen's reports: mkdocs.yml and a home page.

``reportgen init`` writes both when they are absent and ``reportgen serve`` keeps the
home page's list of reports up to date. Neither ever overwrites a file the user wrote:
the home page is rewritten only while it still carries ``MANAGED_MARK``.
"""

from __future__ import annotations

import json
from pathlib import Path

# The Markdown extensions come from reportgen.publish.siteconfig (the one list of what the pages
# use); the validation block makes `mkdocs build --strict` fail on any broken link or anchor.
MKDOCS_YML = """\
# A minimal MkDocs site for reportgen reports (written by `reportgen init`; edit freely).
site_name: {site_name}
docs_dir: {docs_dir}
theme:
  name: material
  font: false
  features: [navigation.indexes, navigation.sections, content.tabs.link]
plugins:
  - search
  - glightbox
{markdown_extensions}\
validation:
  omitted_files: warn
  absolute_links: warn
  unrecognized_links: warn
  anchors: warn
"""

MANAGED_MARK = "<!-- reportgen: this page lists the reports; delete this line to edit it by hand -->"


def mkdocs_yml(site_name: str = "Reports", docs_dir: str = "docs") -> str:
    """The text of a minimal mkdocs.yml (``docs_dir`` relative to the file)."""
    from reportgen.publish.siteconfig import markdown_extensions_yaml

    # permalink: a link on each heading to itself; nice to have, not needed by the pages
    return MKDOCS_YML.format(site_name=json.dumps(site_name), docs_dir=json.dumps(docs_dir),
                             markdown_extensions=markdown_extensions_yaml({"toc": {"permalink": True}}))


def list_reports(docs_dir: Path) -> list[tuple[str, str]]:
    """(folder, title) of every report in ``docs_dir``: a folder with a report.json."""
    found = []
    for rj in sorted(docs_dir.glob("*/report.json")):
        try:
            title = str(json.loads(rj.read_text(encoding="utf-8")).get("title") or rj.parent.name)
        except (ValueError, OSError):
            title = rj.parent.name
        found.append((rj.parent.name, title))
    return found


def index_md(reports: list[tuple[str, str]]) -> str:
    """A home page linking to each report (titles escaped: they are user text)."""
    from reportgen.core.names import md_escape

    lines = [MANAGED_MARK, "", "# Reports", ""]
    if reports:
        lines += [f"- [{md_escape(title)}]({folder}/index.md)" for folder, title in reports]
    else:
        lines.append("No reports yet: `reportgen build SPEC` writes one into this folder.")
    return "\n".join(lines) + "\n"


def write_if_absent(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it exists; return whether it was written."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


def refresh_index(docs_dir: Path) -> bool:
    """Write docs_dir/index.md listing the reports, unless the user owns that page.

    Returns whether the page was written (absent, or still managed by reportgen).
    """
    index = docs_dir / "index.md"
    if index.exists() and MANAGED_MARK not in index.read_text(encoding="utf-8", errors="replace"):
        return False
    text = index_md(list_reports(docs_dir))
    if not index.exists() or index.read_text(encoding="utf-8") != text:
        docs_dir.mkdir(parents=True, exist_ok=True)
        index.write_text(text, encoding="utf-8")
    return True
