"""Benchmark: the cold TownCentre build as a whole process, against the 15 s target.

Run from the repository root:

    python bench/bench_cold.py                 # 3 builds, the build's default --jobs
    python bench/bench_cold.py --jobs 1        # one process (when the option exists)
    python bench/bench_cold.py --runs 5 --spec specs/edges.yaml

Each build is a fresh `python -m reportgen build SPEC -q` process with an empty cache
directory and docs directory of its own, so every run imports everything, loads every
model and computes every result. Per build the table gives:

* wall: seconds from starting the process to its exit;
* cpu: user + system seconds of the process and every process it waited for (a
  process pool's workers included), from ``os.wait4``;
* cpu/wall: how many cores the build kept busy on average;
* peak RSS: the largest resident set of any one of those processes (``ru_maxrss``),
  and the peak of the sum over the process and its descendants, sampled every 20 ms
  from /proc (what a pool costs in memory together).

It also counts what the build wrote into the report's folder: pictures (PNG files) and
their megabytes, all files and all megabytes. The last lines are the median wall time and its ratio to
the target (issue 20: at most 15 s on a quiet 2-core machine with both cores in use), and
the pictures against theirs (at most 800 files, 20 MB). ``--jobs`` is passed through
only when ``reportgen build --help`` lists it. Numbers from a loaded machine are not
comparable with the target: compare cpu seconds instead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from proc_tree import tree_rss

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 15.0
TARGET_PNGS, TARGET_PNG_MB = 800, 20.0


def has_jobs_option(env: dict) -> bool:
    out = subprocess.run([sys.executable, "-m", "reportgen", "build", "--help"], capture_output=True,
                         text=True, cwd=ROOT, env=env)
    return "--jobs" in out.stdout


def cold_build(spec: str, jobs: int | None, env: dict) -> dict:
    """One cold build in a fresh process; returns wall, cpu and peak memory."""
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        cmd = [sys.executable, "-m", "reportgen", "build", spec, "-q", "--docs-dir", f"{tmp}/docs",
               "--cache-dir", f"{tmp}/cache"]
        if jobs is not None:
            cmd += ["--jobs", str(jobs)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss(proc.pid))
                done.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"build failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
        report = next(p for p in Path(tmp, "docs").iterdir() if p.is_dir())
        sizes = {p: p.stat().st_size for p in report.rglob("*") if p.is_file()}
        pngs = [size for p, size in sizes.items() if p.suffix == ".png"]
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "maxrss": usage.ru_maxrss * 1024,
            "tree_rss": peak[0], "pngs": len(pngs), "png_mb": sum(pngs) / 1e6, "files": len(sizes),
            "mb": sum(sizes.values()) / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="specs/towncenter.yaml", help="spec, relative to the repository root")
    ap.add_argument("--runs", type=int, default=3, help="cold builds (the median is reported; default 3)")
    ap.add_argument("--jobs", type=int, default=None, help="passed to `reportgen build --jobs` when it exists")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    jobs = args.jobs
    if jobs is not None and not has_jobs_option(env):
        print("note: `reportgen build` has no --jobs option here; building without it")
        jobs = None

    rows = [cold_build(args.spec, jobs, env) for _ in range(args.runs)]
    mib = 1 << 20
    print(f"spec: {args.spec}  jobs: {jobs if jobs is not None else 'default'}  cores: {os.cpu_count()}  "
          f"load average now: {os.getloadavg()[0]:.1f}")
    print(f"{'build':>6} {'wall s':>8} {'cpu s':>8} {'cpu/wall':>9} {'peak RSS MiB':>13} {'all procs MiB':>14} "
          f"{'PNGs':>6} {'PNG MB':>7} {'files':>6} {'MB':>6}")

    def line(name: str, r: dict) -> None:
        print(f"{name:>6} {r['wall']:>8.2f} {r['cpu']:>8.2f} {r['cpu'] / r['wall']:>9.2f} "
              f"{r['maxrss'] / mib:>13.0f} {r['tree_rss'] / mib:>14.0f} {r['pngs']:>6.0f} {r['png_mb']:>7.1f} "
              f"{r['files']:>6.0f} {r['mb']:>6.1f}")

    for k, r in enumerate(rows, 1):
        line(str(k), r)
    med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    line("median", med)
    print(f"ratio median wall / target {TARGET_S:.0f} s: {med['wall'] / TARGET_S:.2f} "
          f"({'met' if med['wall'] <= TARGET_S else 'missed'})")
    print(f"pictures / target {TARGET_PNGS}: {med['pngs'] / TARGET_PNGS:.2f}; "
          f"MB / target {TARGET_PNG_MB:.0f}: {med['png_mb'] / TARGET_PNG_MB:.2f}")


if __name__ == "__main__":
    main()
