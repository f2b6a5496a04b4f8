"""The extension interface: extensions declared through entry points, as an installed package
declares its own, and the built-in ones found even where reportgen's metadata is stale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reportgen.core import extension
from tests.conftest import ROOT, write_spec

HELLO = '''\
from reportgen.core.extension import Extension


class HelloExtension(Extension):
    """Says hello once per report: a reduce and a page, nothing per run."""

    name = "hello"

    def reduce(self, spec, values, report):
        return {"locations": [r["key"] for r in report["runs"]], "values": len(values)}

    def pages(self, spec, report, pictures):
        return {"hello.md": "# Hello\\n\\nLocations: " + ", ".join(report["hello"]["locations"]) + ".\\n"}
'''


def _distribution(site: Path, name: str, entry_points: str, module: str | None = None) -> Path:
    """An installed distribution as importlib.metadata finds it on sys.path: a ``*.dist-info``
    folder with its metadata and entry points (what ``pip install`` writes), and its module."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{extension.GROUP}]\n{entry_points}\n")
    if module is not None:
        (site / f"{name.replace('-', '_')}.py").write_text(module)
    return site


def test_the_builtin_extensions_are_the_entry_points_of_pyproject():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"][extension.GROUP] == extension.BUILTIN
    assert list(project["entry-points"][extension.GROUP]) == list(extension.BUILTIN)  # the same order


def test_without_entry_points_the_builtin_extensions_are_still_found(monkeypatch):
    """A checkout run from its folder, over a reportgen installed before the entry points."""
    monkeypatch.setattr(extension.metadata, "entry_points", lambda **kw: [])
    assert extension.declared() == extension.BUILTIN


def test_an_installed_package_adds_its_extension_after_the_builtin_ones(tmp_path, monkeypatch):
    site = _distribution(tmp_path, "hello-reportgen", "hello = hello_reportgen:HelloExtension\n"
                         "aardvark = hello_reportgen:Aardvark", HELLO + "\n\nclass Aardvark(Extension):\n"
                         "    name = 'aardvark'\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(extension, "EXTENSIONS", {})  # as in a fresh interpreter
    monkeypatch.setattr(extension, "_loaded", False)
    assert extension.declared()["hello"] == "hello_reportgen:HelloExtension"
    assert [e.name for e in extension.ordered()] == [*extension.BUILTIN, "aardvark", "hello"]
    hello = extension.EXTENSIONS["hello"]
    assert type(hello).__name__ == "HelloExtension" and not extension.has_run_part(hello)


def test_stale_metadata_of_reportgen_itself_gives_way_to_the_checkout(tmp_path, monkeypatch):
    site = _distribution(tmp_path, "reportgen", "data = reportgen.extensions.data:GoneExtension")
    monkeypatch.syspath_prepend(str(site))
    assert extension.declared()["data"] == extension.BUILTIN["data"]


@pytest.mark.parametrize("entry, message", [
    ("data = other_pkg:Data", "other-pkg declares an extension named 'data', as a built-in one is"),
])
def test_another_package_cannot_take_a_builtin_name(tmp_path, monkeypatch, entry, message):
    monkeypatch.syspath_prepend(str(_distribution(tmp_path, "other-pkg", entry)))
    with pytest.raises(ValueError, match=message):
        extension.declared()


@pytest.mark.parametrize("value, error, message", [
    ("hello_reportgen:HelloExtension.__init__", TypeError, "is not a subclass of reportgen's Extension"),
    ("hello_reportgen:HelloExtension", ValueError, "names an extension called 'hello'"),
])
def test_an_entry_point_must_name_an_extension_class_of_its_name(tmp_path, monkeypatch, value, error, message):
    monkeypatch.syspath_prepend(str(_distribution(tmp_path, "hello-reportgen", "", HELLO)))
    with pytest.raises(error, match=message):
        extension.load_entry_point("greeting", value)


def test_a_build_shows_the_page_of_an_extension_installed_from_a_package(project, tmp_path):
    """The extension of a package on the path, as pip installs it, is found by a build in a
    fresh interpreter: its report.json section and its page are in the report; without a
    per-run part it has no cache entries."""
    site = _distribution(tmp_path / "site", "hello-reportgen", "hello = hello_reportgen:HelloExtension", HELLO)
    docs = project / "docs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])}
    proc = subprocess.run([sys.executable, "-m", "reportgen", "build", str(write_spec(project)), "--docs-dir",
                           str(docs), "--device", "cpu", "-q"], capture_output=True, text=True, env=env,
                          cwd=project, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((docs / "tiny" / "report.json").read_text())
    assert report["hello"] == {"locations": ["a", "b", "c"], "values": 0}
    assert (docs / "tiny" / "hello.md").read_text() == "# Hello\n\nLocations: a, b, c.\n"
    cache = Path(os.environ["REPORTGEN_CACHE_DIR"])
    assert any(cache.iterdir()) and not (cache / "ext-hello").exists()


def test_an_extension_overrides_only_the_stages_it_joins():
    class Quiet(extension.Extension):
        name = "quiet"

    class Busy(Quiet):
        def run_part(self, ctx):
            return None  # a value of None is still a per-run value

    quiet = Quiet()
    assert quiet.wanted(None) and quiet.run_wanted(None, None) and quiet.run_key(None) == ()
    assert quiet.reduce(None, {}, {}) is None and quiet.pages(None, {}, {}) == {}
    assert not extension.has_run_part(quiet) and extension.has_run_part(Busy())


@pytest.mark.filterwarnings("ignore:`project.license` as a TOML table is deprecated")
def test_the_metadata_an_install_writes_declares_the_builtin_extensions(tmp_path, monkeypatch):
    """What ``pip install`` writes (setuptools' metadata of pyproject.toml), found first on the
    path: its entry points declare the built-in extensions, as ``BUILTIN`` names them."""
    build_meta = pytest.importorskip("setuptools.build_meta")
    monkeypatch.chdir(ROOT)
    build_meta.prepare_metadata_for_build_wheel(str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))  # the first reportgen on the path: its metadata is read
    found = {ep.name: ep.value for ep in extension.metadata.entry_points(group=extension.GROUP)
             if ep.dist is not None and ep.dist.name == "reportgen"}
    assert found == extension.BUILTIN
    assert extension.declared() == found
