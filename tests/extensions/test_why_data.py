"""The data extension: which frames a location's statistics are over, the Mantel tests of
the reduce step against planted relations, and the findings' wording."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from PIL import Image

from reportgen.analysis import datastats as ds
from reportgen.core.extension import RunContext
from reportgen.extensions.data import DataExtension
from reportgen.extensions.data_text import findings
from reportgen.load.images import load_image
from reportgen.load.spec import load_spec
from tests.conftest import TINY_ARCH
from tests.sites import strict_lone_site

DATA = DataExtension()

LOCS = ["a", "b", "c"]


def _frames_project(tmp_path, extra: bool = True):
    """Per location: two own frames (a flat colour, a person-sized box at different rows),
    one extra frame; two shared frames; a COCO file for the own frames."""
    (tmp_path / "arch.py").write_text(TINY_ARCH)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for li, loc in enumerate(LOCS):
        for sub in ("own", "extra"):
            (tmp_path / loc / sub).mkdir(parents=True)
        for f in range(2):
            img = np.full((16, 20, 3), 40 * (li + 1), dtype=np.uint8)
            img[4 + 2 * f:12, 8:12] = 250  # an object, at a different place in each frame
            name = f"{loc}/own/f{f}.png"
            Image.fromarray(img).save(tmp_path / name)
            images.append({"id": len(images) + 1, "file_name": name, "width": 20, "height": 16})
            anns.append({"id": len(anns) + 1, "image_id": len(images), "category_id": 1,
                         "bbox": [8, 4 + 2 * f, 4, 8 - 2 * f]})
        Image.fromarray(np.full((16, 20, 3), 40 * (li + 1), dtype=np.uint8)).save(tmp_path / loc / "extra" / "x.png")
    (tmp_path / "shared").mkdir()
    for s in range(2):
        Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(tmp_path / "shared" / f"s{s}.png")
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                   "categories": [{"id": 1, "name": "person"}]}))
    spec = textwrap.dedent(f"""\
        report: frames
        title: Frames
        models:
          - name: tiny
            arch: arch.py:TinyNet
            locations: [{', '.join(LOCS)}]
        input:
          size: [16, 20]
        images: ["{{location}}/own/*.png", "shared/*.png"]
        annotations: ann.json
        {'extra_frames: ["{location}/extra/*.png"]' if extra else ''}
        layers: [conv1]
        """)
    (tmp_path / "spec.yaml").write_text(spec)
    return load_spec(tmp_path / "spec.yaml")


def _ctx(spec, run):
    return RunContext(spec=spec, run=run, model=None, device=None,
                      images=[load_image(p, run.input) for p in run.images])


def test_run_part_reads_own_and_extra_frames_not_shared_ones(tmp_path):
    spec = _frames_project(tmp_path)
    assert DATA.wanted(spec)
    run = spec.runs[1]
    value = DATA.run_part(_ctx(spec, run))
    assert value.frames == 3 and value.extra_frames == 1
    own = [np.asarray(Image.open(tmp_path / "b" / "own" / f"f{f}.png"), dtype=np.float32) / 255 for f in range(2)]
    own.append(np.asarray(Image.open(tmp_path / "b" / "extra" / "x.png"), dtype=np.float32) / 255)
    assert np.allclose(value.background, np.median(np.stack(own), axis=0), atol=1e-6)
    # the background is the flat colour: the object is in one frame of three at each pixel but rows 8-11
    assert value.background[0, 0] == pytest.approx([80 / 255] * 3, abs=1e-6)
    assert value.boxes == 2 and value.annotated_frames == 2  # the extra frame has no entry
    heights = np.array([8, 6]) / 16
    assert value.scale_hist.sum() == 2 and value.scale_hist[int(heights[0] * 20)] == 1
    assert DATA.run_key(_ctx(spec, run)) != DATA.run_key(_ctx(spec, spec.runs[0]))


def test_extra_frames_key_is_checked_like_images(tmp_path):
    from reportgen.core.errors import SpecError

    _frames_project(tmp_path)
    text = (tmp_path / "spec.yaml").read_text().replace("{location}/extra/*.png", "{location}/none/*.png")
    (tmp_path / "spec.yaml").write_text(text)
    with pytest.raises(SpecError, match=r"spec.yaml:11: extra_frames\[0\]: no image files match 'a/none/\*.png'"):
        load_spec(tmp_path / "spec.yaml")


def test_shared_frames_only_is_not_wanted(project):
    from tests.conftest import write_spec

    spec = load_spec(write_spec(project))  # three locations, every image shared
    assert not DATA.wanted(spec)


# -- reduce: planted relations ------------------------------------------------------------


def _location(level: float, box_height: float, seed: int) -> ds.LocationData:
    rng = np.random.default_rng(seed)
    frames = np.clip(level + rng.normal(scale=0.02, size=(3, 24, 32, 3)), 0, 1)
    x = 2 + 3 * seed  # positions that differ, in no relation to the rest
    boxes = [(x, 20 - box_height * 24, x + 4, 20, 32, 24)] * 4
    return ds.location_data(frames, boxes=boxes, annotated_frames=3)


def _planted(follow: str, k: int = 8):
    """k locations whose brightness and object scale are independent orders; the networks'
    weight distances follow one of them (plus noise), CKA follows neither."""
    rng = np.random.default_rng(1)
    level = rng.permutation(k) / (k - 1) * 0.6 + 0.2
    scale = rng.permutation(k) / (k - 1) * 0.6 + 0.2
    keys = [f"loc{i}" for i in range(k)]
    values = {key: _location(level[i], scale[i], i) for i, key in enumerate(keys)}
    x = level if follow == "brightness" else scale
    noise = rng.normal(scale=0.01, size=(k, k))
    sim = 1 - 0.5 * np.abs(x[:, None] - x[None, :]) + (noise + noise.T) / 2
    np.fill_diagonal(sim, 1)
    cka = rng.uniform(0.5, 1, (k, k))
    cka = (cka + cka.T) / 2
    np.fill_diagonal(cka, 1)
    comps = [{"model": "m", "layer": "conv1", "runs": keys, "weight_similarity": sim.tolist(), "cka": cka.tolist()}]
    return keys, values, comps


class _Spec:
    """Just what reduce reads of a spec: its runs."""

    def __init__(self, keys):
        from types import SimpleNamespace

        model = SimpleNamespace(name="m")
        self.runs = [SimpleNamespace(key=k, location=k, model=model, images=(), extra_frames=()) for k in keys]


@pytest.mark.parametrize("follow, names", [("brightness", ("the background", "colour")),
                                           ("scale", ("object scale",))])
def test_the_finding_names_the_planted_measure(follow, names):
    keys, values, comps = _planted(follow)
    section = DATA.reduce(_Spec(keys), values, {"comparisons": comps})
    tests = section["mantel"]["results"]
    assert len(tests) == 10 and section["mantel"]["tests"] == 10  # 5 data x 2 network measures
    best = max((t for t in tests if t["network"] == "weights"), key=lambda t: t["r"])
    assert best["data"] in {"scale"} if follow == "scale" else {"background", "colour"}
    assert best["r"] > 0.6 and best["survives"] and best["p"] == pytest.approx(1 / 1000)
    assert not any(t["survives"] for t in tests if t["network"] == "cka")
    texts = [f["text"] for f in findings({"data": section})]
    assert any(t.startswith("`conv1` differences follow " + n) for t in texts for n in names), texts
    assert "10 Mantel tests" in texts[-1]


def test_r_of_the_reduce_equals_scipy_on_the_same_matrices():
    from scipy.stats import pearsonr

    keys, values, comps = _planted("scale")
    section = DATA.reduce(_Spec(keys), values, {"comparisons": comps})
    scale = np.array(section["distances"][0]["matrices"]["scale"])
    net = 1 - np.array(comps[0]["weight_similarity"])
    iu = np.triu_indices(len(keys), 1)
    t = next(t for t in section["mantel"]["results"] if t["network"] == "weights" and t["data"] == "scale")
    assert t["r"] == pytest.approx(pearsonr(net[iu], scale[iu])[0], abs=1e-12)


def test_missing_runs_and_nan_similarities_are_left_out_and_named():
    keys, values, comps = _planted("brightness")
    sim = np.array(comps[0]["weight_similarity"], dtype=object)
    sim[2, :] = None  # a location with NaN weights
    sim[:, 2] = None
    comps[0]["weight_similarity"] = sim.tolist()
    comps[0]["cka"] = None
    del values["loc5"]  # a location without frames of its own
    section = DATA.reduce(_Spec(keys), values, {"comparisons": comps})
    tests = section["mantel"]["results"]
    assert {t["network"] for t in tests} == {"weights"}
    assert all(t["left_out"] == ["loc2", "loc5"] and t["n"] == 6 for t in tests)
    assert "(loc2 and loc5 left out" in findings({"data": section})[0]["text"]


def test_too_few_locations_give_no_p():
    keys, values, comps = _planted("brightness", k=3)
    section = DATA.reduce(_Spec(keys), values, {"comparisons": comps})
    assert all(t["r"] is None and t["p"] is None and t["p_holm"] is None for t in section["mantel"]["results"])
    assert findings({"data": section}) == []


def test_page_shows_every_test_and_the_pictures():
    keys, values, comps = _planted("brightness")
    section = DATA.reduce(_Spec(keys), values, {"comparisons": comps})
    pics = DATA.pictures(_Spec(keys), section, values)
    views = ("backgrounds", "colour", "spectra", "objects") + tuple(f"distance-{m}" for m in ds.MEASURES)
    assert set(pics) == {f"m/{v}.png" for v in views}
    assert all(p.startswith(b"\x89PNG") for p in pics.values())
    report = {"data": section, "findings": findings({"data": section})}
    text = DATA.pages(_Spec(keys), report, {k: "img/data/" + k for k in pics})["data.md"]
    assert "![Background estimate per location](img/data/m/backgrounds.png)" in text
    assert "![object scale distance between locations](img/data/m/distance-scale.png)" in text
    assert "## Mantel tests" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| `conv1` |")]
    assert len(rows) == 5 and all(ln.count("|") == rows[0].count("|") for ln in rows)
    assert rows[0].count("|") == text.splitlines()[text.splitlines().index(rows[0]) - 1].count("|")


def test_every_data_key_is_documented():
    from tests.conftest import ROOT
    from tests.test_docs import _all_keys

    keys, values, comps = _planted("scale")
    section = DATA.reduce(_Spec(keys), values, {"comparisons": comps})
    json.dumps(section, allow_nan=False)  # JSON-ready, no NaN
    page = (ROOT / "docs/reference/report-json.md").read_text()
    found = _all_keys({"data": section}, set())
    missing = sorted(k for k in found if f'"{k}"' not in page and f"`{k}`" not in page and f"{k}`" not in page)
    assert not missing, missing


# -- end to end: a build whose networks are planted to follow background brightness -------


def _planted_project(tmp_path, k: int = 7) -> None:
    """k locations: the weights of location i are W0 + t_i * N (so the networks' distances grow
    with |t_i - t_j|), its own frames have a background of brightness 0.2 + 0.6 t_i, and its
    boxes are of sizes unrelated to t. Four shared frames feed the activation comparisons."""
    import torch

    from tests.conftest import tiny_module

    (tmp_path / "arch.py").write_text(TINY_ARCH)
    (tmp_path / "ckpt").mkdir()
    rng = np.random.default_rng(5)
    t = rng.permutation(k) / (k - 1)
    base, direction = tiny_module(seed=0).state_dict(), tiny_module(seed=1).state_dict()
    images, anns = [], []
    for i in range(k):
        loc = f"l{i}"
        torch.save({n: base[n] + 0.8 * float(t[i]) * direction[n] for n in base}, tmp_path / "ckpt" / f"{loc}.pt")
        (tmp_path / loc).mkdir()
        for f in range(3):
            img = np.clip(0.2 + 0.6 * t[i] + rng.normal(scale=0.03, size=(16, 20, 3)), 0, 1)
            name = f"{loc}/f{f}.png"
            Image.fromarray((img * 255).round().astype(np.uint8)).save(tmp_path / name)
            images.append({"id": len(images) + 1, "file_name": name, "width": 20, "height": 16})
            h = float(rng.uniform(3, 14))
            anns.append({"id": len(anns) + 1, "image_id": len(images), "category_id": 1,
                         "bbox": [float(rng.uniform(0, 15)), 15 - h, 4, h]})
    (tmp_path / "shared").mkdir()
    for s in range(4):
        Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(tmp_path / "shared" / f"s{s}.png")
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                   "categories": [{"id": 1, "name": "person"}]}))
    (tmp_path / "spec.yaml").write_text(textwrap.dedent(f"""\
        report: planted
        title: Planted
        models:
          - name: tiny
            arch: arch.py:TinyNet
            checkpoint: ckpt/{{location}}.pt
            locations: [{', '.join(f'l{i}' for i in range(k))}]
        input:
          size: [16, 20]
        images: ["{{location}}/*.png", "shared/*.png"]
        annotations: ann.json
        layers: [conv1]
        analyses:
          compare: {{max_samples: 256}}
        """))


@pytest.mark.slow
def test_build_finds_that_the_planted_networks_follow_the_background(tmp_path):
    from reportgen.build import build

    _planted_project(tmp_path)
    build(tmp_path / "spec.yaml", tmp_path / "docs", device="cpu")
    report = json.loads((tmp_path / "docs/planted/report.json").read_text())
    data = report["data"]
    assert [e["frames"] for e in data["locations"]] == [3] * 7
    assert all(e["shared_left_out"] == 4 for e in data["locations"])
    ours = [f for f in report["findings"] if f["kind"] == "data"]
    conv1 = next(f for f in ours if f["layer"] == "conv1")
    assert conv1["text"].startswith("`conv1` differences follow the background") or \
        conv1["text"].startswith("`conv1` differences follow colour"), conv1["text"]
    scale = [t for t in data["mantel"]["results"] if t["data"] == "scale"]
    assert not any(t["survives"] for t in scale)
    page = (tmp_path / "docs/planted/data.md").read_text()
    assert "## Mantel tests" in page and "backgrounds.png" in page
    assert (tmp_path / "docs/planted/img/data/tiny/backgrounds.png").is_file()
    proc = strict_lone_site(tmp_path / "docs", tmp_path)  # every link and anchor resolves
    assert proc.returncode == 0, proc.stderr


def test_frames_of_other_sizes_are_resized_and_per_model_extra_frames_override(tmp_path):
    _frames_project(tmp_path)
    Image.fromarray(np.full((32, 40, 3), 120, dtype=np.uint8)).save(tmp_path / "a" / "extra" / "big.png")
    text = (tmp_path / "spec.yaml").read_text().replace("input:\n  size: [16, 20]\n", "")
    text = text.replace('extra_frames: ["{location}/extra/*.png"]\n', "")
    own_key = '    locations: [a, b, c]\n    extra_frames: ["{location}/extra/*.png"]\n'
    text = text.replace("    locations: [a, b, c]\n", own_key)
    (tmp_path / "spec.yaml").write_text(text)
    spec = load_spec(tmp_path / "spec.yaml")
    assert spec.runs[0].input.size is None and len(spec.runs[0].extra_frames) == 2
    value = DATA.run_part(_ctx(spec, spec.runs[0]))
    assert value.frames == 4 and value.extra_frames == 2 and value.background.shape == (16, 20, 3)
