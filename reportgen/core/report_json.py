"""report.json: the machine-readable twin of the pages (docs/reference/report-json.md)."""

from __future__ import annotations

import json
import math
from typing import Any

SCHEMA_VERSION = 2


def to_json(report: dict) -> str:
    """Serialise with stable key order; NaN/Inf become null (JSON has neither).

    Compact, one top-level key per line: indenting everything would switch json to its
    pure-Python encoder, several times slower on reports of many locations.
    """
    lines = [f" {json.dumps(k)}: {_dumps(v, top=True)}" for k, v in report.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _dumps(v: Any, top: bool = False) -> str:
    """``v`` as compact JSON, NaN and infinities as null. Most values have none, so they are
    dumped as they are; only one that has is copied with them made None (``_clean``): a copy
    of the whole report cost as much memory again as the report (hundreds of MB at 200
    locations). A top-level list is dumped item by item, so a copy is of one item at most."""
    if top and isinstance(v, (list, tuple)):
        return "[" + ",".join(_dumps(x) for x in v) + "]"
    try:
        return json.dumps(v, separators=(",", ":"), allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere in it
        return json.dumps(_clean(v), separators=(",", ":"), allow_nan=False)


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
