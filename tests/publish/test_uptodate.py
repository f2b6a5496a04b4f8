"""A rebuild with nothing changed stops early, imports nothing heavy and writes nothing;
any change of what the report depends on (or of the report itself) builds again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from reportgen.cli import cli
from reportgen.core.errors import BuildLockedError
from reportgen.publish import uptodate
from tests.conftest import ROOT, make_project, write_spec

HEAVY = ("torch", "numpy", "scipy", "matplotlib", "PIL")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The tiny project built once (on the CPU) with the CLI."""
    root = tmp_path_factory.mktemp("uptodate")
    project = make_project(root / "project")
    write_spec(project)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPORTGEN_CACHE_DIR", str(root / "cache"))
        mp.chdir(project)
        res = CliRunner().invoke(cli, ["build", "spec.yaml", "--docs-dir", "docs", "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    return project


@pytest.fixture
def built(template, tmp_path, monkeypatch):
    """A copy of the built project, as the working directory. The key holds absolute paths
    (report.json shows paths relative to the working directory), so the copy's manifest gets
    the key a build here would record; test_force_... proves a real build records the same."""
    project = tmp_path / "project"
    shutil.copytree(template, project, symlinks=True)
    monkeypatch.chdir(project)
    _restamp(project)
    return project


def _restamp(project: Path) -> None:
    """Write the copy's key into its manifest, as a build in this folder would have."""
    from reportgen.load.spec import load_spec

    path = project / "docs" / "tiny" / uptodate.MANIFEST
    old = json.loads(path.read_text())["key"]
    path.write_text(path.read_text().replace(old, uptodate.build_key(load_spec(project / "spec.yaml"), "cpu")))


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def fresh_process_build(project: Path, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, list]:
    """``reportgen build`` in a new Python; returns the process and the heavy modules it imported."""
    code = ("import json, sys\n"
            "from reportgen.cli import cli\n"
            "try:\n"
            f"    cli(['build', 'spec.yaml', '--docs-dir', 'docs', *{list(args)!r}], prog_name='reportgen')\n"
            "except SystemExit as exc:\n"
            "    code = exc.code\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
            "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    heavy = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    return proc, heavy


@pytest.mark.parametrize("device,env", [("cpu", {}), ("auto", {"CUDA_VISIBLE_DEVICES": ""})],
                         ids=["cpu", "auto with no GPU visible"])
def test_no_change_rebuild_imports_nothing_heavy_and_writes_nothing(built, device, env):
    before = snapshot(built / "docs")
    proc, heavy = fresh_process_build(built, "--device", device, env=env)
    assert proc.returncode == 0, proc.stderr
    pages = sum(1 for _ in (built / "docs" / "tiny").rglob("*.md"))  # what the first build published
    assert proc.stdout.startswith(f"Up to date: {built / 'docs' / 'tiny'}: {pages} pages, "), proc.stdout
    assert heavy == [], f"imported {heavy} although nothing changed"
    assert snapshot(built / "docs") == before
    assert not [p.name for p in (built / "docs").iterdir() if p.name.startswith(".")]  # no lock file left either


@pytest.mark.slow
def test_force_and_no_cache_build_again_to_the_same_report(built):
    before = {k: v[0] for k, v in snapshot(built / "docs").items()}
    for flag in ("--force", "--no-cache"):
        res = CliRunner().invoke(cli, ["build", "spec.yaml", "--docs-dir", "docs", "--device", "cpu", flag])
        assert res.exit_code == 0, res.output
        assert res.stdout.startswith("Built "), (flag, res.stdout)
    # Same inputs, same report, same manifest (the key does not depend on the flags).
    assert {k: v[0] for k, v in snapshot(built / "docs").items()} == before


def _append(path: Path, data: bytes) -> None:
    path.write_bytes(path.read_bytes() + data)


CHANGES = {
    "spec edited (a comment)": lambda p: _append(p / "spec.yaml", b"# a note\n"),
    "checkpoint replaced": lambda p: shutil.copy(p / "ckpt" / "a.pt", p / "ckpt" / "b.pt"),
    "architecture file edited": lambda p: _append(p / "arch.py", b"\n# tuned\n"),
    "test image changed": lambda p: shutil.copy(p / "img" / "im0.png", p / "img" / "im1.png"),
    "test image added": lambda p: shutil.copy(p / "img" / "im0.png", p / "img" / "im9.png"),
    "published page edited": lambda p: _append(p / "docs" / "tiny" / "index.md", b"\nhand edit\n"),
    "published picture deleted": lambda p: next((p / "docs" / "tiny" / "img").rglob("*.png")).unlink(),
    "stray file in the report": lambda p: (p / "docs" / "tiny" / "extra.md").write_text("x"),
    "manifest damaged": lambda p: (p / "docs" / "tiny" / uptodate.MANIFEST).write_text("{"),
    "report deleted": lambda p: shutil.rmtree(p / "docs" / "tiny"),
}


def test_the_copy_is_up_to_date(built):
    assert uptodate.up_to_date(Path("spec.yaml"), Path("docs"), "cpu", strict=False) is not None


@pytest.mark.parametrize("change", list(CHANGES))
def test_any_change_builds_again(built, change):
    CHANGES[change](built)
    assert uptodate.up_to_date(Path("spec.yaml"), Path("docs"), "cpu", strict=False) is None


def test_a_touched_but_unchanged_input_is_still_up_to_date(built):
    os.utime(built / "ckpt" / "a.pt", (1, 1))  # the key is of contents, not times
    assert uptodate.up_to_date(Path("spec.yaml"), Path("docs"), "cpu", strict=False) is not None


def test_another_device_builds_again(built, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert uptodate.up_to_date(Path("spec.yaml"), Path("docs"), "auto", strict=False) is not None  # auto -> cpu
    assert uptodate.up_to_date(Path("spec.yaml"), Path("docs"), "cuda", strict=False) is None  # the build says no GPU
    assert uptodate.up_to_date(Path("spec.yaml"), Path("docs"), "tpu", strict=False) is None  # the build says unknown


def test_recorded_warnings_are_repeated_and_fail_strict(built):
    path = built / "docs" / "tiny" / uptodate.MANIFEST
    recorded = json.loads(path.read_text())
    path.write_text(json.dumps({**recorded, "warnings": ["a: something odd"]}))
    done = uptodate.up_to_date(Path("spec.yaml"), Path("docs"), "cpu", strict=False)
    assert done is not None and done.warnings == ["a: something odd"]
    assert uptodate.up_to_date(Path("spec.yaml"), Path("docs"), "cpu", strict=True) is None  # the build fails and says why
    res = CliRunner().invoke(cli, ["build", "spec.yaml", "--docs-dir", "docs", "--device", "cpu"])
    assert res.exit_code == 0 and res.stderr == "Warning: a: something odd\n", res.output


def test_a_running_build_is_refused_as_a_build_would_be(built):
    from reportgen.publish.site import build_lock

    with build_lock(built / "docs", "tiny"), pytest.raises(BuildLockedError, match="another build of report 'tiny'"):
        uptodate.up_to_date(Path("spec.yaml"), Path("docs"), "cpu", strict=False)


def test_the_key_reads_every_input_file(built):
    from reportgen.load.spec import load_spec

    got = set(uptodate.input_files(load_spec(built / "spec.yaml")))
    want = {built / "spec.yaml", built / "arch.py", *(built / "ckpt").glob("*.pt"), *(built / "img").glob("*.png")}
    assert got == want


def test_files_named_by_any_spec_key_are_read(built):
    from reportgen.load.spec import load_spec
    from tests.conftest import SPEC

    (built / "boxes.json").write_text('{"images": [], "annotations": []}')
    (built / "batch.json").write_text('{"inputs": [], "labels": []}')
    spec = write_spec(built, SPEC + "annotations: boxes.json\nanalyses:\n  trace:\n    batch: batch.json\n", "more.yaml")
    got = set(uptodate.input_files(load_spec(spec)))
    assert {built / "boxes.json", built / "batch.json"} <= got
    key = uptodate.build_key(load_spec(spec), "cpu")
    (built / "boxes.json").write_text('{"images": [], "annotations": [], "categories": []}')
    assert uptodate.build_key(load_spec(spec), "cpu") != key


def test_library_versions_match_importlib_metadata():
    from importlib.metadata import version

    got = uptodate.library_versions()
    assert got == {name: version(name) for name in uptodate.LIBRARIES}


def test_the_code_digest_covers_every_stage_of_the_package():
    """A change to any of reportgen's code, templates or styles rebuilds a report: the digest
    reads every stage folder, not only the module computing it."""
    import reportgen
    from reportgen.publish.uptodate import source_files

    root, paths = source_files()
    assert root == Path(reportgen.__file__).resolve().parent
    rel = {p.relative_to(root).as_posix() for p in paths}
    for must in ("cli.py", "build.py", "load/spec.py", "run/map.py", "reduce/report.py", "render/report.py",
                 "render/pages/templates/filters.md.j2", "render/pages/report.css", "publish/site.py",
                 "core/cache.py", "analysis/evidence.py", "extensions/concepts.py"):
        assert must in rel, must
