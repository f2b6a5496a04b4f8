"""Is the published report already what a build would write? Answered without torch.

A report's *build key* is a SHA-256 of everything its files depend on: the spec file's
bytes; the content of every file the spec names (architecture .py files, checkpoints,
TorchScript and ONNX files, test images, the trace batch); reportgen's own source files
and version; the versions of the libraries that compute or draw (torch, numpy, scipy,
matplotlib, Pillow, Jinja2); the working directory (report.json shows paths relative to
it) and the device the networks run on. A build records the key it started from, its
warnings and the SHA-256 of every published file in ``<report>/.reportgen-build.json``
(MkDocs skips dot-files). The next ``reportgen build`` computes the key first, and when
the recorded one is the same and every published file is intact (no file changed,
missing or added) it says "up to date" and stops: nothing is imported beyond the spec
loader (pydantic, PyYAML), nothing is written.

What the key cannot see: modules that an architecture file imports in turn (only the file
named in ``arch`` is read) and, for a ``package.module:factory`` architecture, anything
beyond that module's own file. After editing those, build with ``--force``.

The device: ``cpu`` and ``cuda[:N]`` are keyed as given. ``auto`` is keyed by what it
resolves to, which must be known without importing torch: CPU when this torch build has no
CUDA (a ``+cpu`` wheel), when ``CUDA_VISIBLE_DEVICES`` hides every GPU, or when the machine
has no GPU driver (no ``/proc/driver/nvidia``, ``/dev/nvidia*`` or ``/dev/kfd``). Otherwise
a GPU may be usable and only torch can tell, so the check imports torch to ask (still far
cheaper than a build); pass ``--device cpu`` or ``--device cuda`` to skip that. An explicit
``cuda`` on a machine with no GPU driver is never "up to date": the build says what is wrong.

This module and what it imports must stay free of torch, numpy and matplotlib
(tests/publish/test_uptodate.py checks it in a fresh process).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from reportgen import __version__

MANIFEST = ".reportgen-build.json"
FORMAT = 1  # of the manifest and the key; a new format simply misses
# Libraries whose version changes numbers or pictures of a report.
LIBRARIES = ("torch", "numpy", "scipy", "matplotlib", "pillow", "jinja2")
_SOURCE_SUFFIXES = {".py", ".j2", ".css"}


# ----------------------------------------------------------------------------- the key


class _NotAFile(OSError):
    """An input that is not a regular file (a FIFO, a device): the build says what is wrong."""


def _open_regular(path: Path):
    # O_NONBLOCK: a FIFO planted where an image should be must not hang the check.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    fh = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        fh.close()
        raise _NotAFile(f"{path} is not a regular file")
    return fh


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with _open_regular(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_files(spec) -> list[Path]:
    """Every file a build of ``spec`` (a ReportSpec) reads, resolved, without duplicates.

    Found generically, so that a file a future spec key names is not missed: every Path
    (or tuple of Paths) a run holds (checkpoint, TorchScript, ONNX, images, annotations,
    ...), every string of the spec that names an existing file relative to it (an arch
    'file.py:Class', the trace batch, ...), and the module file of a 'package.module:factory'.
    """
    base = spec.base_dir
    files: list[Path] = [spec.path]
    runs = list(spec.runs) + ([spec.reference_run] if spec.reference_run else [])
    for run in runs:
        for f in fields(run):
            value = getattr(run, f.name)
            for v in (value if isinstance(value, (tuple, list)) else (value,)):
                if isinstance(v, Path):
                    files.append(v)
    for text in _strings(spec.source.data):
        if "\n" in text or len(text) > 1024:  # a description, not a path
            continue
        for candidate in dict.fromkeys((text, text.rsplit(":", 1)[0])):
            try:
                if candidate and (base / candidate).is_file():
                    files.append(base / candidate)
            except (OSError, ValueError):  # a name too long, a NUL byte: not a file
                pass
    models = list(spec.schema.models) + ([spec.schema.reference] if spec.schema.reference else [])
    for model in models:
        arch = model.arch or ""
        if ":" in arch and not arch.rsplit(":", 1)[0].endswith(".py") and "/" not in arch:
            found = _module_file(arch.rsplit(":", 1)[0])
            if found is not None:
                files.append(found)
    return list(dict.fromkeys(Path(os.path.abspath(p)) for p in files))


def _strings(data) -> list[str]:
    """Every string value (not key) in parsed YAML data."""
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [s for v in data.values() for s in _strings(v)]
    if isinstance(data, (list, tuple)):
        return [s for v in data for s in _strings(v)]
    return []


def _module_file(dotted: str) -> Path | None:
    """The source file of ``package.module`` found on sys.path without importing anything
    (importlib.util.find_spec would import the parent packages, torch among them)."""
    parts = dotted.split(".")
    for root in sys.path:
        base = Path(root or ".").joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def source_files() -> tuple[Path, list[Path]]:
    """The package folder and every file of reportgen's own code, templates and styles in it."""
    root = Path(__file__).resolve().parents[1]  # reportgen/, above publish/
    return root, [p for p in sorted(root.rglob("*"))
                  if p.suffix in _SOURCE_SUFFIXES and "__pycache__" not in p.parts and p.is_file()]


