"""Progress for long builds: a bar with counts and ETA on a terminal, plain lines elsewhere.

The build reports through one callable, ``log(message)``; messages of the form
``[i/n] name`` advance the bar. Off a terminal (CI logs, pipes) every message is one
plain line, so logs stay readable.
"""

from __future__ import annotations

import re
import sys
import time

_STEP = re.compile(r"^\[(\d+)/(\d+)\] (.*)$")


class Progress:
    def __init__(self, enabled: bool = True, verbose: bool = False, stream=None):
        self.enabled = enabled
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        self._t0 = time.perf_counter()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        step = _STEP.match(message)
        if step and self.tty:
            i, n, name = int(step.group(1)), int(step.group(2)), step.group(3)
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=n, desc="locations", unit="run", file=self.stream, leave=False)
            self._bar.set_postfix_str(name)
            self._bar.update(i - 1 - self._bar.n)  # message i announces run i: i - 1 are done
            return
        if self._bar is not None and not step:
            self._bar.update(self._bar.total - self._bar.n)
            self._bar.close()
            self._bar = None
        elapsed = f"{time.perf_counter() - self._t0:6.1f}s " if self.verbose else ""
        print(f"{elapsed}{message}", file=self.stream, flush=True)
