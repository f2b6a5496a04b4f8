"""The Ray executor on a local Ray instance: order, errors, GPUs per task, the optional import,
and the same report from the sequential, process-pool and Ray executors."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from reportgen.core.errors import ReportgenError, SpecError
from reportgen.run.executors import EXECUTORS
from tests.conftest import ROOT

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install 'reportgen[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module (it takes seconds to start): 2 CPUs, and one GPU
    declared so that a task asking for a GPU can be scheduled on a machine without one."""
    if ray.is_initialized():
        ray.shutdown()
    for attempt in range(3):
        try:
            # Workers import reportgen and these tests from this checkout, not an installed copy.
            ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
            break
        except Exception:  # Ray gives its raylet 30 s to register: a heavily loaded machine can miss that
            ray.shutdown()
            if attempt == 2:
                raise
    yield ray
    ray.shutdown()


def slow_square(x: int) -> int:
    time.sleep(0.3 if x == 0 else 0.0)  # the first task finishes last
    return x * x


def fail_on(x: int) -> int:
    if x == 2:
        raise SpecError("spec.yaml:3: models[0].checkpoint: broken; fix it")
    return x


def assigned(_) -> dict:
    return {k: v for k, v in ray.get_runtime_context().get_assigned_resources().items() if v}


@pytest.mark.slow
def test_results_come_in_argument_order(local_ray):
    ex = EXECUTORS["ray"]()
    args = list(range(7))
    assert list(ex.map(slow_square, args)) == [x * x for x in args]
    ex.close()
    assert local_ray.is_initialized(), "a Ray it did not start is left running"


def test_a_window_smaller_than_the_work_still_returns_everything(local_ray):
    ex = EXECUTORS["ray"](max_in_flight=1)
    assert list(ex.map(abs, [-3, 2, -1])) == [3, 2, 1]  # a builtin works as well as a function


def test_user_error_in_a_task_arrives_as_itself(local_ray):
    with pytest.raises(SpecError) as info:
        list(EXECUTORS["ray"]().map(fail_on, [0, 1, 2, 3]))
    assert str(info.value) == "spec.yaml:3: models[0].checkpoint: broken; fix it"


@dataclass(frozen=True)
class Task:  # like reportgen.run.task.RunTask, it says where it runs
    device: str


@pytest.mark.slow
def test_cuda_tasks_ask_for_one_gpu(local_ray):
    from reportgen.run.executors_ray import gpus_per_task

    assert [gpus_per_task(d) for d in ("cpu", "cuda", "cuda:1")] == [0, 1, 1]
    got = list(EXECUTORS["ray"]().map(assigned, [Task("cuda"), Task("cpu"), Task("cuda:0")]))
    assert got == [{"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}]
    assert list(EXECUTORS["ray"](num_gpus_per_task=1).map(assigned, [0])) == [{"CPU": 1.0, "GPU": 1.0}]
    assert list(EXECUTORS["ray"]().map(assigned, [0])) == [{"CPU": 1.0}]


@pytest.mark.slow
def test_reportgen_imports_without_ray_and_says_how_to_install(monkeypatch):
    code = ("import sys, reportgen.cli, reportgen.run.executors\n"
            "assert 'ray' not in sys.modules, 'ray imported at reportgen import time'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(ReportgenError, match=r"^--executor ray needs the Ray package, which is not installed; "
                                             r"install it with pip install 'reportgen\[ray\]'$"):
        list(EXECUTORS["ray"]().map(abs, [1]))


UNITS = """\
analyses:
  units:
    layers: [conv2]
    locations: [b]
    steps: 4
    fourier_steps: 8
    max_units: 4
"""


def _published(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_sequential_process_pool_and_ray_publish_identical_reports(local_ray, tmp_path):
    """One small report of three locations, with unit views, built by each executor from
    nothing (no cache): report.json and every page and picture are byte-identical."""
    from reportgen.build import build
    from tests.conftest import SPEC, make_project, write_spec

    spec = write_spec(make_project(tmp_path / "project"), SPEC + UNITS)
    executors = {"sequential": EXECUTORS["sequential"](), "process": EXECUTORS["process"](jobs=2),
                 "ray": EXECUTORS["ray"]()}
    built = {}
    for name, executor in executors.items():
        build(spec, tmp_path / name, device="cpu", cache_dir=None, executor=executor)
        built[name] = _published(tmp_path / name / "tiny")
    ref = built["sequential"]
    assert "report.json" in ref and "locations/b.md" in ref and any(k.startswith("units/") for k in ref)
    for name in ("process", "ray"):
        assert sorted(built[name]) == sorted(ref), name
        differ = [k for k in ref if built[name][k] != ref[k]]
        assert not differ, f"{name} differs from sequential in {differ}"


def test_a_folder_the_nodes_cannot_see_is_found_before_any_task(local_ray, tmp_path):
    from reportgen.run.executors_ray import nodes_missing, require_shared_folder

    (tmp_path / "there").write_text("x")
    assert nodes_missing(local_ray, str(tmp_path / "there")) == []
    (node,) = nodes_missing(local_ray, str(tmp_path / "not-there"))  # the one node of the local cluster
    assert node == local_ray.nodes()[0]["NodeManagerAddress"]
    require_shared_folder(local_ray, str(tmp_path / "spill"))  # one machine: nothing to check, nothing left behind
    assert not (tmp_path / "spill").exists() or not any((tmp_path / "spill").iterdir())


def test_several_nodes_without_the_folder_refuse_with_one_line(local_ray, tmp_path, monkeypatch):
    from reportgen.run import executors_ray

    two = [{"Alive": True, "NodeID": "a"}, {"Alive": True, "NodeID": "b"}]
    monkeypatch.setattr(local_ray, "nodes", lambda: two)
    monkeypatch.setattr(executors_ray, "nodes_missing", lambda ray, path: ["10.0.0.2"])
    with pytest.raises(ReportgenError, match=r"^the cache folder \S+spill is not shared with the Ray node\(s\) "
                                             r"10\.0\.0\.2; pass --cache-dir on a filesystem"):
        executors_ray.require_shared_folder(local_ray, str(tmp_path / "spill"))
    assert list((tmp_path / "spill").iterdir()) == []  # the probe file is removed


@pytest.mark.slow
def test_ray_build_with_every_why_analysis_is_byte_identical(local_ray, tmp_path):
    """The data, training, concepts and importance analyses, whose findings tie on severity and
    value: a Ray build (whose driver imports the analyses in the order their results arrive)
    publishes the same files as one in this process."""
    from reportgen.build import build
    from tests.test_reproducible import differences, published, why_spec

    spec = why_spec(tmp_path)
    build(spec, tmp_path / "seq", device="cpu", cache_dir=None, executor=EXECUTORS["sequential"]())
    build(spec, tmp_path / "ray", device="cpu", cache_dir=None, executor=EXECUTORS["ray"]())
    ref = published(tmp_path / "seq")
    assert {"training.md", "concepts.md", "importance.md"} <= set(ref)
    assert differences(published(tmp_path / "ray"), ref) == []
