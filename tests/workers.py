"""Imported first by conftest.py: under pytest-xdist, each worker gets its own share of the
cores before torch is imported."""

from __future__ import annotations

import os


def _share_cores_between_workers() -> None:
    """Under pytest-xdist, give each worker its own share of the cores, as if it ran on a
    machine of its own: torch threads, and the cores a build counts for its default
    ``--jobs``, are that share (one core each when there are as many workers as cores).
    Otherwise every worker's threads and process pools would fight over every core. Done
    before torch is imported; subprocesses (the CLI, process pools) inherit both."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None or not hasattr(os, "sched_getaffinity"):
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker.removeprefix("gw") or 0)
    cores = sorted(os.sched_getaffinity(0))
    mine = cores[index::workers] if workers <= len(cores) else [cores[index % len(cores)]]
    os.sched_setaffinity(0, mine)
    os.environ.setdefault("OMP_NUM_THREADS", str(len(mine)))


_share_cores_between_workers()
