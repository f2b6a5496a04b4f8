"""Benchmark the batched ablation and the bootstrap against plain loops and a baseline revision.

Run from the repository root:

    python bench/bench_batched.py                    # baseline: the code at git revision 'main'
    python bench/bench_batched.py --baseline HEAD~3 --repeat 5

Ablation (``reportgen.run.ablation.ablate_units``): SceneNet of the towncenter example
(loc01), 9 seeded random images of 96x128 (the example's per-run test images), every unit
of conv1 (64) and conv4 (32), on one thread as the build runs it:

* loop: one forward pass of the whole model per unit, a hook zeroing the unit;
* baseline: ``ablate_units`` of the baseline revision (its module loaded from git);
* batched: ``ablate_units`` as it is now (units per pass from the memory budget).

Bootstrap (``reportgen.analysis.uncertainty``): 5 runs' features of 64 channels on 6 shared
images x 400 positions (the example's 4096 positions per layer split over its shared
images, rounded), 200 resamples, every pair (10):

* loop: one resample at a time, its rows gathered, Pearson r, matching and CKA from them;
* baseline / batched: ``resample_counts`` + ``BootRun.pair`` of the baseline revision / now.

Times are the best of ``--repeat``; ratios are loop / x and baseline / batched; the last
column is the largest difference from the loop's numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_maximise import load_model

from reportgen.analysis import uncertainty
from reportgen.core.determinism import one_thread
from reportgen.run import ablation


def at_revision(rev: str, path: str, name: str):
    """The module at ``path`` as it was at git revision ``rev`` (its imports resolve to now)."""
    text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(text)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def ablation_loop(model, layer: str, x: torch.Tensor, units: list[int]) -> np.ndarray:
    """One forward per unit, the whole model, a hook zeroing the unit."""
    with torch.no_grad(), one_thread():
        base = {k: v.double().reshape(len(x), -1) for k, v in ablation.output_heads(model(x)).items()}
        rows = []
        for u in units:
            with ablation.zeroed(model, layer, [u], group=len(x)):
                out = ablation.output_heads(model(x))
            rows.append([((out[k].double().reshape(len(x), -1) - b).norm(dim=1) / b.norm(dim=1)).mean().item()
                         for k, b in base.items()])
    return np.array(rows)


def bootstrap_loop(xa: np.ndarray, xb: np.ndarray, units: np.ndarray, counts: np.ndarray):
    """One resample at a time from its gathered rows."""
    act, cka = [], []
    rows_of = [np.flatnonzero(units == u) for u in range(counts.shape[1])]
    for c in counts:
        rows = np.concatenate([np.repeat(rows_of[u], n) for u, n in enumerate(c)])
        a, b = xa[rows] - xa[rows].mean(0), xb[rows] - xb[rows].mean(0)
        ca, cb = np.ptp(xa[rows], axis=0) == 0, np.ptp(xb[rows], axis=0) == 0
        sa, sb = np.sqrt((a * a).sum(0)), np.sqrt((b * b).sum(0))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.clip((a.T @ b) / np.outer(sa, sb), -1, 1)
        r[ca[:, None] | cb[None, :]] = 0.0
        r[ca[:, None] & cb[None, :]] = 1.0
        ri, ci = linear_sum_assignment(r, maximize=True)
        keep = ~(ca[ri] & cb[ci])
        act.append(r[ri, ci][keep].mean() if keep.any() else 1.0)
        cka.append(np.linalg.norm(a.T @ b) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)))
    return np.array(act), np.array(cka)


def row(name: str, t: float, loop: float, base: float | None, diff: float) -> str:
    vs_base = f"{base / t:6.2f}" if base else "      "
    return f"  {name:<22} {t:8.3f} s {loop / t:8.2f} {vs_base}   {diff:.1e}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="main", help="git revision of the code compared with")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=("ablation", "bootstrap"), help="run one of the two benchmarks")
    args = ap.parse_args()
    old_ablation = at_revision(args.baseline, "reportgen/run/ablation.py", "_old_ablation")
    old_uncertainty = at_revision(args.baseline, "reportgen/analysis/uncertainty.py", "_old_uncertainty")
    print(f"torch threads {torch.get_num_threads()}, baseline {args.baseline}, best of {args.repeat}")
    header = f"  {'':<22} {'time':>10} {'loop/x':>8} {'base/x':>6}   max |diff| from loop"

    if args.only != "bootstrap":
        bench_ablation(old_ablation, args.repeat, header)
    if args.only != "ablation":
        bench_bootstrap(old_uncertainty, args.repeat, header)


def bench_ablation(old_ablation, repeat: int, header: str) -> None:
    model = load_model("cpu")
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(9, 3, 96, 128)).astype(np.float32))
    for layer, n_units in (("conv1", 64), ("conv4", 32)):
        units = list(range(n_units))
        t_loop, ref = best(lambda layer=layer, units=units: ablation_loop(model, layer, x, units), repeat)
        t_old, old = best(lambda layer=layer, units=units: old_ablation.ablate_units(model, layer, x, units).effect, repeat)
        t_new, new = best(lambda layer=layer, units=units: ablation.ablate_units(model, layer, x, units).effect, repeat)
        print(f"ablation {layer}: {n_units} units, 9 images\n{header}")
        print(row("loop (1 unit/forward)", t_loop, t_loop, None, 0.0))
        print(row("baseline", t_old, t_loop, None, float(np.abs(old - ref).max())))
        print(row("batched", t_new, t_loop, t_old, float(np.abs(new - ref).max())))



def bench_bootstrap(old_uncertainty, repeat: int, header: str) -> None:
    rng = np.random.default_rng(0)
    images = np.repeat(np.arange(6), 400)
    z = rng.normal(size=(len(images), 64))
    feats = [np.maximum(z @ rng.normal(size=(64, 64)) * 0.3 + rng.normal(size=z.shape), 0) for _ in range(5)]
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]

    def run(mod):
        units, counts = mod.resample_counts(images, 200)
        runs = [mod.BootRun(f, units, counts) for f in feats]
        return [runs[i].pair(runs[j]) for i, j in pairs]

    units, counts = uncertainty.resample_counts(images, 200)
    t_loop, ref = best(lambda: [bootstrap_loop(feats[i], feats[j], units, counts) for i, j in pairs[:1]], 1)
    t_loop *= len(pairs)  # one pair timed (a resample costs ~50 ms), times the pairs
    t_old, old = best(lambda: run(old_uncertainty), repeat)
    t_new, new = best(lambda: run(uncertainty), repeat)
    t_cnt_old, _ = best(lambda: old_uncertainty.resample_counts(images, 200), repeat)
    t_cnt_new, _ = best(lambda: uncertainty.resample_counts(images, 200), repeat)

    def diff(res):
        return max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for p, q in zip(res, ref) for a, b in zip(p, q))

    print(f"bootstrap: 5 runs x 64 channels, 6 images x 400 positions, 200 resamples, 10 pairs\n{header}")
    print(row("loop (1 resample)*", t_loop, t_loop, None, 0.0))
    print(row("baseline", t_old, t_loop, None, diff(old)))
    print(row("batched", t_new, t_loop, t_old, diff(new)))
    print("  * one pair timed, times 10; differences over that pair")
    print(f"  of which resample_counts: baseline {t_cnt_old * 1e3:.1f} ms, now {t_cnt_new * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
