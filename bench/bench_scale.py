"""Benchmark: a build of 10, 50 and 200 locations; time and peak memory of the whole process tree.

Run:  python bench/bench_scale.py [--locations 10 50 200] [--jobs 1 2] [--layers conv1 conv2]

Generates a spec of N locations of the TownCentre example's SceneNet in a temporary
folder: locations 1-10 are the example's ten checkpoints, every further one is one of
them (cycling) with each weight tensor perturbed by deterministic noise of 1% of its
standard deviation, so every pair of locations is a real comparison. Each location sees
its base location's three frames and the six shared frames. Each build is a fresh
process (`python -m reportgen build --no-cache -q --jobs J`), timed from start to exit,
while its peak memory is sampled as the sum of the resident sizes of the process and
all its descendants (workers included) every 50 ms from /proc (Linux; elsewhere the
largest single process, from getrusage).

Prints locations x jobs x seconds x peak RSS x seconds per location, then per jobs
value the ratio peak(largest N) / peak(smallest N) (issue target: at most 1.5) and the
time per location at each N (linear time: about constant).

Measured 2026-12-07 on the quiet 2-core machine, --jobs 2, `--locations 10 40 200`:
10 locations 10.6 s, 1,197 MiB; 40 locations 34.8 s, 1,276 MiB; 200 locations 258.5 s,
1,660 MiB: peak(40) / peak(10) = 1.07, peak(200) / peak(10) = 1.39. Earlier the same day,
before the build kept its workers for the later steps: 1,110 / 1,251 MiB at 10 / 200
(1.13) in 377 s. The workers (about 350 MB each, most of it torch, numpy, scipy and
matplotlib) are now alive while the build's process holds the report, and the
ratio held only after two transients of 0.5 GB each at 200 locations went: the data
extension's Mantel relabellings (analysis/mantel.py) and the 200-panel weight histograms.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from proc_tree import tree_rss

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "towncenter"
BASES = [f"loc{i:02d}" for i in range(1, 11)]

SPEC = """\
report: scale
title: Scale benchmark
models:
  - name: scenenet
    arch: {example}/model.py:SceneNet
    arch_args: {{width: 64, keypoints: 5}}
    checkpoint: ckpt/{{location}}.pt
    checkpoint_key: state_dict
    locations: [{locations}]
input:
  size: [96, 128]
  mean: [0.485, 0.456, 0.406]
  std: [0.229, 0.224, 0.225]
images:
  - frames/{{location}}/*.png
  - {example}/frames/shared/*.png
layers: [{layers}]
analyses:
  activations:
    max_images: 2
"""


def make_locations(folder: Path, n: int) -> list[str]:
    """``n`` checkpoints and frame folders under ``folder`` (reused across sizes); returns their names."""
    (folder / "ckpt").mkdir(parents=True, exist_ok=True)
    (folder / "frames").mkdir(exist_ok=True)
    names = []
    for i in range(n):
        name, base = f"s{i:03d}", BASES[i % len(BASES)]
        names.append(name)
        ckpt = folder / "ckpt" / f"{name}.pt"
        if not ckpt.exists():
            if i < len(BASES):
                os.symlink(EXAMPLE / "checkpoints" / f"{base}.pt", ckpt)
            else:
                obj = torch.load(EXAMPLE / "checkpoints" / f"{base}.pt", weights_only=True)
                gen = torch.Generator().manual_seed(i)
                state = obj["state_dict"]
                for key, t in state.items():
                    if t.is_floating_point() and t.numel() > 1:
                        state[key] = t + 0.01 * t.std() * torch.randn(t.shape, generator=gen)
                torch.save(obj, ckpt)
        frames = folder / "frames" / name
        if not frames.exists():
            os.symlink(EXAMPLE / "frames" / base, frames, target_is_directory=True)
    return names


def run_build(spec: Path, docs: Path, jobs: int, log: Path | None = None) -> tuple[float, int]:
    """(seconds, peak bytes of the process tree) of one build in a fresh process; its
    standard output (the summary line) goes to the file ``log`` when given."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "reportgen", "build", str(spec), "--docs-dir", str(docs), "--no-cache", "-q",
           "--jobs", str(jobs), "--device", "cpu"]
    t0 = time.perf_counter()
    peak = 0
    linux = os.path.isdir("/proc/self")
    with open(log or os.devnull, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.PIPE)
        while proc.poll() is None:
            if linux:
                peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.05)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    if proc.returncode:
        raise SystemExit(f"build failed ({proc.returncode}):\n{err}")
    if not linux:
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--locations", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--layers", nargs="+", default=["conv1", "conv2"])
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in args.locations:
            names = make_locations(tmp, n)
            spec = tmp / f"scale_{n}.yaml"
            spec.write_text(SPEC.format(example=EXAMPLE.as_posix(), locations=", ".join(names),
                                        layers=", ".join(args.layers)))
            for jobs in args.jobs:
                seconds, peak = run_build(spec, tmp / f"docs_{n}_{jobs}", jobs)
                rows.append((n, jobs, seconds, peak))
                print(f"  {n} locations, --jobs {jobs}: {seconds:.1f} s, {peak / 2**20:.0f} MiB", flush=True)
    print()
    print("| locations | jobs | seconds | peak RSS (MiB) | seconds per location |")
    print("|---:|---:|---:|---:|---:|")
    for n, jobs, seconds, peak in rows:
        print(f"| {n} | {jobs} | {seconds:.1f} | {peak / 2**20:.0f} | {seconds / n:.2f} |")
    print()
    for jobs in args.jobs:
        mine = sorted((r for r in rows if r[1] == jobs), key=lambda r: r[0])
        if len(mine) >= 2:
            lo, hi = mine[0], mine[-1]
            print(f"--jobs {jobs}: peak({hi[0]}) / peak({lo[0]}) = {hi[3] / lo[3]:.2f} (target <= 1.5); "
                  "seconds per location: " + ", ".join(f"{r[2] / r[0]:.2f} at {r[0]}" for r in mine))


if __name__ == "__main__":
    main()
