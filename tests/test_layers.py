"""The package's layers hold: each stage imports only the stages before it (the import-linter
contract in pyproject.toml), no module imports itself through others, and no module reaches
for another module's private names. See docs/reference/architecture.md."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytest.importorskip("importlinter", reason="import-linter is in the dev extra (pip install -e '.[dev]')")


def test_the_stage_contract_is_kept():
    """lint-imports, as `make test` users would run it, from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


def _graph():
    import grimp

    return grimp.build_graph("reportgen", exclude_type_checking_imports=True)


def test_no_import_circles():
    graph = _graph()
    circles = sorted({tuple(sorted((a, b))) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
                      if graph.chain_exists(importer=b, imported=a)})
    assert circles == []


def _private_uses(path: Path, modules: set[str]) -> list[str]:
    """``from reportgen.x import _name`` and ``x._name`` for an imported reportgen module ``x``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases: dict[str, str] = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reportgen"):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"{path}:{node.lineno}: from {node.module} import {a.name}")
                if f"{node.module}.{a.name}" in modules:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("reportgen") and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in aliases):
            found.append(f"{path}:{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    """Code and tests use public names only: a private name may change without notice."""
    modules = set(_graph().modules)
    files = [p for folder in ("reportgen", "tests", "bench", "tools") for p in sorted((ROOT / folder).rglob("*.py"))]
    found = [use for p in files for use in _private_uses(p, modules)]
    assert found == []


def test_the_check_sees_a_private_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from reportgen.render import tiles as T\nfrom reportgen.core.cache import _x\nT._y(1)\n")
    found = _private_uses(bad, {"reportgen.render.tiles"})
    assert [f.split(": ", 1)[1] for f in found] == ["from reportgen.core.cache import _x", "reportgen.render.tiles._y"]
