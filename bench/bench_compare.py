"""Benchmark: what the cross-location comparison adds to a build.

Run:  python bench/bench_compare.py [SPEC] [--repeat N]

Builds SPEC twice per repeat into temporary docs directories, cold (no cache), alternating:
once with `analyses.compare`, `analyses.gabor` and `reference` switched off, once with them
as the spec says; unit views are off in both.
Prints the best time of each, the split of the comparison step, and the ratio
(with / without). Issue target: the comparison adds at most a third (ratio <= 1.33).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reportgen.build import build  # noqa: E402
from reportgen.reduce import compare as comparison  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?", default=str(ROOT / "specs" / "towncenter.yaml"))
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    spec = Path(args.spec)
    data = yaml.safe_load(spec.read_text())
    # Unit views off in both builds: they would add the same time to both and flatter the ratio.
    data.setdefault("analyses", {}).pop("units", None)
    full = spec.parent / f".bench-{spec.stem}-compare.yaml"
    full.write_text(yaml.safe_dump(data, sort_keys=False))
    data.pop("reference", None)
    data["analyses"]["compare"] = {"enabled": False}
    data["analyses"]["gabor"] = {"enabled": False}
    # Same folder as the original, so its relative paths still resolve.
    plain = spec.parent / f".bench-{spec.stem}-nocompare.yaml"
    plain.write_text(yaml.safe_dump(data, sort_keys=False))

    step = {"t": 0.0}
    real = comparison.run_comparisons

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            step["t"] += time.perf_counter() - t0

    comparison.run_comparisons = timed
    import reportgen.build as b
    b.run_comparisons = timed
    times = {"without": [], "with": []}
    steps = []
    try:
        for _ in range(args.repeat):
            for name, path in (("without", plain), ("with", full)):
                step["t"] = 0.0
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.perf_counter()
                    res = build(path, Path(tmp) / "docs", device="cpu", cache_dir=None)  # cold
                    times[name].append(time.perf_counter() - t0)
                if name == "with":
                    steps.append(step["t"])
                    images = res.images
    finally:
        plain.unlink()
        full.unlink()
    best_without, best_with = min(times["without"]), min(times["with"])
    print(f"spec: {spec}  (best of {args.repeat})")
    print(f"{'build':<52} {'seconds':>8}")
    print(f"{'without comparison (no compare, gabor, reference)':<52} {best_without:>8.2f}")
    print(f"{'with comparison (as the spec says)':<52} {best_with:>8.2f}")
    print(f"{'  of which the comparison step (matching, CKA, Gabor)':<52} {min(steps):>8.2f}")
    print(f"{'  images written':<52} {images:>8d}")
    print(f"ratio with / without: {best_with / best_without:.2f} (target <= 1.33)")


if __name__ == "__main__":
    main()
