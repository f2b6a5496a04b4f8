"""A build stopped by SIGTERM (CI time-outs, docker stop, systemd) or SIGINT (Ctrl-C): it ends
its pool workers and everything it started, removes its lock and spill folder, leaves the
previous report as it was, prints one ``Stopped:`` line and exits 143 or 130."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from reportgen.cli import cli
from reportgen.core import stopping
from reportgen.run.executors import ProcessPool
from tests.conftest import ROOT, SPEC, make_project, tiny_module, write_spec

LOCATIONS = ["a", "b", "c", "d", "e", "f"]
# Unit views of every location: each task takes a second or two, so the map step lasts a while.
SLOW = (SPEC.replace("[a, b, c]", f"[{', '.join(LOCATIONS)}]")
        + "analyses:\n  units: {layers: [conv1, conv2], locations: [a, b, c, d, e, f], maximise: plain, "
          "steps: 300, top_n: 2}\n")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def session(sid: int) -> dict[int, str]:
    """The live processes of session ``sid`` (zombies left out): pid -> command line."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, _ppid, _pgrp, sess = text[text.rindex(")") + 2:].split()[:4]
        if int(sess) == sid and state != "Z":
            found[int(stat.parent.name)] = cmdline
    return found


def ignores_sigint(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
    return bool(ignored & (1 << (signal.SIGINT - 1)))


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def slow_project(tmp_path):
    project = make_project(tmp_path / "project")
    for i, loc in enumerate(LOCATIONS[3:], 3):
        import torch

        torch.save({"state_dict": tiny_module(seed=i).state_dict(), "epoch": 3}, project / "ckpt" / f"{loc}.pt")
    return project


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.parametrize("sig, to_group", [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGINT, True)],
                         ids=["SIGTERM", "SIGINT", "Ctrl-C-to-the-process-group"])
@pytest.mark.slow
def test_a_signal_stops_a_process_pool_build_cleanly(tmp_path, slow_project, tiny_build, sig, to_group):
    docs = tmp_path / "docs"
    shutil.copytree(tiny_build[1] / "docs", docs)  # the previous report
    before = snapshot(docs)
    spec = write_spec(slow_project, SLOW)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "reportgen", "build", str(spec), "--docs-dir", str(docs), "-j", "2",
           "--executor", "process", "--no-cache", "-q"]
    # A session of its own, to find every process of the build; and SIGINT with the default
    # disposition a terminal gives (pytest-xdist's workers ignore it, and a child inherits that).
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        def workers() -> list[int]:
            return [pid for pid, cmdline in session(proc.pid).items() if "multiprocessing.spawn" in cmdline]

        def running() -> bool:  # both workers started, and a task of theirs has written a result
            assert proc.poll() is None, proc.communicate()
            return (len(workers()) == 2 and all(ignores_sigint(pid) for pid in workers())
                    and any(p.is_file() for p in docs.glob(".tiny~staging-spill-*/**/*")))

        wait_for(running, 90, "the pool's workers to run tasks")
        if to_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=30)  # returns once every process holding the pipes is gone
        took = time.monotonic() - t0
        wait_for(lambda: not session(proc.pid), 10, "the build's processes to end")
    finally:
        for pid in session(proc.pid):  # a failed test leaves nothing running
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, err
    assert err == (f"Stopped: reportgen build was interrupted by {sig.name}; "
                   f"the previous report in {docs / 'tiny'} is unchanged\n")
    assert out == ""
    assert took < 20
    assert sorted(p.name for p in docs.iterdir()) == sorted(p.name for p in (tiny_build[1] / "docs").iterdir())
    assert snapshot(docs) == before


def test_a_signal_after_publishing_lets_the_build_finish(project, monkeypatch):
    """Once the new report is swapped in, a signal no longer stops the build: it removes its
    helper files as usual and says what happened."""
    import reportgen.publish.site

    def publish_then_signal():
        publish_then_signal.original()
        if signal.getsignal(signal.SIGTERM) is not stopping.handle_signal:
            pytest.fail("the build does not handle SIGTERM")  # rather than end the test process
        os.kill(os.getpid(), signal.SIGTERM)

    publish_then_signal.original = reportgen.publish.site.published
    monkeypatch.setattr(reportgen.publish.site, "published", publish_then_signal)
    handler = signal.getsignal(signal.SIGTERM)
    docs = project / "docs"
    try:
        res = CliRunner().invoke(cli, ["build", str(write_spec(project)), "--docs-dir", str(docs), "--no-cache"])
    finally:
        signal.signal(signal.SIGTERM, handler)  # after a stop the build keeps ignoring signals
    assert res.exit_code == 143, res.output
    assert res.stderr.endswith(f"Stopped: reportgen build received SIGTERM after it had published {docs / 'tiny'}, "
                               "which is complete\n")
    assert "Traceback" not in res.output
    assert sorted(p.name for p in docs.iterdir()) == ["index.md", "tiny"]  # no lock, no spill folder left
    assert (docs / "tiny" / "index.md").is_file()


def test_a_signal_in_a_shielded_block_is_raised_at_its_end():
    handlers = {sig: signal.getsignal(sig) for sig in stopping.SIGNALS}
    done = []
    try:
        with stopping.on_signals() as stop:
            with pytest.raises(stopping.Stopped) as raised:
                with stopping.shielded():
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.01)
                    done.append(1)
            os.kill(os.getpid(), signal.SIGTERM)  # a second one is ignored
            time.sleep(0.01)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert done == [1] and raised.value.signum == signal.SIGTERM and stop.signum == signal.SIGTERM
    assert raised.value.exit_status == 143


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.mark.slow
def test_process_pool_ends_running_tasks_when_stopped_early():
    """An interrupt or a consumer that stops: the workers are ended, not waited for."""
    results = ProcessPool(2, threads=1).map(_sleep, [0, 120, 120])
    assert next(results) == 0
    t0 = time.monotonic()
    results.close()
    assert time.monotonic() - t0 < 10
