"""Is a layer trained at all? Its weights against the laws they were drawn from.

Pure numpy/scipy, no I/O. A network nobody here trained comes without its initial
weights, but almost every layer starts from a known law that depends only on the
weight's shape. Training moves weights away from that law (heavier tails, a wider
range); a layer that still follows it has barely learned.

Families (fan_in, fan_out as ``torch.nn.init`` computes them from the weight's shape):

- ``pytorch-default``: kaiming-uniform with a = sqrt(5), PyTorch's default for Conv and
  Linear: U(-b, b), b = 1/sqrt(fan_in);
- ``kaiming-uniform``: U(-b, b), b = sqrt(6/fan_in) (ReLU gain);
- ``kaiming-normal``: N(0, 2/fan_in);
- ``xavier-uniform``: U(-b, b), b = sqrt(6/(fan_in + fan_out));
- ``xavier-normal``: N(0, 2/(fan_in + fan_out)).

A layer *looks like its initialisation* under a family when all of these hold:

- the Kolmogorov-Smirnov distance of its weights to the family's law is within that law's
  sampling noise (the KS critical value at ``alpha`` for this many weights) or below
  ``KS_TOLERANCE``, whichever is larger;
- its excess kurtosis is within ``max(KURTOSIS_TOLERANCE, 2.58 sqrt(24/n))`` of the law's
  (-1.2 for a uniform, 0 for a normal; sqrt(24/n) is the normal law's standard error, wider
  than the uniform's, so the test errs towards "looks like init" only in tiny layers);
- for a uniform law, max |w| stays within its bound (a uniform never exceeds it); for the
  default law within ``MAX_OVER_BOUND`` times it, to admit weights that moved a little.

The kurtosis and range conditions give the test power in small layers, where the KS
limit is wide. Every family is tried; the one at the smallest KS distance among those that
fit is named (small layers may fit several laws of similar scale; all are listed).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

KS_TOLERANCE = 0.02  # a law displaced by at most 2% of its mass still counts as "barely moved"
ALPHA = 0.001  # significance of the KS critical value
KURTOSIS_TOLERANCE = 0.3
KURTOSIS_Z = 2.58  # two-sided 1% of a normal law's sample kurtosis
MAX_OVER_BOUND = 1.5
MIN_WEIGHTS = 500  # below this a trained layer of the right scale passes for a sample of a law
MAX_SAMPLE = 500_000  # larger layers are tested on a fixed random subsample (the test's noise is tiny there)
DEFAULT = "pytorch-default"

# name -> (kind, description, scale from (fan_in, fan_out)): bound of a uniform, sd of a normal
FAMILIES = {
    DEFAULT: ("uniform", "kaiming-uniform, a=√5 (PyTorch's default)", lambda fi, fo: 1 / math.sqrt(fi)),
    "kaiming-uniform": ("uniform", "kaiming-uniform, ReLU gain", lambda fi, fo: math.sqrt(6 / fi)),
    "kaiming-normal": ("normal", "kaiming-normal, ReLU gain", lambda fi, fo: math.sqrt(2 / fi)),
    "xavier-uniform": ("uniform", "xavier-uniform", lambda fi, fo: math.sqrt(6 / (fi + fo))),
    "xavier-normal": ("normal", "xavier-normal", lambda fi, fo: math.sqrt(2 / (fi + fo))),
}
# Excess kurtosis of each kind of law: what an untouched layer shows.
LAW_KURTOSIS = {"uniform": -1.2, "normal": 0.0}


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight shape, as ``torch.nn.init`` computes them.

    (out, in, *kernel) -> (in * prod(kernel), out * prod(kernel)).
    """
    rf = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return int(shape[1]) * rf, int(shape[0]) * rf


def law(family: str, shape: tuple[int, ...]):
    """The frozen scipy distribution of ``family`` for a weight of this shape."""
    kind, _, scale = FAMILIES[family]
    s = scale(*fans(shape))
    return stats.uniform(-s, 2 * s) if kind == "uniform" else stats.norm(0, s)


def ks_limit(n: int, alpha: float = ALPHA) -> float:
    """Largest KS distance still counted as the law itself for ``n`` weights."""
    return max(float(stats.kstwo.ppf(1 - alpha, n)), KS_TOLERANCE)


