"""``reportgen schema``: the spec's JSON Schema, for editor completion and checking
(docs/reference/spec.md says how to point an editor at it)."""

from __future__ import annotations


def schema_text() -> str:
    """The JSON Schema of a report spec, as text."""
    from reportgen.load.spec import json_schema

    return json_schema()
