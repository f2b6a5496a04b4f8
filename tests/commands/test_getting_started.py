"""reportgen init / layers / schema: a newcomer's first commands."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from reportgen.cli import cli
from tests.conftest import ROOT


@pytest.mark.slow
def test_init_writes_a_spec_that_checks_and_builds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "tests/data/resnet_small.py", tmp_path / "net.py")
    import sys
    sys.path.insert(0, str(tmp_path))
    try:
        from net import SmallResNet
    finally:
        sys.path.pop(0)
    torch.save(SmallResNet().state_dict(), tmp_path / "net.pth")
    (tmp_path / "images").mkdir()
    shutil.copy(ROOT / "examples/edges/images/grace_hopper.jpg", tmp_path / "images")
    runner = CliRunner()
    res = runner.invoke(cli, ["init", "net.py:SmallResNet", "--checkpoint", "net.pth", "--size", "64",
                              "-o", "specs/net.yaml"])
    assert res.exit_code == 0, res.output
    assert "15 convolutions and 1 dense layers listed, 12 selected" in res.stdout
    text = (tmp_path / "specs/net.yaml").read_text()
    assert "    arch: ../net.py:SmallResNet\n    checkpoint: ../net.pth\n" in text
    assert "  - conv1                        # Conv2d, weights 8x3x7x7, output 8x32x32" in text
    layer_lines = text.split("\nlayers:\n")[1].splitlines()
    chosen = [line.split()[1] for line in layer_lines if line.startswith("  - ")]
    skipped = [line.split()[2] for line in layer_lines if line.startswith("  # - ")]
    assert len(chosen) == 12 and len(skipped) == 4 and chosen[0] == "conv1" and chosen[-1] == "fc"
    assert {"layer2.0.downsample.0", "layer3.0.downsample.0"} <= set(skipped)  # 1x1 convs go first
    # $schema resolves relative to the spec file
    schema_ref = text.splitlines()[0].split("$schema=")[1]
    schema = json.loads((tmp_path / "specs" / schema_ref).read_text())
    assert schema["title"] == "reportgen report spec"
    # a minimal site appears beside it, and is never overwritten
    assert (tmp_path / "mkdocs.yml").is_file() and (tmp_path / "docs/index.md").is_file()
    assert runner.invoke(cli, ["check", "specs/net.yaml"]).exit_code == 0
    res = runner.invoke(cli, ["build", "specs/net.yaml", "-q"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "docs/net/index.md").is_file()
    again = runner.invoke(cli, ["init", "net.py:SmallResNet", "-o", "specs/net.yaml"])
    assert again.exit_code == 1 and "already exists" in again.stderr


def test_init_rejects_a_checkpoint_of_another_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "tests/data/resnet_small.py", tmp_path / "net.py")
    torch.save({"w": torch.zeros(2)}, tmp_path / "other.pth")
    res = CliRunner().invoke(cli, ["init", "net.py:SmallResNet", "--checkpoint", "other.pth"])
    assert res.exit_code == 1 and "does not fit the architecture" in res.stderr
    assert not (tmp_path / "specs").exists()


def test_layers_lists_every_module_with_shapes(project):
    from tests.conftest import write_spec

    res = CliRunner().invoke(cli, ["layers", str(write_spec(project))])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == "model 'tiny' (input 3x16x16):"
    assert any(line.split() == ["conv2", "Conv2d", "8x4x3x3", "8x6x6"] for line in lines)
    assert any(line.split() == ["pool", "MaxPool2d", "-", "4x8x8"] for line in lines)


def test_schema_command_prints_json_schema():
    res = CliRunner().invoke(cli, ["schema"])
    schema = json.loads(res.stdout)
    assert schema["additionalProperties"] is False and "models" in schema["required"]


HEAD32 = '''
import torch
from torch import nn


class MyNet(nn.Module):
    """A small CNN whose dense head fixes the input to 32x32 (like a CIFAR model)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))