def source_digest() -> str:
    """SHA-256 of reportgen's own code and templates (a change of any rebuilds)."""
    root, paths = source_files()
    h = hashlib.sha256()
    for p in paths:
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions read from the ``*.dist-info`` folder names on sys.path: one
    directory listing per path entry, far cheaper than importlib.metadata per name."""
    wanted = {n.lower().replace("-", "_"): n for n in names}
    found: dict[str, str | None] = {n: None for n in names}
    for root in sys.path:
        try:
            entries = os.listdir(root or ".")
        except OSError:
            continue
        for entry in entries:
            if not entry.endswith(".dist-info"):
                continue
            name, _, version = entry[: -len(".dist-info")].partition("-")
            key = wanted.get(name.lower().replace("-", "_").replace(".", "_"))
            if key is not None and found[key] is None:  # the first on sys.path is the one imported
                found[key] = version
    return found


def build_key(spec, device: str) -> str:
    """The key of a build of ``spec`` on ``device`` (as report.json names it: cpu, cuda, cuda:1)."""
    h = hashlib.sha256()
    parts = {
        "format": FORMAT, "reportgen": __version__, "source": source_digest(), "libraries": library_versions(),
        "python": sys.version_info[:2], "cwd": os.getcwd(), "device": device,
        "inputs": [(str(p), _sha256_file(p)) for p in input_files(spec)],
    }
    h.update(json.dumps(parts, sort_keys=True).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- the device


def _no_gpu_cheaply() -> bool:
    """True when no CUDA device can be in use, found without importing torch."""
    if sys.platform == "darwin":
        return True  # torch has no CUDA on macOS
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return True
    version = library_versions(("torch",))["torch"] or ""
    if version.endswith("+cpu"):
        return True
    driver = (Path("/proc/driver/nvidia").exists() or Path("/dev/kfd").exists()
              or any(Path("/dev").glob("nvidia[0-9]*")))
    return not driver


def cheap_device(requested: str) -> str | None:
    """The device a build asked for ``requested`` would run on, as report.json names it,
    or None when the build itself must find out (an unknown name, a GPU that may be absent).
    ``auto`` imports torch only when a GPU may be present."""
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" or (requested.startswith("cuda:") and requested[5:].isdigit()):
        return None if _no_gpu_cheaply() else requested
    if requested == "auto":
        if _no_gpu_cheaply():
            return "cpu"
        import torch  # a GPU driver is here: only torch can say whether it can use it

        return "cuda" if torch.cuda.is_available() else "cpu"
    return None


# ----------------------------------------------------------------------------- the manifest


def manifest(key: str, digests: dict[str, str], warnings: list[str], summary: dict) -> bytes:
    """The manifest a build publishes with the report's files (relative path -> SHA-256)."""
    return (json.dumps({
        "format": FORMAT, "key": key, "warnings": list(warnings), "summary": summary,
        "files": dict(digests),
    }, indent=1, sort_keys=True) + "\n").encode()


@dataclass
class UpToDate:
    out_dir: Path
    warnings: list[str]
    summary: dict  # pages, images, findings of the published report


def _intact(folder: Path, recorded: dict[str, str]) -> bool:
    """Every recorded file is there with its recorded digest, and there is no other file."""
    try:
        present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}
        return present == set(recorded) | {MANIFEST} and all(
            not (folder / rel).is_symlink() and _sha256_file(folder / rel) == want for rel, want in recorded.items())
    except OSError:
        return False


def up_to_date(spec_path: Path, docs_dir: Path, device: str, strict: bool) -> UpToDate | None:
    """An UpToDate when the report in ``docs_dir`` is what a build would publish, else None.

    Spec errors raise SpecError, as a build would. A build running at the same time is
    refused as a build would be (BuildLockedError); the check itself writes nothing.
    """
    from reportgen.load.spec import load_spec

    spec = load_spec(spec_path)
    folder = docs_dir / spec.report
    try:
        with _open_regular(folder / MANIFEST) as fh:
            recorded = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or recorded.get("format") != FORMAT:
        return None
    if strict and recorded.get("warnings"):
        return None  # the build will fail and say why
    _refuse_if_locked(docs_dir, spec.report)
    resolved = cheap_device(device)
    try:
        if resolved is None or build_key(spec, resolved) != recorded.get("key"):
            return None
    except OSError:
        return None  # an input that cannot be read: the build names it and says how to fix it
    files = recorded.get("files")
    if not isinstance(files, dict) or not _intact(folder, files):
        return None
    from reportgen.publish.siteconfig import site_warnings

    # the site's configuration is read afresh, as a build would (it is not part of the report)
    return UpToDate(out_dir=folder.resolve(),
                    warnings=[str(w) for w in recorded.get("warnings", [])] + site_warnings(docs_dir),
                    summary=dict(recorded.get("summary") or {}))


def _refuse_if_locked(docs_dir: Path, slug: str) -> None:
    """Raise BuildLockedError when a build of this report holds its lock (read-only probe)."""
    import fcntl

    from reportgen.core.errors import BuildLockedError

    path = docs_dir / f".{slug}~lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # no lock file: no build is running
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BuildLockedError(f"another build of report '{slug}' is running (lock {path}); "
                               "wait for it to finish and build again") from None
    finally:
        os.close(fd)


def stamp(files, key: str, warnings: list[str], report: dict) -> None:
    """Add the manifest to a build's ReportFiles, just before they are published."""
    summary = {"pages": files.count(".md"), "images": files.count(".png"),
               "findings": len(report.get("findings", []))}
    files.add(MANIFEST, manifest(key, files.digests(), warnings, summary))
