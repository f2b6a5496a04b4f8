"""Bad input, as a matrix: each case gets one clear 'Error:' line, a non-zero exit, no
traceback, and leaves the previously built report exactly as it was."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from reportgen.cli import cli
from tests.conftest import ROOT, SPEC, tiny_module, write_spec


class Evil:
    def __reduce__(self):
        return (os.system, ("echo unpickled > /dev/null",))


def _replace(old, new):
    return lambda p: write_spec(p, SPEC.replace(old, new))


def _ckpt(loc, make):
    def mutate(p):
        make(p / "ckpt" / f"{loc}.pt")
        return write_spec(p)
    return mutate


def _image(make):
    def mutate(p):
        make(p / "img" / "im1.png")
        return write_spec(p)
    return mutate


CASES = {
    "malformed YAML": (lambda p: write_spec(p, SPEC.replace("title: Tiny report", "title: [oops")),
                       r"spec.yaml:\d+:\d+: invalid YAML"),
    "unknown key": (_replace("arch_args", "archargs"), r"spec.yaml:7: models\[0\].archargs: unknown key; did you mean 'arch_args'\?"),
    "wrong type": (_replace("size: [16, 16]", "size: big"), r"spec.yaml:11: input.size: input should be a valid tuple"),
    "empty locations": (_replace("[a, b, c]", "[]"), r"spec.yaml:9: models\[0\].locations: list should have at least 1 item"),
    "missing checkpoint": (_ckpt("b", lambda f: f.unlink()), r"spec.yaml:9: models\[0\].locations\[1\]: checkpoint for location 'b' not found"),
    "truncated checkpoint": (_ckpt("c", lambda f: f.write_bytes(f.read_bytes()[:300])),
                             r"location 'c': checkpoint .*c.pt is truncated, corrupt or not a PyTorch checkpoint"),
    "other architecture": (_ckpt("a", lambda f: torch.save(tiny_module(width=6).state_dict(), f)),
                           r"location 'a': checkpoint .* does not fit the architecture: wrong shapes"),
    "pickle that runs code": (_ckpt("a", lambda f: torch.save({"state_dict": tiny_module().state_dict(), "x": Evil()}, f)),
                              r"refuses, because unpickling them can run code; .* set 'trusted: true'"),
    "unknown layer": (_replace("  - conv2\n", "  - conv9\n"), r"spec.yaml:16: layers\[1\]: model 'tiny' has no layer 'conv9'; did you mean"),
    "unreadable image": (_image(lambda f: f.write_bytes(b"\x89PNG\r\n\x1a\nbroken")), r"image .*im1.png cannot be read"),
    "empty image file": (_image(lambda f: f.write_bytes(b"")), r"image .*im1.png cannot be read"),
    "1x1 image": (_image(lambda f: Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(f)), r"image .*im1.png is 1x1 pixels, too small"),
    "glob matches nothing": (_replace("img/*.png", "img/*.tif"), r"spec.yaml:13: images\[0\]: no image files match 'img/\*.tif'"),
    "slug outside docs": (_replace("report: tiny", "report: ../../etc"), r"spec.yaml:1: report: '../../etc' is not allowed"),
    "location outside docs": (_replace("[a, b, c]", "[a, b, ../../c]"), r"location name '../../c' is not allowed"),
}


@pytest.fixture
def built(project):
    """The project with a good report already built into docs/."""
    res = CliRunner().invoke(cli, ["build", str(write_spec(project)), "--docs-dir", str(project / "docs"), "-q"])
    assert res.exit_code == 0, res.output
    return project


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_matrix(built, case):
    mutate, message = CASES[case]
    before = snapshot(built / "docs")
    spec = mutate(built)
    res = CliRunner().invoke(cli, ["build", str(spec), "--docs-dir", str(built / "docs"), "--device", "cpu"])
    assert res.exit_code == 1, (case, res.output)
    assert isinstance(res.exception, SystemExit), f"{case}: unexpected exception {res.exception!r}"
    errors = [line for line in res.stderr.strip().splitlines() if not line.startswith("[")]  # progress lines
    assert len(errors) == 1 and errors[0].startswith("Error: "), (case, res.stderr)
    assert re.search(message, errors[0]), (case, errors[0])
    assert "Traceback" not in res.output
    assert snapshot(built / "docs") == before, f"{case}: the previous report changed"


def test_trusted_flag_accepts_the_pickle(built):
    torch.save({"state_dict": tiny_module().state_dict(), "x": Evil()}, built / "ckpt" / "a.pt")
    spec = write_spec(built, SPEC.replace("checkpoint: ckpt", "trusted: true\n    checkpoint: ckpt"))
    res = CliRunner().invoke(cli, ["build", str(spec), "--docs-dir", str(built / "docs"), "-q"])
    assert res.exit_code == 0, res.output


def test_cuda_without_gpu_leaves_report(built):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    before = snapshot(built / "docs")
    res = CliRunner().invoke(cli, ["build", str(write_spec(built)), "--docs-dir", str(built / "docs"), "--device", "cuda"])
    assert res.exit_code == 1 and res.stderr.startswith("Error: device 'cuda' was asked for")
    assert snapshot(built / "docs") == before


def test_layer_without_weights_builds_with_activations_only(built):
    spec = write_spec(built, SPEC.replace("  - fc\n", "  - pool\n  - relu1\n"))
    res = CliRunner().invoke(cli, ["build", str(spec), "--docs-dir", str(built / "docs"), "-q"])
    assert res.exit_code == 0, res.output
    page = (built / "docs/tiny/locations/a.md").read_text()
    assert "This layer has no weight tensor, so only its activations are shown." in page


def test_nan_weights_build_and_are_flagged(built):
    sd = tiny_module().state_dict()
    sd["conv2.weight"][3] = float("nan")
    torch.save(sd, built / "ckpt" / "b.pt")
    res = CliRunner().invoke(cli, ["build", str(write_spec(built)), "--docs-dir", str(built / "docs"), "-q"])
    assert res.exit_code == 0, res.output
    assert "**b** is broken: [1 of 8 `conv2` filters hold NaN or Inf]" in (built / "docs/tiny/index.md").read_text()


def test_html_and_markdown_in_title_are_escaped(built):
    spec = write_spec(built, SPEC.replace("title: Tiny report", "title: '<script>alert(1)</script> **bold** [x](y)'")
                      .replace("description: Three locations of a tiny network.",
                               "description: 'A <img src=x onerror=alert(1)> *desc*'"))
    res = CliRunner().invoke(cli, ["build", str(spec), "--docs-dir", str(built / "docs"), "-q"])
    assert res.exit_code == 0, res.output
    index = (built / "docs/tiny/index.md").read_text()
    # HTML is neutralised; bold and link syntax are escaped (brackets suffice for the link)
    assert index.startswith("# &lt;script&gt;alert(1)&lt;/script&gt; \\*\\*bold\\*\\* \\[x\\](y)\n")
    assert "<script" not in index and "<img" not in index
    assert "A &lt;img src=x onerror=alert(1)&gt; *desc*" in index  # Markdown kept, HTML neutralised


def test_second_build_at_once_refuses_cleanly(built):
    from reportgen.site import build_lock

    before = snapshot(built / "docs")
    with build_lock(built / "docs", "tiny"):
        res = CliRunner().invoke(cli, ["build", str(write_spec(built)), "--docs-dir", str(built / "docs")])
    assert res.exit_code == 1
    assert res.stderr.startswith("Error: another build of report 'tiny' is running")
    assert snapshot(built / "docs") == {k: v for k, v in before.items()}


def test_ctrl_c_during_a_build_leaves_the_previous_report(tmp_path):
    """A real SIGINT to a real build of the TownCentre example."""
    docs = tmp_path / "docs"
    env = {**os.environ, "REPORTGEN_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "reportgen", "build", str(ROOT / "specs/edges.yaml"), "--docs-dir", str(docs), "-q"]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    before = snapshot(docs / "edges")
    cmd = [sys.executable, "-m", "reportgen", "build", str(ROOT / "specs/towncenter.yaml"), "--docs-dir",
           str(docs), "--no-cache"]
    subprocess.run([sys.executable, "-m", "reportgen", "build", str(ROOT / "specs/towncenter.yaml"), "--docs-dir",
                    str(docs), "-q"], check=True, env=env, capture_output=True)
    before_tc = snapshot(docs / "towncenter")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # well inside the analysis of ten locations
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in err
    assert snapshot(docs / "towncenter") == before_tc
    assert snapshot(docs / "edges") == before
    assert not list(docs.glob(".towncenter~staging-*"))
