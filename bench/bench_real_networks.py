"""Real trained networks that ship inside public Python packages, built with reportgen and
checked against an independent computation.

Run:  python bench/bench_real_networks.py WHEEL_DIR

WHEEL_DIR holds wheels fetched beforehand, without their dependencies, e.g.
  pip download --no-deps -d /tmp/wheels facenet-pytorch==2.6.0 nudenet==3.4.2
Nothing is downloaded at run time. Networks:
- MTCNN's three stages from facenet-pytorch (PNet 12 px fully convolutional, RNet 24 px and
  ONet 48 px with dense heads; PReLU activations): the Python classes from the wheel and
  the state_dicts it ships (`arch` + `checkpoint`);
- NudeNet's YOLOv8n detector (an ONNX graph, 64 convolutions, names like
  `model/0/conv/Conv`): the `onnx` key, which needs `pip install "reportgen[onnx]"`.
Each report must build with `mkdocs build --strict` on its own. For the first layer, the
filter L2 norms in report.json are compared with norms computed from the file itself (torch
state_dict or ONNX initializer), and each channel's max activation over the images with a
plain `torch.nn.functional.conv2d` of those weights. Prints a table of what ran and the
largest differences.

Measured here (2-core CPU, shared): the four reports built in 17 to 48 s each, filter norms
agreed to 2e-6, channel maxima exactly, and the site of all four passed the strict build.
RapidOCR's PP-OCR ONNX models do not convert: onnx2torch lacks `auto_pad: SAME_UPPER`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reportgen.build import build  # noqa: E402
from reportgen.images import load_image  # noqa: E402
from reportgen.scaffold import mkdocs_yml  # noqa: E402
from reportgen.spec import load_spec  # noqa: E402

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


def _first_conv_reference(weight: np.ndarray, bias: np.ndarray | None, stride, padding, spec_path: Path,
                          layer0: dict) -> tuple[float, float]:
    """Largest differences of report.json's first layer from plain torch: (norm, channel max)."""
    w = torch.from_numpy(weight.astype(np.float32))
    norms = w.reshape(w.shape[0], -1).norm(dim=1).numpy()
    got_norms = np.array([f["l2_norm"] for f in layer0["filters"]], dtype=np.float64)
    spec = load_spec(spec_path)
    x = torch.stack([load_image(p, spec.input).tensor for p in spec.runs[0].images])
    out = F.conv2d(x, w, None if bias is None else torch.from_numpy(bias.astype(np.float32)),
                   stride=stride, padding=padding)
    if layer0["relu_applied"]:
        out = out.clamp_min(0)
    maxes = out.amax(dim=(0, 2, 3)).numpy()
    got_max = np.array([c["max"] for c in layer0["channels"]], dtype=np.float64)
    return float(np.abs(got_norms - norms).max()), float(np.abs(got_max - maxes).max())


def _spec(folder: Path, name: str, model: str, size: int, layers: list[str], norm: str = "") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"report: {name}\ntitle: {name}\nmodels:\n{model}input:\n  size: {size}\n{norm}"
                    "images: [images/*]\nlayers:\n" + "".join(f"  - {json.dumps(n)}\n" for n in layers))
    return path


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    wheel_dir = Path(sys.argv[1]).resolve()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _images(tmp / "images")
        docs = tmp / "docs"
        fn = _unpack(wheel_dir, "facenet_pytorch", tmp / "facenet")
        (tmp / "mtcnn_arch.py").write_text(MTCNN_SHIM.format(pkg=str(fn / "facenet_pytorch")))
        # MTCNN normalises pixels as (p - 127.5) / 128: mean 0.498, std 0.502 on [0, 1] pixels.
        mt_norm = "  mean: [0.498, 0.498, 0.498]\n  std: [0.502, 0.502, 0.502]\n"
        nets = []
        for stage, size, layers in (("pnet", 48, ["conv1", "conv2", "conv3", "conv4_1"]),
                                    ("rnet", 24, ["conv1", "conv2", "conv3", "dense4", "dense5_1"]),
                                    ("onet", 48, ["conv1", "conv2", "conv3", "conv4", "dense5"])):
            ckpt = fn / "facenet_pytorch" / "data" / f"{stage}.pt"
            model = (f"  - name: {stage}\n    arch: mtcnn_arch.py:{stage}\n    checkpoint: {ckpt}\n")
            state = torch.load(ckpt, weights_only=True)
            ref = (state["conv1.weight"].numpy(), state["conv1.bias"].numpy(), 1, 0)
            nets.append((f"mtcnn-{stage}", _spec(tmp, f"mtcnn-{stage}", model, size, layers, mt_norm), ref))
        try:
            import onnx
            from onnx import numpy_helper

            from reportgen.formats import load_onnx

            nd = _unpack(wheel_dir, "nudenet", tmp / "nudenet") / "nudenet" / "320n.onnx"
            graph = onnx.load(str(nd))
            inits = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
            first = next(n for n in graph.graph.node if n.op_type == "Conv")
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in first.attribute}
            pads = attrs.get("pads", [0, 0, 0, 0])
            assert pads[0] == pads[2] and pads[1] == pads[3], "asymmetric padding"
            ref = (inits[first.input[1]], inits[first.input[2]] if len(first.input) > 2 else None,
                   tuple(attrs.get("strides", [1, 1])), (pads[0], pads[1]))
            convs = [n for n, m in load_onnx(nd, "nudenet").named_modules() if type(m).__name__ == "Conv2d"]
            layers = [convs[0], convs[len(convs) // 4], convs[len(convs) // 2], convs[-2]]
            nets.append(("nudenet-yolov8n", _spec(tmp, "nudenet-yolov8n", f"  - name: yolo\n    onnx: {nd}\n",
                                                   320, layers), ref))
        except ImportError:
            print('nudenet skipped: pip install "reportgen[onnx]"')
        for name, spec_path, ref in nets:
            t0 = time.perf_counter()
            result = build(spec_path, docs, device="cpu", cache_dir=None)
            seconds = time.perf_counter() - t0
            layer0 = result.report["runs"][0]["layers"][0]
            d_norm, d_max = _first_conv_reference(*ref, spec_path, layer0)
            rows.append((name, len(result.report["runs"][0]["layers"]), seconds, d_norm, d_max,
                         len(result.report["findings"])))
        strict = _strict_site(docs, tmp)
    print(f"{'network':<18} {'layers':>6} {'build s':>8} {'max |dnorm|':>12} {'max |dmax|':>11} {'findings':>8}")
    for name, n, s, dn, dm, nf in rows:
        print(f"{name:<18} {n:>6} {s:>8.1f} {dn:>12.2e} {dm:>11.2e} {nf:>8}")
    print(f"mkdocs build --strict of a site holding all {len(rows)} reports: {'passed' if strict else 'FAILED'}")


if __name__ == "__main__":
    main()
