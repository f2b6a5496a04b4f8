"""Where the per-run tasks of a build run: in this process, a local process pool, or Ray.

Every executor maps one picklable top-level function over a list of arguments and
returns the results *in the order of the arguments*, whatever order they finished in,
so the build's output does not depend on which executor ran it. The function must be
pure apart from the content-addressed cache (reportgen.cache), which is safe to share:
entries are written atomically and named by the digest of their inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence


class Executor(Protocol):
    """Runs ``fn(arg)`` for each argument; yields results in argument order."""

    name: str

    def map(self, fn: Callable[[Any], Any], args: Sequence[Any]) -> Iterator[Any]: ...


@dataclass
class Sequential:
    """One task after another in the calling process (the reference every other executor must match)."""

    name: str = "sequential"

    def map(self, fn: Callable[[Any], Any], args: Sequence[Any]) -> Iterator[Any]:
        for a in args:
            yield fn(a)


def default_jobs() -> int:
    """The cores this process may use (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


EXECUTORS: dict[str, Callable[..., Executor]] = {"sequential": Sequential}


def in_order(results: Iterable[tuple[int, Any]], n: int) -> Iterator[Any]:
    """Yield ``(index, value)`` pairs that arrive in any order as values in index order,
    holding back only those that arrive early."""
    waiting: dict[int, Any] = {}
    nxt = 0
    for i, v in results:
        waiting[i] = v
        while nxt in waiting:
            yield waiting.pop(nxt)
            nxt += 1
    if nxt != n:
        raise RuntimeError(f"executor returned {nxt} of {n} results")


def _ray(address: str | None = None, jobs: int | None = None, **options: Any) -> Executor:
    """A RayExecutor on the cluster at ``address``, or on a local Ray of ``jobs`` CPUs."""
    # Imported here: Ray is an optional extra, and reportgen must import without it.
    from reportgen.executors_ray import RayExecutor

    return RayExecutor(address=address, num_cpus=jobs, **options)


EXECUTORS["ray"] = _ray
