"""The docs describe what the code does: schema file in sync, every spec key documented."""

from __future__ import annotations

from pydantic import BaseModel

from reportgen.load.spec import ReportSchema, json_schema
from tests.conftest import ROOT


def test_committed_json_schema_is_current():
    committed = (ROOT / "docs/reference/spec.schema.json").read_text()
    assert committed == json_schema(), "run: reportgen schema > docs/reference/spec.schema.json"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        ann = field.annotation
        for arg in (getattr(ann, "__args__", None) or (ann,)):
            inner = getattr(arg, "__args__", None)
            target = inner[0] if inner else arg
            if isinstance(target, type) and issubclass(target, BaseModel) and target is not model:
                if prefix == "" and name in ("models", "reference", "layers", "input"):
                    out += _keys(target, "")
                elif prefix == "" and name == "analyses":
                    for sub, f2 in target.model_fields.items():
                        out += _keys(f2.annotation, f"{sub}.")
    return out


def test_every_spec_key_is_in_the_reference_page():
    page = (ROOT / "docs/reference/spec.md").read_text()
    missing = [k for k in _keys(ReportSchema) if f"`{k}`" not in page]
    assert not missing, f"undocumented spec keys: {missing}"


def _all_keys(value, out: set) -> set:
    if isinstance(value, dict):
        for k, v in value.items():
            out.add(k)
            _all_keys(v, out)
    elif isinstance(value, list):
        for v in value:
            _all_keys(v, out)
    return out


def test_every_report_json_key_is_documented(project):
    import json

    from reportgen.build import build
    from tests.conftest import SPEC, write_spec

    (project / "ref.py").write_text("from torch import nn\n\n\nclass Ref(nn.Module):\n    def __init__(self):\n"
                                    "        super().__init__()\n        self.conv1 = nn.Conv2d(3, 4, 3)\n")
    build(write_spec(project, SPEC + "reference:\n  arch: ref.py:Ref\n  layer: conv1\n"), project / "docs", device="cpu")
    report = json.loads((project / "docs/tiny/report.json").read_text())
    page = (ROOT / "docs/reference/report-json.md").read_text()
    missing = sorted(k for k in _all_keys(report, set()) if f'"{k}"' not in page and f"`{k}`" not in page
                     and f"{k}`" not in page)
    assert not missing, f"report.json keys missing from docs/reference/report-json.md: {missing}"


def _nav_pages(nav) -> set[str]:
    if isinstance(nav, str):
        return {nav}
    items = nav.values() if isinstance(nav, dict) else nav
    return set().union(*(_nav_pages(item) for item in items)) if items else set()


def test_every_page_is_in_the_nav_or_a_report_and_strict_checks_links():
    """A page of docs/ missing from the nav is an error of `mkdocs build --strict`, except a
    report's own pages (left out on purpose: not_in_nav), which are reached from its home page."""
    import pathspec.gitignore

    from reportgen.publish.siteconfig import load_config

    config = load_config(ROOT / "mkdocs.yml")
    left_out = pathspec.gitignore.GitIgnoreSpec.from_lines(config["not_in_nav"].splitlines())  # as MkDocs reads it
    docs = ROOT / "docs"
    pages = {p.relative_to(docs).as_posix() for p in docs.rglob("*.md")
             if not any((d / "report.json").exists() for d in p.parents if docs in d.parents)}
    assert pages - _nav_pages(config["nav"]) == set()
    assert not any(left_out.match_file(page) for page in pages), "a page of the docs is hidden"
    assert left_out.match_file("towncenter/layers/conv1.md") and left_out.match_file("my-report/index.md")
    # every link, anchor and omitted page is a warning, so --strict fails on it
    validation = config["validation"]
    assert {validation[k] for k in ("omitted_files", "absolute_links", "unrecognized_links", "anchors")} == {"warn"}
    assert validation.get("not_found", "warn") == "warn" and config.get("strict") is False
