"""Small helpers that keep the findings' sentences right: plurals and nouns that fit the
layer type. Pure, no I/O."""

from __future__ import annotations

from reportgen.core.names import anchor_id

DENSE_TYPES = ("Linear", "LazyLinear", "Bilinear")


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


def finding(severity: str, text: str, location: str | None, layer: str | None, link: str | None,
            value: float, kind: str = "note", locations: list[str] | None = None, **extra) -> dict:
    """One finding as report.json stores it."""
    return {"severity": severity, "kind": kind, "text": text, "location": location,
            "locations": locations if locations is not None else ([location] if location else []),
            "layer": layer, "link": link, "value": float(value), **extra}


def anchor(layer: str) -> str:
    """HTML id of a layer's section on a location page."""
    return "layer-" + anchor_id(layer)

