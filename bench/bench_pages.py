"""Benchmark: how heavy each page of a built report is for a visitor.

Run:  python bench/bench_pages.py DOCS_DIR/REPORT [--budget-mb 2]
e.g.  reportgen build specs/towncenter.yaml --docs-dir /tmp/docs --no-cache -q
      python bench/bench_pages.py /tmp/docs/towncenter

A page's weight is its Markdown plus every picture it shows (each file counted once per
page): what a visitor downloads when every lazy image has scrolled into view. The theme's
CSS, JavaScript and search index are shared by all pages and cached, so they are left
out. Prints page -> bytes, the number of pictures and the ratio to the budget, heaviest
first, and exits 1 when a page is over the budget.
"""

from __future__ import annotations

import argparse
import posixpath
import re
import sys
from pathlib import Path

IMAGE = re.compile(r"!\[[^\]\n]*\]\(([^)\s]+)\)")
# Issue 20's target: the heaviest page of the TownCentre example at most 2 MB (measured
# 2026-12-07: 1.97 MB, filters/loc01/conv3.md, after PNGs went to deflate level 6; 2.21 MB,
# layers/conv1.md, before).
BUDGET_MB = 2.0


def page_weights(report: Path) -> list[tuple[str, int, int]]:
    """(page, bytes, pictures) for every Markdown page of a report, heaviest first."""
    rows = []
    for page in sorted(report.rglob("*.md")):
        rel = page.relative_to(report).as_posix()
        text = page.read_text(encoding="utf-8")
        targets = {posixpath.normpath(posixpath.join(posixpath.dirname(rel), t)) for t in IMAGE.findall(text)}
        files = [report / t for t in targets if (report / t).is_file()]
        rows.append((rel, len(text.encode("utf-8")) + sum(f.stat().st_size for f in files), len(files)))
    return sorted(rows, key=lambda r: -r[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="a built report folder, e.g. docs/towncenter")
    ap.add_argument("--budget-mb", type=float, default=BUDGET_MB)
    args = ap.parse_args()
    budget = args.budget_mb * 1e6
    rows = page_weights(args.report)
    if not rows:
        print(f"no pages under {args.report}", file=sys.stderr)
        return 1
    width = max(len(r[0]) for r in rows)
    print(f"{'page':<{width}}  {'bytes':>11}  {'pictures':>8}  {'/ budget':>8}")
    for rel, size, n in rows:
        print(f"{rel:<{width}}  {size:>11,}  {n:>8}  {size / budget:>8.2f}")
    total = sum(r[1] for r in rows)
    print(f"{len(rows)} pages, {total:,} bytes in all; budget {budget:,.0f} bytes for the heaviest page")
    return 0 if rows[0][1] <= budget else 1


if __name__ == "__main__":
    sys.exit(main())
