"""report.json's serialisation: compact, one top-level key per line, NaN and infinities as null."""

from __future__ import annotations

import json
import math

from reportgen.core.report_json import to_json


def _nulls(v):
    """A hand-written reference: every non-finite float made None, tuples made lists."""
    if isinstance(v, dict):
        return {k: _nulls(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_nulls(x) for x in v]
    return None if isinstance(v, float) and not math.isfinite(v) else v


def test_non_finite_numbers_become_null_wherever_they_are_and_the_rest_is_unchanged():
    report = {
        "runs": [{"key": "a", "filters": [{"l2_norm": 1.5, "gabor_score": float("nan")}]}, {"key": "NaN"}],
        "comparisons": [{"weight_z": [[float("inf"), 2.0], [-float("inf"), 1.0]], "pairs": (1, 2)}],
        "title": "Infinity and NaN in a string stay text",
        "empty": [],
        "thresholds": {"dead": 0.01},
    }
    text = to_json(report)
    assert json.loads(text) == _nulls(report)
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and len(lines) == len(report) + 2  # one key per line
    assert lines[3] == ' "title": "Infinity and NaN in a string stay text",'
    assert "NaN," not in text.replace('"NaN"', "") and "Infinity" not in text.replace("Infinity and", "")
    assert lines[1] == ' "runs": [{"key":"a","filters":[{"l2_norm":1.5,"gabor_score":null}]},{"key":"NaN"}],'
