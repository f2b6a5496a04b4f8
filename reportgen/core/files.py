"""The files of one report, collected by the render step and written by the publish step
(reportgen.publish.site)."""

from __future__ import annotations

from pathlib import Path


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
