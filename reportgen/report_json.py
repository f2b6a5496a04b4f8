"""report.json: the machine-readable twin of the pages (docs/reference/report-json.md)."""

from __future__ import annotations

import json
import math
from typing import Any

SCHEMA_VERSION = 1


def to_json(report: dict) -> str:
    """Serialise with stable key order; NaN/Inf become null (JSON has neither)."""
    return json.dumps(_clean(report), indent=1, sort_keys=False, allow_nan=False) + "\n"


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
