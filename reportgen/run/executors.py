"""Where the per-run tasks of a build run: in this process, a local process pool, or Ray.

Every executor maps one picklable top-level function over a list of arguments and
returns the results *in the order of the arguments*, whatever order they finished in,
so the build's output does not depend on which executor ran it. The function must be
pure apart from the content-addressed cache (reportgen.core.cache), which is safe to share:
entries are written atomically and named by the digest of their inputs.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass, field
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

    The workers are started by the first ``map`` (as many as it has tasks, up to ``jobs``)
    and kept for the next ones, so the steps of a build after the per-run tasks (drawing,
    reportgen.render.report) use them without paying for a start (importing torch) again;
    ``close`` ends them. ``map`` submits its first tasks when it is called, so the caller
    can do other work while they run and read the results after.
    """

    jobs: int
    threads: int = 0  # torch threads per worker; 0: the cores divided by jobs (at least 1)
    name: str = "process"
    _pool: Any = field(default=None, init=False, repr=False, compare=False)
    _running: set = field(default_factory=set, init=False, repr=False, compare=False)  # futures not done

    @property
    def warm(self) -> bool:
        """Whether the workers are running: a map started them and nothing has ended them."""
        return self._pool is not None

    def map(self, fn: Callable[[Any], Any], args: Sequence[Any]) -> Iterator[Any]:
        from collections import deque

        args = list(args)
        if not args:
            return iter(())
        pool = self._started()
        todo = iter(args)
        pending: deque = deque(self._submit(pool, fn, a) for _, a in zip(range(2 * self.jobs), todo))
        return self._results(pool, fn, todo, pending)

    def _submit(self, pool, fn, arg):
        # A submit may start a worker: it inherits the blocked SIGINT (see _init_worker) and
        # an environment that gives its numerical libraries as many threads as torch.
        with _sigint_blocked(), _environment(_thread_limits(self._threads())):
            future = pool.submit(_then_give_back_memory, fn, arg)
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        return future

    def _started(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            threads = self._threads()
            self._pool = ProcessPoolExecutor(max_workers=max(1, self.jobs),
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(threads,))
        return self._pool

    def _threads(self) -> int:
        return self.threads or max(1, default_jobs() // max(1, self.jobs))

    def _results(self, pool, fn, todo, pending) -> Iterator[Any]:
        from reportgen.core.stopping import shielded

        finished = False
        try:
            while pending:
                result = pending.popleft().result()
                nxt = next(todo, _DONE)
                if nxt is not _DONE:
                    pending.append(self._submit(pool, fn, nxt))
                finished = not pending
                yield result
        finally:
            # A failed task, an interrupt (Ctrl-C, or SIGTERM in the CLI: reportgen.core.stopping) or
            # a consumer that stops early: end the workers now, without waiting for the tasks
            # they run (a task may take minutes), and drop what has not started. The next map
            # starts new workers.
            if not finished:
                with shielded():
                    self._end(pool)

    def _end(self, pool) -> None:
        if self._pool is pool:
            self._pool = None
        _end_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """End the workers: at once when tasks are still running (a map whose results were
        not all read), else after they exit on their own."""
        from reportgen.core.stopping import shielded

        pool, self._pool = self._pool, None
        if pool is None:
            return
        with shielded():
            if self._running:
                _end_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)


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
# The variables that size the thread pools of numpy's BLAS and of OpenMP: read once, when a
# worker loads the library, so they must be in its environment from the start.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _thread_limits(threads: int) -> dict[str, str]:
    """The environment of a worker with ``threads`` threads; a limit the user set is kept."""
    return {name: os.environ.get(name) or str(threads) for name in _THREAD_VARIABLES}


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set while a worker may start, restored after."""
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _then_give_back_memory(fn: Callable[[Any], Any], arg: Any) -> Any:
    """``fn(arg)`` in a worker, then what the task freed handed back to the system.

    The workers stay for the build's later steps (see ProcessPool), and the C heap keeps what
    a task freed (its model, its activations) unless asked to return it: about 160 MB per
    worker after the example's runs, measured with /proc's resident size.
    """
    try:
        return fn(arg)
    finally:
        give_back_memory()


def give_back_memory() -> bool:
    """Collect garbage, then return the C heap's free pages to the system (glibc's
    ``malloc_trim``; elsewhere only the collection). Returns whether the heap was trimmed."""
    import gc

    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    return trim is not None


_TRIM: list = []


def _malloc_trim():
    if not _TRIM:
        try:
            import ctypes

            _TRIM.append(ctypes.CDLL("libc.so.6").malloc_trim)
        except (OSError, AttributeError):  # not glibc
            _TRIM.append(None)
    return _TRIM[0]


def _init_worker(threads: int) -> None:
    # Ctrl-C is the build's to handle: it ends the workers (SIGINT arrives blocked, see
    # _sigint_blocked; once ignored, a pending one is dropped). SIGTERM keeps its default: a
    # worker ended by the build, or by a SIGTERM sent to the whole group, dies quietly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    import torch

    torch.set_num_threads(threads)


def in_workers(executor: Executor | None, fn: Callable[[Any], Any], args: Sequence[Any]) -> Iterator[Any]:
    """``executor.map(fn, args)`` when the executor's workers are already running (a local pool
    the map step started: ``warm``), else ``fn`` over ``args`` in this process, lazily, as the
    results are read. For the steps after the map, which use the pool only when it costs no
    start."""
    args = list(args)
    if args and getattr(executor, "warm", False):
        return executor.map(fn, args)
    return map(fn, args)


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
