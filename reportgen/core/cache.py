"""A content-addressed cache of build results, safe to delete at any time.

Entries are files ``<root>/<kind>/<key[:2]>/<key>.<ext>``; a key is the SHA-256 of
everything the result depends on (file contents, the spec fields that matter,
reportgen's version), so a changed input simply misses and old entries are never
wrong, only unused. Writes go to a temporary file in the same folder and are then
renamed into place, so an interrupted build never leaves a half-written entry.

Entries are data, never code: anyone who can write the cache folder must not be able
to run anything in a build. An entry is ``MAGIC``, the SHA-256 of the rest, a JSON
tree and the raw bytes of its arrays and byte strings (see ``encode``/``decode``).
Only plain values come back: None, bool, int, float (NaN and inf kept), str, bytes,
lists, tuples, dicts with str keys, numpy arrays and scalars of numeric or bool
dtypes, and dataclasses registered with ``register``. An entry whose digest, magic,
JSON or types do not check out is a miss: it is computed again and replaced.

A cache that cannot be used (its path is a file, it is read-only, the disk is full)
is switched off for the rest of the build with one warning; the cache is optional.

Kinds used by a build: ``layer`` (a run's weights, statistics and maps of one layer),
``gabor`` (fits of one layer's filters), ``pair`` (one similarity of two runs) and
``png`` (a rendered picture).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import struct
import tempfile
from collections import Counter
from dataclasses import fields, is_dataclass
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


# --------------------------------------------------------------------------- entry format

MAGIC = b"RGCACHE1"
EXT = "rge"  # not the old .pkl/.bin: entries written by older versions are never read
HEADER = struct.Struct("<8s32sQ")  # magic, SHA-256 of everything after it, JSON length
_NUMERIC_KINDS = "biufc"  # bool, int, uint, float, complex: nothing that holds objects
_TYPES: dict[str, type] = {}


class CorruptEntry(ValueError):
    """An entry that is not a value this module wrote."""


def register(*classes: type) -> type | None:
    """Allow these dataclasses in cached values (usable as a class decorator).

    Only registered types are ever built from an entry; their fields are stored by
    name, so adding a field simply misses on entries written before.
    """
    for cls in classes:
        if not (isinstance(cls, type) and is_dataclass(cls)):
            raise TypeError(f"only dataclasses can be registered with the cache, not {cls!r}")
        _TYPES[_type_name(cls)] = cls
    return classes[0] if len(classes) == 1 else None


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def encode(value: Any) -> bytes:
    """``value`` as an entry: header, JSON tree, then raw array and byte-string buffers."""
    blobs: list[bytes] = []
    offset = [0]

    def blob(data: bytes) -> list[int]:
        at = offset[0]
        blobs.append(data)
        offset[0] += len(data)
        return [at, len(data)]

    def array(a: np.ndarray) -> list:
        if a.dtype.kind not in _NUMERIC_KINDS or a.dtype.fields is not None:
            raise TypeError(f"the cache stores numeric and bool arrays only, not dtype {a.dtype}")
        # Memory order is kept: BLAS rounds differently on F-ordered arrays, and a cached
        # result must give the very numbers a fresh one gives.
        order = "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"
        return [a.dtype.str, list(a.shape), *blob(a.tobytes(order=order)), bool(a.flags.writeable), order]

    def enc(v: Any) -> Any:
        t = type(v)
        if v is None or t in (bool, int, str):
            return v
        if isinstance(v, np.generic):  # before float: np.float64 is a float subclass
            return {"s": array(np.asarray(v))}
        if t is float:
            return v if np.isfinite(v) else {"f": repr(v)}
        if t is np.ndarray:
            return {"a": array(v)}
        if t is bytes:
            return {"b": blob(v)}
        if t is list:
            return {"l": [enc(x) for x in v]}
        if t is tuple:
            return {"t": [enc(x) for x in v]}
        if t is dict:
            if not all(type(k) is str for k in v):
                raise TypeError("the cache stores dicts with str keys only")
            return {"d": {k: enc(x) for k, x in v.items()}}
        if is_dataclass(v) and _TYPES.get(_type_name(t)) is t:
            return {"c": _type_name(t), "v": {f.name: enc(getattr(v, f.name)) for f in fields(v)}}
        raise TypeError(f"the cache cannot store a {t.__name__}; register dataclasses with reportgen.core.cache.register")

    tree = json.dumps(enc(value), allow_nan=False, separators=(",", ":")).encode()
    rest = [struct.pack("<Q", len(tree)), tree, *blobs]
    h = hashlib.sha256()
    for part in rest:
        h.update(part)
    return b"".join([MAGIC, h.digest(), *rest])


def decode(data: bytes) -> Any:
    """The value of an entry; CorruptEntry if it fails any check (magic, digest, types)."""
    if len(data) < HEADER.size:
        raise CorruptEntry("short entry")
    magic, want, n = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptEntry("not a reportgen cache entry")
    if hashlib.sha256(memoryview(data)[8 + 32:]).digest() != want:
        raise CorruptEntry("digest mismatch")
    start = HEADER.size + n
    if start > len(data):
        raise CorruptEntry("truncated")
    body = memoryview(data)[start:]
    try:
        tree = json.loads(bytes(data[HEADER.size:start]), parse_constant=_no_constant)
        return _dec(tree, body)
    except CorruptEntry:
        raise
    except (ValueError, TypeError, KeyError, IndexError, RecursionError, OverflowError) as exc:
        raise CorruptEntry(f"undecodable entry ({type(exc).__name__})") from None


def _no_constant(name: str) -> None:
    raise CorruptEntry(f"JSON constant {name}")


def _span(body: memoryview, at: Any, n: Any) -> memoryview:
    if type(at) is not int or type(n) is not int or at < 0 or n < 0 or at + n > len(body):
        raise CorruptEntry("buffer out of range")
    return body[at:at + n]


def _array(desc: Any, body: memoryview) -> np.ndarray:
    dstr, shape, at, n, writeable, order = desc
    dt = np.dtype(str(dstr))
    if dt.kind not in _NUMERIC_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise CorruptEntry(f"dtype {dt} not allowed")
    if type(shape) is not list or not all(type(s) is int and s >= 0 for s in shape):
        raise CorruptEntry("bad shape")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count * dt.itemsize != n:
        raise CorruptEntry("array size does not match its shape")
    if order not in ("C", "F"):
        raise CorruptEntry("bad memory order")
    a = np.frombuffer(_span(body, at, n), dtype=dt, count=count).reshape(shape, order=order).copy(order="K")
    if writeable is False:
        a.setflags(write=False)
    return a


def _dec(node: Any, body: memoryview) -> Any:
    if node is None or type(node) in (bool, int, str, float):
        return node
    if type(node) is not dict or not node:
        raise CorruptEntry("unexpected JSON node")
    tag = next(iter(node))
    val = node[tag]
    if tag == "l" and type(val) is list:
        return [_dec(x, body) for x in val]
    if tag == "t" and type(val) is list:
        return tuple(_dec(x, body) for x in val)
    if tag == "d" and type(val) is dict:
        return {k: _dec(x, body) for k, x in val.items()}
    if tag == "a":
        return _array(val, body)
    if tag == "s":
        return _array(val, body)[()]
    if tag == "b" and type(val) is list and len(val) == 2:
        return bytes(_span(body, *val))
    if tag == "f" and val in ("nan", "inf", "-inf"):
        return float(val)
    if tag == "c" and val in _TYPES and type(node.get("v")) is dict:
        cls = _TYPES[val]
        stored = node["v"]
        names = [f.name for f in fields(cls)]
        if sorted(stored) != sorted(names):
            raise CorruptEntry(f"{val}: stored fields differ from the current ones")
        kw = {k: _dec(x, body) for k, x in stored.items()}
        obj = cls(**{f.name: kw[f.name] for f in fields(cls) if f.init})
        for f in fields(cls):
            if not f.init:
                object.__setattr__(obj, f.name, kw[f.name])
        return obj
    raise CorruptEntry(f"unknown node {tag!r}")


# --------------------------------------------------------------------------- the cache

_MISSING = object()


class Cache:
    """Get and put results by key; a disabled cache misses every time and stores nothing."""

    def __init__(self, root: Path | str | None):
        self.root = Path(root) if root is not None else None
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()
        self.warnings: list[str] = []  # at most one: why the cache was switched off
        self._reads = self._writes = self.root is not None

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _path(self, kind: str, key: str) -> Path:
        assert self.root is not None
        return self.root / kind / key[:2] / f"{key}.{EXT}"

    def get(self, kind: str, key: str) -> Any | None:
        """The stored value for ``key``, or None (missing, unreadable or corrupt)."""
        value = self._load(kind, key)
        return None if value is _MISSING else value

    def put(self, kind: str, key: str, value: Any) -> None:
        data = encode(value)  # outside the write guard: an unstorable type is a bug, not the disk's fault
        self._write(kind, key, data)

    def intact(self, kind: str, key: str) -> bool:
        """Whether an entry for ``key`` exists and passes its digest check (read, not decoded,
        not counted as a hit or miss)."""
        if not self._reads:
            return False
        try:
            data = _read_entry(self._path(kind, key))
        except (OSError, CorruptEntry):
            return False
        if len(data) < HEADER.size:
            return False
        magic, want, _ = HEADER.unpack_from(data)
        return magic == MAGIC and hashlib.sha256(memoryview(data)[8 + 32:]).digest() == want

    def get_bytes(self, kind: str, key: str) -> bytes | None:
        value = self._load(kind, key)
        return value if type(value) is bytes else None

    def memo_bytes(self, kind: str, key: str, make: Callable[[], bytes]) -> bytes:
        """The stored bytes for ``key``, or ``make()`` stored under it."""
        data = self.get_bytes(kind, key)
        if data is None:
            data = make()
            self.put(kind, key, bytes(data))
        return data

    def memo(self, kind: str, key: str, make: Callable[[], Any]) -> Any:
        value = self.get(kind, key)
        if value is None:
            value = make()
            self.put(kind, key, value)
        return value

    def _load(self, kind: str, key: str) -> Any:
        if not self._reads:
            self.misses[kind] += 1
            return _MISSING
        path = self._path(kind, key)
        try:
            value = decode(_read_entry(path))
        except FileNotFoundError:
            value = _MISSING
        except CorruptEntry:
            self._drop(path)  # recomputed and replaced by the caller
            value = _MISSING
        except (PermissionError, NotADirectoryError) as exc:
            self._switch_off(exc, reads=True)
            value = _MISSING
        except OSError:  # e.g. a directory planted in an entry's place: a miss
            value = _MISSING
        (self.misses if value is _MISSING else self.hits)[kind] += 1
        return value

    def _write(self, kind: str, key: str, data: bytes) -> None:
        if not self._writes:
            return
        path = self._path(kind, key)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None:
                _unlink_quietly(Path(tmp))
            self._switch_off(exc, reads=isinstance(exc, NotADirectoryError))
        except BaseException:
            if tmp is not None:
                _unlink_quietly(Path(tmp))
            raise

    def _switch_off(self, exc: OSError, reads: bool) -> None:
        self._writes = False
        self._reads = self._reads and not reads
        if not self.warnings:
            reason = exc.strerror or type(exc).__name__
            self.warnings.append(
                f"the cache {self.root} cannot be used ({reason}); building without it. "
                "Fix the folder's permissions or free space, point --cache-dir or $REPORTGEN_CACHE_DIR "
                "at a writable folder, or pass --no-cache")

    def _drop(self, path: Path) -> None:
        if self._writes:
            _unlink_quietly(path)

    def summary(self) -> str:
        hits, total = sum(self.hits.values()), sum(self.hits.values()) + sum(self.misses.values())
        if not self.enabled:
            return "cache off"
        if self.warnings:
            return f"cache unusable, {hits}/{total} hits"
        return f"cache {hits}/{total} hits"


def _read_entry(path: Path) -> bytes:
    """The bytes of a regular file; a planted link, device or FIFO is a corrupt entry.

    O_NOFOLLOW and O_NONBLOCK: a link to /dev/zero must not be read forever, and a
    FIFO must not block the build waiting for a writer.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symbolic link
            raise CorruptEntry("not a regular file") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CorruptEntry("not a regular file")
        return fh.read(st.st_size)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
