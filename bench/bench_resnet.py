"""Benchmark: reports of real-network-sized models at 224 px; time, peak memory, files, site build.

Run:  python bench/bench_resnet.py [--network resnet] [--locations 1 10 40] [--jobs J]
      python bench/bench_resnet.py --network lcnet             # one location

Generates everything in a temporary folder:

* the network: bench/nets224.py (copied there, named in the spec as `arch: nets224.py:Class`):
  `resnet`, ResNet-18-shaped (11.7 M weights), 8 layers inspected from conv1 (64 filters, 7x7)
  to layer4.1.conv2 (512 filters, 7x7 maps); or `lcnet`, PP-LCNet-shaped (2.95 M weights;
  depthwise-separable blocks, hard-swish), 9 layers from the 16-filter stem to 512 filters;
* weights: torch.manual_seed(0) initialisation, batch norm running statistics from 32
  generated images (train mode, cumulative averages), then per location every weight and
  bias tensor perturbed by noise of 3% of its standard deviation (seed = location number),
  saved as state_dicts and read with weights_only;
* 5 test images, 224x224 RGB: smooth multi-scale noise, a grating and a few discs, from fixed
  seeds; shared by every location, so the comparisons use all five (ImageNet mean and std).

The spec lists the layers and nothing else under `analyses`: reportgen's defaults, i.e.
filter views, activations (maps of 4 images), health, comparison of locations and the Gabor
fits of conv1. Unit views (maximisation, top patches, ...) are off unless `units.layers`
names layers, so none are made here.

Each build is a fresh process (`python -m reportgen build SPEC --no-cache -q --jobs J
--device cpu`, bench_scale.run_build) into a docs folder of its own, its peak memory the sum
over the process tree sampled every 50 ms. Per N: wall seconds, the build's own seconds (its
summary line), seconds per location, peak memory, files, megabytes and PNGs of the report
folder, the heaviest page (bench_pages.page_weights: Markdown plus its pictures) and the time of
`mkdocs build --strict` of a site holding only this report (the mkdocs.yml `reportgen init`
writes). Then the ratios, against issue 20's targets: 10 locations x 8 layers at most 2,000
files and 150 MB; peak(40) / peak(10) at most 1.3; PP-LCNet at one location at most 1 GB.

Measured 2026-12-07 at 97817ed (quiet 2-core CPU, --jobs 2), with one pool for the
whole build (reduce and render in its workers) and PNGs at deflate level 6: ResNet-18, 1
location: 5.6 s build, 9 cpu s, 540 MiB, 123 files, 12.9 MB; 10 locations: 148.5 s build
(14.8 s a location), 273 cpu s, 1,983 MiB, 974 files, 144.7 MB (both targets met), heaviest
page a location page, 8.9 MB, `mkdocs build --strict` 66 s; 40 locations: 917 s build (22.9 s
a location: the comparisons are N^2 pairs), 1,688 cpu s, 3,275 MiB (peak(40) / peak(10) =
1.65, target 1.3 missed: the build's process holds every run's weights, 16.5 MB a run for
these 8 layers, and the report; the workers add about 0.7 GB), 3,704 files, 662 MB,
heaviest page layers/conv1.md at 15 MB (before a layer page's grids stopped at 24
locations), `mkdocs build --strict` 391 s. PP-LCNet, 1 location: 4.6 s, 557 MiB, 137 files,
9.9 MB.

Earlier the same day, --jobs 2, after the atlases (render/atlas.py),
activation grids at their own density with a palette and bounded matches: ResNet-18, 1
location: 6.7 s build, 10 cpu s, 563 MiB, 130 files, 16 MB; 10 locations: 184 s build (18 s
a location), 324 cpu s, 1,655 MiB, 974 files (target met), 159 MB (missed by 6%: activation
grids 55 MB, filter atlases 24 MB, Markdown 44 MB, ...), heaviest page a location page,
10.0 MB with 60 pictures (8 layers x 4 activation grids), `mkdocs build --strict` 66 s.
PP-LCNet, 1 location: 5.1 s, 567 MiB (target met), 137 files, 11 MB.

Before them (shared 2-core CPU, nice -n 10, --jobs 2, load average 1 to 3; a first
10-location run under a load of 5 to 8 took 1,269 s and its site 315 s):
ResNet-18, 1 location: 13.6 s build, 17 cpu s, 1,034 MiB, 5,306 files, 45 MB; 10 locations:
524 s build, 620 cpu s (62 per location), 1,722 MiB, 52,804 files, 494 MB (both targets missed
about 26x and 3x), `mkdocs build --strict` 158 s; heaviest page a location page, 22.5 MB with
1,787 pictures. PP-LCNet, 1 location: 12.7 s, 992 MiB (1.04 GB), 5,270 files, 37 MB.
Per-filter pictures are 98% of the files (a tile, an input view and a maps view for each of
the 1,728 filters of every location); the activation grids (4 per layer, up to 0.74 MB
each) are a third of the bytes. At one location the build is mostly PNG encoding; from
two locations on, the comparisons dominate (profile of 3 locations: two thirds of the
time, half of it the chance level of matched similarity for the 256- and 512-filter
layers, two fifths the bootstrap intervals).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import tempfile
import time
from pathlib import Path

import nets224
import numpy as np
import torch
import torch.nn.functional as F
from bench_pages import page_weights
from bench_real_networks import strict_site
from bench_scale import run_build
from PIL import Image

NETWORKS = {"resnet": ("ResNet18", [1, 10, 40]), "lcnet": ("LCNet", [1])}
IMAGES, CALIBRATION, NOISE = 5, 32, 0.03
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
MB, MIB = 1e6, 2**20

SPEC = """\
report: {report}
title: {cls} at 224 px, {n} locations
models:
  - name: {report}
    arch: nets224.py:{cls}
    checkpoint: ckpt/{{location}}.pt
    locations: [{locations}]
