"""Network dissection: units built to fire on a box or on the background get those concepts."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from reportgen.analysis.dissect import dissect, labels, stack_masks, top_masks, upsample
from reportgen.load.annotations import AnnObject, ImageAnnotation, concept_masks
from reportgen.run.hooks import LayerRecorder, inference


def _scene(rng, n=4, h=24, w=32):
    """Images with a person box and its head keypoint; boxes move between images."""
    anns = []
    for i in range(n):
        x0, y0 = 3 + 5 * i, 2 + 3 * i
        anns.append(ImageAnnotation(width=w, height=h, objects=(
            AnnObject("person", (x0, y0, x0 + 6, y0 + 12), keypoints=(("head", x0 + 3, y0 + 2),)),)))
    return anns


def test_a_unit_firing_exactly_on_the_boxes_has_iou_one():
    rng = np.random.default_rng(0)
    anns = _scene(rng)
    names, masks = stack_masks([concept_masks(a, (24, 32)) for a in anns], (24, 32))
    box = masks[:, names.index("person")]
    maps = np.zeros((4, 3, 24, 32))
    maps[:, 0] = box * 2.0  # fires on the boxes only
    maps[:, 1] = ~box * 1.0  # fires everywhere else
    maps[:, 2] = 0.0  # silent
    d = dissect(maps, names, masks, quantile=0.005)
    # reference: IoU by hand over the set
    assert d.iou[0, names.index("person")] == 1.0
    assert d.iou[1, names.index("background")] == 1.0
    assert np.all(d.iou[2] == 0) and d.mask_share[2] == 0  # silence is not firing
    lab = labels(d.iou, names, 0.04)
    assert lab[0] == ("person", 1.0) and lab[1] == ("background", 1.0) and lab[2][0] is None


def test_iou_is_pooled_over_images_not_averaged():
    names = ["a"]
    masks = np.zeros((2, 1, 4, 4), dtype=bool)
    masks[0, 0, :2, :2] = True  # 4 px in image 0, none in image 1
    maps = np.zeros((2, 1, 4, 4))
    maps[0, 0, 0, :] = 1.0  # 4 px in image 0: 2 inside the concept
    maps[1, 0, 0, :2] = 1.0  # 2 px in image 1, where the concept is absent
    d = dissect(maps, names, masks, quantile=6 / 32)
    inter, union = 2, 4 + 6 - 2  # sums over both images
    assert np.isclose(d.iou[0, 0], inter / union)


def test_threshold_is_the_top_quantile():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(3, 10000))
    t, m = top_masks(v, 0.005)
    assert np.allclose(m.mean(axis=1), 0.005)
    assert np.allclose(t, np.sort(v, axis=1)[:, -50])


def test_upsampling_is_bilinear_like_torch():
    maps = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    ref = torch.nn.functional.interpolate(torch.from_numpy(maps), size=(8, 10), mode="bilinear", align_corners=False)
    assert np.allclose(upsample(maps, (8, 10)), ref.numpy())


def test_hand_set_model_unit_fires_on_the_red_box():
    """A 1x1 conv with hand-set weights: unit 0 = relu(R - G - B), unit 1 = relu(G)."""
    h, w = 16, 20
    anns, imgs = [], []
    for i in range(3):
        x0, y0 = 2 + 4 * i, 1 + 2 * i
        img = np.zeros((3, h, w), dtype=np.float32)
        img[1] = 0.5  # green everywhere
        img[:, y0:y0 + 8, x0:x0 + 5] = 0
        img[0, y0:y0 + 8, x0:x0 + 5] = 1.0  # a red box
        imgs.append(img)
        anns.append(ImageAnnotation(width=w, height=h, objects=(AnnObject("person", (x0, y0, x0 + 5, y0 + 8)),)))
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0, -1.0], [0.0, 1.0, 0.0]]).reshape(2, 3, 1, 1))
        net[0].bias.zero_()
    with inference(net), LayerRecorder(net, ["1"]) as rec:
        maps = rec.run(torch.from_numpy(np.stack(imgs)))["1"].numpy()
    names, masks = stack_masks([concept_masks(a, (h, w)) for a in anns], (h, w))
    d = dissect(maps, names, masks)
    assert labels(d.iou, names)[0] == ("person", 1.0)
    assert labels(d.iou, names)[1] == ("background", 1.0)


def _paper_iou(maps: np.ndarray, masks: np.ndarray, q: float) -> np.ndarray:
    """Network dissection as Bau et al. define it, written out for one unit at a time: T_k is
    the (1 - q) quantile of the unit's raw activations over the data set (numpy's 'higher'
    order statistic: the ⌈qP⌉-th largest value), the maps are upsampled bilinearly and
    M_k = S_k >= T_k; IoU = Σ|M_k ∩ L_c| / Σ|M_k ∪ L_c| over the images."""
    n, u = maps.shape[:2]
    size = masks.shape[2:]
    out = np.zeros((u, masks.shape[1]))
    for k in range(u):
        raw = maps[:, k].ravel()
        m = int(np.ceil(q * raw.size))
        t = np.sort(raw)[raw.size - m]
        up = torch.nn.functional.interpolate(torch.from_numpy(maps[:, k:k + 1].astype(np.float32)), size=size,
                                             mode="bilinear", align_corners=False).numpy()[:, 0]
        fired = up > t if t <= raw.min() else up >= t
        for c in range(masks.shape[1]):
            inter = np.logical_and(fired, masks[:, c]).sum()
            union = np.logical_or(fired, masks[:, c]).sum()
            out[k, c] = inter / union if union else 0.0
    return out


def test_the_default_threshold_is_the_papers_raw_quantile():
    """Smooth random maps at a quarter of the input size: the default equals the paper's rule
    computed independently, and the upsampled variant (a lower threshold: interpolation lowers
    the top of a peak) gives other masks."""
    rng = np.random.default_rng(3)
    maps = np.maximum(rng.normal(size=(6, 5, 6, 8)), 0).astype(np.float32)
    masks = np.zeros((6, 2, 24, 32), dtype=bool)
    masks[:, 0, 4:12, 6:14] = True
    masks[:, 1] = rng.random((6, 24, 32)) < 0.02
    d = dissect(maps, ["box", "speckle"], masks, quantile=0.05)
    assert np.allclose(d.iou, _paper_iou(maps, masks, 0.05))
    raw = maps.transpose(1, 0, 2, 3).reshape(5, -1)
    assert np.allclose(d.thresholds, np.sort(raw, axis=1)[:, raw.shape[1] - int(np.ceil(0.05 * raw.shape[1]))])
    up = dissect(maps, ["box", "speckle"], masks, quantile=0.05, threshold="upsampled")
    assert np.all(up.thresholds <= d.thresholds) and not np.allclose(up.iou, d.iou)
    assert np.allclose(up.mask_share, 0.05, atol=0.002)  # the upsampled quantile fires on exactly q
