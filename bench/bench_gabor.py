"""Benchmark Gabor fitting: speed per filter and Gabor-vs-noise separation.

Run from the repository root:

    /work/venv/bin/python bench/bench_gabor.py            # 64 filters per layer
    /work/venv/bin/python bench/bench_gabor.py --filters 16 --seed 1

For each kernel size (5x5, 7x7, 11x11) two RGB layers of shape (filters, 3, k, k)
go through ``gabor_scores`` (which includes the rank-1 colour split):

* "gabor": random Gabors (orientation, frequency, phase, width, aspect, centre)
  times a random colour vector, plus 10 % white noise, like clean first-layer
  filters of a trained CNN;
* "noise": white noise, the negative control (and the slowest case: fits of
  noise run to the iteration cap).

The table gives total and per-filter wall time and the mean score; the ratio
line is mean score (gabor) / mean score (noise). The last table times one report's
worth of 5x5 fits in a single call: 704 filters (10 locations x 64 + a 64-filter
reference), half Gabors and half noise, then all noise (the slowest case), each
against the budget of 1.5 s. Single-threaded numpy is recommended for stable numbers,
e.g. prefix OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from reportgen.analysis.gabor import gabor, gabor_scores

SIZES = (5, 7, 11)
REPORT_BUDGET_S = 1.5  # one report's Gabor fits (704 5x5 filters), 2 CPU cores


def _gabor_layer(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3, size, size) colour Gabors with 10 % additive noise."""
    out = np.empty((n, 3, size, size))
    c = (size - 1) / 2.0
    for i in range(n):
        g = gabor(
            (size, size),
            theta=rng.uniform(0, np.pi),
            freq=rng.uniform(0.1, 0.4),
            phase=rng.uniform(-np.pi, np.pi),
            sigma=rng.uniform(0.2, 0.35) * size,
            gamma=rng.uniform(0.6, 1.5),
            x0=c + rng.uniform(-0.5, 0.5),
            y0=c + rng.uniform(-0.5, 0.5),
        )
        g = g / g.std() + 0.1 * rng.normal(size=g.shape)
        colour = rng.normal(size=3)
        out[i] = 0.05 * colour[:, None, None] * g
    return out


def _time(layer: np.ndarray) -> tuple[float, float]:
    """(seconds, mean score) for one gabor_scores call."""
    t0 = time.perf_counter()
    fits = gabor_scores(layer)
    seconds = time.perf_counter() - t0
    return seconds, float(np.nanmean([f.score for f in fits]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filters", type=int, default=64, help="filters per layer (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    print(f"{'size':>6} {'kind':>6} {'filters':>8} {'total s':>8} {'ms/filter':>10} {'mean score':>11}")
    ratios = []
    for size in SIZES:
        layers = {
            "gabor": _gabor_layer(args.filters, size, rng),
            "noise": rng.normal(size=(args.filters, 3, size, size)),
        }
        means = {}
        for kind, layer in layers.items():
            seconds, means[kind] = _time(layer)
            ms = 1e3 * seconds / args.filters
            label = f"{size}x{size}"
            print(f"{label:>6} {kind:>6} {args.filters:>8} {seconds:>8.3f} {ms:>10.2f} {means[kind]:>11.3f}")
        ratios.append((size, means["gabor"], means["noise"]))
    for size, g, n in ratios:
        ratio = g / n if n > 0 else float("inf")
        print(f"ratio {size}x{size}: mean score gabor {g:.3f} / noise {n:.3f} = {ratio:.1f}")

    # One report's worth of 5x5 fits in a single call (10 locations x 64 + a 64-filter
    # reference): a realistic mix, and all noise, the slowest case (fits of noise run to
    # the iteration cap). Budget 1.5 s on 2 CPU cores; the CPU seconds are steadier on a
    # busy machine.
    n_report = 10 * 64 + 64
    mixed = np.concatenate([_gabor_layer(n_report // 2, 5, rng), rng.normal(size=(n_report - n_report // 2, 3, 5, 5))])
    noise = np.random.default_rng(12).normal(size=(n_report, 3, 5, 5))
    print(f"{'report batch 5x5':<28} {'filters':>8} {'wall s':>8} {'cpu s':>7} {'ms/filter':>10} {'mean score':>11} "
          f"{'of budget':>10}")
    for label, layer in (("half Gabors, half noise", mixed), ("all noise (slowest)", noise)):
        cpu0 = time.process_time()
        seconds, mean = _time(layer)
        cpu = time.process_time() - cpu0
        print(f"{label:<28} {n_report:>8} {seconds:>8.3f} {cpu:>7.3f} {1e3 * seconds / n_report:>10.2f} "
              f"{mean:>11.3f} {seconds / REPORT_BUDGET_S:>10.2f}")

if __name__ == "__main__":
    main()
