"""Where the per-run tasks of a build run: in this process, a local process pool, or Ray.

Every executor maps one picklable top-level function over a list of arguments and
returns the results *in the order of the arguments*, whatever order they finished in,
so the build's output does not depend on which executor ran it. The function must be
pure apart from the content-addressed cache (reportgen.core.cache), which is safe to share:
entries are written atomically and named by the digest of their inputs.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

from reportgen.run.cores import default_jobs


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


@dataclass
class ProcessPool:
    """Tasks in ``jobs`` local worker processes, results in argument order.

    Workers are started with 'spawn' (a fresh interpreter each): forking a process that
    has torch loaded is unsafe (its thread pools and CUDA state do not survive a fork).
    Each worker gets ``threads`` torch threads, by default the cores shared out between
    the workers, so N workers do not fight over the same cores. At most ``2 * jobs`` tasks
    are in flight, so results that finish early wait in memory only a little.
    """

    jobs: int
    threads: int = 0  # torch threads per worker; 0: the cores divided by jobs (at least 1)
    name: str = "process"

    def map(self, fn: Callable[[Any], Any], args: Sequence[Any]) -> Iterator[Any]:
        import multiprocessing
        from collections import deque
        from concurrent.futures import ProcessPoolExecutor

        from reportgen.core.stopping import shielded

        args = list(args)
        if not args:
            return
        workers = max(1, min(self.jobs, len(args)))
        threads = self.threads or max(1, default_jobs() // workers)
        finished = False
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(threads,))
        try:
            todo = iter(args)
            with _sigint_blocked():  # the first submits start the workers (see _init_worker)
                pending: deque = deque(pool.submit(fn, a) for _, a in zip(range(2 * workers), todo))
            while pending:
                result = pending.popleft().result()
                nxt = next(todo, _DONE)
                if nxt is not _DONE:
                    pending.append(pool.submit(fn, nxt))
                finished = not pending  # every task done: the workers may exit on their own
                yield result
        finally:
            # A failed task, an interrupt (Ctrl-C, or SIGTERM in the CLI: reportgen.core.stopping) or
            # a consumer that stops early: end the workers now, without waiting for the tasks
            # they run (a task may take minutes), and drop what has not started.
            with shielded():
                if not finished:
                    _end_workers(pool)
                pool.shutdown(wait=True, cancel_futures=not finished)


def _end_workers(pool) -> None:
    """Terminate (SIGTERM) the workers of a ProcessPoolExecutor, whatever they are doing.

    The executor has no public way to do it: ``shutdown`` waits for the running tasks (or,
    with ``wait=False``, leaves them running), and a worker whose parent has gone stays
    blocked on its queues, holding the caller's pipes open. So this uses two private
    attributes, there since Python 3.9: ``_processes`` (pid -> Process), and the results
    pipe, whose write end this process holds too. Closing that end matters when a worker
    is ended halfway through sending its result: the executor's manager thread would wait
    for the rest of the message for ever; with every writer gone it reads an end of file
    instead. The manager thread then sees the workers gone, fails the futures left and
    joins the workers, so ``shutdown(wait=True)`` returns at once.
    """
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            p.terminate()
        except (OSError, ValueError):  # already gone, or closed
            pass
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    if writer is not None:
        writer.close()


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread while it starts pool workers, which inherit the mask.

    A Ctrl-C in a terminal goes to the whole process group. A worker must leave it to the
    build (which ends the workers, see ProcessPool.map) instead of printing a traceback, and
    a worker cannot ignore SIGINT before its initializer runs. A SIGINT for this process
    that arrives meanwhile is delivered when the mask is restored (or to another thread).
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


_DONE = object()


def _init_worker(threads: int) -> None:
    # Ctrl-C is the build's to handle: it ends the workers (SIGINT arrives blocked, see
    # _sigint_blocked; once ignored, a pending one is dropped). SIGTERM keeps its default: a
    # worker ended by the build, or by a SIGTERM sent to the whole group, dies quietly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    import torch

    torch.set_num_threads(threads)


def make_executor(name: str, jobs: int = 1, address: str | None = None) -> Executor:
    """The executor registered as ``name``; its factory gets whichever of the options
    ``jobs`` and ``address`` (a cluster's address) its signature takes.
    Raises ExecutorError naming the executors there are when ``name`` is not registered."""
    import importlib
    import inspect

    from reportgen.core.errors import ExecutorError

    if name == "ray" and name not in EXECUTORS:
        try:  # registers itself on import; an optional extra
            importlib.import_module("reportgen.run.executors_ray")
        except ImportError:
            pass
    factory = EXECUTORS.get(name)
    if factory is None:
        hint = ('install the extra: pip install "reportgen[ray]"' if name == "ray"
                else f"use one of {', '.join(sorted(EXECUTORS))}")
        raise ExecutorError(f"executor '{name}' is not available; {hint}")
    options = {"jobs": jobs, "address": address}
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    return factory(**{k: v for k, v in options.items() if k in accepted})


EXECUTORS: dict[str, Callable[..., Executor]] = {"sequential": Sequential, "process": ProcessPool}


def _ray(address: str | None = None, jobs: int | None = None, **options: Any) -> Executor:
    """A RayExecutor on the cluster at ``address``, or on a local Ray of ``jobs`` CPUs."""
    # Imported here: Ray is an optional extra, and reportgen must import without it.
    from reportgen.run.executors_ray import RayExecutor

    return RayExecutor(address=address, num_cpus=jobs, **options)


EXECUTORS["ray"] = _ray
