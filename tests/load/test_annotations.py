"""COCO-style annotations: reading, hostile files, masks, and the spec key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reportgen.core.errors import SpecError
from reportgen.load.annotations import concept_masks, load_annotations

ROOT = Path(__file__).resolve().parents[2]


def _coco(tmp_path: Path, **over) -> Path:
    data = {
        "images": [{"id": 7, "file_name": "a/img.png", "width": 40, "height": 20}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 4, 8, 12],
                         "keypoints": [14, 6, 2, 0, 0, 0], "segmentation": [[10, 4, 18, 4, 18, 16]]}],
        "categories": [{"id": 3, "name": "person", "keypoints": ["head", "foot"]}],
    }
    data.update(over)
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(data))
    return p


def test_reads_boxes_keypoints_and_matches_paths(tmp_path):
    ann = load_annotations(_coco(tmp_path), "spec.yaml:3: annotations")
    im = ann.get(tmp_path / "a" / "img.png")
    assert im is not None and (im.width, im.height) == (40, 20)
    (o,) = im.objects
    assert o.category == "person" and o.box == (10.0, 4.0, 18.0, 16.0)
    assert o.keypoints == (("head", 14.0, 6.0),)  # the unlabelled foot (v = 0) is dropped
    assert ann.keypoint_names == ("head", "foot")


def test_masks_at_another_size_follow_the_box(tmp_path):
    im = load_annotations(_coco(tmp_path), "s").get(tmp_path / "a" / "img.png")
    m = concept_masks(im, (40, 80))  # twice the annotated size
    box = np.zeros((40, 80), bool)
    box[8:32, 20:36] = True
    assert np.array_equal(m["person"], box)
    assert np.array_equal(m["background"], ~box)
    assert m["head"][12, 28] and m["head"].sum() < box.sum()
    assert m["person (mask)"].any() and not (m["person (mask)"] & ~box).any()


@pytest.mark.parametrize("over, words", [
    ({"images": "x"}, "not a COCO-style mapping"),
    ({"categories": [{"id": "3", "name": "person"}]}, "category without an integer 'id'"),
    ({"annotations": [{"image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1]}]}, "is not listed"),
    ({"annotations": [{"image_id": 7, "category_id": 3, "bbox": [0, 0, -1, 1]}]}, "without a 'bbox'"),
    ({"annotations": [{"image_id": 7, "category_id": 3, "bbox": [0, 0, 1, 1], "keypoints": [1, 2]}]},
     "'keypoints' that are not 6 numbers"),
    ({"images": [{"id": 7, "file_name": "a.png", "width": 0, "height": 5}]}, "positive 'width'"),
])
def test_bad_files_give_one_line(tmp_path, over, words):
    with pytest.raises(SpecError) as exc:
        load_annotations(_coco(tmp_path, **over), "spec.yaml:3: annotations")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("spec.yaml:3: annotations: ") and words in msg


def test_not_json(tmp_path):
    p = tmp_path / "ann.json"
    p.write_text("[" * 100000)
    with pytest.raises(SpecError, match="cannot be read as JSON"):
        load_annotations(p, "s")


def test_example_file_covers_every_example_frame():
    frames = ROOT / "examples" / "towncenter" / "frames"
    ann = load_annotations(frames / "annotations.coco.json", "s")
    pngs = sorted(frames.glob("*/*.png"))
    assert len(pngs) == 36 and all(ann.get(p) is not None for p in pngs)
    src = json.loads((frames / "annotations.json").read_text())
    for rel, frame in src["frames"].items():
        got = ann.get(frames / rel).objects
        assert np.allclose([o.box for o in got], [p["box"] for p in frame["people"]], atol=0.02)


def test_spec_key_resolves_per_location_and_reports_missing(tmp_path):
    from reportgen.load.spec import load_spec

    (tmp_path / "loc1.json").write_text("{}")
    spec = tmp_path / "s.yaml"
    spec.write_text("report: r\ntitle: T\nmodels:\n  - name: m\n    arch: torch.nn:Identity\n"
                    "    locations: [loc1, loc2]\nannotations: '{location}.json'\nlayers: [x]\n")
    with pytest.raises(SpecError) as exc:
        load_spec(spec)
    msg = str(exc.value)
    assert "s.yaml:7: annotations: annotation file for location 'loc2' not found" in msg
    assert "loc1" not in msg.replace("loc1, loc2", "")
    (tmp_path / "loc2.json").write_text("{}")
    runs = load_spec(spec).runs
    assert [r.annotations.name for r in runs] == ["loc1.json", "loc2.json"]
