"""The only code that writes a report to disk.

``staging`` makes a hidden staging directory beside the target; the render step writes
every file of the report into it as the file is made (reportgen.core.files.ReportFiles),
and ``publish`` swaps it into place with two renames. A failed or interrupted build
(SIGINT, SIGTERM: reportgen.core.stopping) removes its staging directory and leaves the
previous report as it was. A lock file makes a second build of the same report refuse cleanly instead of
racing the first; it is removed when the build ends.

Every helper file of a build is named ``.<report>~<what>``: '~' cannot occur in a
report name, so cleaning up after one report never touches another's files (a report
may be called ``tiny.old-1``). Published files get the modes any tool would give
them (0666 and 0777 less the umask), so a site built by another user includes them.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from reportgen.core.errors import BuildLockedError, ReportgenError
from reportgen.core.files import ReportFiles
from reportgen.core.stopping import published, shielded


def report_dir(docs_dir: Path, slug: str) -> Path:
    """``docs_dir/slug``, refusing anything that would land outside ``docs_dir``."""
    root = docs_dir.resolve()
    target = (root / slug).resolve()
    if target.parent != root or slug.startswith(".") or "~" in slug:
        raise ReportgenError(f"report slug '{slug}' would write outside {docs_dir}; use a plain name")
    return target


def _helper(docs_dir: Path, slug: str, what: str) -> Path:
    return docs_dir / f".{slug}~{what}"


def _os_error(exc: OSError, docs_dir: Path, doing: str, where: Path | None = None) -> ReportgenError:
    """An error line for a file system failure while writing the report."""
    where = where or exc.filename or docs_dir
    if exc.errno == errno.ENOSPC:
        fix = "free some space and build again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable or pass another --docs-dir"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a file stands where a folder must be; pass another --docs-dir"
    else:
        fix = "check the folder and pass another --docs-dir if needed"
    return ReportgenError(f"cannot {doing} {where}: {exc.strerror or exc}; {fix}")


def _make_dirs(path: Path) -> list[Path]:
    """mkdir -p ``path``; return the folders it created, deepest first."""
    made: list[Path] = []
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for p in reversed(missing):
        p.mkdir()
        made.insert(0, p)
    return made


@contextmanager
def build_lock(docs_dir: Path, slug: str, wait: float = 0.0) -> Iterator[None]:
    """Hold ``docs_dir/.slug~lock`` for the whole build; refuse if another build has it.

    Folders this creates are removed again when the build fails and they are empty.
    """
    if docs_dir.exists() and not docs_dir.is_dir():
        raise ReportgenError(f"the docs folder {docs_dir} is a file; pass a folder as --docs-dir")
    try:
        made = _make_dirs(docs_dir)
    except OSError as exc:
        raise _os_error(exc, docs_dir, "create the docs folder") from None
    ok = False
    try:
        target = docs_dir / slug
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise ReportgenError(f"{target} is a file, not a report folder; move or delete it, "
                                 "or choose another report name")
        fd = _acquire(_helper(docs_dir, slug, "lock"), slug, wait)
        try:
            _clean_leftovers(docs_dir, slug)
            yield
            ok = True
        finally:
            with shielded():  # a stop signal meanwhile must not leave the lock behind
                _release(fd, _helper(docs_dir, slug, "lock"))
    finally:
        if not ok:
            for p in made:  # deepest first; stops at the first folder that is not empty
                try:
                    p.rmdir()
                except OSError:
                    break


def _acquire(path: Path, slug: str, wait: float) -> int:
    """An open, flock-ed descriptor of ``path``.

    The lock file is unlinked on release, so after locking we check that the path
    still names the file we locked; if another build removed it meanwhile, retry.
    """
    import fcntl

    deadline = time.monotonic() + wait
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _os_error(exc, path.parent, "write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise BuildLockedError(
                f"another build of report '{slug}' is running (lock {path}); "
                "wait for it to finish and build again") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _release(fd: int, path: Path) -> None:
    try:
        path.unlink(missing_ok=True)  # while still locked: no other build holds this inode
    except OSError:
        pass
    os.close(fd)


def _clean_leftovers(docs_dir: Path, slug: str) -> None:
    # Staging or old directories left by a build that was killed outright (SIGKILL).
    for p in docs_dir.glob(f".{slug}~staging-*"):
        shutil.rmtree(p, ignore_errors=True)
    target = docs_dir / slug
    for p in sorted(docs_dir.glob(f".{slug}~old-*")):
        if not target.exists():
            p.rename(target)  # a swap was cut between its two renames: restore
        else:
            shutil.rmtree(p, ignore_errors=True)


def _umask() -> int:
    # os.umask can only be read by setting it; set it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def staging(docs_dir: Path, slug: str) -> Iterator[Path]:
    """A fresh staging folder ``docs_dir/.slug~staging-*`` for the files of the report
    ``slug``, removed when the block ends unless ``publish`` swapped it in. Call it while
    holding the report's build lock. A file system error writing into it is reported as
    one line (a full disk, a folder made read-only)."""
    target = report_dir(docs_dir, slug)
    try:
        folder = Path(tempfile.mkdtemp(prefix=f".{slug}~staging-", dir=docs_dir))
    except OSError as exc:
        raise _os_error(exc, docs_dir, "write to") from None
    try:
        # mkdtemp makes a private (0700) folder; publish it like any other folder.
        os.chmod(folder, 0o777 & ~_umask())
        yield folder
    except OSError as exc:
        if exc.filename is not None and Path(os.fsdecode(exc.filename)).is_relative_to(folder):
            raise _os_error(exc, docs_dir, "write the report to", where=target) from None
        raise
    finally:
        with shielded():  # a stop signal meanwhile must not leave half the folder behind
            shutil.rmtree(folder, ignore_errors=True)  # gone already once published


def publish(files: ReportFiles, docs_dir: Path, slug: str) -> Path:
    """Swap ``files``' staging folder (made by ``staging``) in as ``docs_dir/slug``
    atomically; return that directory."""
    target = report_dir(docs_dir, slug)
    old: Path | None = None
    try:
        with shielded():  # the swap, and from then on a stop signal lets the build finish
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{slug}~old-", dir=docs_dir))
                os.rmdir(old)
                target.rename(old)
            files.root.rename(target)
            published()
    except BaseException as exc:
        if not target.exists() and old is not None and old.exists():
            old.rename(target)
        if isinstance(exc, OSError):
            raise _os_error(exc, docs_dir, "write the report to", where=target) from None
        raise
    files.root = target
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
