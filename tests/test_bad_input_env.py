"""Bad specs files and a bad environment, as a matrix: a hostile or broken YAML file, names
that do not fit a file system, non-finite statistics, a docs folder that cannot be written
and a full disk. Every case must end with exit 1 and one 'Error:' line, no traceback, the
previously built report byte for byte as it was, nothing written outside docs/ and the
cache, and no code run.

Running as root makes chmod meaningless, so a read-only file system is simulated there by
failing writes under a folder with EROFS, as the kernel does.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from reportgen.cli import cli
from tests.conftest import SPEC, make_project, write_spec

SENTINEL = "CODE-RAN"  # a file any planted code would create in the project


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tree(folder: Path, skip: str = "docs") -> list[str]:
    """Every path under ``folder`` except ``skip``/: to prove nothing else was written."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.relative_to(folder).parts[0] != skip)


def read_only(monkeypatch, root: Path) -> None:
    """Make ``root`` (and everything under it) refuse writes like a read-only mount."""
    if os.geteuid() != 0:
        for p in [root, *root.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
        return
    root = root.resolve()

    def under(path) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(root)
        except (TypeError, ValueError):
            return False

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    def wrap(fn, check):
        def inner(*args, **kwargs):
            if check(*args, **kwargs):
                refuse(args[0])
            return fn(*args, **kwargs)
        return inner

    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT
    monkeypatch.setattr(os, "open", wrap(os.open, lambda p, flags, *a, **k: bool(flags & writes) and under(p)))
    monkeypatch.setattr(os, "mkdir", wrap(os.mkdir, lambda p, *a, **k: under(p)))
    monkeypatch.setattr(os, "rename", wrap(os.rename, lambda s, d, *a, **k: under(s) or under(d)))
    monkeypatch.setattr(os, "replace", wrap(os.replace, lambda s, d, *a, **k: under(s) or under(d)))
    monkeypatch.setattr(os, "unlink", wrap(os.unlink, lambda p, *a, **k: under(p)))
    monkeypatch.setattr(os, "rmdir", wrap(os.rmdir, lambda p, *a, **k: under(p)))
    for mod in (builtins, io):
        monkeypatch.setattr(mod, "open", wrap(mod.open, lambda p, mode="r", *a, **k: (
            isinstance(p, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and under(p))))


def fail_writes(monkeypatch, err: int, after: int = 3) -> None:
    """Report files fail with ``err`` from the ``after``-th write on (a disk that fills up)."""
    real = Path.write_bytes
    calls = {"n": 0}

    def write_bytes(self, data):
        calls["n"] += 1
        if calls["n"] >= after:
            raise OSError(err, os.strerror(err), str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


# ------------------------------------------------------------------ hostile and broken spec files

def laughs(levels: int = 9, mapping: bool = False) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        refs = [f"*l{i - 1}"] * 9
        body = "{" + ", ".join(f"k{j}: {r}" for j, r in enumerate(refs)) + "}" if mapping else "[" + ", ".join(refs) + "]"
        lines.append(f"l{i}: &l{i} {body}")
    return SPEC + "\n".join(lines) + "\n"


def _text(text: str):
    return lambda p, mp: (write_spec(p, text), None)


def _special(make):
    def case(p, mp):
        path = p / "special.yaml"
        make(path)
        return path, None
    return case


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _symlink_to_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _dev_zero(p, mp):
    return Path("/dev/zero"), None


YAML = {
    "billion laughs (lists)": (_text(laughs()), r"spec.yaml:\d+: refused: aliases expand to more than"),
    "billion laughs (mappings)": (_text(laughs(mapping=True)), r"refused: aliases expand to more than"),
    "recursive alias in a list": (_text(SPEC + "extra: &r [1, *r]\n"), r"spec.yaml:\d+: refused: a recursive alias"),
    "recursive alias in a mapping": (_text(SPEC + "extra: &r\n  again: *r\n"), r"refused: a recursive alias"),
    "50,000-deep flow nesting": (_text(SPEC + "extra: " + "[" * 50_000 + "]" * 50_000 + "\n"),
                                 r"refused: nested deeper than 64 levels"),
    "50,000-deep mapping nesting": (_text(SPEC + "extra: " + "{a: " * 50_000 + "}" * 50_000 + "\n"),
                                    r"refused: nested deeper than 64 levels"),
    "1,000-deep block nesting": (_text(SPEC + "".join("  " * i + f"k{i}:\n" for i in range(1000)) + "  " * 1000 + "x: 1\n"),
                           r"refused: nested deeper than 64 levels"),
    "spec is /dev/zero": (_dev_zero, r"/dev/zero: not a regular file"),
    "spec is a FIFO": (_special(_fifo), r"special.yaml: not a regular file"),
    "spec is a link to /dev/zero": (_special(_symlink_to_zero), r"special.yaml: not a regular file"),
    "spec over 4 MiB": (_text(SPEC + "# " + "x" * (4 << 20) + "\n"), r"spec.yaml: the spec file is larger than 4 MiB"),
}

# ------------------------------------------------------------------ names and numbers

NAMES = {
    "location with a newline": (_text(SPEC.replace("[a, b, c]", '[a, "b\\n", c]')),
                                r"spec.yaml:9: models\[0\].locations: location name 'b\\n' is not allowed"),
    "250-character report name": (_text(SPEC.replace("report: tiny", "report: " + "r" * 250)),
                                  r"spec.yaml:1: report: 'r+\.\.\. is not allowed; .* at most 64"),
    "NaN std": (_text(SPEC.replace("size: [16, 16]", "size: [16, 16]\n  std: [.nan]")),
                r"spec.yaml:\d+: input: 'mean' and 'std' must be finite numbers"),
    "infinite std": (_text(SPEC.replace("size: [16, 16]", "size: [16, 16]\n  std: [.inf, 1, 1]")),
                     r"input: 'mean' and 'std' must be finite"),
    "NaN in mean": (_text(SPEC.replace("size: [16, 16]", "size: [16, 16]\n  mean: [0.5, .nan, 0.5]")),
                    r"input: 'mean' and 'std' must be finite"),
    "infinite mean": (_text(SPEC.replace("size: [16, 16]", "size: [16, 16]\n  mean: [-.inf]")),
                      r"input: 'mean' and 'std' must be finite"),
}

# ------------------------------------------------------------------ the docs folder and the disk


def _docs(rel: str, before=None):
    def case(p, mp):
        if before:
            before(p, mp)
        return write_spec(p), p / rel
    return case


def _read_only_docs(p, mp):
    read_only(mp, p / "docs")


def _read_only_parent(p, mp):
    (p / "ro").mkdir()
    read_only(mp, p / "ro")


def _file_parent(p, mp):
    (p / "afile").write_text("not a folder")


def _file_at_report(p, mp):
    (p / "other").mkdir()
    (p / "other" / "tiny").write_text("a file where the report goes")


def _lock_is_dir(p, mp):
    (p / "docs" / ".tiny.lock").unlink(missing_ok=True)
    (p / "docs" / ".tiny.lock").mkdir()
    (p / "docs" / ".tiny~lock").mkdir()


def _disk(err: int, after: int = 3):
    def case(p, mp):
        fail_writes(mp, err, after)
        return write_spec(p), p / "docs"
    return case


def _no_space_for_staging(p, mp):
    real = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        if ".tiny" in str(kwargs.get("prefix", "")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(kwargs.get("dir")))
        return real(*args, **kwargs)

    mp.setattr(tempfile, "mkdtemp", mkdtemp)
    return write_spec(p), p / "docs"


def _new_docs_then_fail(p, mp):
    (p / "ckpt" / "c.pt").write_bytes(b"truncated")  # fails after the docs folder is made
    return write_spec(p), p / "fresh" / "docs"


ENV = {
    "read-only docs folder": (_docs("docs", _read_only_docs), r"cannot write to .*docs.*(Read-only|Permission)"),
    "docs folder in a read-only folder": (_docs("ro/docs", _read_only_parent),
                                          r"cannot create the docs folder .*ro/docs.*(Read-only|Permission)"),
    "docs folder under a regular file": (_docs("afile/docs", _file_parent),
                                         r"cannot create the docs folder .*afile/docs: Not a directory"),
    "regular file in the report's place": (_docs("other", _file_at_report),
                                           r"other/tiny is a file, not a report folder; move or delete it"),
    "lock path is a folder": (_docs("docs", _lock_is_dir), r"cannot write to .*\.tiny~lock: Is a directory"),
    "disk full while writing the report": (_disk(errno.ENOSPC), r"cannot write the report to .*No space left on device; free"),
    "disk full on the first file": (_disk(errno.ENOSPC, after=1), r"No space left on device"),
    "permission denied while writing": (_disk(errno.EACCES), r"cannot write the report to .*Permission denied"),
    "I/O error while writing": (_disk(errno.EIO), r"cannot write the report to .*Input/output error"),
    "disk full before staging": (_no_space_for_staging, r"cannot write to .*No space left on device"),
    "failed build in a new docs folder": (_new_docs_then_fail, r"location 'c': checkpoint .* truncated"),
}

CASES = {**YAML, **NAMES, **ENV}
FAST = set(YAML)  # refused before anything else runs: well within a second


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A project with a good report in docs/ and a filled cache, built once for the module."""
    root = tmp_path_factory.mktemp("template")
    project = make_project(root / "project")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPORTGEN_CACHE_DIR", str(root / "cache"))
        res = CliRunner().invoke(cli, ["build", str(write_spec(project)), "--docs-dir", str(project / "docs"), "-q"])
    assert res.exit_code == 0, res.output
    return root


@pytest.fixture
def built(template, tmp_path, monkeypatch):
    """A copy of the template: its project (returned), its cache and an empty working folder."""
    shutil.copytree(template, tmp_path / "t", symlinks=True)
    monkeypatch.setenv("REPORTGEN_CACHE_DIR", str(tmp_path / "t" / "cache"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path / "t" / "project"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_env_matrix(built, case, monkeypatch):
    mutate, message = CASES[case]
    docs_before = snapshot(built / "docs")
    with monkeypatch.context() as mp:
        spec, docs = mutate(built, mp)
        outside = tree(built)  # after the case set itself up
        cwd = tree(Path.cwd())
        t0 = time.perf_counter()
        res = CliRunner().invoke(cli, ["build", str(spec), "--docs-dir", str(docs or built / "docs"),
                                       "--device", "cpu", "-q"])
        seconds = time.perf_counter() - t0
    assert res.exit_code == 1, (case, res.output, res.exception)
    assert isinstance(res.exception, SystemExit), f"{case}: unexpected exception {res.exception!r}"
    errors = res.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("Error: "), (case, res.stderr)
    assert re.search(message, errors[0]), (case, errors[0])
    assert "Traceback" not in res.output
    assert snapshot(built / "docs") == docs_before, f"{case}: the previous report changed"
    assert tree(built) == outside, f"{case}: files written outside docs/"
    assert tree(Path.cwd()) == cwd == []
    assert not (built / SENTINEL).exists()
    if case in FAST:
        assert seconds < 1.0, f"{case}: took {seconds:.2f} s"


# Refused too, though today's main already answered them with a clean (other) error.
ALSO = {
    "recursive merge key": (_text(SPEC + "extra: &r\n  <<: *r\n"), r"refused: a recursive alias"),
    "too many aliases": (_text(SPEC + "a: &a 1\nb: [" + ", ".join(["*a"] * 1001) + "]\n"),
                         r"refused: more than 1000 aliases"),
    "250-character location name": (_text(SPEC.replace("[a, b, c]", "[a, b, " + "c" * 250 + "]")),
                                    r"models\[0\].locations: location name 'c+\.\.\. is not allowed"),
}


@pytest.mark.parametrize("case", list(ALSO))
def test_also_refused(project, case, monkeypatch):
    mutate, message = ALSO[case]
    spec, _ = mutate(project, monkeypatch)
    res = CliRunner().invoke(cli, ["check", str(spec)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1 and re.search(message, res.stderr), res.stderr


def test_matrix_is_large_enough():
    assert len(CASES) >= 25


def test_spec_that_is_a_folder_is_refused(tmp_path):
    from reportgen.core.errors import SpecError
    from reportgen.load.yamlsrc import load_yaml

    with pytest.raises(SpecError, match="is a directory|not a regular file"):
        load_yaml(tmp_path)


@pytest.mark.parametrize("n", [2, 8])
def test_aliases_within_the_bounds_still_work(project, n):
    """Anchors and aliases are a YAML feature people use; only abuse is refused."""
    from reportgen.load.yamlsrc import load_yaml

    text = SPEC + "shared: &s {a: 1, b: [1, 2]}\nuses: [" + ", ".join(["*s"] * n) + "]\n"
    data = load_yaml(write_spec(project, text)).data
    assert data["uses"] == [{"a": 1, "b": [1, 2]}] * n
