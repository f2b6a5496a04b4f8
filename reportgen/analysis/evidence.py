"""How much evidence a health label rests on, and whether that is enough to state it.

Pure numbers, no I/O (docs/reference/methods.md#filter-health).

A channel's behaviour on images ("never active", "saturated") is a rate over the images
the network will meet: the share of images on which the channel fires at all, or on which
it selects at all. The test images are a sample of them. Positions within one image are
not independent (neighbouring positions see overlapping patches of the same picture), so
the sample size is the number of **images**, never the number of positions.

When a channel did not fire on any of n independent images, the exact one-sided 95% upper
bound on its per-image firing rate p is 1 - 0.05^(1/n) (the "rule of three": about 3/n).
A label is stated only when that bound is at most ``MAX_RATE`` (10%), which takes
``MIN_IMAGES`` = 29 images; with fewer, the page says the channel was silent on these n
images, how far its rate could still go, and how many images would settle it.
"""

from __future__ import annotations

import math

CONFIDENCE = 0.95  # one-sided
MAX_RATE = 0.10  # a label is stated when the rate of the opposite behaviour is bounded below this


def rate_upper_bound(n: int, confidence: float = CONFIDENCE) -> float:
    """Exact one-sided upper confidence bound on a rate observed 0 times in ``n`` trials:
    1 - (1 - confidence)^(1/n) (Clopper-Pearson with no success; about 3/n at 95%). 1 for n = 0."""
    if n <= 0:
        return 1.0
    return 1.0 - (1.0 - confidence) ** (1.0 / n)


def images_needed(rate: float = MAX_RATE, confidence: float = CONFIDENCE) -> int:
    """The fewest images with no exception that bound the exception rate at ``rate``:
    the least n with 1 - (1 - confidence)^(1/n) <= rate (29 for 10% at 95%)."""
    n = math.ceil(math.log(1.0 - confidence) / math.log(1.0 - rate))
    while rate_upper_bound(n, confidence) > rate:  # guard against the logarithms' rounding
        n += 1
    while n > 1 and rate_upper_bound(n - 1, confidence) <= rate:
        n -= 1
    return n


MIN_IMAGES = images_needed()


def image_evidence(n_images: int, positions_per_image: int | None) -> dict:
    """What ``n_images`` test images allow to say about a channel's behaviour, as report.json
    stores it: the counts, the bound on an unseen behaviour's per-image rate, the rule."""
    bound = rate_upper_bound(n_images)
    return {
        "images": int(n_images),
        "positions_per_image": None if positions_per_image is None else int(positions_per_image),
        "confidence": CONFIDENCE,
        "max_rate": MAX_RATE,
        "min_images": MIN_IMAGES,
        "rate_upper_bound": bound,
        "enough": bool(n_images >= MIN_IMAGES),
    }


def duplicate_chance(dim: int, cosine: float) -> float:
    """Probability that two independent, isotropic random directions in ``dim`` dimensions
    have a cosine of at least ``cosine`` (> 0): the cosine's square is Beta(1/2, (dim-1)/2),
    so this is I_{1-c²}((dim-1)/2, 1/2) / 2. With few weights per filter a high cosine
    happens by chance: at dim 9, cos ≥ 0.95 has probability 1.3e-5 per pair; at dim 75, 2e-39."""
    from scipy.special import betainc

    if dim < 2:
        return 0.5
    c = min(max(cosine, 0.0), 1.0)
    return float(0.5 * betainc((dim - 1) / 2.0, 0.5, 1.0 - c * c))


def poisson_tail(k: int, mean: float) -> float:
    """P(X >= k) for X ~ Poisson(mean): the chance of at least k coincidences when ``mean``
    are expected."""
    from scipy.stats import poisson

    if k <= 0:
        return 1.0
    return float(poisson.sf(k - 1, mean))


def distinct(value: float, bound: float, digits: int = 2, percent: bool = False) -> tuple[str, str]:
    """``value`` and ``bound`` printed with the fewest significant digits (at least ``digits``)
    that keep them apart, so a value just above a bound never prints as the bound itself
    (1.011e-4 against 1e-4: '0.01011%' and '0.01%', not '0.01%' twice). ``percent``: as
    percentages."""
    scale = 100.0 if percent else 1.0
    suffix = "%" if percent else ""
    for d in range(digits, 10):
        a, b = f"{value * scale:.{d}g}", f"{bound * scale:.{d}g}"
        if value == bound or a != b:
            return a + suffix, b + suffix
    return f"{value * scale!r}{suffix}", f"{bound * scale!r}{suffix}"
