"""Cache keys of pictures: a digest of what a picture is drawn from and of the code that draws it.

A picture's inputs alone do not say which pixels or bytes it has: a change to a colour map,
a layout or the PNG encoder draws the same inputs differently. So every picture key also
digests the source of this package (reportgen.render), read once per process: a changed
renderer redraws its pictures, while the other cached results (layers, comparisons, unit
views) stay valid.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from reportgen.core.cache import digest


@functools.cache
def render_code() -> str:
    """SHA-256 of every Python file of reportgen.render, by relative path and content."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def picture_key(*parts: Any) -> str:
    """The cache key of a picture drawn from ``parts`` (see reportgen.core.cache.digest)."""
    return digest("picture", render_code(), *parts)
