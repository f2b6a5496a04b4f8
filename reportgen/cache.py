"""A content-addressed cache of build results, safe to delete at any time.

Entries are files ``<root>/<kind>/<key[:2]>/<key>.<ext>``; a key is the SHA-256 of
everything the result depends on (file contents, the spec fields that matter,
reportgen's version), so a changed input simply misses and old entries are never
wrong, only unused. Writes go to a temporary file in the same folder and are then
renamed into place, so an interrupted build never leaves a half-written entry; an
entry that cannot be read counts as a miss and is removed.

Kinds used by a build: ``layer`` (a run's weights, statistics and maps of one layer),
``gabor`` (fits of one layer's filters), ``pair`` (one similarity of two runs) and
``png`` (a rendered picture).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from reportgen import __version__

DEFAULT_DIR = ".reportgen-cache"
ENV_VAR = "REPORTGEN_CACHE_DIR"


def default_dir() -> Path:
    """$REPORTGEN_CACHE_DIR, else .reportgen-cache in the current directory."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def digest(*parts: Any) -> str:
    """SHA-256 of parts: arrays by dtype, shape and bytes; paths by content; the rest as JSON."""
    h = hashlib.sha256(__version__.encode())
    for part in parts:
        _feed(h, part)
    return h.hexdigest()


def _feed(h, part: Any) -> None:
    if isinstance(part, np.ndarray):
        a = np.ascontiguousarray(part)
        h.update(f"nd{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    elif isinstance(part, Path):
        h.update(b"file")
        h.update(file_digest(part).encode())
    elif isinstance(part, (list, tuple)):
        h.update(f"seq{len(part)}".encode())
        for p in part:
            _feed(h, p)
    elif isinstance(part, (bytes, bytearray)):
        h.update(b"bytes")
        h.update(part)
    else:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content (memoised per path, size and mtime within a process)."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _FILE_DIGESTS[memo] = h.hexdigest()
    return _FILE_DIGESTS[memo]


class Cache:
    """Get and put results by key; a disabled cache misses every time and stores nothing."""

    def __init__(self, root: Path | str | None):
        self.root = Path(root) if root is not None else None
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _path(self, kind: str, key: str, ext: str) -> Path:
        assert self.root is not None
        return self.root / kind / key[:2] / f"{key}.{ext}"

    def get(self, kind: str, key: str) -> Any | None:
        """A stored Python value (pickled dict of arrays and numbers), or None."""
        data = self._read(kind, key, "pkl")
        if data is None:
            return None
        try:
            return pickle.loads(data)
        except Exception:
            self._drop(kind, key, "pkl")
            self.hits[kind] -= 1
            self.misses[kind] += 1
            return None

    def put(self, kind: str, key: str, value: Any) -> None:
        buf = io.BytesIO()
        pickle.dump(value, buf, protocol=pickle.HIGHEST_PROTOCOL)
        self._write(kind, key, "pkl", buf.getvalue())

    def get_bytes(self, kind: str, key: str) -> bytes | None:
        return self._read(kind, key, "bin")

    def memo_bytes(self, kind: str, key: str, make: Callable[[], bytes]) -> bytes:
        """The stored bytes for ``key``, or ``make()`` stored under it."""
        data = self._read(kind, key, "bin")
        if data is None:
            data = make()
            self._write(kind, key, "bin", data)
        return data

    def memo(self, kind: str, key: str, make: Callable[[], Any]) -> Any:
        value = self.get(kind, key)
        if value is None:
            value = make()
            self.put(kind, key, value)
        return value

    def _read(self, kind: str, key: str, ext: str) -> bytes | None:
        if self.root is None:
            self.misses[kind] += 1
            return None
        try:
            data = self._path(kind, key, ext).read_bytes()
        except OSError:
            self.misses[kind] += 1
            return None
        self.hits[kind] += 1
        return data

    def _write(self, kind: str, key: str, ext: str, data: bytes) -> None:
        if self.root is None:
            return
        path = self._path(kind, key, ext)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _drop(self, kind: str, key: str, ext: str) -> None:
        if self.root is not None:
            self._path(kind, key, ext).unlink(missing_ok=True)

    def summary(self) -> str:
        hits, total = sum(self.hits.values()), sum(self.hits.values()) + sum(self.misses.values())
        if not self.enabled:
            return "cache off"
        return f"cache {hits}/{total} hits"
