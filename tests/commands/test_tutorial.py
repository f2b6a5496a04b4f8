"""Follow docs/tutorial.md literally: its code blocks, in an empty folder, must produce a report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BLOCK = re.compile(r"```(\w+)([^\n]*)\n(.*?)```", re.S)


@pytest.mark.slow
def test_tutorial_runs_end_to_end(tmp_path):
    text = (ROOT / "docs/tutorial.md").read_text()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "NO_MKDOCS_2_WARNING": "1"}
    ran = []
    for lang, info, body in BLOCK.findall(text):
        title = re.search(r'title="([^"]+)"', info)
        if lang == "python" and title:
            (tmp_path / title.group(1)).write_text(body)
        elif lang == "bash":
            for line in body.splitlines():
                command = line.split("  #")[0].strip()
                if not command or command.startswith("#"):
                    continue
                proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                      timeout=300)
                assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
                ran.append(command.split()[0:2])
    assert ["reportgen", "build"] in ran and ["mkdocs", "build"] in ran
    report = json.loads((tmp_path / "docs/mynet/report.json").read_text())
    assert [r["location"] for r in report["runs"]] == ["run1", "run2"]
    # the tutorial promises the findings point at run2 (heavy weight decay)
    flagged = [f for f in report["findings"] if f["location"] == "run2" and f["severity"] != "info"]
    assert flagged, [f["text"] for f in report["findings"]]
    assert (tmp_path / "site/mynet/index.html").is_file()
