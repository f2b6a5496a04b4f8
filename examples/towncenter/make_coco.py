"""Write frames/annotations.coco.json, the COCO-style copy of frames/annotations.json.

reportgen reads object annotations in the COCO layout (``annotations:`` in a spec):
``images`` with file names relative to the annotation file, ``annotations`` with
``bbox`` [x, y, width, height] and ``keypoints`` [x, y, v, ...], and ``categories``
naming the keypoints. The example's own file keeps the renderer's layout
([x0, y0, x1, y1] boxes); this script derives the COCO one from it, so it needs no
retraining. A keypoint outside the frame is kept as labelled but not visible (v = 1).

Run from the repository root:  python examples/towncenter/make_coco.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

FRAMES = Path(__file__).resolve().parent / "frames"


def to_coco(src: dict) -> dict:
    h, w = src["image_size"]["height"], src["image_size"]["width"]
    images, annotations = [], []
    for i, (rel, frame) in enumerate(sorted(src["frames"].items()), 1):
        images.append({"id": i, "file_name": rel, "width": w, "height": h, "location": frame["location"]})
        for person in frame["people"]:
            x0, y0, x1, y1 = person["box"]
            kps = []
            for x, y in person["keypoints"]:
                inside = 0 <= x < w and 0 <= y < h
                kps += [round(x, 2), round(y, 2), 2 if inside else 1]
            annotations.append({
                "id": len(annotations) + 1, "image_id": i, "category_id": 1, "iscrowd": 0,
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "area": round((x1 - x0) * (y1 - y0), 2),
                "keypoints": kps, "num_keypoints": sum(1 for v in kps[2::3] if v == 2),
            })
    return {
        "info": {"description": "towncenter example: people in the test and shared frames"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person",
                        "keypoints": src["keypoint_names"], "skeleton": [[1, 2], [2, 3], [3, 4], [3, 5]]}],
    }


def main() -> None:
    coco = to_coco(json.loads((FRAMES / "annotations.json").read_text()))
    text = json.dumps(coco, indent=1)
    # One line per list of numbers keeps the file short and diffable.
    text = re.sub(r"\[\s+([^\[\]{}]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    (FRAMES / "annotations.coco.json").write_text(text + "\n")
    print(f"wrote {len(coco['images'])} images, {len(coco['annotations'])} people")


if __name__ == "__main__":
    main()
