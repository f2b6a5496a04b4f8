"""The concepts and importance extensions on a hand-set two-head network and annotated images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reportgen.core import extension as extensions
from reportgen.core.errors import SpecError
from reportgen.core.extension import RunContext
from reportgen.load.images import load_image
from reportgen.load.models import load_model
from reportgen.load.spec import load_spec
from tests.conftest import write_spec

ARCH = '''\
from torch import nn


class BoxNet(nn.Module):
    """conv1: unit 0 = relu(R - G - B) (red boxes), unit 1 = relu(G) (the green ground),
    unit 2 silent (zero weights and bias). Head a reads units 0 and 1, head b only unit 1."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 1)
        self.relu1 = nn.ReLU()
        self.head_a = nn.Conv2d(3, 1, 1, bias=False)
        self.head_b = nn.Conv2d(3, 1, 1, bias=False)

    def forward(self, x):
        h = self.relu1(self.conv1(x))
        return {"a": self.head_a(h), "b": self.head_b(h)}
'''

SPEC = """\
report: boxes
title: Boxes
models:
  - name: box
    arch: arch.py:BoxNet
    checkpoint: ckpt/{location}.pt
    locations: [a, b]
input:
  size: [16, 20]
images:
  - img/*.png
annotations: img/ann.json
layers: [conv1]
analyses:
  concepts: {layers: [conv1]}
  importance: {layers: [conv1]}
"""

BOXES = [(2, 1), (8, 4), (13, 6)]  # (x0, y0) of a 5 x 8 red box per image


def _weights(person: bool) -> dict[str, torch.Tensor]:
    w = torch.zeros(3, 3, 1, 1)
    if person:  # at location b the first unit learned nothing
        w[0, :, 0, 0] = torch.tensor([1.0, -1.0, -1.0])
    w[1, 1, 0, 0] = 1.0
    return {"conv1.weight": w, "conv1.bias": torch.zeros(3),
            "head_a.weight": torch.tensor([2.0, 1.0, 0.0]).reshape(1, 3, 1, 1),
            "head_b.weight": torch.tensor([0.0, 3.0, 0.0]).reshape(1, 3, 1, 1)}


@pytest.fixture
def boxes(tmp_path: Path) -> Path:
    (tmp_path / "arch.py").write_text(ARCH)
    (tmp_path / "ckpt").mkdir()
    torch.save(_weights(True), tmp_path / "ckpt" / "a.pt")
    torch.save(_weights(False), tmp_path / "ckpt" / "b.pt")
    (tmp_path / "img").mkdir()
    images, anns = [], []
    for i, (x0, y0) in enumerate(BOXES):
        px = np.zeros((16, 20, 3), dtype=np.uint8)
        px[..., 1] = 128  # green ground
        px[y0:y0 + 8, x0:x0 + 5] = (255, 0, 0)
        Image.fromarray(px).save(tmp_path / "img" / f"f{i}.png")
        images.append({"id": i + 1, "file_name": f"f{i}.png", "width": 20, "height": 16})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [x0, y0, 5, 8],
                     "keypoints": [x0 + 2.5, y0 + 1, 2]})
    (tmp_path / "img" / "ann.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person", "keypoints": ["head"]}]}))
    write_spec(tmp_path, SPEC)
    return tmp_path


def _contexts(spec):
    out = []
    for run in spec.runs:
        images = [load_image(p, run.input) for p in run.images]
        out.append(RunContext(spec=spec, run=run, model=load_model(spec, run, "cpu").module,
                              device=torch.device("cpu"), images=images))
    return out


def _report(spec) -> dict:
    """The report.json entries the importance extension reads: unit 2 is a dead filter."""
    filters = [{"dead": False, "duplicate_of": None, "l2_norm": 1.7}, {"dead": False, "duplicate_of": None,
                                                                         "l2_norm": 1.0},
               {"dead": True, "duplicate_of": None, "l2_norm": 0.0}]
    return {"runs": [{"key": r.key, "layers": [{"name": "conv1", "filters": filters,
                                                "channels": [{"never_active": i == 2} for i in range(3)]}]}
                     for r in spec.runs]}


def test_concepts_label_the_box_unit_person_and_the_ground_background(boxes):
    from reportgen.extensions.concepts import ConceptsExtension

    concepts = ConceptsExtension()

    spec = load_spec(boxes / "spec.yaml")
    assert [e.name for e in extensions.active(spec)] == ["concepts", "importance"]
    values = {ctx.run.key: concepts.run_part(ctx) for ctx in _contexts(spec)}
    report = _report(spec)
    report["runs"][0]["layers"][0]["units"] = {"units": [{"index": i} for i in range(3)]}  # unit views of a
    sec = concepts.reduce(spec, values, report)
    # the unit cards read the labels from the unit views
    assert report["runs"][0]["layers"][0]["units"]["units"][0] == {"index": 0, "concept": "person", "concept_iou": 1.0}
    assert "units" not in report["runs"][1]["layers"][0]
    assert sec["concepts"] == ["person", "head", "background"]
    a = {u["index"]: u for u in sec["runs"][0]["layers"][0]["units"]}
    assert (a[0]["concept"], a[0]["concept_iou"]) == ("person", 1.0)
    assert (a[1]["concept"], a[1]["concept_iou"]) == ("background", 1.0)
    assert a[2]["concept"] is None and a[2]["concept_iou"] == 0.0
    assert sec["runs"][0]["layers"][0]["detectors"] == [1, 0, 1]
    assert sec["runs"][1]["layers"][0]["detectors"] == [0, 0, 1]  # b: no person unit
    (lay,) = sec["layers"]
    assert lay["everywhere"] == ["background"] and lay["somewhere"] == ["person"] and lay["runs_without"] == []
    (f,) = concepts.findings({"concepts": sec}, spec.analyses)
    assert "a 2 of 3 (1 person, 1 background)" in f["text"] and "only at some: person at 1" in f["text"]
    pics = concepts.pictures(spec, sec, values)
    assert list(pics) == ["conv1.png"] and pics["conv1.png"][:4] == b"\x89PNG"
    page = concepts.pages(spec, {"concepts": sec, "runs": []}, {"conv1.png": "img/concepts/conv1.png"})
    assert "| [a](locations/a.md#layer-conv1) | 3 | 1 | 0 | 1 | 1 of 3 |" in page["concepts.md"]


def test_importance_finds_the_dead_unit_unimportant(boxes):
    from reportgen.extensions.importance import ImportanceExtension

    importance = ImportanceExtension()

    spec = load_spec(boxes / "spec.yaml")
    values = {ctx.run.key: importance.run_part(ctx) for ctx in _contexts(spec)}
    v = values["a"]
    assert v.heads == ["a", "b"] and v.layers == ["conv1"] and v.channels == [3]
    eff = v.effect[0]
    assert eff[2].tolist() == [0.0, 0.0]  # silent unit: exactly no effect
    assert eff[1, 1] == pytest.approx(1.0)  # the only path to head b
    assert eff[0, 1] == 0.0  # unit 0 does not reach head b
    # head a = 2 * relu(R - G - B) + relu(G): reference with numpy on the image pixels
    px = [np.asarray(Image.open(boxes / "img" / f"f{i}.png"), dtype=np.float64) / 255 for i in range(3)]
    u0 = [np.maximum(p[..., 0] - p[..., 1] - p[..., 2], 0) for p in px]
    u1 = [p[..., 1] for p in px]
    ref = np.mean([np.linalg.norm(2 * a) / np.linalg.norm(2 * a + b) for a, b in zip(u0, u1)])
    assert eff[0, 0] == pytest.approx(ref, rel=1e-5)
    sec = importance.reduce(spec, values, _report(spec))
    lay = sec["runs"][0]["layers"][0]
    assert lay["order"][-1] == 2 and lay["units"][2]["rank"] == 3 and lay["units"][2]["dead"]
    assert lay["flags"]["flagged_in_least"] == 1 and lay["flags"]["flagged"] == 1
    assert lay["top"] == [{"head": "a", "unit": 0, "effect": pytest.approx(eff[0, 0])},
                          {"head": "b", "unit": 1, "effect": pytest.approx(1.0)}]
    texts = [f["text"] for f in importance.findings({"importance": sec}, spec.analyses)]
    (flags, tops) = texts
    assert "mostly the unimportant ones" in flags and "a: its 1 least important unit includes 1 of its 1" in flags
    # at b the untrained unit 0 ties with the dead one: both lead the least important group
    assert "b: its 2 least important units (with ties) include 1 of its 1" in flags
    # unit 2 is never active in the report given: zeroing it cannot change anything
    assert ("Ablating a unit silent on every test image changes no output at all for 2 of 2 (as they must: their channel is "
            "zero on every image); so does ablating 1 other unit." in flags)
    assert tops.startswith("The `conv1` unit whose ablation changes the outputs most: a unit 1 (a ")
    pics = importance.pictures(spec, sec, values)
    page = importance.pages(spec, {"importance": sec}, {k: "img/importance/" + k for k in pics})["importance.md"]
    assert "![conv1: ablation effect per unit](img/importance/conv1.png)" in page


def test_no_model_no_annotations_are_notes(boxes):
    from reportgen.extensions.concepts import ConceptsExtension
    from reportgen.extensions.importance import ImportanceExtension

    concepts, importance = ConceptsExtension(), ImportanceExtension()

    spec = load_spec(boxes / "spec.yaml")
    ctx = _contexts(spec)[0]
    ctx.model = None
    assert "cannot run Python hooks" in concepts.run_part(ctx).notes[0]
    assert "cannot run Python hooks" in importance.run_part(ctx).notes[0]


@pytest.mark.parametrize("edit, message", [
    ("concepts: {layers: [conv1]}", "analyses.concepts.layers: concept labels need annotations"),
    ("importance: {layers: [conv9]}", "analyses.importance.layers[0]: 'conv9' is not among the inspected layers"),
    ("importance: {layers: [conv1], locations: [z]}", "analyses.importance.locations[0]: no run 'z'"),
])
def test_spec_mistakes_are_one_line(boxes, edit, message):
    text = SPEC.replace("annotations: img/ann.json\n", "").replace(
        "  concepts: {layers: [conv1]}\n  importance: {layers: [conv1]}\n", f"  {edit}\n")
    with pytest.raises(SpecError) as exc:
        load_spec(write_spec(boxes, text, "bad.yaml"))
    assert message in str(exc.value)


def test_concepts_too_large_for_the_quantile_are_named():
    from reportgen.extensions.concepts import ConceptsExtension, best_possible_iou

    assert best_possible_iou(0.005, 0.92) == pytest.approx(0.005 / 0.92)
    assert best_possible_iou(0.005, 0.001) == pytest.approx(0.2)
    sec = {"quantile": 0.005, "iou_threshold": 0.04, "concepts": ["person", "background"],
           "runs": [{"run": "a", "concept_share": [0.08, 0.92], "max_iou": [0.0625, 0.005 / 0.92],
                     "layers": [{"layer": "conv1", "units_total": 4, "labelled": 2, "detectors": [2, 0], "units": []}],
                     "notes": [], "images": 3}],
           "layers": [{"layer": "conv1", "runs": ["a"], "detectors": [[2, 0]], "runs_with": [1, 0],
                       "everywhere": ["person"], "somewhere": [], "runs_without": []}]}
    texts = [f["text"] for f in ConceptsExtension().findings({"concepts": sec}, None)]
    assert any(t.startswith("No unit detects background (it covers 92.0% of the pixels: IoU at most 0.005)")
               for t in texts)
    assert not any("person (it covers" in t for t in texts)


def test_dead_filters_that_still_fire_and_matter_are_named():
    from reportgen.extensions.importance import ImportanceExtension
    from reportgen.run.ablation import relate_to_flags

    overall = [0.5, 0.0, 0.3, 0.1, 0.0, 0.2, 0.05, 0.4]
    dead = [True, True, False, False, True, False, False, False]  # unit 0: dead weights, yet it matters
    never = [False, True, False, False, True, False, False, False]
    units = [{"index": i, "effect": [e], "overall": e, "rank": r, "dead": d, "never_active": n, "duplicate": False}
             for i, (e, d, n, r) in enumerate(zip(overall, dead, never, [1, 7, 3, 5, 8, 4, 6, 2]))]
    flags = relate_to_flags(np.array(overall), np.array(dead) | np.array(never))
    sec = {"max_units": 8, "runs": [{"run": "x", "images": 2, "heads": ["out"], "notes": [], "layers": [
        {"layer": "conv1", "channels": 8, "units_ablated": 8, "order": [0, 7, 2, 5, 3, 6, 1, 4],
         "top": [{"head": "out", "unit": 0, "effect": 0.5}], "flags": flags, "spearman_norm": None,
         "units": units}]}]}
    text = ImportanceExtension().findings({"importance": sec}, None)[0]["text"]
    assert "for 2 of 2 (as they must" in text
    assert "1 of the 1 dead or duplicate unit that still fire (a dead filter's bias makes a constant channel) " \
           "matter more than the median unit: x unit 0 (dead, rank 1 of 8)" in text


def test_every_key_of_both_sections_is_documented(boxes):
    from reportgen.extensions.concepts import ConceptsExtension
    from reportgen.extensions.importance import ImportanceExtension

    concepts, importance = ConceptsExtension(), ImportanceExtension()
    from tests.conftest import ROOT
    from tests.test_docs import _all_keys

    spec = load_spec(boxes / "spec.yaml")
    ctxs = _contexts(spec)
    report = _report(spec)
    report["concepts"] = concepts.reduce(spec, {c.run.key: concepts.run_part(c) for c in ctxs}, report)
    report["importance"] = importance.reduce(spec, {c.run.key: importance.run_part(c) for c in ctxs}, report)
    page = (ROOT / "docs/reference/report-json.md").read_text()
    keys = _all_keys({k: report[k] for k in ("concepts", "importance")}, set())
    missing = sorted(k for k in keys if f'"{k}"' not in page and f"`{k}`" not in page and f"{k}`" not in page)
    assert not missing


@pytest.mark.slow
def test_a_build_writes_both_sections_pages_and_findings(boxes):
    from reportgen.build import build

    build(boxes / "spec.yaml", boxes / "docs", device="cpu", jobs=2)  # the parts run in worker processes
    out = boxes / "docs" / "boxes"
    report = json.loads((out / "report.json").read_text())
    a = report["concepts"]["runs"][0]["layers"][0]["units"][0]
    assert (a["concept"], a["concept_iou"]) == ("person", 1.0)
    imp = report["importance"]["runs"][0]["layers"][0]
    assert imp["units"][2]["dead"] and imp["units"][2]["overall"] == 0.0  # the zero filter, flagged by the build
    kinds = {f["kind"] for f in report["findings"]}
    assert {"concepts", "importance"} <= kinds
    assert (out / "concepts.md").is_file() and (out / "importance.md").is_file()
    assert (out / "img" / "concepts" / "conv1.png").is_file() and (out / "img" / "importance" / "conv1.png").is_file()
    assert "img/importance/conv1.png" in (out / "importance.md").read_text()
