"""A report says what it needs of the site that shows it: the Markdown extensions of its
pages, written by `reportgen init` and checked by `reportgen build` and `reportgen check`."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from click.testing import CliRunner

from reportgen.cli import cli
from reportgen.publish.scaffold import mkdocs_yml
from reportgen.publish.siteconfig import (
    MARKDOWN_EXTENSIONS,
    find_config,
    load_config,
    markdown_extensions_yaml,
    missing_extensions,
    site_warnings,
)
from tests.conftest import ROOT, write_spec

MINIMAL = "site_name: Mine\ntheme: material\ndocs_dir: docs\n"
CHECKED = ["admonition", "attr_list", "md_in_html", "pymdownx.details", "pymdownx.tabbed"]


def test_the_list_covers_every_extension_the_templates_use():
    """Each construct of the page templates and page writers, and the extension it needs."""
    sources = [p.read_text() for p in (ROOT / "reportgen").rglob("*.j2")]
    sources += [p.read_text() for p in (ROOT / "reportgen").rglob("*.py") if "siteconfig" not in p.name]
    text = "\n".join(sources)
    uses = {
        "admonition": r"^\s*!!! |\"!!! ",
        "pymdownx.details": r"\?\?\? ",
        "pymdownx.tabbed": r'^\s*=== "',
        "attr_list": r"\{ #|\{ loading=lazy",
        "md_in_html": r"<div [^>]*markdown>",
    }
    for name, pattern in uses.items():
        assert re.search(pattern, text, re.M), f"no page uses {name} any more: drop it from MARKDOWN_EXTENSIONS"
        assert name in MARKDOWN_EXTENSIONS


def test_init_writes_the_list_and_the_repositorys_site_has_it():
    scaffold = yaml.safe_load(mkdocs_yml())
    assert missing_extensions(scaffold) == []
    assert markdown_extensions_yaml() in mkdocs_yml().replace("  - toc:\n      permalink: true\n", "  - toc\n")
    assert missing_extensions(load_config(ROOT / "mkdocs.yml")) == []


def test_a_minimal_site_lacks_them_all_and_toc_and_tables_are_always_on():
    assert missing_extensions(yaml.safe_load(MINIMAL)) == CHECKED
    config = {"markdown_extensions": ["markdown.extensions.admonition", {"attr_list": None}, "md_in_html",
                                      "pymdownx.details", {"pymdownx.tabbed": {"alternate_style": False}}]}
    assert missing_extensions(config) == ["pymdownx.tabbed with alternate_style: true"]
    # the mapping form MkDocs also reads
    config = {"markdown_extensions": {n: dict(o) for n, o in MARKDOWN_EXTENSIONS.items() if n != "admonition"}}
    assert missing_extensions(config) == ["admonition"]


def test_mkdocs_yml_with_mkdocs_tags_and_inherit(tmp_path, monkeypatch):
    monkeypatch.setenv("SITE_DOCS", "pages")
    (tmp_path / "base.yml").write_text("markdown_extensions:\n  - admonition\n  - attr_list\n"
                                       "theme: {name: material}\n")
    (tmp_path / "mkdocs.yml").write_text(
        "INHERIT: base.yml\n"
        "docs_dir: !ENV [SITE_DOCS, docs]\n"
        "site_dir: !ENV [NOT_SET_HERE, site]\n"
        "hooks: [!relative $config_dir/hooks.py]\n"
        "markdown_extensions:\n"
        "  - md_in_html\n"
        "  - pymdownx.superfences:\n"
        "      custom_fences:\n"
        "        - name: mermaid\n"
        "          class: mermaid\n"
        "          format: !!python/name:pymdownx.superfences.fence_code_format\n"
        "  - pymdownx.emoji:\n"
        "      emoji_index: !!python/object/apply:builtins.print ['never run']\n")
    config = load_config(tmp_path / "mkdocs.yml")
    assert config["docs_dir"] == "pages" and config["site_dir"] == "site" and config["theme"]["name"] == "material"
    # lists are replaced, not merged, as MkDocs does
    assert missing_extensions(config) == ["admonition", "attr_list", "pymdownx.details", "pymdownx.tabbed"]
    assert find_config(tmp_path / "pages") == (tmp_path / "mkdocs.yml", config)
    assert find_config(tmp_path / "docs") is None  # that mkdocs.yml is another folder's site


def test_the_site_is_found_beside_or_above_the_docs_folder(tmp_path, monkeypatch):
    (tmp_path / "mkdocs.yml").write_text(MINIMAL.replace("docs_dir: docs", "docs_dir: site/docs"))
    (tmp_path / "site").mkdir()
    assert find_config(tmp_path / "site" / "docs")[0] == tmp_path / "mkdocs.yml"
    (tmp_path / "site" / "mkdocs.yml").write_text(": not yaml [")  # unreadable: passed over
    assert find_config(tmp_path / "site" / "docs")[0] == tmp_path / "mkdocs.yml"
    (tmp_path / "site" / "mkdocs.yml").write_text(mkdocs_yml())  # the nearer one wins
    assert find_config(tmp_path / "site" / "docs")[0] == tmp_path / "site" / "mkdocs.yml"
    assert site_warnings(tmp_path / "site" / "docs") == []
    monkeypatch.chdir(tmp_path / "site")
    assert find_config(Path("docs"))[0] == tmp_path / "site" / "mkdocs.yml"
    assert site_warnings(tmp_path / "elsewhere" / "docs") == []  # no site: nothing to say


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Warning:")]


def test_check_and_build_warn_once_and_strict_still_builds(project, monkeypatch):
    monkeypatch.chdir(project)
    (project / "mkdocs.yml").write_text(MINIMAL)
    spec = write_spec(project)
    res = CliRunner().invoke(cli, ["check", str(spec)])
    assert res.exit_code == 0, res.output
    expected = ("Warning: mkdocs.yml lacks Markdown extensions that report pages use: "
                + ", ".join(CHECKED) + "; add them under markdown_extensions")
    assert len(_warnings(res.stderr)) == 1 and _warnings(res.stderr)[0].startswith(expected), res.stderr
    # a warning about the site, not the report: printed and counted, never fatal, even with --strict
    res = CliRunner().invoke(cli, ["build", str(spec), "--device", "cpu", "--strict", "-q"])
    assert res.exit_code == 0, res.output
    assert len(_warnings(res.stderr)) == 1 and _warnings(res.stderr)[0].startswith(expected), res.stderr
    assert "1 warnings" in res.stdout and (project / "docs/tiny/index.md").is_file()
    res = CliRunner().invoke(cli, ["build", str(spec), "--device", "cpu", "--strict", "-q"])
    assert res.stdout.startswith("Up to date") and len(_warnings(res.stderr)) == 1, res.output
    # fixed: the next run says nothing more, and the report is still up to date
    (project / "mkdocs.yml").write_text(mkdocs_yml("Mine"))
    res = CliRunner().invoke(cli, ["build", str(spec), "--device", "cpu", "--strict", "-q"])
    assert res.stdout.startswith("Up to date") and _warnings(res.stderr) == [], res.output
    res = CliRunner().invoke(cli, ["check", str(spec), "--docs-dir", str(project / "docs")])
    assert res.exit_code == 0 and _warnings(res.stderr) == [], res.output


def test_publishing_page_lists_the_extensions():
    page = (ROOT / "docs/publishing.md").read_text()
    assert f"```yaml\n{markdown_extensions_yaml()}```" in page, (
        "docs/publishing.md must show reportgen.publish.siteconfig.markdown_extensions_yaml() as it is")
