"""How many cores a build may use: the default of ``--jobs`` and of Ray's local instance."""

from __future__ import annotations

import os


def default_jobs() -> int:
    """The cores this process may use (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)

