"""End-to-end builds: examples, an unseen ResNet, atomic writes, report.json, mkdocs --strict."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reportgen.build import build
from reportgen.core.errors import BuildLockedError, ModelLoadError, SpecError
from reportgen.publish import site
from tests.conftest import ROOT, SPEC, write_spec
from tests.sites import strict_lone_site


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def mkdocs_strict(docs: Path, tmp: Path) -> subprocess.CompletedProcess:
    """Run `mkdocs build --strict` with the repo's config over ``docs``. Never with -q: MkDocs
    counts the warnings it logs, and -q drops them first, so --strict would pass anything."""
    config = (ROOT / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}")
    cfg = tmp / "mkdocs.yml"
    cfg.write_text(config + f"\nsite_dir: {tmp / 'site'}\n")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(cfg)],
                          capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""})


def test_tiny_build_report_json(tiny_build):
    result, project = tiny_build  # built once per session (tests/conftest.py)
    out = project / "docs" / "tiny"
    assert result.out_dir == out
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == 2 and report["report"] == "tiny"
    assert [r["location"] for r in report["runs"]] == ["a", "b", "c"]
    layer = report["runs"][0]["layers"][0]
    assert layer["name"] == "conv1" and layer["weight_shape"] == [4, 3, 3, 3]
    assert layer["output_shape"] == [4, 16, 16] and layer["relu_applied"] is True
    # The numbers in report.json are the plain-torch numbers.
    w = torch.load(project / "ckpt" / "a.pt", weights_only=True)["state_dict"]["conv1.weight"]
    norms = [f["l2_norm"] for f in layer["filters"]]
    np.testing.assert_allclose(norms, w.reshape(4, -1).norm(dim=1).numpy(), rtol=1e-6)
    assert {"index", "mean", "max", "active_fraction", "never_active", "saturated"} <= set(layer["channels"][0])
    assert report["findings"] and {"severity", "text", "location", "layer"} <= set(report["findings"][0])
    for page in ["index.md", "locations/a.md", "layers/conv1.md", "layers/fc.md"]:
        assert (out / page).is_file(), page
    assert (out / "img/a/conv1/filters_per_layer.png").is_file()
    assert (out / "img/a/fc/weights_heatmap.png").is_file()
    assert "<img" not in (out / "locations/a.md").read_text()  # Markdown images only


def test_dead_location_found_in_findings(project):
    sd = torch.load(project / "ckpt" / "b.pt", weights_only=True)
    sd["state_dict"]["conv1.weight"] *= 1e-4
    torch.save(sd, project / "ckpt" / "b.pt")
    result = build(write_spec(project), project / "docs", device="cpu")
    top = result.report["findings"][0]
    assert top["severity"] == "danger" and top["location"] == "b" and top["layer"] == "conv1"
    assert top["text"].startswith("**b** looks collapsed: nothing in `conv1` is alive: [4 of 4 filters "
                                  "(100%) dead](locations/b.md#layer-conv1)")
    assert "`fc` channels" not in top["text"]  # logits are not rectified: "never active" does not apply
    dead = [f["dead"] for f in result.report["runs"][1]["layers"][0]["filters"]]
    assert dead == [True] * 4
    assert not any(f["dead"] for f in result.report["runs"][0]["layers"][0]["filters"])


def test_nan_weights_build_and_are_flagged(project):
    sd = torch.load(project / "ckpt" / "c.pt", weights_only=True)
    sd["state_dict"]["conv1.weight"][1, 0, 0, 0] = float("nan")
    torch.save(sd, project / "ckpt" / "c.pt")
    result = build(write_spec(project), project / "docs", device="cpu")
    filters = result.report["runs"][2]["layers"][0]["filters"]
    assert filters[1]["nonfinite"] is True and filters[1]["l2_norm"] is None
    assert any(f["severity"] == "danger" and "NaN" in f["text"] for f in result.report["findings"])
    json.loads((project / "docs/tiny/report.json").read_text())  # valid JSON (no NaN tokens)


def test_failed_build_leaves_previous_report_intact(project):
    docs = project / "docs"
    build(write_spec(project), docs, device="cpu")
    before = snapshot(docs / "tiny")
    (project / "ckpt" / "c.pt").write_bytes(b"truncated")
    with pytest.raises(ModelLoadError):
        build(write_spec(project), docs, device="cpu")
    assert snapshot(docs / "tiny") == before
    assert sorted(p.name for p in docs.iterdir()) == ["tiny"]  # no lock or staging left


def test_interrupt_while_writing_leaves_previous_report(project, monkeypatch):
    docs = project / "docs"
    build(write_spec(project), docs, device="cpu")
    before = snapshot(docs / "tiny")
    calls = {"n": 0}
    real = Path.write_bytes

    def flaky(self, data):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", flaky)
    with pytest.raises(KeyboardInterrupt):
        build(write_spec(project), docs, device="cpu")
    monkeypatch.undo()
    assert snapshot(docs / "tiny") == before
    assert not list(docs.glob(".tiny~staging-*"))


def test_second_build_refused_while_first_holds_lock(project):
    docs = project / "docs"
    with site.build_lock(docs, "tiny"):
        with pytest.raises(BuildLockedError, match="another build of report 'tiny' is running"):
            build(write_spec(project), docs, device="cpu")


def test_unknown_layers_all_reported(project):
    text = SPEC.replace("  - conv2\n", "  - conv3\n  - relu9\n")
    with pytest.raises(SpecError) as info:
        build(write_spec(project, text), project / "docs", device="cpu")
    assert [p.split("spec.yaml")[1] for p in info.value.problems] == [
        ":16: layers[1]: model 'tiny' has no layer 'conv3'; did you mean 'conv2' or 'conv1'?",
        ":17: layers[2]: model 'tiny' has no layer 'relu9'; did you mean 'relu2' or 'relu1'?",
    ]
    assert not (project / "docs" / "tiny").exists()


@pytest.mark.parametrize("content,msg", [
    (b"", "cannot be read"), (b"\x89PNG\r\n\x1a\n broken", "cannot be read"), (None, "too small"),
])
def test_bad_images(project, content, msg):
    path = project / "img" / "im1.png"
    if content is None:
        Image.fromarray(np.zeros((1, 1, 3), dtype=np.uint8)).save(path)
    else:
        path.write_bytes(content)
    from reportgen.core.errors import ImageError
    with pytest.raises(ImageError, match=f"image .*im1.png .*{msg}"):
        build(write_spec(project), project / "docs", device="cpu")


@pytest.mark.slow
def test_unseen_resnet_builds_and_passes_mkdocs_strict(tmp_path):
    shutil.copy(ROOT / "tests/data/resnet_small.py", tmp_path / "resnet_small.py")
    sys.path.insert(0, str(ROOT / "tests/data"))
    try:
        from resnet_small import SmallResNet
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    torch.save(SmallResNet().state_dict(), tmp_path / "resnet.pth")
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
            tmp_path / "imgs" / f"{i}.jpg")
    spec = write_spec(tmp_path, """\
        report: resnet
        title: "A <b>ResNet</b> | nobody *trained* here"
        models:
          - name: resnet
            arch: resnet_small.py:SmallResNet
            checkpoint: resnet.pth
        input: {size: 64, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
        images: ["imgs/*.jpg"]
        layers: [conv1, layer1.0.conv2, {name: layer2.0.bn1, relu: yes}, layer3.1, fc]
        """)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n")
    result = build(spec, docs, device="cpu")
    layers = {lay["name"]: lay for lay in result.report["runs"][0]["layers"]}
    assert layers["layer1.0.conv2"]["weight_shape"] == [8, 8, 3, 3]
    assert layers["layer2.0.bn1"]["relu_applied"] and layers["layer2.0.bn1"]["weight_shape"] is None
    assert layers["layer3.1"]["output_shape"] == [32, 4, 4]
    index = (docs / "resnet" / "index.md").read_text()
    assert index.startswith("# A &lt;b&gt;ResNet&lt;/b&gt; \\| nobody \\*trained\\* here\n")
    proc = mkdocs_strict(docs, tmp_path)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("example", ["edges_build", "towncenter_build", "colour_mlp_build"])
def test_example_specs_build_and_pass_mkdocs_strict(tmp_path, example, request):
    # A site holding only this report: every link it writes must stay inside it. Each example
    # is built once per session (tests/conftest.py) and shared with the other tests that read it.
    result, docs, _ = request.getfixturevalue(example)
    assert result.pages >= 3 and result.images > 0
    proc = strict_lone_site(docs, tmp_path)
    assert proc.returncode == 0, proc.stderr
    site_html = (tmp_path / "site" / result.report["report"] / "index.html").read_text()
    assert "Findings" in site_html


def test_edges_known_answers():
    """The edges example: vertical edge filter on horizontal stripes gives zero inside the image,
    and the feature map equals scipy's correlate2d."""
    from scipy.signal import correlate2d

    from reportgen.load.images import load_image
    from reportgen.load.spec import load_spec

    spec = load_spec(ROOT / "specs" / "edges.yaml")
    from reportgen.load.models import load_model
    model = load_model(spec, spec.runs[0]).module
    img = load_image(ROOT / "examples/edges/images/stripes_horizontal.png", spec.input).tensor
    with torch.no_grad():
        out = model.edges(img[None])[0].numpy()
    x = img[0].numpy().astype(np.float64)
    k = model.edges.weight[0, 0].detach().numpy().astype(np.float64)
    np.testing.assert_allclose(out[0, 1:-1, 1:-1], correlate2d(x, k, mode="valid"), atol=1e-5)
    assert np.abs(out[0, 1:-1, 1:-1]).max() == 0.0  # vertical edge: no response to horizontal stripes
    assert np.abs(out[1]).max() > 1.0  # the horizontal one responds
    n = x.shape[0]
    pooled = model.pool(torch.relu(model.edges(img[None])))
    assert model.strided(pooled).shape[-1] == (n // 2 - 3) // 2 + 1  # (n + 2p - f) / s + 1


def test_towncenter_home_answers_why_the_locations_differ(towncenter_build):
    """The example's home page leads with one finding per question of the 'why' analyses,
    each the highest ranked of its kind, linking to the page that holds the evidence."""
    import json

    result, docs, _ = towncenter_build
    home = (result.out_dir / "index.md").read_text()
    findings = json.loads((result.out_dir / "report.json").read_text())["findings"]
    assert "### Why the locations differ" in home
    for kind, page in (("data", "data.md"), ("concepts", "concepts.md"), ("training", "training.md"),
                       ("importance", "importance.md")):
        first = next(f for f in findings if f["kind"] == kind)
        line = next(ln for ln in home.splitlines() if ln.startswith("- **[") and f"]({page})**" in ln)
        assert line.endswith(first["text"]), (kind, line)
        assert (result.out_dir / page).is_file()
