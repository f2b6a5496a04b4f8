"""Several models in one report: a three-stage cascade of different architectures, input
sizes and activations builds one strict site with per-model pages and the cross-model page."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reportgen.build import build
from reportgen.core.errors import SpecError
from reportgen.reduce.crossmodel import cka_grid
from tests.conftest import write_spec
from tests.test_build import mkdocs_strict

# Three stages of a detector cascade, as a user's own file: PReLU (12 px), SiLU as a
# module and as a functional call (24 px), ReLU (48 px); each ends in dense layers.
CASCADE = '''
import torch.nn.functional as F
from torch import nn


class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.prelu1 = nn.PReLU(4)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.prelu2 = nn.PReLU(6)
        self.fc = nn.Linear(6 * 3 * 3, 5)

    def forward(self, x):
        x = self.prelu2(self.conv2(self.pool(self.prelu1(self.conv1(x)))))
        return self.fc(x.flatten(1))


class RNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 5, 3, stride=2)
        self.act1 = nn.SiLU()
        self.conv2 = nn.Conv2d(5, 6, 3, stride=2)
        self.fc = nn.Linear(6 * 5 * 5, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = F.silu(self.conv2(self.act1(self.conv1(x))))
        return self.head(F.silu(self.fc(x.flatten(1))))


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 5, stride=2)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8 * 10 * 10, 6)
        self.relu3 = nn.ReLU()
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.head(self.relu3(self.fc(x.flatten(1))))
'''

CASCADE_SPEC = """\
report: cascade
title: A detector cascade
models:
  - name: pnet
    arch: cascade.py:PNet
    checkpoint: ckpt/pnet_{location}.pt
    locations: [a, b]
    input: {size: 12, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}
    layers: [conv1, conv2, fc]
  - name: rnet
    arch: cascade.py:RNet
    checkpoint: ckpt/rnet.pt
    input: {size: 24}
    layers: [conv1, conv2, {name: fc, activation: auto}, head]
  - name: onet
    arch: cascade.py:ONet
    checkpoint: ckpt/onet.pt
    input: {size: 48}
    layers: [conv1, {name: conv2, relu: yes}, fc]
