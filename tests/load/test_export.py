"""torch.export programs (.pt2, spec key `exported`): every view, the exported model's own layer
names, a batch fixed at export, and the same safety rule as checkpoints (tensors only unless
the spec trusts the file)."""

from __future__ import annotations

import json
import re
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from reportgen.build import build
from reportgen.core.errors import ModelLoadError, SpecError
from reportgen.load.models import load_model
from reportgen.load.spec import load_spec
from tests.conftest import write_spec
from tests.sites import strict_lone_site


class _Net(nn.Module):
    """What a user exports: a block in a Sequential, a BatchNorm, an upsampling head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.act2 = nn.ReLU()
        self.up = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.up(self.act2(self.conv2(self.pool(self.stem(x)))))
        return self.head(torch.relu(x).mean(dim=(2, 3)))


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = _Net().eval()
    with torch.no_grad():
        net.stem[1].running_mean.uniform_(-0.2, 0.2)
        net.stem[1].running_var.uniform_(0.5, 2.0)
    return net


def _save(net: nn.Module, path, dynamic: bool = True) -> None:
    x = torch.zeros(2 if dynamic else 1, 3, 16, 16)
    shapes = {"x": {0: torch.export.Dim("batch")}} if dynamic else None
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=shapes), str(path))


def _channel_max(net: nn.Module, project, layer: str) -> np.ndarray:
    from reportgen.load.images import load_image
    from reportgen.load.spec import InputSpec

    x = torch.stack([load_image(p, InputSpec(size=(16, 16))).tensor for p in sorted((project / "img").glob("*.png"))])
    got = {}
    h = dict(net.named_modules())[layer].register_forward_hook(lambda m, i, o: got.setdefault("o", o.clone()))
    with torch.no_grad():
        net(x)
    h.remove()
    return torch.relu(got["o"]).amax(dim=(0, 2, 3)).numpy()


SPEC = """\
report: exp
title: An exported program
models:
  - name: exp
    exported: exp_{location}.pt2
    locations: [a, b]
