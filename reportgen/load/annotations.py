"""The input edge for object annotations: COCO-style boxes, keypoints and polygons.

A spec may name an annotation file (``annotations:``, top level or per model, with an
optional ``{location}``). It is read as data only (JSON, checked field by field), and
its images are matched to the spec's images by path: a COCO ``file_name`` is relative
to the annotation file's folder.

Used by the data side (object scale and position per location) and by concept
labels (unit activation maps against annotation masks).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reportgen.core.errors import SpecError

MAX_BYTES = 1 << 30  # a whole COCO train split (keypoints) is about 240 MB
KEYPOINT_RADIUS = 0.02  # disc radius of a keypoint mask, as a share of the image diagonal (at least 1 px)


@dataclass(frozen=True)
class AnnObject:
    """One annotated object, in pixels of the annotated image."""

    category: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    keypoints: tuple[tuple[str, float, float], ...] = ()  # (name, x, y) of labelled keypoints (v > 0)
    polygons: tuple[tuple[float, ...], ...] = ()  # x0, y0, x1, y1, ... per polygon


@dataclass(frozen=True)
class ImageAnnotation:
    width: int
    height: int
    objects: tuple[AnnObject, ...]


@dataclass(frozen=True)
class Annotations:
    path: Path
    images: dict[Path, ImageAnnotation]  # resolved image path -> its objects
    categories: tuple[str, ...]  # in file order
    keypoint_names: tuple[str, ...]  # union over categories, in file order

    def get(self, image: Path) -> ImageAnnotation | None:
        return self.images.get(Path(image).resolve())


def load_annotations(path: Path, where: str) -> Annotations:
    """Read a COCO-style file. ``where``: 'spec.yaml:12: annotations' for error messages.

    Raises SpecError (one line) when the file is not COCO-shaped JSON.
    """
    path = Path(path)

    def bad(what: str) -> SpecError:
        return SpecError(f"{where}: {path} {what}; give a COCO-style JSON file with 'images', "
                         "'annotations' and 'categories' (see docs/reference/spec.md#annotations)")

    try:
        if path.stat().st_size > MAX_BYTES:
            raise bad(f"is larger than {MAX_BYTES >> 20} MiB")
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise bad(f"cannot be read as JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in
                                             ("images", "annotations", "categories")):
        raise bad("is not a COCO-style mapping")
    cats: dict[int, tuple[str, tuple[str, ...]]] = {}
    for c in data["categories"]:
        if not isinstance(c, dict) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
            raise bad("has a category without an integer 'id' and a 'name'")
        kps = c.get("keypoints", [])
        if not isinstance(kps, list) or not all(isinstance(k, str) for k in kps):
            raise bad(f"has category '{c['name']}' whose 'keypoints' is not a list of names")
        cats[c["id"]] = (c["name"], tuple(kps))
    base = path.parent
    images: dict[int, tuple[Path, int, int]] = {}
    for im in data["images"]:
        if not isinstance(im, dict) or not _is_int(im.get("id")) or not isinstance(im.get("file_name"), str):
            raise bad("has an image without an integer 'id' and a 'file_name'")
        w, h = im.get("width"), im.get("height")
        if not (_is_int(w) and _is_int(h) and w > 0 and h > 0):
            raise bad(f"has image '{im['file_name']}' without a positive 'width' and 'height'")
        images[im["id"]] = ((base / im["file_name"]).resolve(), w, h)
    objects: dict[int, list[AnnObject]] = {i: [] for i in images}
    for a in data["annotations"]:
        if not isinstance(a, dict) or a.get("image_id") not in images or a.get("category_id") not in cats:
            raise bad("has an annotation whose 'image_id' or 'category_id' is not listed")
        name, kp_names = cats[a["category_id"]]
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_is_num(v) for v in box) and box[2] >= 0
                and box[3] >= 0):
            raise bad(f"has an annotation of image {a['image_id']} without a 'bbox' [x, y, w, h]")
        x, y, bw, bh = (float(v) for v in box)
        objects[a["image_id"]].append(AnnObject(
            category=name, box=(x, y, x + bw, y + bh),
            keypoints=_keypoints(a.get("keypoints"), kp_names, bad),
            polygons=_polygons(a.get("segmentation"), bad)))
    out = {}
    for i, (p, w, h) in images.items():
        out[p] = ImageAnnotation(width=w, height=h, objects=tuple(objects[i]))
    kp_all = tuple(dict.fromkeys(k for _, kps in cats.values() for k in kps))
    return Annotations(path=path, images=out, categories=tuple(dict.fromkeys(n for n, _ in cats.values())),
                       keypoint_names=kp_all)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _keypoints(values, names: tuple[str, ...], bad) -> tuple[tuple[str, float, float], ...]:
    if values is None:
        return ()
    if not (isinstance(values, list) and len(values) == 3 * len(names) and all(_is_num(v) for v in values)):
        raise bad(f"has 'keypoints' that are not {3 * len(names)} numbers (x, y, v per keypoint name)")
    return tuple((n, float(values[3 * k]), float(values[3 * k + 1]))
                 for k, n in enumerate(names) if values[3 * k + 2] > 0)


def _polygons(seg, bad) -> tuple[tuple[float, ...], ...]:
    if seg is None or isinstance(seg, dict):  # run-length masks (crowds) are not drawn
        return ()
    if not (isinstance(seg, list) and all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                                          and all(_is_num(v) for v in p) for p in seg)):
        raise bad("has a 'segmentation' that is not a list of polygons [x0, y0, x1, y1, ...]")
    return tuple(tuple(float(v) for v in p) for p in seg)


def concept_masks(ann: ImageAnnotation, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Boolean (H, W) masks of the concepts in one image, at ``size`` = (H, W).

    Concepts: each category's boxes ("person"), each keypoint name as small discs
    ("head"), each category's polygons where given ("person (mask)"), and
    "background": pixels outside every box. Coordinates are scaled from the
    annotated image to ``size`` (the network's input, resized the same way); a pixel
    belongs to a shape when its centre does, so a box and the polygon inside it agree.
    """
    from matplotlib.path import Path as Polygon

    h, w = size
    sx, sy = w / ann.width, h / ann.height
    cy = (np.arange(h) + 0.5)[:, None]  # pixel centres
    cx = (np.arange(w) + 0.5)[None, :]
    r = max(1.0, KEYPOINT_RADIUS * math.hypot(w, h))
    masks: dict[str, np.ndarray] = {}

    def add(name: str, m: np.ndarray) -> None:
        masks[name] = masks[name] | m if name in masks else m

    for o in ann.objects:
        x0, y0, x1, y1 = o.box
        add(o.category, (cx >= x0 * sx) & (cx < x1 * sx) & (cy >= y0 * sy) & (cy < y1 * sy))
        for name, x, y in o.keypoints:
            add(name, (cx - x * sx) ** 2 + (cy - y * sy) ** 2 <= r * r)
        for poly in o.polygons:
            pts = np.column_stack([np.asarray(poly[0::2]) * sx, np.asarray(poly[1::2]) * sy])
            centres = np.column_stack([np.broadcast_to(cx, (h, w)).ravel(), np.broadcast_to(cy, (h, w)).ravel()])
            add(f"{o.category} (mask)", Polygon(pts).contains_points(centres).reshape(h, w))
    boxes = np.zeros((h, w), dtype=bool)
    for category in {o.category for o in ann.objects}:
        boxes |= masks[category]
    masks["background"] = ~boxes
    return masks