images:
  - img/*.png
layers: [conv1]
"""


def _load(folder: Path, cls: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"cascade_{id(folder)}", folder / "cascade.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, cls)


@pytest.fixture
def cascade(tmp_path: Path) -> Path:
    (tmp_path / "cascade.py").write_text(CASCADE)
    (tmp_path / "ckpt").mkdir()
    for seed, (cls, name) in enumerate([("PNet", "pnet_a"), ("PNet", "pnet_b"), ("RNet", "rnet"), ("ONet", "onet")]):
        torch.manual_seed(seed)
        model = _load(tmp_path, cls)()
        if cls == "PNet":  # learned slopes, some negative: "relu: yes" would be wrong here
            with torch.no_grad():
                model.prelu1.weight.copy_(torch.tensor([-0.4, 0.25, -0.1, 0.6]))
        torch.save(model.state_dict(), tmp_path / "ckpt" / f"{name}.pt")
    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "img" / f"im{i}.png")
    return tmp_path


def _input(path: Path, size: int, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """An independent image pipeline: Pillow bilinear resize, [0, 1], normalise."""
    img = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(((x - mean) / std).transpose(2, 0, 1).copy())


def _hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA in its HSIC form with an explicit centring matrix (Kornblith et al. 2019)."""
    n = x.shape[0]
    h = np.eye(n) - 1.0 / n
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float(np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l)))


@pytest.mark.slow
def test_cascade_builds_one_strict_site(cascade, one_thread):
    docs = cascade / "docs"
    result = build(write_spec(cascade, CASCADE_SPEC), docs, device="cpu", cache_dir=None)
    out = docs / "cascade"
    report = json.loads((out / "report.json").read_text())
    runs = {r["key"]: r for r in report["runs"]}
    assert list(runs) == ["pnet-a", "pnet-b", "rnet", "onet"]
    assert [runs[k]["input"]["size"] for k in runs] == [[12, 12], [12, 12], [24, 24], [48, 48]]
    layers = {(k, lay["name"]): lay for k, r in runs.items() for lay in r["layers"]}
    # Each model's activation, found whatever its kind
    assert layers[("pnet-a", "conv1")]["activation"] == "prelu"
    assert layers[("pnet-a", "conv1")]["activation_source"] == "module 'prelu1'"
    assert layers[("pnet-a", "fc")]["activation"] == "none"
    assert layers[("rnet", "conv1")]["activation"] == "silu"
    assert layers[("rnet", "conv2")]["activation_source"] == "F.silu in forward"
    assert layers[("rnet", "fc")]["activation"] == "silu" and layers[("rnet", "head")]["activation"] == "none"
    assert layers[("onet", "conv2")]["activation"] == "relu" and layers[("onet", "conv2")]["relu_applied"]
    assert layers[("onet", "conv1")]["output_shape"] == [4, 22, 22]

    # Pages grouped per model: a model's layer page holds that model's runs only
    for model, layer in [("pnet", "conv1"), ("rnet", "conv1"), ("onet", "conv1"), ("rnet", "head")]:
        assert (out / "layers" / model / f"{layer}.md").is_file()
    assert not (out / "layers" / "conv1.md").exists()
    page = (out / "layers/pnet/conv1.md").read_text()
    assert "pnet-a" in page and "pnet-b" in page and "rnet" not in page and "onet" not in page
    assert "../../img/pnet-a/conv1/filters_per_layer.png" in page
    cmp = [c for c in report["comparisons"] if c["layer"] == "conv1"]
    assert [c["model"] for c in cmp] == ["pnet"] and cmp[0]["runs"] == ["pnet-a", "pnet-b"]
    assert "layers/rnet/conv1.md" in (out / "locations/rnet.md").read_text()
    index = (out / "index.md").read_text()
    assert "## Model `onet`" in index and "(models.md)" in index and "(layers/onet/fc.md)" in index

    # Findings speak per model; none asks for shared images, which every model has
    assert all(f["model"] in (None, "pnet", "rnet", "onet") for f in report["findings"])
    assert {f["model"] for f in report["findings"]} >= {"pnet", "rnet", "onet"}
    assert not any("shared" in f["text"] and "Suggested" in f["text"] for f in report["findings"])
    assert all("](layers/conv1.md" not in f["text"] for f in report["findings"])

    # The cross-model page: every pair, each model's own layers, the images all models see
    pairs = report["model_comparisons"]
    assert [p["models"] for p in pairs] == [["pnet", "rnet"], ["pnet", "onet"], ["rnet", "onet"]]
    assert pairs[0]["runs"] == ["pnet-a", "rnet"] and pairs[0]["images"] == 4
    assert pairs[0]["layers"] == [["conv1", "conv2", "fc"], ["conv1", "conv2", "fc", "head"]]
    assert np.array(pairs[0]["cka"], dtype=float).shape == (3, 4)
    assert (out / "models.md").is_file() and (out / "img/cross-model/pnet_vs_onet.png").is_file()
    assert "layers/rnet/head.md" in (out / "models.md").read_text()

    proc = mkdocs_strict(docs, cascade)
    assert proc.returncode == 0, proc.stderr

    # PReLU statistics are the plain-torch ones: conv1, then PReLU with its learned slopes
    pnet = _load(cascade, "PNet")()
    pnet.load_state_dict(torch.load(cascade / "ckpt/pnet_a.pt", weights_only=True))
    xs = torch.stack([_input(p, 12, 0.5, 0.5) for p in sorted((cascade / "img").glob("*.png"))])
    with torch.no_grad():
        raw = F.conv2d(xs, pnet.conv1.weight, pnet.conv1.bias)
        y = F.prelu(raw, pnet.prelu1.weight).transpose(0, 1).reshape(4, -1).double().numpy()
    ch = layers[("pnet-a", "conv1")]["channels"]
    np.testing.assert_allclose([c["mean"] for c in ch], y.mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([c["max"] for c in ch], y.max(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([c["active_fraction"] for c in ch], (y > 0).mean(axis=1))
    # ... and not what a ReLU would give: the negative slopes matter
    relu_mean = torch.relu(raw).transpose(0, 1).reshape(4, -1).double().numpy().mean(axis=1)
    assert not np.allclose([c["mean"] for c in ch], relu_mean, atol=1e-3)

    # One cross-model cell recomputed independently: pnet conv1 (after PReLU, 12 px) vs
    # onet conv1 (after ReLU, 48 px), both averaged over a 4x4 grid of each image.
    onet = _load(cascade, "ONet")()
    onet.load_state_dict(torch.load(cascade / "ckpt/onet.pt", weights_only=True))
    paths = sorted((cascade / "img").glob("*.png"))
    with torch.no_grad():
        a = F.prelu(pnet.conv1(xs), pnet.prelu1.weight)
        b = torch.relu(onet.conv1(torch.stack([_input(p, 48) for p in paths])))
    rows = [F.adaptive_avg_pool2d(t.double(), 4).permute(0, 2, 3, 1).reshape(-1, t.shape[1]).numpy() for t in (a, b)]
    assert pairs[1]["cka"][0][0] == pytest.approx(_hsic_cka(*rows), abs=1e-9)


TWINS_SPEC = """\
report: twins
title: One model twice
models:
  - {name: left, arch: cascade.py:RNet, checkpoint: ckpt/rnet.pt, input: {size: 24}}
  - {name: right, arch: cascade.py:RNet, checkpoint: ckpt/rnet.pt, input: {size: 24}}
images: [img/*.png]
layers: [conv1, conv2, fc, head]
analyses: {filters: {enabled: false}, gabor: {enabled: false}}
"""


def test_a_model_against_itself_scores_one_on_the_diagonal(cascade, one_thread):
    spec = write_spec(cascade, TWINS_SPEC)
    result = build(spec, cascade / "docs", device="cpu", cache_dir=cascade / "cache")
    again = build(spec, cascade / "docs", device="cpu", cache_dir=cascade / "cache")
    assert again.cache.hits["layer"] == 8 and not again.cache.misses["layer"]  # 2 models x 4 layers
    assert again.report["model_comparisons"] == result.report["model_comparisons"]  # read back from the cache
    assert again.report["runs"] == result.report["runs"]
    pair = result.report["model_comparisons"][0]
    m = np.array(pair["cka"], dtype=float)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-9)
    assert (np.diag(m) > np.diag(np.array(pair["cka_chance"], dtype=float))).all()  # above its chance level
    assert m.shape == (4, 4) and np.allclose(m, m.T, atol=1e-9)  # the same model both ways round
    off = m[~np.eye(4, dtype=bool)]
    assert (off < 1 - 1e-6).all()  # different layers are different representations


def test_cka_grid_known_answers():
    rng = np.random.default_rng(0)
    conv = (rng.normal(size=(3, 5, 4, 4)), None)
    conv = (conv[0], conv[0].mean(axis=(2, 3)))
    dense = (None, rng.normal(size=(3, 7)))
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    rotated = (np.einsum("nchw,cd->ndhw", conv[0], q) * 3.0, conv[1] @ q * 3.0)
    m, chance = cka_grid([conv, dense], [rotated, dense], chance_draws=4)
    assert m[0, 0] == pytest.approx(1.0)  # invariant to a rotation and a scaling of the channels
    assert m[1, 1] == pytest.approx(1.0)
    rows = conv[0].transpose(0, 2, 3, 1).reshape(-1, 5)
    assert cka_grid([conv], [conv])[0][0, 0] == pytest.approx(_hsic_cka(rows, rows))
    assert m[0, 1] == pytest.approx(_hsic_cka(conv[1], dense[1]))  # a dense layer: one row per image
    # chance: the same layers with the second side's images shuffled, below the matched value
    assert (chance[[0, 1], [0, 1]] < 1 - 1e-6).all()
    n = len(conv[1])
    shuffled = [_hsic_cka(conv[1], dense[1][p]) for p in _perms(n, 4)]
    assert chance[0, 1] == pytest.approx(np.mean(shuffled))


def _perms(n: int, k: int) -> list[np.ndarray]:
    """The shuffles cka_grid draws: seed 0, identity skipped (its documented rule)."""
    rng = np.random.default_rng(0)
    ps = [p for p in (rng.permutation(n) for _ in range(4 * k)) if (p != np.arange(n)).any()]
    return ps[:k]


def test_model_locations_must_name_a_models_location(cascade):
    text = CASCADE_SPEC + "analyses:\n  compare:\n    model_locations: {pnet: c, pnett: a}\n"
    with pytest.raises(SpecError) as err:
        build(write_spec(cascade, text), cascade / "docs", device="cpu", cache_dir=None)
    msg = str(err.value)
    assert "analyses.compare.model_locations.pnet: model 'pnet' has no location 'c'; use one of: a, b" in msg
    assert "analyses.compare.model_locations.pnett: no model 'pnett'; did you mean 'pnet'?" in msg


def test_an_activation_the_model_cannot_apply_is_a_spec_error(cascade):
    from reportgen.build import preflight
    from reportgen.load.spec import load_spec

    text = (CASCADE_SPEC.replace("{name: fc, activation: auto}", "{name: fc, activation: prelu}")
            .replace("{name: conv2, relu: yes}", "{name: conv2, activation: relu9}"))
    path = write_spec(cascade, text)
    with pytest.raises(SpecError) as err:
        preflight(load_spec(path))  # what `reportgen check` runs: found before any model runs
    assert err.value.problems == [
        f"{path}:14: models[1].layers[2].activation: a PReLU has learned slopes; name the PReLU module "
        "instead (e.g. 'activation: features.1'), or use 'auto'",
        f"{path}:19: models[2].layers[1].activation: 'relu9' is neither an activation kind (relu, relu6, "
        "leaky_relu, prelu, elu, selu, silu, gelu, hardswish, mish, sigmoid, tanh, hardsigmoid, auto, none) nor a module "
        "of the model; did you mean 'relu'?",
    ]
    with pytest.raises(SpecError):
        build(path, cascade / "docs", device="cpu", cache_dir=None)
    assert not (cascade / "docs" / "cascade").exists()


def test_input_falls_back_to_the_top_level_and_model_locations_choose_the_run(cascade):
    from reportgen.load.spec import load_spec
    from reportgen.run.crossmodel import cross_model_runs, cross_shared_images

    text = (CASCADE_SPEC.replace("    input: {size: 24}\n", "")
            + "input: {size: 20, channels: grey, mean: [0.5], std: [0.5]}\nanalyses:\n  compare:\n    model_locations: {pnet: b}\n")
    spec = load_spec(write_spec(cascade, text))
    inputs = {r.key: r.input for r in spec.runs}
    assert inputs["rnet"].size == (20, 20) and inputs["rnet"].channels == "grey"  # the top-level input
    assert inputs["pnet-a"].size == (12, 12) and inputs["pnet-a"].channels == "rgb"  # its own
    assert {m: r.key for m, r in cross_model_runs(spec).items()} == {"pnet": "pnet-b", "rnet": "rnet", "onet": "onet"}
    assert [p.name for p in cross_shared_images(spec)] == ["im0.png", "im1.png", "im2.png", "im3.png"]
