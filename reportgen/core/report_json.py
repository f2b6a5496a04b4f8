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
    clean = _clean(report)
    lines = [f" {json.dumps(k)}: {json.dumps(v, separators=(',', ':'), allow_nan=False)}" for k, v in clean.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
