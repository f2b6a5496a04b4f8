"""Build the example reports with an earlier revision of reportgen and with this checkout,
and compare them file by file: a change that should not change behaviour (a move, a rename,
a refactoring) must leave every page, picture and report.json byte-identical.

    python tools/same_reports.py [REV] [--specs specs/towncenter.yaml ...]

REV (default HEAD) is checked out into a temporary git worktree; both builds run with this
interpreter, without a cache, each importing its own copy of reportgen. The build manifest
(.reportgen-build.json) is left out of the comparison: it records a digest of reportgen's
own source, which differs by design. Exit status 0 when every report is identical.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS = ["specs/towncenter.yaml", "specs/edges.yaml", "specs/colour_mlp.yaml"]
MANIFEST = ".reportgen-build.json"


def build(code: Path, spec: Path, docs: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(code)}
    subprocess.run([sys.executable, "-m", "reportgen", "build", str(spec), "--docs-dir", str(docs),
                    "--no-cache", "--device", "cpu", "-q"], cwd=code, env=env, check=True)


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev", nargs="?", default="HEAD")
    ap.add_argument("--specs", nargs="+", default=SPECS)
    args = ap.parse_args()
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(old), args.rev], cwd=ROOT, check=True)
        try:
            print(f"{'report':<14} {'files':>6} {'differ':>7} {'only one':>9}")
            for spec in args.specs:
                a_docs, b_docs = Path(tmp) / "a", Path(tmp) / "b"
                build(old, old / spec, a_docs)
                build(ROOT, ROOT / spec, b_docs)
                for report in sorted(p.name for p in a_docs.iterdir() if p.is_dir()):
                    a, b = files(a_docs / report), files(b_docs / report)
                    differ = [k for k in sorted(set(a) & set(b)) if a[k] != b[k]]
                    lonely = sorted(set(a) ^ set(b))
                    print(f"{report:<14} {len(a):>6} {len(differ):>7} {len(lonely):>9}")
                    for k in (differ + lonely)[:10]:
                        print(f"    {k}")
                    same = same and not differ and not lonely
                subprocess.run(["rm", "-rf", str(a_docs), str(b_docs)], check=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=True)
    print("identical" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
