"""The files of one report, written by the render step into the report's staging folder as
they are made (reportgen.publish.site makes the folder and swaps it in).

Only a small record of each file stays in memory (its size, its SHA-256 and, for a
picture, the width a page shows it at), so a build's memory does not grow with the bytes
of its pictures.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class FileRecord:
    size: int
    sha256: str
    width: int | None  # CSS px a page shows the picture at; None: its natural size (or not a picture)


class ReportFiles:
    """Files of one report by relative POSIX path, each written under ``root`` once.

    ``width``: the CSS width a page shows a file at, read from its bytes (None: its
    natural size); the render step passes reportgen.render.colour.display_width.
    """

    def __init__(self, root: str | Path, width: Callable[[bytes], int | None] = lambda data: None) -> None:
        self.root = Path(root)
        self._width = width
        self._files: dict[str, FileRecord] = {}

    def add(self, rel: str, content: bytes | str) -> str:
        """Write ``content`` to ``root/rel`` (folders made as needed, modes as any tool gives);
        return ``rel``."""
        if rel in self._files:
            raise ValueError(f"file written twice: {rel}")
        if not rel or rel.startswith("/") or ".." in Path(rel).parts:
            raise ValueError(f"file outside the report: {rel}")
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self._files[rel] = FileRecord(len(data), hashlib.sha256(data).hexdigest(),
                                      self._width(data) if rel.endswith(".png") else None)
        return rel

    def adopt(self, records: list[tuple[str, FileRecord]]) -> None:
        """Count files another ReportFiles on the same folder wrote (a build's worker)."""
        for rel, record in records:
            if rel in self._files:
                raise ValueError(f"file written twice: {rel}")
            self._files[rel] = record

    def __contains__(self, rel: str) -> bool:
        return rel in self._files

    def __len__(self) -> int:
        return len(self._files)

    def records(self) -> list[tuple[str, FileRecord]]:
        """(relative path, record) of every file, by path."""
        return sorted(self._files.items())

    def digests(self) -> dict[str, str]:
        """Relative path -> SHA-256 (hex) of every file."""
        return {rel: rec.sha256 for rel, rec in self.records()}

    def widths(self) -> dict[str, int]:
        """Relative path -> CSS width of every picture that is not shown at its natural size."""
        return {rel: rec.width for rel, rec in self.records() if rec.width is not None}

    def count(self, suffix: str) -> int:
        return sum(1 for k in self._files if k.endswith(suffix))
