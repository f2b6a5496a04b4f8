"""Benchmark: a full report build, and grid rendering against a matplotlib baseline.

Run:  python bench/bench_render.py [SPEC] [--baseline-runs N]

1. Times `reportgen build SPEC` end to end (cold, into a temporary docs dir).
2. Renders every filter view and activation grid of the report twice over the same
   arrays: reportgen's numpy tiling + Pillow PNG, and the common matplotlib recipe of one
   figure per grid with one subplot (imshow) per tile, saved as PNG. Per-input-channel
   weight grids are skipped by the baseline: one subplot per (filter, input channel)
   means thousands of axes per figure, and including them would only widen the gap.
Prints a table and the ratio baseline / reportgen on identical work.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reportgen.build import analyse, build, check_layers  # noqa: E402
from reportgen.models import resolve_device  # noqa: E402
from reportgen.render import tiles as T  # noqa: E402
from reportgen.render.colour import encode_png  # noqa: E402
from reportgen.render.views import activation_grid, filter_views  # noqa: E402
from reportgen.spec import load_spec  # noqa: E402


def grids_of(results):
    """(kind, array) for each grid the report draws: weights (N, C, kh, kw) or maps (C, H, W)."""
    jobs = []
    for r in results:
        for lr in r.layers:
            if lr.weight is not None and lr.weight.ndim == 4:
                jobs.append(("filters", lr.weight))
            for maps in lr.maps:
                jobs.append(("activations", maps))
    return jobs


def render_reportgen(jobs) -> int:
    n = 0
    for kind, arr in jobs:
        views = filter_views(arr) if kind == "filters" else {"act": activation_grid(arr)[0]}
        for name, img in views.items():
            if name != "filters_channels":  # the baseline skips these (see module docstring)
                encode_png(img)
                n += 1
    return n


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
                if w.shape[1] == 1:
                    _figure_png(T.per_filter(w[:, 0]), "gray")
                    n += 1
        else:
            order = np.argsort(-arr.reshape(arr.shape[0], -1).mean(axis=1))
            _figure_png(arr[order], "viridis")
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?", default=str(ROOT / "specs" / "towncenter.yaml"))
    ap.add_argument("--baseline-runs", type=int, default=0,
                    help="limit both renderers to the first N runs (0: all)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = build(args.spec, Path(tmp) / "docs", device="cpu", cache_dir=None)  # cold
        t_build = time.perf_counter() - t0

    spec = load_spec(args.spec)
    check_layers(spec)
    results, _ = analyse(spec, resolve_device("cpu"), lambda m: None)
    if args.baseline_runs:
        results = results[: args.baseline_runs]
    jobs = grids_of(results)

    t0 = time.perf_counter()
    n_ours = render_reportgen(jobs)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_base = render_baseline(jobs)
    t_base = time.perf_counter() - t0

    print(f"spec: {args.spec}  ({len(spec.runs)} runs; grids timed over {len(results)} runs)")
    print(f"{'step':<46} {'grids':>6} {'seconds':>9} {'ms/grid':>8}")
    print(f"{'full build (reportgen build, cold)':<46} {result.images:>6} {t_build:>9.2f} {'':>8}")
    print(f"{'grids: reportgen (numpy tiles + Pillow PNG)':<46} {n_ours:>6} {t_ours:>9.2f} "
          f"{1000 * t_ours / n_ours:>8.1f}")
    print(f"{'grids: matplotlib, one figure per grid':<46} {n_base:>6} {t_base:>9.2f} "
          f"{1000 * t_base / n_base:>8.1f}")
    print(f"ratio (matplotlib / reportgen, same grids): {t_base / t_ours:.1f}x")


if __name__ == "__main__":
    main()
