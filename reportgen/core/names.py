"""Module names as file names, HTML ids and Markdown text.

Layer names are ``named_modules()`` names and may hold anything a ``ModuleDict`` key
may: ``/`` and ``:`` (ONNX graphs converted to torch), spaces, ``<b>``, non-ASCII
letters. Pages and pictures are stored under a *slug* of the name; headings and
tables show the name itself, escaped. Pure functions, no IO.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata

# Names made only of these characters are used unchanged, so ordinary dotted names
# (``features.0``) keep their familiar paths.
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_.-]+")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}#|!~])")


def slug(name: str) -> str:
    """A file-name-safe, unique stand-in for ``name``.

    Safe names are returned as they are. Any other name becomes its ASCII letters,
    digits, ``_ . -`` (other runs become ``-``) followed by ``~`` and 8 hex digits of
    its SHA-1: ``~`` never occurs in a safe name, so a rewritten name cannot collide
    with a safe one, and two rewritten names collide only if their hashes do.

    >>> slug("features.0"), slug("model/0/conv/Conv")
    ('features.0', 'model-0-conv-Conv~04baa3a9')
    """
    if _SAFE.match(name):
        return name
    ascii_only = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    base = _UNSAFE_RUN.sub("-", ascii_only).strip("-.")[:60] or "layer"
    return f"{base}~{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"


def anchor_id(name: str) -> str:
    """An HTML id for ``name``: letters, digits and ``-`` only (``features.0`` -> ``features-0``)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", slug(name))


def md_escape(text: object) -> str:
    """Text shown literally in Markdown: HTML and Markdown syntax are neutralised."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))


def code(name: object) -> str:
    """``name`` as inline code that survives Markdown tables, HTML and backticks.

    A code span already shows ``<b>`` literally; a backtick or ``|`` (which would end
    the span or split a table cell) falls back to ``<code>`` around escaped text.
    """
    text = str(name)
    if any(c in text for c in "`|[]") or "\n" in text or not text.strip():
        return f"<code>{md_escape(text)}</code>"
    return f"`{text}`"
