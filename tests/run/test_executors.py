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
    spec = write_spec(project, SPEC + UNITS)
    one = build(spec, project / "seq", device="cpu", cache_dir=None, executor=Sequential())
    two = build(spec, project / "pool", device="cpu", cache_dir=None, executor=ProcessPool(2))
    a, b = snapshot(project / "seq"), snapshot(project / "pool")
    assert sorted(a) == sorted(b) and len(a) > 20
    assert [k for k in a if a[k] != b[k]] == []
    assert one.warnings == two.warnings
    # the pool's workers counted their cache use too: all computed, nothing stored
    assert sum(two.cache.misses.values()) == sum(one.cache.misses.values()) > 0


def _square(x: int) -> int:
    return x * x


@pytest.mark.slow
def test_process_pool_keeps_argument_order_and_raises_task_errors():
    assert list(ProcessPool(2).map(_square, range(7))) == [x * x for x in range(7)]
    with pytest.raises(ZeroDivisionError):
        list(ProcessPool(2).map(_inverse, [1, 0, 2]))


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
