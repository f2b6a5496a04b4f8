"""ONNX graphs as real exporters write them, made here: weights in Constant nodes
(PaddlePaddle), weights shared through Identity nodes (PyTorch's exporter), SAME_UPPER and
SAME_LOWER padding of convolutions and pooling, a batch fixed at 1 and baked into a reshape
(YOLOX), opsets 11, 17 and 21. Each builds a strict site whose statistics match onnxruntime
or plain torch, with the conversion's difference from onnxruntime in report.json and on the
location page."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from reportgen.build import build
from reportgen.core.errors import ModelLoadError
from reportgen.load.formats import onnx_available
from tests.conftest import write_spec
from tests.sites import strict_lone_site

pytestmark = pytest.mark.skipif(not onnx_available(), reason='the ONNX extra is not installed: pip install "reportgen[onnx]"')
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


class _Net(nn.Module):
    """conv -> relu -> conv -> relu -> conv (the same weights as the second) -> mean -> linear."""

    def __init__(self, tie: bool = False):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 4, 3, padding=1)
        if tie:
            self.c3.weight = self.c2.weight
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.c3(torch.relu(self.c2(torch.relu(self.c1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


class _FixedBatch(nn.Module):
    """YOLOX's head in small: the exporter bakes batch 1 into the reshape, and the layer after
    it (a 1x1 convolution over the flattened positions) sees every image's positions in a row."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 5, 1)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        y = y.reshape(1, 4, -1).unsqueeze(-1)  # (1, 4, H*W, 1)
        return torch.relu(self.c2(y)).flatten(1)


def _export(net: nn.Module, path, opset: int = 17, dynamic: bool = True) -> None:
    torch.onnx.export(net.eval(), torch.zeros(1, 3, 16, 16), str(path), dynamo=False, opset_version=opset,
                      input_names=["images"], output_names=["out"],
                      dynamic_axes={"images": {0: "batch"}, "out": {0: "batch"}} if dynamic else None)


def _constant_weights(path) -> None:
    """Every initializer moved into a Constant node, as PaddlePaddle's exporter writes weights."""
    m = onnx.load(str(path))
    consts = [helper.make_node("Constant", [], [i.name], value=i, name=f"const_{k}")
              for k, i in enumerate(m.graph.initializer)]
    del m.graph.initializer[:]
    nodes = consts + list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save(m, str(path))


def _identity_weights(path) -> None:
    """Each convolution reads its weight through an Identity node of its own, named as PyTorch's
    exporter names them (onnx::Conv_692); tied convolutions share one initializer behind them."""
    m = onnx.load(str(path))
    idents, k = [], 692
    for node in m.graph.node:
        if node.op_type == "Conv":
            name = f"onnx::Conv_{k}"
            idents.append(helper.make_node("Identity", [node.input[1]], [name], name=f"Identity_{k}"))
            node.input[1] = name
            k += 1
    nodes = idents + list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save(m, str(path))