def init_likeness(w: np.ndarray, alpha: float = ALPHA) -> dict:
    """Compare one layer's weights with each init family. JSON-ready.

    w: (out, in, *kernel) or (out, in) weights. Returns ``fan_in``, ``fan_out``,
    ``weights`` (count tested), ``excess_kurtosis``, ``max_abs_over_bound`` (max |w| over the
    default bound 1/sqrt(fan_in)), ``rms_over_init`` (RMS weight over the default law's RMS,
    b/sqrt(3)), ``families`` ({name: {"law", "description", "ks", "p"}}), ``ks_limit``,
    ``fitting`` (families that fit), ``nearest`` (the family at the smallest KS distance), ``family`` (the family
    the layer still follows, else null), ``looks_like_init`` (bool; null when the layer has
    too few or non-finite weights) and ``verdict`` (a sentence).
    """
    w = np.asarray(w)
    shape = tuple(w.shape)
    base = {"fan_in": None, "fan_out": None, "weights": int(w.size), "excess_kurtosis": None,
            "kurtosis_tolerance": None, "max_abs_over_bound": None, "rms_over_init": None, "families": {},
            "ks_limit": None, "fitting": [], "nearest": None, "family": None, "looks_like_init": None}
    if w.ndim < 2:
        return {**base, "verdict": "not a Conv or Linear weight"}
    fan_in, fan_out = fans(shape)
    base.update(fan_in=fan_in, fan_out=fan_out)
    x = w.astype(np.float64).ravel()
    if not np.isfinite(x).all():
        return {**base, "verdict": "holds NaN or Inf weights"}
    if x.size < MIN_WEIGHTS or fan_in == 0:
        return {**base, "verdict": f"too few weights ({x.size}) to tell"}
    if x.size > MAX_SAMPLE:
        x = np.random.default_rng(0).choice(x, MAX_SAMPLE, replace=False)
    b = FAMILIES[DEFAULT][2](fan_in, fan_out)
    fams = {}
    for name, (kind, desc, scale) in FAMILIES.items():
        s = scale(fan_in, fan_out)
        res = stats.kstest(x, law(name, shape).cdf, method="asymp")
        fams[name] = {"law": (f"U(-{s:.3g}, {s:.3g})" if kind == "uniform" else f"N(0, {s:.3g}²)"),
                      "description": desc, "ks": float(res.statistic), "p": float(res.pvalue)}
    limit = ks_limit(x.size, alpha)
    with np.errstate(all="ignore"):
        kurt = float(stats.kurtosis(x, fisher=True)) if x.std() > 0 else None
    k_tol = max(KURTOSIS_TOLERANCE, KURTOSIS_Z * math.sqrt(24 / x.size))
    peak = float(np.abs(x).max())

    def fits(name: str) -> bool:
        kind, _, scale = FAMILIES[name]
        return (fams[name]["ks"] <= limit and kurt is not None and abs(kurt - LAW_KURTOSIS[kind]) <= k_tol
                and (kind != "uniform" or peak <= _range_margin(name) * scale(fan_in, fan_out)))

    fitting = [n for n in FAMILIES if fits(n)]
    # Small layers may fit several laws of similar scale: name the nearest, list them all.
    family = min(fitting, key=lambda n: fams[n]["ks"], default=None)
    out = {**base, "weights": int(x.size), "excess_kurtosis": kurt, "kurtosis_tolerance": k_tol,
           "max_abs_over_bound": peak / b, "rms_over_init": float(np.sqrt(np.mean(x**2)) / (b / math.sqrt(3))),
           "families": fams, "ks_limit": limit, "fitting": fitting,
           "nearest": min(fams, key=lambda n: fams[n]["ks"]), "family": family, "looks_like_init": family is not None}
    out["verdict"] = verdict(out)
    return out


def _range_margin(family: str) -> float:
    """How far past its bound a uniform law's layer may reach and still count as that law.

    Only the default gets ``MAX_OVER_BOUND``: it is the law a network nobody re-initialised
    starts from, so "moved a little from it" is the under-training this test is for. A
    layer is matched to another family only as drawn (the bound itself, up to rounding):
    with five laws to choose from, a small trained layer of the right scale would otherwise
    pass for one of them.
    """
    return MAX_OVER_BOUND if family == DEFAULT else 1 + 1e-6


def verdict(c: dict) -> str:
    """One sentence with the numbers behind a ``init_likeness`` result."""
    if c["looks_like_init"] is None:
        return c.get("verdict", "not tested")
    k = "–" if c["excess_kurtosis"] is None else f"{c['excess_kurtosis']:+.2f}"
    if c["family"] is not None:
        f = c["families"][c["family"]]
        kind = FAMILIES[c["family"]][0]
        return (f"looks like its initialisation ({f['description']}, {f['law']}): KS distance {f['ks']:.3f} "
                f"(limit {c['ks_limit']:.3f}), excess kurtosis {k} (the law: {LAW_KURTOSIS[kind]:+.1f}), "
                f"max |w| {c['max_abs_over_bound']:.2f}× the default bound 1/√fan-in")
    best = c["nearest"]
    f = c["families"][best]
    return (f"moved away from every init law: nearest {best} at KS distance {f['ks']:.3f} (limit "
            f"{c['ks_limit']:.3f}), excess kurtosis {k}, max |w| {c['max_abs_over_bound']:.2f}× the default bound")