input:
  size: 224
  mean: {mean}
  std: {std}
images: [images/*.png]
layers: [{layers}]
"""


def texture(seed: int, size: int = 224) -> np.ndarray:
    """A deterministic RGB picture (H, W, 3) of uint8: smooth noise at four scales, a
    grating at a random angle and three discs of random colours."""
    gen = torch.Generator().manual_seed(seed)
    img = torch.zeros(3, size, size)
    for cells in (3, 7, 15, 31):
        grid = torch.randn(1, 3, cells, cells, generator=gen)
        img += F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)[0] * cells ** -0.5
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    angle, period = float(torch.rand(1, generator=gen)) * np.pi, 6 + 20 * float(torch.rand(1, generator=gen))
    img += 0.4 * torch.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period)
    for _ in range(3):
        cy, cx, r = (torch.rand(3, generator=gen) * torch.tensor([size, size, size / 5])).tolist()
        inside = (y - cy) ** 2 + (x - cx) ** 2 < (r + 8) ** 2
        img[:, inside] = torch.randn(3, 1, generator=gen) * 1.5
    img = (img - img.min()) / (img.max() - img.min())
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def make_inputs(folder: Path, cls: str, n: int) -> list[str]:
    """The network file, test images and ``n`` location checkpoints under ``folder`` (reused
    across sizes); returns the location names."""
    shutil.copy(Path(nets224.__file__), folder / "nets224.py")
    (folder / "images").mkdir(exist_ok=True)
    for k in range(IMAGES):
        Image.fromarray(texture(k)).save(folder / "images" / f"texture_{k}.png")
    (folder / "ckpt").mkdir(exist_ok=True)
    names = [f"loc{i:03d}" for i in range(1, n + 1)]
    todo = [(i, name) for i, name in enumerate(names, 1) if not (folder / "ckpt" / f"{name}.pt").exists()]
    if todo:
        base = calibrated(cls)
        for i, name in todo:
            gen = torch.Generator().manual_seed(i)
            state = {key: t + NOISE * t.std() * torch.randn(t.shape, generator=gen)
                     if key.endswith(("weight", "bias")) and t.numel() > 1 and t.std() > 0 else t
                     for key, t in base.items()}
            torch.save(state, folder / "ckpt" / f"{name}.pt")
    return names


def calibrated(cls: str) -> dict[str, torch.Tensor]:
    """The state_dict of ``cls`` at torch.manual_seed(0), its batch norms' running statistics
    averaged over CALIBRATION generated images (not the test images)."""
    torch.manual_seed(0)
    model = getattr(nets224, cls)()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average of every batch
    pixels = torch.stack([torch.from_numpy(texture(1000 + k)) for k in range(CALIBRATION)]).permute(0, 3, 1, 2)
    x = (pixels / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    model.train()
    with torch.no_grad():
        for batch in x.split(8):
            model(batch)
    return model.state_dict()


def measure(tmp: Path, network: str, n: int, jobs: int) -> dict:
    """Build the report of ``n`` locations and measure it and its site."""
    cls = NETWORKS[network][0]
    names = make_inputs(tmp, cls, n)
    spec = tmp / f"{network}_{n}.yaml"
    spec.write_text(SPEC.format(report=network, cls=cls, n=n, locations=", ".join(names),
                                mean=MEAN, std=STD, layers=", ".join(nets224.INSPECTED[cls])))
    site = tmp / f"site_{network}_{n}"
    docs, log = site / "docs", tmp / f"{network}_{n}.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, peak = run_build(spec, docs, jobs, log)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    summary = log.read_text()
    built = re.search(r"Built .* in ([\d.]+) s", summary)
    report = docs / network
    files = [p for p in report.rglob("*") if p.is_file()]
    page, page_bytes, pictures = page_weights(report)[0]
    t0 = time.perf_counter()
    strict = strict_site(docs, site)
    mkdocs_s = time.perf_counter() - t0
    row = {"network": cls, "n": n, "jobs": min(jobs, n), "wall": wall, "build": float(built[1]) if built else wall,
           "cpu": cpu,
           "peak": peak, "files": len(files), "mb": sum(p.stat().st_size for p in files) / MB,
           "pngs": sum(p.suffix == ".png" for p in files), "page": page, "page_mb": page_bytes / MB,
           "pictures": pictures, "mkdocs": mkdocs_s, "strict": strict, "kinds": file_kinds(files)}
    shutil.rmtree(site)
    return row


def file_kinds(files: list[Path]) -> list[tuple[str, int, float]]:
    """(kind, files, MB) of a report's files, most files first; a kind is a file's name
    without its number (``filter/tile_17.png``: ``filter/tile*.png``) and its folder only
    when that is ``filter``, the per-filter pictures."""
    kinds: dict[str, list[int]] = {}
    for p in files:
        kind = ("filter/" if p.parent.name == "filter" else "") + re.sub(r"[-_]\d+$", "*", p.stem) + p.suffix
        if p.suffix == ".md":
            kind = f"{p.parent.name}/*.md"
        count = kinds.setdefault(kind, [0, 0])
        count[0] += 1
        count[1] += p.stat().st_size
    return sorted(((k, c, b / MB) for k, (c, b) in kinds.items()), key=lambda r: (-r[1], -r[2]))


def print_table(rows: list[dict]) -> None:
    print("| network | locations | jobs | wall s | build s | build s / location | cpu s | peak MiB | files | MB | PNGs "
          "| files / location | heaviest page | its MB (pictures) | mkdocs build --strict s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['network']} | {r['n']} | {r['jobs']} | {r['wall']:.1f} | {r['build']:.1f} | "
              f"{r['build'] / r['n']:.1f} | {r['cpu']:.0f} | {r['peak'] / MIB:.0f} | {r['files']} | {r['mb']:.1f} | {r['pngs']} | "
              f"{r['files'] / r['n']:.0f} | {r['page']} | {r['page_mb']:.2f} ({r['pictures']}) | "
              f"{r['mkdocs']:.1f}{'' if r['strict'] else ' (failed)'} |")


def print_ratios(rows: list[dict]) -> None:
    by_n = {r["n"]: r for r in rows}
    print("seconds per location (build): " + ", ".join(f"{r['build'] / r['n']:.1f} at {r['n']}" for r in rows))
    print("cpu seconds per location (the build's processes): "
          + ", ".join(f"{r['cpu'] / r['n']:.1f} at {r['n']}" for r in rows))
    print("files per location: " + ", ".join(f"{r['files'] / r['n']:.0f} at {r['n']}" for r in rows))
    if rows[0]["network"] == "LCNet":
        one = by_n.get(1)
        if one:
            print(f"target: PP-LCNet, 1 location: peak {one['peak'] / MIB:.0f} MiB = {one['peak'] / 1e9:.2f} GB "
                  f"(<= 1 GB: {'met' if one['peak'] <= 1e9 else 'missed'}; <= 1 GiB: "
                  f"{'met' if one['peak'] <= 2**30 else 'missed'}), {one['files']} files, {one['mb']:.1f} MB")
        return
    if 10 in by_n:
        ten = by_n[10]
        print(f"target: 10 locations x 8 layers: {ten['files']} files (<= 2,000: "
              f"{'met' if ten['files'] <= 2000 else 'missed'}), {ten['mb']:.0f} MB (<= 150: "
              f"{'met' if ten['mb'] <= 150 else 'missed'})")
    else:
        print("target: 10 locations x 8 layers <= 2,000 files and <= 150 MB: not measured (run --locations 10)")
    if 10 in by_n and 40 in by_n:
        ratio = by_n[40]["peak"] / by_n[10]["peak"]
        print(f"target: peak(40) / peak(10) = {ratio:.2f} (<= 1.3: {'met' if ratio <= 1.3 else 'missed'})")
    else:
        print("target: peak(40) / peak(10) <= 1.3: not measured (run --locations 10 40)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", choices=sorted(NETWORKS), default="resnet")
    ap.add_argument("--locations", type=int, nargs="+", help="default: 1 10 40 (resnet), 1 (lcnet)")
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                    help="reportgen build --jobs (default: the cores this process may use, as the build's own default)")
    args = ap.parse_args()
    cls, default = NETWORKS[args.network]
    layers = nets224.INSPECTED[cls]
    print(f"{cls}, 224x224 px, {IMAGES} test images, layers: {', '.join(layers)}; analyses: reportgen's defaults "
          f"(no unit views); --jobs {args.jobs}; cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-resnet-") as tmp:
        for n in sorted(args.locations or default):
            rows.append(measure(Path(tmp), args.network, n, args.jobs))
            r = rows[-1]
            print(f"  {n} locations: {r['wall']:.1f} s, {r['peak'] / MIB:.0f} MiB, {r['files']} files", flush=True)
    print()
    print_table(rows)
    for r in rows:
        print(f"{r['network']}, {r['n']} locations, files by kind: " + ", ".join(
            f"{kind} {count} ({mb:.1f} MB)" for kind, count, mb in r["kinds"][:8]))
    print()
    print_ratios(rows)


if __name__ == "__main__":
    main()