def _same_padding(path) -> None:
    """A text detector's corner: 2x2 convolutions and a max-pool with SAME_UPPER / SAME_LOWER."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.4).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["t1"], name="conv1", auto_pad="SAME_UPPER",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Relu", ["t1"], ["t2"], name="relu1"),
        helper.make_node("MaxPool", ["t2"], ["t3"], name="pool1", auto_pad="SAME_UPPER", kernel_shape=[2, 2],
                         strides=[1, 1]),
        helper.make_node("Conv", ["t3", "w2", "b2"], ["t4"], name="conv2", auto_pad="SAME_LOWER",
                         kernel_shape=[2, 2], strides=[1, 1]),
        helper.make_node("Relu", ["t4"], ["t5"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["t5"], ["t6"], name="gap"),
        helper.make_node("Flatten", ["t6"], ["t7"], name="flat"),
        helper.make_node("Gemm", ["t7", "w3", "b3"], ["out"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "same", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                            ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])],
                              [init("w1", 4, 3, 2, 2), init("b1", 4), init("w2", 6, 4, 2, 2), init("b2", 6),
                               init("w3", 3, 6), init("b3", 3)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.save(model, str(path))


def _opset21(path) -> None:
    from onnx import version_converter

    onnx.save(version_converter.convert_version(onnx.load(str(path)), 21), str(path))


def _images(project) -> np.ndarray:
    from reportgen.load.images import load_image
    from reportgen.load.spec import InputSpec

    return torch.stack([load_image(p, InputSpec(size=(16, 16))).tensor
                        for p in sorted((project / "img").glob("*.png"))]).numpy()


def _ort_tensor(path, name: str, x: np.ndarray) -> np.ndarray:
    """What onnxruntime computes for tensor ``name`` of the graph, one image at a time."""
    m = onnx.load(str(path))
    m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run([name], {"images": x[i:i + 1]})[0] for i in range(len(x))])


def _conv_output(path, layer: str) -> str:
    return next(n.output[0] for n in onnx.load(str(path)).graph.node if n.name.strip("/") == layer)


# (graph, how it is made, its convolution layers, what reportgen says it did to it)
SHAPES = {
    "constant_weights": (lambda p: (_export(_Net(), p, 11), _constant_weights(p)), ["c1/Conv", "c2/Conv"],
                         "Constant node(s) made initializers"),
    "identity_shared": (lambda p: (_export(_Net(tie=True), p, 11), _identity_weights(p)), ["c2/Conv", "c3/Conv"],
                        "Identity node(s) removed"),
    "same_padding": (_same_padding, ["conv1", "conv2"], "SAME_UPPER/SAME_LOWER padding(s) made explicit"),
    "fixed_batch": (lambda p: _export(_FixedBatch(), p, 13, dynamic=False), ["c1/Conv", "c2/Conv"],
                    "images go through it one at a time"),
    "opset11": (lambda p: _export(_Net(), p, 11), ["c1/Conv", "c2/Conv"], None),
    "opset17": (lambda p: _export(_Net(), p, 17), ["c1/Conv", "c2/Conv"], None),
    "opset21": (lambda p: (_export(_Net(), p, 17), _opset21(p)), ["c1/Conv", "c2/Conv"],
                "converted from opset 21 to 17"),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_graph_shape_builds_a_strict_site_that_matches_onnxruntime(shape, project, one_thread):
    make, layers, rewrite = SHAPES[shape]
    torch.manual_seed(0)
    path = project / f"{shape}.onnx"
    make(path)
    spec = write_spec(project, f"""\
report: graph
title: An exported graph
models:
  - name: graph
    onnx: {shape}.onnx
