"""Benchmark: cold build, rebuild with nothing changed, and after one location changes.

Run:  python bench/bench_incremental.py

Works on a temporary copy of the TownCentre example with a fresh cache:
1. cold build (empty cache);
2. rebuild, nothing changed;
3. rebuild after `touch`ing one checkpoint (new mtime, same bytes: nothing to recompute);
4. rebuild after one location's checkpoint really changed (its conv1 weights scaled by 1.01):
   that location's layers, its pairs with the others and the pictures that show them.
Prints a table and the ratios to the cold build. Issue targets: (2) under 5%, (4) near 10%.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reportgen.build import build  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(ROOT / "examples" / "towncenter", tmp / "examples" / "towncenter")
        (tmp / "specs").mkdir()
        shutil.copy(ROOT / "specs" / "towncenter.yaml", tmp / "specs" / "towncenter.yaml")
        spec, docs, cache = tmp / "specs" / "towncenter.yaml", tmp / "docs", tmp / "cache"
        ckpt = tmp / "examples" / "towncenter" / "checkpoints" / "loc05.pt"
        rows = []

        def timed(label: str) -> None:
            t0 = time.perf_counter()
            res = build(spec, docs, device="cpu", cache_dir=cache)
            dt = time.perf_counter() - t0
            rows.append((label, dt, sum(res.cache.misses.values()), sum(res.cache.hits.values())))

        timed("cold (empty cache)")
        timed("nothing changed")
        ckpt.touch()
        timed("one checkpoint touched (same bytes)")
        data = torch.load(ckpt, weights_only=True)
        data["state_dict"]["conv1.weight"] *= 1.01
        torch.save(data, ckpt)
        timed("one location's checkpoint changed")

    cold = rows[0][1]
    print(f"{'build':<40} {'seconds':>8} {'computed':>9} {'cached':>7} {'of cold':>8}")
    for label, dt, miss, hit in rows:
        print(f"{label:<40} {dt:>8.2f} {miss:>9d} {hit:>7d} {dt / cold:>8.1%}")
    print(f"ratio unchanged / cold: {rows[1][1] / cold:.3f} (target < 0.05); "
          f"one changed / cold: {rows[3][1] / cold:.3f} (target about 0.10)")


if __name__ == "__main__":
    main()
