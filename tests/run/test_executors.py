"""Executors: the same report, byte for byte, whichever runs the per-run tasks."""

from __future__ import annotations

import numpy as np
import pytest

from reportgen.build import build
from reportgen.run.executors import EXECUTORS, ProcessPool, Sequential, make_executor
from tests.conftest import SPEC, write_spec

UNITS = "analyses:\n  units: {layers: [conv1], locations: [a, c], maximise: plain, steps: 2, top_n: 2}\n"


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_process_pool_report_is_byte_identical_to_sequential(project):
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(3, 6):  # six shared images: the comparisons get bootstrap intervals
        Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(project / "img" / f"im{i}.png")
    spec = write_spec(project, SPEC + UNITS)
    one = build(spec, project / "seq", device="cpu", cache_dir=None, executor=Sequential())
    pool = ProcessPool(2)
    try:
        # the map starts the workers; the bootstrap, each run's pictures and the extensions'
        # pictures then run there too (reduce.compare.run_comparisons, render.report)
        two = build(spec, project / "pool", device="cpu", cache_dir=None, executor=pool)
        assert pool.warm  # a pool the caller gave is the caller's to close
    finally:
        pool.close()
    a, b = snapshot(project / "seq"), snapshot(project / "pool")
    assert sorted(a) == sorted(b) and len(a) > 20
    assert [k for k in a if a[k] != b[k]] == []
    assert one.warnings == two.warnings
    layer = two.report["comparisons"][0]
    lo, hi = layer["activation_similarity_ci"][0][1]  # runs a and b: an interval, off the diagonal
    assert lo <= layer["activation_similarity"][0][1] <= hi and lo < hi
    # the pool's workers counted their cache use too: all computed, nothing stored
    assert sum(two.cache.misses.values()) == sum(one.cache.misses.values()) > 0


def _square(x: int) -> int:
    return x * x


def _inverse(x: int) -> float:
    return 1 / x


def test_unknown_executor_is_one_clear_error(monkeypatch):
    from reportgen.core.errors import ExecutorError

    monkeypatch.delitem(EXECUTORS, "ray", raising=False)
    monkeypatch.setattr("importlib.import_module", _no_module)
    with pytest.raises(ExecutorError, match=r"^executor 'ray' is not available; install the extra: "
                                            r"pip install \"reportgen\[ray\]\"$"):
        make_executor("ray")
    with pytest.raises(ExecutorError, match="^executor 'dask' is not available; use one of process, sequential$"):
        make_executor("dask")
    assert isinstance(make_executor("process", jobs=3, address="x"), ProcessPool)
    assert make_executor("process", jobs=3).jobs == 3


def _no_module(name):
    raise ImportError(name)


class _NoWorkers:
    """An executor that must not be given any task."""

    name = "no-workers"

    def map(self, fn, args):
        args = list(args)
        assert not args, f"{len(args)} task(s) sent to workers"
        return iter(())


def test_cached_runs_are_read_in_process_not_sent_to_workers(project, tmp_path):
    import torch

    spec = write_spec(project)
    cache = tmp_path / "cache"
    first = build(spec, project / "a", device="cpu", cache_dir=cache)
    again = build(spec, project / "b", device="cpu", cache_dir=cache, executor=_NoWorkers())
    assert snapshot(project / "a") == snapshot(project / "b") and again.cache.misses["layer"] == 0
    # one changed location: its task alone, in this process (starting workers would cost more)
    ck = torch.load(project / "ckpt" / "b.pt", weights_only=True)
    ck["state_dict"]["conv1.weight"] *= 2
    torch.save(ck, project / "ckpt" / "b.pt")
    changed = build(spec, project / "c", device="cpu", cache_dir=cache, executor=_NoWorkers())
    assert changed.cache.misses["layer"] == 3  # b's three layers
    runs = {r["key"]: r for r in changed.report["runs"]}
    norms = [f["l2_norm"] for f in runs["b"]["layers"][0]["filters"]]
    before = {r["key"]: r for r in first.report["runs"]}
    np.testing.assert_allclose(norms, [2 * f["l2_norm"] for f in before["b"]["layers"][0]["filters"]], rtol=1e-6)


