"""Run a build's per-run tasks on a Ray cluster (``--executor ray``).

Ray is optional (``pip install "reportgen[ray]"``): this module imports it only when a
map starts, so reportgen itself never needs it.

Where results travel: through Ray's object store. Each task's return value is the run's
result, which Ray serialises on the worker and hands to the driver; the driver fetches
them one at a time in argument order and drops each reference once fetched, so the store
holds only the results not yet consumed (Ray spills to local disk beyond its memory).
The object store needs no shared filesystem and works the same on a laptop and on a
cluster. The cache directory (``--cache-dir``) is a second, independent path: tasks read
and write it, so that a rebuild on any node reuses earlier results, and it therefore must
be one folder every node reaches at the same path (a shared filesystem); a cache local
to each node still gives correct output, only fewer hits.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from reportgen.core.errors import ReportgenError
from reportgen.run.cores import default_jobs

INSTALL_HINT = "install it with pip install 'reportgen[ray]'"


def import_ray():
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ReportgenError(f"--executor ray needs the Ray package, which is not installed; {INSTALL_HINT}") from None
    return ray


def gpus_per_task(device: str) -> int:
    """One GPU per task when the build runs on CUDA (``cuda``, ``cuda:N``), else none."""
    return 1 if str(device).startswith("cuda") else 0


def _call(fn: Callable[[Any], Any], arg: Any) -> Any:
    # The remote function: Ray accepts only Python functions there, and ``fn`` may be any
    # picklable callable (a builtin, a functools.partial).
    return fn(arg)


def _exists(path: str) -> bool:
    return os.path.exists(path)


def nodes_missing(ray, path: str) -> list[str]:
    """Addresses of the cluster's live nodes on which ``path`` does not exist (one tiny task
    pinned to each node)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    probe = ray.remote(num_cpus=0, max_retries=0)(_exists)
    seen = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(path) for n in nodes])
    return [n.get("NodeManagerAddress", n["NodeID"]) for n, ok in zip(nodes, seen) if not ok]


def require_shared_folder(ray, folder: str) -> None:
    """Refuse to start when ``folder`` (where tasks leave their heavy arrays for the build,
    reportgen.core.spill) is not one folder that every node of a multi-node cluster sees:
    the build would fail only after every task had run."""
    if sum(1 for n in ray.nodes() if n.get("Alive")) < 2:
        return  # one machine: every task writes where the build reads
    probe = Path(folder) / f".reportgen-probe-{uuid.uuid4().hex}"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(b"")
    try:
        blind = nodes_missing(ray, str(probe))
    finally:
        probe.unlink(missing_ok=True)
    if blind:
        raise ReportgenError(
            f"the cache folder {folder} is not shared with the Ray node(s) {', '.join(blind)}; "
            "pass --cache-dir on a filesystem that every node mounts at the same path "
            "(with --no-cache the build uses a temporary folder of this machine)")


@contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """Put this process's SIGTERM handler back after ``ray.init``, which replaces it with one
    that exits at once: a build stops on SIGTERM as on Ctrl-C (reportgen.core.stopping)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@dataclass
class RayExecutor:
    """Maps tasks onto Ray: a local instance of ``num_cpus`` CPUs (default: this machine's
    cores) when ``address`` is None, else the cluster at ``address`` ("auto" or HOST:PORT).
    Each task asks for one CPU and ``num_gpus_per_task`` GPUs; by default one GPU when the
    task's ``device`` attribute (a RunTask's) names CUDA, else none.

    A Ray that this process already initialised is used as it is (and left running). A
    local instance or connection that this executor opened lasts until ``close()`` (or the
    end of a ``with`` block, or of the process), so several maps in one build pay Ray's
    start-up once. At most ``max_in_flight`` tasks are submitted ahead of the one the
    caller waits for (default: twice the cluster's CPUs), which bounds the results held.
    """

    address: str | None = None
    num_gpus_per_task: float | None = None  # None: one for a task whose ``device`` is CUDA (gpus_per_task)
    num_cpus: int | None = None
    max_in_flight: int | None = None
    name: str = "ray"
    _owns: bool = field(default=False, init=False, repr=False)

    def _ray(self):
        ray = import_ray()
        if not ray.is_initialized():
            with _keep_sigterm_handler():
                if self.address is None:
                    ray.init(num_cpus=self.num_cpus or default_jobs(), include_dashboard=False,
                             log_to_driver=False, configure_logging=False)
                else:
                    try:
                        ray.init(address=self.address, log_to_driver=False, configure_logging=False)
                    except ConnectionError as exc:
                        raise ReportgenError(f"cannot reach the Ray cluster at --ray-address {self.address}: "
                                             f"{exc}; start it (ray start --head) or check the address") from None
            self._owns = True
        return ray

    def map(self, fn: Callable[[Any], Any], args: Sequence[Any]) -> Iterator[Any]:
        args = list(args)
        if not args:
            return
        ray = self._ray()
        for folder in sorted({getattr(a, "spill_dir", None) for a in args} - {None}):
            require_shared_folder(ray, folder)
        remote = ray.remote(num_cpus=1, max_retries=0)(_call)
        fn_ref = ray.put(fn)  # sent to the store once, not with every task
        window = self.max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        pending = []  # object refs, in argument order
        submitted = 0
        try:
            for _ in range(len(args)):
                while submitted < len(args) and len(pending) < window:
                    arg = args[submitted]
                    gpus = self.num_gpus_per_task
                    if gpus is None:  # a per-run task says where it runs (RunTask.device)
                        gpus = gpus_per_task(getattr(arg, "device", "cpu"))
                    pending.append(remote.options(num_gpus=gpus).remote(fn_ref, arg))
                    submitted += 1
                ref = pending.pop(0)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    # A user error inside a task (a bad checkpoint, say) reaches the CLI as
                    # itself, so it prints as one 'Error:' line like on any other executor.
                    if isinstance(exc.cause, ReportgenError):
                        raise exc.cause from None
                    raise
                del ref  # the store may free the result once the caller has it
                yield value
        finally:
            for ref in pending:  # the caller stopped early or a task failed: do not leave work running
                ray.cancel(ref, force=True)

    def close(self) -> None:
        """Shut down the Ray this executor started (a no-op for one it found running)."""
        if self._owns:
            import ray

            ray.shutdown()
            self._owns = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
