"""``reportgen install-onnx``: installs the ONNX converter, onnx2torch, into this Python.

Every onnx2torch release requires torchvision, which it imports only for its
NonMaxSuppression and RoiAlign converters; torchvision's wheels from the package index
bring a CUDA build of torch and replace a CPU one. So the ``onnx`` extra leaves onnx2torch
out, and this command installs it with ``--no-deps`` (its other requirements, onnx and
torch, come with ``pip install "reportgen[onnx]"``). reportgen.load.formats imports it
without torchvision.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from reportgen.core.errors import ReportgenError
from reportgen.load.formats import ONNX2TORCH


def install_command() -> list[str]:
    """The pip command line that installs the converter into the running Python."""
    return [sys.executable, "-m", "pip", "install", "--no-deps", ONNX2TORCH]


def install_onnx(echo=print) -> None:
    """Run ``install_command()``, printing it first (through ``echo``); a ReportgenError of one
    line when pip fails."""
    cmd = install_command()
    echo(shlex.join(cmd))
    try:
        proc = subprocess.run(cmd, check=False)
    except OSError as exc:
        raise ReportgenError(f"pip could not be started ({exc}); run it yourself: {shlex.join(cmd)}") from None
    if proc.returncode != 0:
        raise ReportgenError(f"pip exited with status {proc.returncode} while installing {ONNX2TORCH} "
                             f"(its output is above); fix what it says, then run `reportgen install-onnx` again")
