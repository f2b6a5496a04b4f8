"""Benchmark: a no-change rebuild as a whole process, against `python -c "import torch"`.

Run:  python bench/bench_rebuild.py [--runs 5] [--cold-runs 3] [--spec specs/towncenter.yaml]

Works on a temporary copy of the spec's project (examples/ and specs/) and times whole
processes, start-up included, as a user at a terminal sees them:
- `python -c "import torch"`: the yardstick;
- cold build: `reportgen build SPEC --device cpu` with an empty cache and no report;
- rebuild, cache only (`--force`): every result from the cache, as every rebuild was
  before reportgen.publish.uptodate (torch imported, models loaded, pages written again);
- no-change rebuild: the same command without `--force`: it finds the report up to date.
The yardstick and the rebuilds are run in turn, so a change in the machine's load hits
all of them alike. Prints the median and the spread of each, and the ratio
no-change rebuild / import torch. Issue 12's target: at most 0.5.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    print(f"  {dt:7.2f} s  {' '.join(cmd[1:])}", file=sys.stderr, flush=True)  # progress: a cold build takes long
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="specs/towncenter.yaml", help="relative to the repository")
    ap.add_argument("--runs", type=int, default=5, help="runs of the yardstick and of each rebuild")
    ap.add_argument("--cold-runs", type=int, default=3)
    opts = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's reportgen
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(ROOT / "examples", tmp / "examples")
        shutil.copytree(ROOT / "specs", tmp / "specs")
        build = [py, "-m", "reportgen", "build", opts.spec, "--docs-dir", "docs", "--cache-dir", "cache",
                 "--device", "cpu", "-q"]
        times: dict[str, list[float]] = {}
        for _ in range(opts.cold_runs):
            shutil.rmtree(tmp / "docs", ignore_errors=True)
            shutil.rmtree(tmp / "cache", ignore_errors=True)
            times.setdefault("cold build", []).append(timed(build, tmp, env))
        for _ in range(opts.runs):
            times.setdefault('python -c "import torch"', []).append(timed([py, "-c", "import torch"], tmp, env))
            times.setdefault("rebuild, all from the cache (--force)", []).append(timed(build + ["--force"], tmp, env))
            times.setdefault("no-change rebuild", []).append(timed(build, tmp, env))
    med = {k: statistics.median(v) for k, v in times.items()}
    torch_s = med['python -c "import torch"']
    print(f"{opts.spec}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'whole process':<42} {'runs':>4} {'median s':>9} {'min s':>7} {'max s':>7} {'/ import torch':>15}")
    for label in ('python -c "import torch"', "cold build", "rebuild, all from the cache (--force)",
                  "no-change rebuild"):
        v = times[label]
        print(f"{label:<42} {len(v):>4} {med[label]:>9.2f} {min(v):>7.2f} {max(v):>7.2f} "
              f"{med[label] / torch_s:>14.2f}x")
    ratio = med["no-change rebuild"] / torch_s
    print(f"ratio no-change rebuild / import torch: {ratio:.2f} (target <= 0.5: {'met' if ratio <= 0.5 else 'missed'})")


if __name__ == "__main__":
    main()
