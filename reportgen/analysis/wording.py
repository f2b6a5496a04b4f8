"""Small helpers that keep the findings' sentences right: plurals, nouns that fit the
layer type, and trend words that describe the actual sequence. Pure, no I/O."""

from __future__ import annotations

DENSE_TYPES = ("Linear", "LazyLinear", "Bilinear")
STEADY = 0.02  # a step smaller than this does not break a rising or falling run
CHANGE = 0.1  # a sequence whose range is below this is "about the same"


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """'1 run', '2 runs'; ``nouns`` for irregular plurals."""
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"


def is_dense(layer: dict) -> bool:
    """A report.json layer entry of a fully connected layer."""
    return layer.get("type") in DENSE_TYPES or (layer.get("weight_shape") is not None
                                                and len(layer["weight_shape"]) == 2)


def filter_noun(layer: dict) -> str:
    """What one output of the layer's weights is called: conv filters, dense units."""
    return "unit" if is_dense(layer) else "filter"


def channel_noun(layer: dict) -> str:
    """What one output of the layer's activations is called."""
    return "unit" if is_dense(layer) else "channel"


def listing(items: list[str], limit: int = 6) -> str:
    """'a, b and c'; past ``limit`` items, 'a, b, … and 4 more'."""
    if len(items) > limit:
        return ", ".join(items[:limit]) + f" and {len(items) - limit} more"
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def trend_words(values: list[float], names: list[str]) -> str:
    """How a per-stage sequence changes, in words that fit 'the locations' activations …'.

    Steadily falling (no step up of ``STEADY`` or more, a fall of ``CHANGE`` or more) is
    "diverge with depth", steadily rising "converge with depth", a range under ``CHANGE``
    "agree about as much at every stage"; anything else names where they agree least and
    most rather than calling it a trend.
    """
    if len(values) < 2:
        return "cannot show a trend from one stage"
    steps = [b - a for a, b in zip(values, values[1:])]
    span = max(values) - min(values)
    if span < CHANGE:
        return "agree about as much at every stage"
    if all(s < STEADY for s in steps) and values[-1] <= values[0] - CHANGE:
        return "diverge with depth"
    if all(s > -STEADY for s in steps) and values[-1] >= values[0] + CHANGE:
        return "converge with depth"
    lo = min(range(len(values)), key=values.__getitem__)
    hi = max(range(len(values)), key=values.__getitem__)
    return (f"change with depth without a steady trend (least alike at `{names[lo]}`, "
            f"most alike at `{names[hi]}`)")


def finding(severity: str, text: str, location: str | None, layer: str | None, link: str | None,
            value: float, kind: str = "note", locations: list[str] | None = None, **extra) -> dict:
    """One finding as report.json stores it."""
    return {"severity": severity, "kind": kind, "text": text, "location": location,
            "locations": locations if locations is not None else ([location] if location else []),
            "layer": layer, "link": link, "value": float(value), **extra}
