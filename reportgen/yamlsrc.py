"""YAML loading that remembers where every key and item came from.

PyYAML's ``safe_load`` throws line numbers away; error messages must name the
spec's file and line, so we compose the node tree once, construct the data from
it, and record the line of every key and list item under its key path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reportgen.errors import SpecError

KeyPath = tuple[Any, ...]


@dataclass(frozen=True)
class Located:
    """Parsed YAML data plus ``lines``: key path -> 1-based line number."""

    data: Any
    lines: dict[KeyPath, int]
    path: Path

    def line(self, key_path: KeyPath) -> int:
        """Line of the deepest recorded prefix of ``key_path`` (1 if none)."""
        kp = tuple(key_path)
        while kp:
            if kp in self.lines:
                return self.lines[kp]
            kp = kp[:-1]
        return self.lines.get((), 1)

    def where(self, key_path: KeyPath) -> str:
        return f"{self.path}:{self.line(key_path)}"


def format_key_path(key_path: KeyPath) -> str:
    """``('models', 0, 'arch')`` -> ``models[0].arch``."""
    out = ""
    for part in key_path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load_yaml(path: Path) -> Located:
    """Read ``path`` as YAML, raising SpecError (with line and column) on bad syntax."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec file ({exc})") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"{mark.line + 1}:{mark.column + 1}" if mark else "1"
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(
            f"{path}:{line}: invalid YAML: {problem}; fix the syntax at that position "
            "(check indentation, colons and quotes)"
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    lines: dict[KeyPath, int] = {}
    duplicates: list[str] = []
    if node is not None:
        lines[()] = node.start_mark.line + 1
        _walk(node, (), lines, duplicates, path)
    if duplicates:
        raise SpecError(duplicates)
    return Located(data=data, lines=lines, path=path)


def _walk(node: yaml.Node, kp: KeyPath, lines: dict, dups: list[str], path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            child = kp + (key,)
            if key in seen:
                # PyYAML silently keeps the last value; a user almost never means that.
                dups.append(
                    f"{path}:{key_node.start_mark.line + 1}: {format_key_path(child)}: "
                    "duplicate key; keep only one of them"
                )
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, lines, dups, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[kp + (i,)] = item.start_mark.line + 1
            _walk(item, kp + (i,), lines, dups, path)
