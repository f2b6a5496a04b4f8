"""The only code that writes a report to disk.

A build collects every file in memory-backed ``ReportFiles``, then ``publish``
writes them into a hidden staging directory beside the target and swaps it into
place with two renames. A failed or interrupted build removes its staging
directory and leaves the previous report as it was. A lock file makes a second
build of the same report refuse cleanly instead of racing the first.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from reportgen.errors import BuildLockedError, ReportgenError


class ReportFiles:
    """Files of one report by relative POSIX path, added once each."""

    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}

    def add(self, rel: str, content: bytes | str) -> str:
        if rel in self._files:
            raise ValueError(f"file written twice: {rel}")
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise ValueError(f"file outside the report: {rel}")
        self._files[rel] = content.encode("utf-8") if isinstance(content, str) else content
        return rel

    def __contains__(self, rel: str) -> bool:
        return rel in self._files

    def items(self):
        return sorted(self._files.items())

    def __len__(self) -> int:
        return len(self._files)

    def count(self, suffix: str) -> int:
        return sum(1 for k in self._files if k.endswith(suffix))


def report_dir(docs_dir: Path, slug: str) -> Path:
    """``docs_dir/slug``, refusing anything that would land outside ``docs_dir``."""
    root = docs_dir.resolve()
    target = (root / slug).resolve()
    if target.parent != root or slug.startswith("."):
        raise ReportgenError(f"report slug '{slug}' would write outside {docs_dir}; use a plain name")
    return target


@contextmanager
def build_lock(docs_dir: Path, slug: str, wait: float = 0.0) -> Iterator[None]:
    """Hold ``docs_dir/.slug.lock`` for the whole build; refuse if another build has it."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(docs_dir / f".{slug}.lock"))
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise BuildLockedError(
            f"another build of report '{slug}' is running (lock {docs_dir / ('.' + slug + '.lock')}); "
            "wait for it to finish and build again"
        ) from None
    try:
        _clean_leftovers(docs_dir, slug)
        yield
    finally:
        lock.release()


def _clean_leftovers(docs_dir: Path, slug: str) -> None:
    # Staging or old directories left by a build that was killed outright (SIGKILL).
    for p in docs_dir.glob(f".{slug}.staging-*"):
        shutil.rmtree(p, ignore_errors=True)
    target = docs_dir / slug
    for p in sorted(docs_dir.glob(f".{slug}.old-*")):
        if not target.exists():
            p.rename(target)  # a swap was cut between its two renames: restore
        else:
            shutil.rmtree(p, ignore_errors=True)


def publish(files: ReportFiles, docs_dir: Path, slug: str) -> Path:
    """Write ``files`` to ``docs_dir/slug`` atomically; return that directory."""
    target = report_dir(docs_dir, slug)
    staging = Path(tempfile.mkdtemp(prefix=f".{slug}.staging-", dir=docs_dir))
    old: Path | None = None
    try:
        for rel, data in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{slug}.old-", dir=docs_dir))
            os.rmdir(old)
            target.rename(old)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.exists() and old is not None and old.exists():
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