'''

MLP = '''
from torch import nn


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.ReLU(), nn.Linear(16, 10))
'''


def _user_project(tmp_path):
    """The layout the README's 'Your own model' block assumes."""
    import numpy as np
    from PIL import Image

    (tmp_path / "models").mkdir()
    (tmp_path / "models/mynet.py").write_text(HEAD32)
    ns: dict = {}
    exec(HEAD32, ns)
    torch.manual_seed(0)
    (tmp_path / "runs/run1").mkdir(parents=True)
    torch.save(ns["MyNet"]().state_dict(), tmp_path / "runs/run1/best.pt")
    (tmp_path / "images").mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"photo{i}.jpg")
    return ns["MyNet"]


def _readme_block() -> list[str]:
    import re

    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own model", 1)[1]
    body = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in body.splitlines() if line.strip()]


@pytest.mark.slow
def test_init_infers_a_dense_heads_input_size_and_no_normalisation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _user_project(tmp_path)
    res = CliRunner().invoke(cli, ["init", "models/mynet.py:MyNet", "-o", "specs/mynet.yaml"])
    assert res.exit_code == 0, res.output
    assert "Input size 32x32: the only size tried" in res.stdout
    assert "No normalisation" in res.stdout
    from reportgen.load.spec import load_spec

    spec = load_spec(tmp_path / "specs/mynet.yaml")
    assert spec.input.size == (32, 32) and spec.input.mean == (0.0, 0.0, 0.0) and spec.input.std == (1.0, 1.0, 1.0)
    assert [ls.name for ls in spec.layers] == ["conv1", "conv2", "fc1", "fc2"]
    # an MLP on flattened images: the side comes from in_features = 1 x 28 x 28
    (tmp_path / "mlp.py").write_text(MLP)
    res = CliRunner().invoke(cli, ["init", "mlp.py:mlp", "--channels", "grey", "--normalise", "imagenet",
                                   "-o", "specs/mlp.yaml"])
    assert res.exit_code == 0, res.output
    assert "Input size 28x28: from the first Linear layer's in_features (784 = 1 x 28 x 28)" in res.stdout
    spec = load_spec(tmp_path / "specs/mlp.yaml")
    assert spec.input.size == (28, 28) and spec.input.mean == (0.485,) and spec.input.std == (0.229,)
    assert [ls.name for ls in spec.layers] == ["1", "3"]  # quoted in YAML: "1" is not the number 1


def test_init_never_overwrites_the_users_site(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _user_project(tmp_path)
    (tmp_path / "mkdocs.yml").write_text("site_name: Mine\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/index.md").write_text("# My home\n")
    res = CliRunner().invoke(cli, ["init", "models/mynet.py:MyNet", "-o", "specs/mynet.yaml"])
    assert res.exit_code == 0 and "minimal MkDocs site" not in res.stdout
    assert (tmp_path / "mkdocs.yml").read_text() == "site_name: Mine\n"
    assert (tmp_path / "docs/index.md").read_text() == "# My home\n"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_then_signal(tmp_path, args: list[str], sig) -> tuple[str, str]:
    """Start `reportgen serve` as a real process, wait for the site, send ``sig``; return
    the root page and the server's output. Fails if the port still answers afterwards."""
    import os
    import signal  # noqa: F401
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "reportgen", "serve", *args, "--device", "cpu",
                             "-a", f"127.0.0.1:{port}"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    page = ""
    try:
        deadline = time.monotonic() + 300  # a build and a site build on a busy 2-core machine
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(1)
        assert page, f"the server never answered: {proc.poll()}"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    with socket.socket() as s:  # the mkdocs child is gone too: nothing listens any more
        assert s.connect_ex(("127.0.0.1", port)) != 0, "mkdocs serve outlived reportgen serve"
    assert proc.returncode == 0, out
    return page, out


@pytest.mark.slow
def test_readme_own_model_block_works_verbatim_and_serve_stops_on_signals(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    _user_project(tmp_path)
    commands = _readme_block()
    assert [c.split()[:2] for c in commands] == [["reportgen", "init"], ["reportgen", "check"],
                                                 ["reportgen", "build"], ["reportgen", "serve"]]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    for command in commands[:3]:
        proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "docs/mynet/index.md").is_file()
    serve_args = commands[3].split()[2:]  # the README's own arguments, on a free port
    page, out = _serve_then_signal(tmp_path, serve_args, signal.SIGTERM)
    assert 'href="mynet/"' in page, page[:2000]  # the root page lists the report
    page, out = _serve_then_signal(tmp_path, serve_args, signal.SIGINT)
    assert "mynet" in page
