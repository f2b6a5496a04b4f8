"""YAML loading that remembers where every key and item came from.

PyYAML's ``safe_load`` throws line numbers away; error messages must name the
spec's file and line, so we compose the node tree once, construct the data from
it, and record the line of every key and list item under its key path.

A spec is small, so the loader refuses anything that is not: a file that is not a
regular file, more than ``MAX_BYTES``, nesting deeper than ``MAX_DEPTH``, more than
``MAX_ALIASES`` aliases, a recursive alias, or aliases that expand to more than
``MAX_NODES`` values (the "billion laughs"). Each check runs before the data is
built, so a hostile spec costs milliseconds, never memory or a RecursionError.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reportgen.core.errors import SpecError

KeyPath = tuple[Any, ...]

MAX_BYTES = 4 << 20  # a spec of 200 locations is about 20 KiB
MAX_DEPTH = 64  # real specs nest about 5 levels
MAX_ALIASES = 1000
MAX_NODES = 200_000  # values after alias expansion


class _Refused(Exception):
    def __init__(self, message: str, mark):
        super().__init__(message)
        self.mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts aliases and nesting while it builds the node tree."""

    def __init__(self, text: str):
        super().__init__(text)
        self._depth = 0
        self._aliases = 0

    def fetch_flow_collection_start(self, token_class):
        # The scanner looks ahead over every open '[' / '{' at a cost that grows with their
        # number, so deep flow nesting is refused here, before the composer sees it.
        if self.flow_level >= MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels; a spec needs only a few", self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} aliases (*name); write the values out", event.start_mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels; a spec needs only a few", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph with a cycle (recursive alias) or too many values once expanded."""
    size: dict[int, int] = {}  # id(node) -> values in its expanded subtree
    open_: set[int] = set()  # nodes on the current path
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: no recursion, whatever the depth
        node, done = stack.pop()
        if done:
            open_.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in _children(node))
            if size[id(node)] > MAX_NODES:
                raise _Refused(f"aliases expand to more than {MAX_NODES} values; write the values out "
                               "or use fewer aliases", node.start_mark)
            continue
        if id(node) in size:
            continue
        open_.add(id(node))
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_:
                raise _Refused("a recursive alias (a value that contains itself); remove the alias",
                               child.start_mark)
            if id(child) not in size:
                stack.append((child, False))


def _read_spec_text(path: Path) -> str:
    """The spec's text, refusing devices, FIFOs, directories and oversized files."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer; the fstat below refuses it.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SpecError(f"{path}: not a regular file; give the path of a YAML spec file")
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise SpecError(f"{path}: the spec file is larger than {MAX_BYTES >> 20} MiB; "
                        "a spec names files, it does not hold data")
    return data.decode("utf-8")


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
        text = _read_spec_text(path)
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found; check the path") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory; give the path of a YAML spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec file ({exc})") from None
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node)
        data = loader.construct_document(node) if node is not None else None
    except _Refused as exc:
        raise SpecError(f"{path}:{exc.mark.line + 1}: refused: {exc}") from None
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
