"""Checkpoint and model formats: safetensors, prefixed (Lightning) state_dicts, TorchScript
with and without its Python class, ONNX. Each test makes its own file."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from reportgen.build import build
from reportgen.core.errors import ModelLoadError
from reportgen.core.names import slug
from reportgen.load.formats import onnx_available
from reportgen.load.models import load_model
from reportgen.load.spec import load_spec
from tests.conftest import SPEC, tiny_module, write_spec
from tests.sites import strict_lone_site


def _one_location(text: str, **model_keys: str) -> str:
    """The conftest spec reduced to location 'a', with the model's source keys replaced."""
    text = text.replace("    checkpoint: ckpt/{location}.pt\n    locations: [a, b, c]\n", "")
    keys = "".join(f"    {k}: {v}\n" for k, v in model_keys.items())
    return text.replace("    arch_args: {width: 4}\n", "    arch_args: {width: 4}\n" + keys)


def _conv1_norms(spec_path) -> np.ndarray:
    spec = load_spec(spec_path)
    model = load_model(spec, spec.runs[0]).module
    return model.conv1.weight.detach().reshape(4, -1).norm(dim=1).numpy()


def _expected_norms(seed: int = 0) -> np.ndarray:
    return tiny_module(seed=seed).conv1.weight.detach().reshape(4, -1).norm(dim=1).numpy()


