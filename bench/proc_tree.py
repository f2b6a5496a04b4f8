"""Resident memory of a process and all its descendants, read from /proc (Linux); shared by
the benchmarks that build in a subprocess (bench_cold.py, bench_scale.py)."""

from __future__ import annotations

import os

_PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and all its descendants now (0 once it is gone)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))  # fields[1]: parent pid
        rss[int(entry)] = int(fields[21]) * _PAGE  # fields[21]: resident pages
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total
