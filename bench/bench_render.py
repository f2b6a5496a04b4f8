"""Benchmark: drawing the report's grids, against matplotlib and against PNG encoding alone.

Run from the repository root:

    python bench/bench_render.py              # all ten TownCentre locations
    python bench/bench_render.py --runs 2     # quicker: the first two

The arrays are the TownCentre example's own: each location's conv1..conv4 weights from
its checkpoint and the post-ReLU feature maps of its three test frames (a plain torch
forward of SceneNet, nothing of reportgen's pipeline). Over the same arrays it times:

1. reportgen's path: the filter views and activation grids (numpy tiling) and their PNG
   bytes (``encode_png``), as a build draws them;
2. the same path's PNG encoding alone, on the finished pixels: the floor for this path
   (the ratio says how close the grid path is to it);
3. Pillow's PNG encoder (level 6, its default filters) on the same pixels, for reference;
4. the common matplotlib recipe: one figure per grid with one subplot (imshow) per tile,
   saved as PNG. Per-input-channel weight grids are left out of (1)-(4): one subplot per
   (filter, input channel) means thousands of axes per figure.

Times are CPU seconds of this process (``time.process_time``), steadier than wall time on
a busy machine; run with OMP_NUM_THREADS=1 for single-core numbers. Target (issue 12):
matplotlib / reportgen >= 50x per grid.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples" / "towncenter"))

from model import SceneNet  # noqa: E402

from reportgen.render import tiles as T  # noqa: E402
from reportgen.render.colour import encode_png  # noqa: E402
from reportgen.render.views import activation_grid, filter_views  # noqa: E402

EXAMPLE = ROOT / "examples" / "towncenter"
LAYERS = ("conv1", "conv2", "conv3", "conv4")
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
TARGET = 50.0


def towncenter_arrays(n_runs: int) -> list[tuple[str, np.ndarray]]:
    """(kind, array) per grid: ("filters", (N, C, kh, kw)) or ("activations", (C, H, W))."""
    jobs = []
    for ckpt in sorted((EXAMPLE / "checkpoints").glob("loc*.pt"))[:n_runs]:
        model = SceneNet(width=64, keypoints=5)
        model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
        model.eval()
        frames = sorted((EXAMPLE / "frames" / ckpt.stem).glob("*.png"))[:3]
        pixels = np.stack([np.asarray(Image.open(f).convert("RGB").resize((128, 96), Image.Resampling.BILINEAR))
                           for f in frames]) / 255.0
        x = torch.from_numpy(((pixels - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32))
        maps = {}
        hooks = [getattr(model, name).register_forward_hook(
            lambda mod, args, out, name=name: maps.__setitem__(name, torch.relu(out).numpy()))
            for name in LAYERS]
        with torch.no_grad():
            model(x)
        for h in hooks:
            h.remove()
        for name in LAYERS:
            jobs.append(("filters", getattr(model, name).weight.detach().numpy().astype(np.float64)))
            jobs += [("activations", m.astype(np.float64)) for m in maps[name]]
    return jobs


def draw_reportgen(jobs) -> list[np.ndarray]:
    """The pictures a build draws from these arrays (per-input-channel grids left out)."""
    out = []
    for kind, arr in jobs:
        views = filter_views(arr) if kind == "filters" else {"act": activation_grid(arr)[0]}
        out += [img for name, img in views.items() if name != "filters_channels"]
    return out


def pillow_png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _figure_png(tiles: np.ndarray, cmap: str | None) -> bytes:
    """The common recipe: a figure, one subplot per tile, imshow, savefig."""
    n = len(tiles)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(cols * 0.6, rows * 0.6))
    FigureCanvasAgg(fig)
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(tiles[i], cmap=cmap, interpolation="nearest")
        ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def render_baseline(jobs) -> int:
    n = 0
    for kind, arr in jobs:
        if kind == "filters":
            w = arr.astype(np.float64)
            if w.shape[1] == 3:
                _figure_png(np.moveaxis(T.per_layer(w), 1, -1), None)
                _figure_png(np.moveaxis(T.per_filter(w), 1, -1), None)
                n += 2
            else:
                _figure_png(T.per_layer(w.mean(axis=1)), "gray")
                _figure_png(np.sqrt((w ** 2).sum(axis=1)), "gray")
                n += 2
        else:
            order = np.argsort(-arr.reshape(arr.shape[0], -1).mean(axis=1))
            _figure_png(arr[order], "viridis")
            n += 1
    return n


def timed(fn, *args):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - c0, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="locations to take arrays from (default: all 10)")
    args = ap.parse_args()
    jobs = towncenter_arrays(args.runs)
    draw_reportgen(jobs[:4])  # warm-up: fonts, lookup tables

    pictures, cpu_draw, wall_draw = timed(draw_reportgen, jobs)
    pngs, cpu_enc, wall_enc = timed(lambda: [encode_png(img) for img in pictures])
    pil, cpu_pil, wall_pil = timed(lambda: [pillow_png(img) for img in pictures])
    n_base, cpu_base, wall_base = timed(render_baseline, jobs)
    n = len(pictures)
    assert n == n_base, (n, n_base)
    cpu_ours, wall_ours = cpu_draw + cpu_enc, wall_draw + wall_enc
    mpix = sum(img.shape[0] * img.shape[1] for img in pictures) / 1e6

    print(f"TownCentre arrays of {args.runs} location(s): {n} grids, {mpix:.1f} Mpx in all; "
          f"reportgen PNGs {sum(map(len, pngs)) / 2**20:.1f} MiB, Pillow level 6 {sum(map(len, pil)) / 2**20:.1f} MiB")
    print(f"{'step':<52} {'grids':>6} {'cpu s':>7} {'wall s':>7} {'cpu ms/grid':>12}")
    rows = [("reportgen: compose (numpy) + encode_png", cpu_ours, wall_ours),
            ("  of which composing the pixels", cpu_draw, wall_draw),
            ("  of which encode_png alone (same pixels)", cpu_enc, wall_enc),
            ("Pillow PNG, level 6 (same pixels, reference)", cpu_pil, wall_pil),
            ("matplotlib: one figure per grid, subplot per tile", cpu_base, wall_base)]
    for label, cpu, wall in rows:
        print(f"{label:<52} {n:>6} {cpu:>7.2f} {wall:>7.2f} {1000 * cpu / n:>12.2f}")
    ratio = cpu_base / cpu_ours
    print(f"ratio matplotlib / reportgen (CPU, same grids): {ratio:.1f}x "
          f"(target >= {TARGET:.0f}x: {'met' if ratio >= TARGET else 'missed'})")
    print(f"grid path / PNG encoding alone: {cpu_ours / cpu_enc:.2f}x (1.00 = encoding is all the cost); "
          f"encode_png is {cpu_pil / cpu_enc:.1f}x faster than Pillow level 6 on these pixels")


if __name__ == "__main__":
    main()
