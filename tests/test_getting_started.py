"""reportgen init / layers / schema: a newcomer's first commands."""

from __future__ import annotations

import json
import shutil

import torch
from click.testing import CliRunner

from reportgen.cli import cli
from tests.conftest import ROOT


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
    assert "15 convolutions and 1 dense layers listed, 4 selected" in res.stdout
    text = (tmp_path / "specs/net.yaml").read_text()
    assert "    arch: ../net.py:SmallResNet\n    checkpoint: ../net.pth\n" in text
    assert "  - conv1                        # Conv2d, weights 8x3x7x7, output 8x32x32" in text
    assert "  # - layer1.0.conv1" in text
    assert json.loads((tmp_path / "specs/spec.schema.json").read_text())["title"] == "reportgen report spec"
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
