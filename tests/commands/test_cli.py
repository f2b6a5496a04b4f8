"""The CLI's contract: exit 0 / 1 (one 'Error:' line, no traceback) / 2 (usage)."""

from __future__ import annotations

import subprocess
import sys

import torch
from click.testing import CliRunner

from reportgen.cli import cli
from tests.conftest import SPEC, write_spec


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def test_build_success(project):
    res = invoke("build", write_spec(project), "--docs-dir", project / "docs", "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"Built {project / 'docs' / 'tiny'} in ")
    assert (project / "docs" / "tiny" / "index.md").is_file()


def test_user_error_is_one_line_exit_1(project):
    res = invoke("build", write_spec(project, SPEC.replace("title", "titel")), "--docs-dir", project / "docs")
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("Error: 2 problems in the spec:")
    assert "titel: unknown key; did you mean 'title'?" in res.stderr
    assert "Traceback" not in res.output


def test_missing_spec_file_exit_1(tmp_path):
    res = invoke("build", tmp_path / "nope.yaml")
    assert res.exit_code == 1
    assert res.stderr == f"Error: {tmp_path / 'nope.yaml'}: spec file not found; check the path\n"


def test_usage_error_exit_2():
    assert invoke("build").exit_code == 2
    assert invoke("frobnicate").exit_code == 2


def test_cuda_asked_without_gpu(project):
    if torch.cuda.is_available():
        return
    res = invoke("build", write_spec(project), "--docs-dir", project / "docs", "--device", "cuda")
    assert res.exit_code == 1
    assert res.stderr.startswith("Error: device 'cuda' was asked for but this machine has no CUDA GPU")
    assert not (project / "docs" / "tiny").exists()


def test_strict_makes_warnings_fatal(project):
    torch.jit.save(torch.jit.trace(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3)), torch.zeros(1, 3, 8, 8)),
                   project / "ts.pt")
    text = SPEC.replace("    arch: arch.py:TinyNet\n    arch_args: {width: 4}\n    checkpoint: ckpt/{location}.pt\n",
                        "    torchscript: ts.pt\n").replace("    locations: [a, b, c]\n", "").replace(
        "  - conv1\n  - conv2\n  - fc\n", "  - '0'\n")
    spec = write_spec(project, text)
    res = invoke("build", spec, "--docs-dir", project / "docs", "-q")
    assert res.exit_code == 0
    assert ("Warning: tiny: activation views skipped: this model was loaded from a TorchScript file, "
            "which cannot run Python forward hooks") in res.stderr
    res = invoke("build", spec, "--docs-dir", project / "docs2", "--strict")
    assert res.exit_code == 1 and "--strict was given" in res.stderr
    assert not (project / "docs2" / "tiny").exists()


def test_check_prints_summary(project):
    res = invoke("check", write_spec(project))
    assert res.exit_code == 0, res.output
    assert "report 'tiny', 3 runs" in res.stdout
    assert "conv1                    Conv2d         4x3x3x3" in res.stdout
    assert "3 distinct images, input tensor shapes [(3, 16, 16)]" in res.stdout


def test_check_finds_bad_checkpoint(project):
    (project / "ckpt" / "b.pt").write_bytes(b"xx")
    res = invoke("check", write_spec(project))
    assert res.exit_code == 1 and res.stderr.startswith("Error: location 'b': checkpoint ")


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "reportgen", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("reportgen, version ")
