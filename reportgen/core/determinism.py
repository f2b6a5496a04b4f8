"""Numbers that do not depend on where they were computed.

A build's report must be the same byte for byte whichever executor ran its per-run tasks
(this process with every core, a pool worker with a share of them, a Ray task with one).
Some torch kernels split their work by the number of threads, and the order of a float
sum changes its last bits: enough to change a 17-digit number in report.json. The few
computations that showed it run inside ``one_thread``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread inside the block, as it was outside it."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
