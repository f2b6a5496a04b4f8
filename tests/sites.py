"""A site that holds nothing but reportgen's output, built with `mkdocs build --strict`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from reportgen.publish.scaffold import mkdocs_yml


def strict_lone_site(docs: Path, tmp: Path) -> subprocess.CompletedProcess:
    """Build ``docs`` with the minimal mkdocs.yml that `reportgen init` writes (every broken
    link or anchor is a warning, so --strict fails on it; never with -q, which hides the warnings
    from --strict); the site goes to tmp/site."""
    cfg = tmp / "mkdocs.yml"
    cfg.write_text(mkdocs_yml("Lone report", str(docs)) + f"site_dir: {tmp / 'site'}\n")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(cfg)],
                          capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""})