input: {{size: 16}}
images: [img/*.png]
layers: [{", ".join(layers)}]
""")
    docs = project / "docs"
    result = build(spec, docs, device="cpu")
    assert not [w for w in result.warnings if "onnx" in w.lower()], result.warnings
    run = json.loads((docs / "graph" / "report.json").read_text())["runs"][0]
    conv = run["conversion"]
    assert conv["checked"] and conv["within"] and conv["images"] == 3, conv
    assert conv["max_abs_difference"] < 1e-5 and conv["reference"].startswith("onnxruntime ")
    if rewrite:
        assert any(rewrite in r for r in conv["rewrites"]), conv["rewrites"]
    x = _images(project)
    for lay in run["layers"]:
        want = np.maximum(_ort_tensor(path, _conv_output(path, lay["name"]), x), 0)  # the ReLU after it
        assert lay["activation"] == "relu", lay["activation_source"]
        np.testing.assert_allclose([c["max"] for c in lay["channels"]], want.max(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([c["mean"] for c in lay["channels"]], want.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-6)
        assert lay["output_shape"] == list(want.shape[1:])
    page = (docs / "graph" / "locations" / "graph.md").read_text()
    assert '!!! info "Converted from ONNX"' in page and "onnxruntime" in page
    proc = strict_lone_site(docs, project)
    assert proc.returncode == 0, proc.stderr


def test_a_graph_with_its_batch_fixed_takes_one_image_at_a_time(tmp_path):
    from reportgen.load.formats import load_onnx

    torch.manual_seed(0)
    net = _FixedBatch().eval()
    _export(net, tmp_path / "yolox.onnx", 13, dynamic=False)
    module = load_onnx(tmp_path / "yolox.onnx", "x")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        got = module(x)
        want = torch.cat([net(x[:1]), net(x[1:])])
    assert got.shape == want.shape == (2, 5 * 256)  # not one image's output for the two
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_shared_weights_stay_shared_after_conversion(tmp_path):
    from reportgen.load.formats import load_onnx

    torch.manual_seed(0)
    net = _Net(tie=True).eval()
    _export(net, tmp_path / "tied.onnx", 11)
    _identity_weights(tmp_path / "tied.onnx")
    modules = dict(load_onnx(tmp_path / "tied.onnx", "x").named_modules())
    torch.testing.assert_close(modules["c2/Conv"].weight, net.c2.weight)
    torch.testing.assert_close(modules["c3/Conv"].weight, net.c2.weight)


def _graph_with(node, *extra_inputs, opset: int = 17):
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8]),
                                            *extra_inputs],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", "c", "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_an_op_without_a_converter_is_one_line_naming_the_spec_line_the_node_and_what_to_try(project):
    from reportgen.load.models import load_model
    from reportgen.load.spec import load_spec

    onnx.save(_graph_with(helper.make_node("Hardmax", ["images"], ["out"], name="head/Hardmax")),
              str(project / "odd.onnx"))
    spec = write_spec(project, "report: odd\ntitle: Odd\nmodels:\n  - name: odd\n    onnx: odd.onnx\n"
                               "images: [img/*.png]\nlayers: [head/Hardmax]\n")
    with pytest.raises(ModelLoadError) as err:
        load_model(load_spec(spec), load_spec(spec).runs[0])
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{spec}:5: models[0].onnx: location 'odd': ONNX file ")
    assert "node 'head/Hardmax' (Hardmax, opset 17) cannot be converted to torch: onnx2torch has no converter " \
           "for Hardmax at any opset; export the model without that operation" in msg


def test_an_op_converted_at_other_opsets_names_the_opset_to_export_at(tmp_path):
    from reportgen.load.formats import load_onnx

    model = _graph_with(helper.make_node("GreaterOrEqual", ["images", "zero"], ["out"], name="cmp"))
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((1,), np.float32), "zero"))
    onnx.save(model, str(tmp_path / "ge.onnx"))  # opset 17: GreaterOrEqual of opset 16, which onnx2torch lacks
    with pytest.raises(ModelLoadError, match=r"node 'cmp' \(GreaterOrEqual, opset 17\) cannot be converted to torch: "
                                             r"onnx2torch has no converter for GreaterOrEqual at opset 17 \(it converts "
                                             r"it at opsets 12 to 15\); export the model at opset 15 "
                                             r"\(opset_version=15\) or without that operation"):
        load_onnx(tmp_path / "ge.onnx", "x")


def test_a_converter_that_refuses_a_node_is_named_with_it(tmp_path):
    from reportgen.load.formats import load_onnx

    node = helper.make_node("DepthToSpace", ["images"], ["out"], name="up/d2s", blocksize=1, mode="DCR")
    onnx.save(_graph_with(node), str(tmp_path / "d2s.onnx"))
    with pytest.raises(ModelLoadError) as err:
        load_onnx(tmp_path / "d2s.onnx", "x")
    msg = str(err.value)
    assert "\n" not in msg
    assert "node 'up/d2s' (DepthToSpace, opset 17) cannot be converted to torch: NotImplementedError: DepthToSpace " \
           "for mode other than CRD is not implemented; export the model at another opset (opset_version=13) or " \
           "without that operation" in msg


def test_nms_without_torchvision_is_refused_before_converting(tmp_path, monkeypatch):
    from reportgen.load import formats

    monkeypatch.setitem(__import__("sys").modules, "torchvision", None)  # as if absent
    model = _graph_with(helper.make_node("NonMaxSuppression", ["boxes", "images"], ["out"], name="post/nms"))
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 4, 4), np.float32), "boxes"))
    onnx.save(model, str(tmp_path / "nms.onnx"))
    with pytest.raises(ModelLoadError, match=r"node 'post/nms' \(NonMaxSuppression, opset 17\) cannot be converted to "
                                             r"torch: onnx2torch runs it with torchvision, which is not installed; "
                                             r"install the torchvision build that matches your torch"):
        formats.load_onnx(tmp_path / "nms.onnx", "x")


def test_without_the_converter_the_error_names_the_install_command(project, monkeypatch):
    import importlib.util

    from reportgen.load.models import load_model
    from reportgen.load.spec import load_spec

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx2torch" else real(name, *a))
    monkeypatch.setitem(__import__("sys").modules, "onnx2torch", None)  # import fails as if absent
    onnx.save(_graph_with(helper.make_node("Relu", ["images"], ["out"], name="act")), str(project / "m.onnx"))
    spec = write_spec(project, "report: m\ntitle: M\nmodels:\n  - name: m\n    onnx: m.onnx\n"
                               "images: [img/*.png]\nlayers: [act]\n")
    with pytest.raises(ModelLoadError) as err:
        load_model(load_spec(spec), load_spec(spec).runs[0])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{spec}:5: models[0].onnx: location 'm': ONNX file ")
    assert msg.endswith(": the ONNX converter (onnx2torch) is not installed; run `reportgen install-onnx` "
                        "(installs the converter without its torchvision requirement)"), msg


def test_install_onnx_runs_pip_without_dependencies(monkeypatch):
    import shlex
    import subprocess
    import sys

    from click.testing import CliRunner

    from reportgen.cli import cli

    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, returncode=len(calls) - 1)  # 0 the first time, then 1

    monkeypatch.setattr(subprocess, "run", fake_run)
    res = CliRunner().invoke(cli, ["install-onnx"])
    assert res.exit_code == 0, res.output
    assert calls == [[sys.executable, "-m", "pip", "install", "--no-deps", "onnx2torch>=1.5,<2"]]
    assert res.stdout.startswith(shlex.join(calls[0]) + "\n")  # printed before it runs
    res = CliRunner().invoke(cli, ["install-onnx"])
    assert res.exit_code == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "pip exited with status 1" in errors[0], res.stderr


def test_a_rewrite_that_cannot_be_done_says_why_and_what_to_try(tmp_path):
    from reportgen.load.formats import load_onnx

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    model = _graph_with(helper.make_node("Conv", ["images", "w"], ["out"], name="stem", auto_pad="SAME_UPPER",
                                         strides=[2, 2]))
    model.graph.initializer.append(w)
    for d in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "side"  # the graph leaves its input size open
    onnx.save(model, str(tmp_path / "open.onnx"))
    with pytest.raises(ModelLoadError, match=r"node 'stem' \(Conv, auto_pad SAME_UPPER\): with stride 2 its padding "
                                             r"depends on the input size, which the graph leaves open; set input.size "
                                             r"in the spec"):
        load_onnx(tmp_path / "open.onnx", "x")
    module = load_onnx(tmp_path / "open.onnx", "x", input_size=(9, 9))  # the spec's input.size settles it
    sess = ort.InferenceSession(str(tmp_path / "open.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 9, 9)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), sess.run(None, {"images": x})[0],
                                   rtol=1e-5, atol=1e-5)


def test_the_onnx_extra_keeps_the_installed_torch():
    """`pip install "reportgen[onnx]"` must not pull torchvision (whose wheels replace a CPU torch
    with a CUDA one): the extra names neither it nor onnx2torch (which requires it; `reportgen
    install-onnx` installs it with --no-deps), and the installed onnx2torch loads without it."""
    import subprocess
    import sys

    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    from tests.conftest import ROOT

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["onnx"]
    names = {re.split(r"[<>=!~; \[]", req, maxsplit=1)[0].lower() for req in extra}
    assert names == {"onnx", "onnxslim", "onnxruntime"}, names
    code = ("import sys; sys.modules['torchvision'] = None\n"
            "from reportgen.load.formats import import_onnx2torch\n"
            "assert import_onnx2torch('x').convert\nassert sys.modules['torchvision'] is None\nprint('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
