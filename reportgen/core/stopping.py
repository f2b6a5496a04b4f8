"""Stopping a build cleanly on SIGINT (Ctrl-C) and SIGTERM (CI time-outs, ``docker stop``, systemd).

``reportgen build`` runs inside ``on_signals()``: the first SIGINT or SIGTERM becomes a
``Stopped`` exception in the main thread, so the clean-up that runs when a build fails runs
for these too: the process pool's workers are ended at once (reportgen.run.executors), the
spill folder and the lock are removed (reportgen.core.spill, reportgen.publish.site) and the previous
report stays as it was (a new one is swapped in only at the very end). The CLI then prints
one ``Stopped:`` line and exits 128 + the signal's number (130, 143).

Later signals are ignored while that clean-up runs (it takes about a second), and until the
process exits: ``timeout`` sends its signal twice (to the build and to its process group),
which must not cut the clean-up short. SIGKILL cannot be caught; the next build of the
report removes what a killed one left behind.

Clean-up that also runs when nothing went wrong (removing the spill folder, shutting the
pool down) runs inside ``shielded()``: a signal that arrives meanwhile is raised when the
block ends, not halfway through it. Once the new report has been swapped in
(``published()``), a signal no longer stops the build: it ends as usual, and the CLI
then says that it was asked to stop after publishing and exits with the signal's status.

Without ``on_signals()`` (reportgen used as a library) nothing here changes how signals
are handled.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """The build was asked to stop by ``signum``. A KeyboardInterrupt, so ``except Exception``
    never swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return exit_status(self.signum)


def exit_status(signum: int) -> int:
    """The shell's status of a command ended by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + signum


@dataclass
class StopState:
    signum: int | None = None  # the first stop signal received
    raised: bool = False  # Stopped was raised for it
    shield: int = 0  # depth of shielded() blocks
    published: bool = False  # the new report is in place: too late to stop
    active: bool = False  # inside on_signals()
    report: Path | None = None  # the report folder the build would replace, once known


_state = StopState()


def handle_signal(signum: int, _frame) -> None:
    if _state.signum is not None:
        return  # already stopping: let the clean-up finish
    _state.signum = signum
    if _state.shield == 0 and not _state.published:
        _state.raised = True
        raise Stopped(signum)


@contextmanager
def on_signals() -> Iterator[StopState]:
    """Turn the first SIGINT or SIGTERM into ``Stopped`` in the main thread (see the module).

    A signal that this process was started with ignored (``nohup``, a background job)
    stays ignored. Outside the main thread this changes nothing. The handlers are put back
    on exit unless a signal was received: then later ones stay ignored until the process exits.
    """
    global _state
    if threading.current_thread() is not threading.main_thread():
        yield StopState()
        return
    _state = StopState(active=True)
    previous = {}
    for sig in SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handle_signal)
    try:
        yield _state
    finally:
        _state.active = False
        if _state.signum is None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@contextmanager
def shielded() -> Iterator[None]:
    """Run the block to its end even when a stop signal arrives meanwhile; raise ``Stopped``
    after it (unless the report is already published, or Stopped was already raised)."""
    _state.shield += 1
    try:
        yield
    finally:
        _state.shield -= 1
        if (_state.shield == 0 and _state.signum is not None and not _state.raised
                and not _state.published):
            _state.raised = True
            raise Stopped(_state.signum)


def building(report: Path) -> None:
    """Name the report folder the build writes, for the CLI's ``Stopped:`` line."""
    if _state.active:
        _state.report = report


def published() -> None:
    """The new report is in place: from now on a stop signal lets the build finish."""
    if _state.active:
        _state.published = True