def _worker_facts(path: str) -> tuple[int, dict]:
    """Touches ``path``; returns the worker's pid and its thread variables."""
    import os
    from pathlib import Path

    Path(path).write_text("done")
    return os.getpid(), {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


@pytest.mark.slow
def test_process_pool_starts_tasks_at_once_keeps_its_workers_and_ends_them_on_an_error(tmp_path, monkeypatch):
    """Results in argument order; the steps after the per-run tasks use the workers the map
    started (no second start) and work while the workers run theirs; a failed task ends them."""
    import os
    import time

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # a limit the user set is kept
    pool = ProcessPool(2, threads=1)
    assert not pool.warm
    try:
        paths = [str(tmp_path / f"{i}.txt") for i in range(4)]
        results = pool.map(_worker_facts, paths)
        deadline = time.monotonic() + 60
        while not all(os.path.exists(p) for p in paths) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(os.path.exists(p) for p in paths)  # they ran with no result read yet
        first = list(results)
        assert pool.warm
        pids = {pid for pid, _ in first}
        assert len(pids) <= 2 and all(env == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                                              "MKL_NUM_THREADS": "3"} for _, env in first)
        assert "OMP_NUM_THREADS" not in os.environ  # this process's environment is as it was
        assert list(pool.map(_square, range(7))) == [x * x for x in range(7)]
        again = {pid for pid, _ in pool.map(_worker_facts, [str(tmp_path / f"{i}.txt") for i in range(4, 8)])}
        assert again <= pids
        with pytest.raises(ZeroDivisionError):
            list(pool.map(_inverse, [1, 0, 2]))
        assert not pool.warm  # the failure ended the workers
        assert not {pid for pid, _ in pool.map(_worker_facts, [str(tmp_path / "8.txt")])} & pids  # new ones
    finally:
        pool.close()
    assert not pool.warm


class _Slowly:
    """``fn`` after a pause: a worker's task still running when the build's process fails."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, arg):
        import time

        time.sleep(1.0)
        return self.fn(arg)


class _SlowPool(ProcessPool):
    """Each run's pictures drawn after a pause (the other tasks as they are)."""

    def map(self, fn, args):
        return super().map(_Slowly(fn) if getattr(fn, "__name__", "") == "draw_run_task" else fn, args)


@pytest.mark.slow
def test_a_failed_render_ends_the_workers_before_their_folder_is_removed(project, monkeypatch):
    """Workers write each run's pictures into the staging folder: when the build's process fails
    meanwhile, they are ended first, so none of them writes into a folder already removed."""
    import time

    import reportgen.render.report

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in a chart")

    monkeypatch.setattr(reportgen.render.report, "norms_by_run", broken)
    spec = write_spec(project)
    docs = project / "docs"
    pool = _SlowPool(2, threads=1)
    try:
        with pytest.raises(RuntimeError, match="a bug in a chart"):
            build(spec, docs, device="cpu", cache_dir=None, executor=pool)
        assert not pool.warm  # ended, not left drawing
        time.sleep(1.5)  # longer than a task's pause: a worker left running would have written by now
    finally:
        pool.close()
    assert not docs.exists()  # the build made it, and removed it empty


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="reads /proc")
def test_a_worker_gives_back_what_its_task_freed():
    """Freed C-heap memory kept between live blocks (what a task's model and activations leave)
    goes back to the system, so idle workers kept for the later steps hold little."""
    from reportgen.run.executors import give_back_memory

    if not give_back_memory():
        pytest.skip("not glibc")

    def rss() -> float:
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

    give_back_memory()
    before = rss()
    blocks = [bytearray(64 << 10) for _ in range(3000)]  # 190 MB in the C heap, each block touched
    kept = blocks[::50] + [blocks[-1]]  # a few stay: the heap cannot shrink from its top
    del blocks
    held = rss()
    give_back_memory()
    after = rss()
    assert held - before > 150 and after - before < 40, (before, held, after)
    assert len(kept) == 61