input: {size: 16}
images: [img/*.png]
layers: [stem.0, conv2, up, head]
analyses:
  units: {layers: [conv2], steps: 2, top_n: 2, max_units: 2, maximise: plain}
"""


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic_batch", "batch_fixed_at_1"])
def test_an_exported_program_builds_every_view_under_its_own_layer_names(project, one_thread, dynamic):
    nets = {loc: _net(seed) for seed, loc in enumerate("ab")}
    for loc, net in nets.items():
        _save(net, project / f"exp_{loc}.pt2", dynamic)
    spec = write_spec(project, SPEC)
    from reportgen.commands.layers import list_layers

    listing = list_layers(spec)
    assert re.search(r"stem\.0\s+Conv2d\s+4x3x3x3\s+4x16x16", listing), listing
    assert re.search(r"up\s+ConvTranspose2d", listing), listing
    docs = project / "docs"
    result = build(spec, docs, device="cpu")
    assert not result.warnings, result.warnings
    a = result.report["runs"][0]
    layers = {lay["name"]: lay for lay in a["layers"]}
    assert layers["stem.0"]["type"] == "Conv2d" and layers["stem.0"]["kernel_size"] == [3, 3]
    # An unflattened program is not traced by torch.fx: the activation is found in registration order.
    assert layers["stem.0"]["activation_source"].startswith("module 'stem.1' then module 'stem.2'")
    assert layers["conv2"]["relu_applied"] and layers["conv2"]["activation_source"].startswith("module 'act2'")
    ref = nets["a"]
    norms = ref.conv2.weight.detach().reshape(6, -1).norm(dim=1).numpy()
    np.testing.assert_allclose([f["l2_norm"] for f in layers["conv2"]["filters"]], norms, rtol=1e-6)
    np.testing.assert_allclose([c["max"] for c in layers["conv2"]["channels"]], _channel_max(ref, project, "conv2"),
                               rtol=1e-5, atol=1e-6)
    up = ref.up.weight.detach()  # (in 6, out 4, 2, 2): output channel c's filter is up[:, c]
    np.testing.assert_allclose([f["l2_norm"] for f in layers["up"]["filters"]],
                               up.transpose(0, 1).reshape(4, -1).norm(dim=1).numpy(), rtol=1e-6)
    assert a["checkpoint"].endswith("exp_a.pt2") and "conversion" not in a
    out = docs / "exp"
    assert (out / "units" / "a" / "conv2.md").is_file()
    assert json.loads((out / "report.json").read_text())["runs"][1]["location"] == "b"
    proc = strict_lone_site(docs, project)
    assert proc.returncode == 0, proc.stderr


def _rewrite(path, change) -> None:
    """The archive at ``path`` with ``change(name, data) -> data`` applied to each member."""
    with zipfile.ZipFile(path) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in members:
            zf.writestr(info, change(info.filename, data))


class Payload:
    """Stands for what an attacker would pickle: anything that is not a tensor."""


def test_a_program_with_pickled_objects_is_refused_unless_trusted(project):
    import io

    _save(_net(), project / "exp_a.pt2")
    _save(_net(1), project / "exp_b.pt2")
    pickled = io.BytesIO()
    torch.save({"not": Payload()}, pickled)

    with zipfile.ZipFile(project / "exp_a.pt2") as zf:
        config = next(n for n in zf.namelist() if n.endswith("model_weights_config.json"))
        payload = json.loads(zf.read(config))["config"]["conv2.weight"]["path_name"]

    def poison(name: str, data: bytes) -> bytes:
        if name == config:
            cfg = json.loads(data)
            cfg["config"]["conv2.weight"]["use_pickle"] = True
            return json.dumps(cfg).encode()
        return pickled.getvalue() if name.endswith("weights/" + payload) else data

    _rewrite(project / "exp_a.pt2", poison)
    spec = load_spec(write_spec(project, SPEC))
    with pytest.raises(ModelLoadError) as err:
        load_model(spec, spec.runs[0])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{spec.path}:5: models[0].exported: location 'a': exported program ")
    assert "stores weights as Python objects that safe loading (weights_only) refuses" in msg
    assert "set 'trusted: true' on the model if you trust the file" in msg

    _save(_net(), project / "exp_a.pt2")
    with zipfile.ZipFile(project / "exp_a.pt2", "a") as zf:
        prefix = zf.namelist()[0].split("/")[0]
        zf.writestr(f"{prefix}/data/constants/custom_obj_0", b"\x80\x04N.")
    with pytest.raises(ModelLoadError, match=r"holds Python objects \(custom_obj_0\) that torch.export.load "
                                             r"unpickles, which can run code"):
        load_model(spec, spec.runs[0])


def test_exported_stands_alone_and_bad_files_say_what_to_do(project):
    text = SPEC.replace("    exported: exp_{location}.pt2\n", "    exported: exp_{location}.pt2\n"
                                                                 "    arch: arch.py:TinyNet\n")
    (project / "exp_a.pt2").write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip
    (project / "exp_b.pt2").write_bytes(b"not an archive")
    with pytest.raises(SpecError, match=r"an exported program carries its architecture and weights; remove 'arch'"):
        load_spec(write_spec(project, text))
    spec = load_spec(write_spec(project, SPEC))
    with pytest.raises(ModelLoadError, match=r"exp_b.pt2 is not a torch.export archive \(a .pt2 file from "
                                             r"torch.export.save\)"):
        load_model(spec, spec.runs[1])
    with pytest.raises(ModelLoadError, match=r"exp_a.pt2 cannot be loaded by torch.export.load"):
        load_model(spec, spec.runs[0])


def test_init_writes_a_spec_for_a_program(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from PIL import Image

    from reportgen.cli import cli

    monkeypatch.chdir(tmp_path)
    _save(_net(), tmp_path / "net.pt2", dynamic=False)
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(tmp_path / "images/a.jpg")
    res = CliRunner().invoke(cli, ["init", "net.pt2", "-o", "specs/net.yaml"])
    assert res.exit_code == 0, res.output
    assert "Input size 16x16: from the exported program's input shape" in res.stdout
    text = (tmp_path / "specs/net.yaml").read_text()
    assert "    exported: ../net.pt2\n" in text and "arch:" not in text
    spec = load_spec(tmp_path / "specs/net.yaml")
    assert "conv2" in [ls.name for ls in spec.layers]