def test_safetensors_checkpoint_by_suffix_and_by_header(project):
    from safetensors.torch import save_file

    save_file(tiny_module(seed=1).state_dict(), str(project / "w.safetensors"))
    save_file(tiny_module(seed=2).state_dict(), str(project / "w.bin"))  # no telling suffix
    for name, seed in (("w.safetensors", 1), ("w.bin", 2)):
        spec = write_spec(project, _one_location(SPEC, checkpoint=name))
        np.testing.assert_allclose(_conv1_norms(spec), _expected_norms(seed), rtol=1e-6)
    (project / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    spec = write_spec(project, _one_location(SPEC, checkpoint="bad.safetensors"))
    with pytest.raises(ModelLoadError, match=r"bad.safetensors is not a readable safetensors file"):
        _conv1_norms(spec)


def _lightning(state: dict, prefix: str, extra: dict | None = None) -> dict:
    """What a LightningModule checkpoint holds: the module's state_dict under 'state_dict',
    every name prefixed by the attribute that holds the network, plus training state."""
    sd = {prefix + k: v for k, v in state.items()}
    sd.update(extra or {})
    return {"epoch": 7, "global_step": 700, "pytorch-lightning_version": "2.4.0", "state_dict": sd,
            "optimizer_states": [], "lr_schedulers": [], "hyper_parameters": {"lr": 0.01, "width": 4}}


def test_lightning_checkpoint_prefix_found_automatically(project):
    ckpt = _lightning(tiny_module(seed=1).state_dict(), "model.", {"criterion.pos_weight": torch.ones(3)})
    torch.save(ckpt, project / "lightning.ckpt")
    spec = write_spec(project, _one_location(SPEC, checkpoint="lightning.ckpt"))
    np.testing.assert_allclose(_conv1_norms(spec), _expected_norms(1), rtol=1e-6)
    # torch.compile wraps the network once more: model._orig_mod.conv1.weight
    torch.save(_lightning(tiny_module(seed=2).state_dict(), "model._orig_mod."), project / "compiled.ckpt")
    spec = write_spec(project, _one_location(SPEC, checkpoint="compiled.ckpt"))
    np.testing.assert_allclose(_conv1_norms(spec), _expected_norms(2), rtol=1e-6)


def test_checkpoint_prefix_chooses_between_two_networks(project):
    both = {**{"teacher." + k: v for k, v in tiny_module(seed=1).state_dict().items()},
            **{"student." + k: v for k, v in tiny_module(seed=2).state_dict().items()}}
    torch.save({"state_dict": both}, project / "distil.ckpt")
    spec = write_spec(project, _one_location(SPEC, checkpoint="distil.ckpt"))
    with pytest.raises(ModelLoadError, match=r"several prefixes \((student\., teacher\.|teacher\., student\.)\); "
                                             r"name one with 'checkpoint_prefix'"):
        _conv1_norms(spec)
    spec = write_spec(project, _one_location(SPEC, checkpoint="distil.ckpt", checkpoint_prefix="student."))
    np.testing.assert_allclose(_conv1_norms(spec), _expected_norms(2), rtol=1e-6)
    spec = write_spec(project, _one_location(SPEC, checkpoint="distil.ckpt", checkpoint_prefix="pupil."))
    with pytest.raises(ModelLoadError, match=r"no weight name starts with checkpoint_prefix 'pupil.'"):
        _conv1_norms(spec)


def _scripted(project, seed: int = 1):
    net = tiny_module(seed=seed).eval()
    torch.jit.script(net).save(str(project / "net.ts"))
    return net


def _channel_max(net, images, layer: str) -> np.ndarray:
    """Plain torch: each channel's max after the ReLU over every position of every image."""
    from reportgen.load.images import load_image
    from reportgen.load.spec import InputSpec

    x = torch.stack([load_image(p, InputSpec(size=(16, 16))).tensor for p in images])
    got = {}
    h = dict(net.named_modules())[layer].register_forward_hook(lambda m, i, o: got.setdefault("o", o))
    with torch.no_grad():
        net(x)
    h.remove()
    return torch.relu(got["o"]).amax(dim=(0, 2, 3)).numpy()


def test_torchscript_with_arch_gets_activations(project, one_thread):
    net = _scripted(project)
    spec = write_spec(project, _one_location(SPEC, torchscript="net.ts"))
    result = build(spec, project / "docs", device="cpu")
    run = result.report["runs"][0]
    conv2 = next(lay for lay in run["layers"] if lay["name"] == "conv2")
    expected = _channel_max(net, sorted((project / "img").glob("*.png")), "conv2")
    np.testing.assert_allclose([c["max"] for c in conv2["channels"]], expected, rtol=1e-5)
    assert run["notes"] == [] and not result.warnings


def test_torchscript_alone_says_why_there_are_no_activations(project, one_thread):
    _scripted(project)
    spec = write_spec(project, _one_location(SPEC, torchscript="net.ts").replace(
        "    arch: arch.py:TinyNet\n    arch_args: {width: 4}\n", ""))
    result = build(spec, project / "docs", device="cpu")
    run = result.report["runs"][0]
    assert run["layers"][0]["channels"] == [] and run["layers"][0]["filters"]
    assert "cannot run Python forward hooks" in run["notes"][0] and "'arch'" in run["notes"][0]
    page = (project / "docs/tiny/locations/tiny.md").read_text()
    assert '!!! note "Views missing"' in page and "cannot run Python forward hooks" in page


class _Detector(torch.nn.Module):
    """A small graph whose exported node names hold '/' (body/0/Conv, ...)."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU())
        self.head = torch.nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


@pytest.mark.slow
@pytest.mark.skipif(not onnx_available(), reason='the ONNX extra is not installed (pip install "reportgen[onnx]")')
def test_onnx_model_with_slashes_in_names_builds_a_strict_site(project, one_thread):
    torch.manual_seed(0)
    net = _Detector().eval()
    for loc in ("a", "b"):
        torch.onnx.export(net, torch.zeros(1, 3, 16, 16), str(project / f"det_{loc}.onnx"), dynamo=False,
                          opset_version=17, input_names=["images"])
        with torch.no_grad():  # a second location with other weights
            net.body[0].weight.mul_(0.5)
    spec = write_spec(project, """\
report: det
title: An ONNX detector
models:
  - name: det
    onnx: det_{location}.onnx
    locations: [a, b]
input: {size: 16}
images: [img/*.png]
layers: [body/body/0/Conv, body/body/2/Conv, head/Gemm]
analyses:
  units: {layers: [body/body/2/Conv], steps: 2, top_n: 2, max_units: 2, maximise: plain}
""")
    from reportgen.commands.layers import list_layers

    listing = list_layers(spec)
    assert re.search(r"body/body/0/Conv\s+Conv2d\s+4x3x3x3\s+4x16x16", listing), listing
    docs = project / "docs"
    result = build(spec, docs, device="cpu")
    a, b = result.report["runs"]
    layer = a["layers"][0]
    assert layer["relu_applied"] is True  # the converted graph's ReLU module follows the conv
    torch.manual_seed(0)
    ref = _Detector().eval()
    norms = ref.body[0].weight.detach().reshape(4, -1).norm(dim=1).numpy()
    np.testing.assert_allclose([f["l2_norm"] for f in layer["filters"]], norms, rtol=1e-6)
    np.testing.assert_allclose([f["l2_norm"] for f in b["layers"][0]["filters"]], 0.5 * norms, rtol=1e-6)
    expected = _channel_max(ref, sorted((project / "img").glob("*.png")), "body.0")
    np.testing.assert_allclose([c["max"] for c in layer["channels"]], expected, rtol=1e-5, atol=1e-6)
    out = docs / "det"
    assert (out / "layers" / f"{slug('body/body/0/Conv')}.md").is_file()
    assert (out / "units" / "a" / f"{slug('body/body/2/Conv')}.md").is_file()
    assert not (out / "layers" / "body").exists()
    proc = strict_lone_site(docs, project)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "report.json").read_text())["runs"][0]["checkpoint"].endswith("det_a.onnx")


@pytest.mark.skipif(not onnx_available(), reason='the ONNX extra is not installed (pip install "reportgen[onnx]")')
def test_onnx_graph_of_a_newer_opset_is_converted_down(tmp_path):
    import onnx
    from onnx import version_converter

    from reportgen.load.formats import load_onnx

    torch.manual_seed(0)
    net = _Detector().eval()
    torch.onnx.export(net, torch.zeros(1, 3, 16, 16), str(tmp_path / "d17.onnx"), dynamo=False, opset_version=17)
    newer = version_converter.convert_version(onnx.load(str(tmp_path / "d17.onnx")), 19)
    assert newer.opset_import[0].version == 19  # onnx2torch has no converter for opset 19's Constant
    onnx.save(newer, str(tmp_path / "d19.onnx"))
    module = load_onnx(tmp_path / "d19.onnx", "x")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), net(x).numpy(), rtol=1e-5, atol=1e-6)
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelLoadError, match=r"junk.onnx is not a readable ONNX model"):
        load_onnx(tmp_path / "junk.onnx", "x")


def test_onnx_without_the_extra_says_how_to_install(project, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxslim" else real(name, *a))
    monkeypatch.setitem(__import__("sys").modules, "onnxslim", None)  # import fails as if absent
    (project / "m.onnx").write_bytes(b"\x08\x07")
    spec = write_spec(project, SPEC.replace("    arch: arch.py:TinyNet\n    arch_args: {width: 4}\n"
                                            "    checkpoint: ckpt/{location}.pt\n    locations: [a, b, c]\n",
                                            "    onnx: m.onnx\n").replace("  - conv1\n  - conv2\n  - fc\n",
                                                                          "  - x\n"))
    with pytest.raises(ModelLoadError, match=r'ONNX models need the optional extra: pip install "reportgen\[onnx\]"'):
        load_model(load_spec(spec), load_spec(spec).runs[0])


@pytest.mark.skipif(not onnx_available(), reason='the ONNX extra is not installed (pip install "reportgen[onnx]")')
def test_init_writes_a_spec_for_an_onnx_file(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from reportgen.cli import cli

    monkeypatch.chdir(tmp_path)
    torch.onnx.export(_Detector().eval(), torch.zeros(1, 3, 16, 16), "det.onnx", dynamo=False, opset_version=17)
    (tmp_path / "images").mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(tmp_path / "images/a.jpg")
    res = CliRunner().invoke(cli, ["init", "det.onnx", "-o", "specs/det.yaml"])
    assert res.exit_code == 0, res.output
    assert "Input size 16x16: from the ONNX graph's input shape" in res.stdout  # exported at 1x3x16x16
    text = (tmp_path / "specs/det.yaml").read_text()
    assert "    onnx: ../det.onnx\n" in text and "arch:" not in text
    spec = load_spec(tmp_path / "specs/det.yaml")
    assert [ls.name for ls in spec.layers] == ["body/body/0/Conv", "body/body/2/Conv", "head/Gemm"]
    assert spec.runs[0].onnx.resolve() == (tmp_path / "det.onnx").resolve() and spec.input.size == (16, 16)
