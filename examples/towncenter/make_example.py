"""Build the towncenter example: synthetic scenes, ten trained SceneNets, test frames.

This is a stand-in for a real project in which one "scene-specific" pedestrian
network was trained per camera location of a town-centre dataset. We cannot
ship that data, so this script renders ten synthetic camera locations that
differ in pedestrian scale, viewpoint, background and lighting, trains one
SceneNet (see ``model.py``) per location on CPU, and writes:

* ``checkpoints/locNN.pt``: ``{"state_dict", "location", "steps", "arch_args",
  "mean", "std", ...}`` made only of tensors and plain Python values, so it
  loads with ``torch.load(path, weights_only=True)``;
* ``frames/locNN/frame_KK.png``: held-out test frames per location;
* ``frames/shared/scene_KK.png``: frames from a mix of locations, for running
  every location's network on the same images;
* ``frames/annotations.json``: boxes and keypoints of the people in the frames, and
  ``frames/annotations.coco.json``, the same in the COCO layout (``make_coco.py``).

The locations are deliberately trained unevenly (budgets, an under-trained
location, over-regularised conv1 layers) because that is what real multi-model
projects end up with and what reportgen's filter-health pages must reveal.
The script checks those properties at the end and exits with status 1 if they
do not hold.

Run from the repository root:  python examples/towncenter/make_example.py
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from make_coco import main as write_coco
from model import SceneNet

HERE = Path(__file__).resolve().parent
H, W = 96, 128  # image size (rows, columns) for training and test frames
SS = 2  # supersampling factor: scenes are drawn at 2x and downsampled (anti-aliasing)
STRIDE = 4  # output stride of SceneNet (conv1 stride 2, pool1 2)
MEAN = [0.485, 0.456, 0.406]  # ImageNet statistics, applied to RGB in [0, 1]
STD = [0.229, 0.224, 0.225]
KEYPOINT_NAMES = ["head", "shoulders", "hips", "left_foot", "right_foot"]
ARCH_ARGS = {"width": 64, "keypoints": len(KEYPOINT_NAMES), "mid": 32, "conv1_stride": 2}
MIN_PERSON_H = 14  # px; smaller people are not drawn (they would be a few output cells)


# --------------------------------------------------------------------------
# Camera locations
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class LocationStyle:
    """Everything that makes one camera location look different from another.

    Heights and positions are in output pixels (H x W). A person whose feet
    are on image row ``y`` is ``near_height * (y - horizon) / (H - horizon)``
    pixels tall: the usual ground-plane perspective for a level camera.
    """

    horizon: float  # horizon row as a fraction of H (higher camera -> larger value)
    vanish_x: float  # x of the vanishing point as a fraction of W
    near_height: float  # height in px of a person standing on the bottom row
    sky: tuple[int, int, int] | None  # None: facades fill the top of the frame
    facades: tuple[tuple[int, int, int], ...]  # building colours to pick from
    window: tuple[int, int, int]
    window_size: int  # px at output resolution
    ground: tuple[int, int, int]
    tile: float  # pavement tile size in "depth" units; 0 = no tiles
    tile_line: tuple[int, int, int]
    road: str  # "none", "across" (band parallel to the horizon) or "receding"
    road_colour: tuple[int, int, int]
    stripe: tuple[int, int, int]
    light: tuple[float, float, float]  # per-channel gain (brightness and tint)
    shadow_dx: float  # shadow offset per unit person height (sun direction)
    people: tuple[int, int]  # min/max number of pedestrians per scene
    clothes: tuple[tuple[int, int, int], ...]  # dominant clothing colours here
    posts: int  # lamp posts / bollards: vertical clutter that resembles people


LOCATIONS: dict[str, LocationStyle] = {
    # Wide square seen from high up: small people, big tiled pavement.
    "loc01": LocationStyle(0.30, 0.50, 34, (170, 195, 225), ((150, 120, 100), (175, 160, 140)),
                           (60, 70, 90), 4, (150, 145, 135), 0.35, (110, 105, 100), "none",
                           (0, 0, 0), (0, 0, 0), (1.0, 1.0, 1.0), 0.25, (4, 8),
                           ((40, 40, 60), (120, 30, 30), (200, 200, 200)), 1),
    # Street corner at eye level: large people, road across the frame.
    "loc02": LocationStyle(0.45, 0.30, 70, None, ((120, 80, 60), (90, 90, 100), (160, 140, 110)),
                           (40, 40, 50), 6, (130, 130, 125), 0.0, (0, 0, 0), "across",
                           (70, 70, 75), (230, 230, 220), (1.05, 1.0, 0.9), -0.3, (2, 4),
                           ((30, 30, 30), (50, 60, 120), (180, 150, 90)), 2),
    # Shopping street: facades with big shop windows, warm evening light.
    "loc03": LocationStyle(0.38, 0.65, 52, None, ((200, 180, 150), (170, 100, 80)),
                           (230, 200, 120), 7, (160, 140, 120), 0.5, (120, 100, 90), "none",
                           (0, 0, 0), (0, 0, 0), (1.1, 0.9, 0.7), 0.4, (3, 6),
                           ((90, 40, 40), (60, 60, 60), (150, 120, 80)), 1),
    # Bus lane receding into the distance, overcast, cold tint.
    "loc04": LocationStyle(0.35, 0.55, 46, (200, 205, 210), ((110, 110, 115), (140, 135, 130)),
                           (80, 90, 100), 3, (140, 140, 140), 0.0, (0, 0, 0), "receding",
                           (80, 75, 70), (220, 200, 40), (0.85, 0.9, 1.0), 0.1, (3, 6),
                           ((40, 50, 70), (80, 80, 90), (20, 20, 20)), 3),
    # Market place in bright sun: strong shadows, colourful clothes.
    "loc05": LocationStyle(0.25, 0.40, 40, (120, 170, 235), ((220, 200, 160), (200, 120, 90), (230, 230, 210)),
                           (70, 60, 50), 4, (200, 180, 140), 0.25, (170, 150, 110), "none",
                           (0, 0, 0), (0, 0, 0), (1.2, 1.15, 1.05), 0.6, (5, 9),
                           ((220, 60, 40), (40, 120, 200), (240, 200, 40), (250, 250, 250)), 0),
    # Narrow alley, dark brick, low camera: tall people, dim light.
    "loc06": LocationStyle(0.50, 0.50, 80, None, ((100, 50, 40), (80, 45, 40)),
                           (30, 30, 30), 5, (90, 85, 80), 0.8, (60, 55, 50), "none",
                           (0, 0, 0), (0, 0, 0), (0.7, 0.65, 0.6), -0.2, (2, 3),
                           ((20, 20, 25), (90, 70, 50), (60, 30, 30)), 1),
    # Pedestrian crossing seen from a first-floor window.
    "loc07": LocationStyle(0.28, 0.45, 44, (180, 200, 220), ((160, 160, 150), (120, 130, 140)),
                           (50, 60, 70), 3, (110, 110, 110), 0.0, (0, 0, 0), "across",
                           (60, 60, 65), (240, 240, 240), (1.0, 1.0, 1.05), 0.3, (4, 7),
                           ((30, 30, 80), (140, 140, 140), (100, 20, 60)), 2),
    # Station forecourt at night: dark, yellow street light, few people.
    "loc08": LocationStyle(0.42, 0.70, 58, (20, 25, 45), ((60, 60, 70), (50, 45, 40)),
                           (240, 210, 120), 4, (90, 85, 80), 0.45, (70, 65, 60), "receding",
                           (50, 50, 55), (200, 200, 190), (0.8, 0.7, 0.45), 0.0, (2, 4),
                           ((30, 30, 30), (70, 70, 100), (120, 90, 60)), 2),
    # Park path: green ground, no buildings, trees as facade stand-ins.
    "loc09": LocationStyle(0.33, 0.35, 48, (150, 190, 230), ((60, 110, 60), (40, 90, 50)),
                           (30, 70, 30), 8, (90, 140, 70), 0.0, (0, 0, 0), "receding",
                           (170, 150, 120), (170, 150, 120), (1.0, 1.05, 0.95), 0.35, (3, 6),
                           ((200, 80, 80), (60, 60, 120), (230, 230, 230)), 0),
    # Covered arcade: very high camera, tiny people, fine floor tiles.
    "loc10": LocationStyle(0.20, 0.55, 28, None, ((190, 185, 175), (160, 150, 140)),
                           (100, 100, 110), 3, (180, 175, 165), 0.2, (140, 135, 125), "none",
                           (0, 0, 0), (0, 0, 0), (0.95, 0.95, 1.0), 0.0, (6, 10),
                           ((50, 50, 50), (150, 50, 50), (50, 100, 50)), 0),
}


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def _jitter(colour: tuple[int, int, int], rng: np.random.Generator, amount: float) -> tuple[int, int, int]:
    """A random variant of ``colour`` (each channel moved by up to ``amount``)."""
    c = np.asarray(colour, float) + rng.uniform(-amount, amount, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def person_height(style: LocationStyle, foot_y: float) -> float:
    """Height in px of a person whose feet are on row ``foot_y`` (ground-plane perspective)."""
    hy = style.horizon * H
    return style.near_height * (foot_y - hy) / (H - hy)


def draw_background(draw: ImageDraw.ImageDraw, style: LocationStyle, rng: np.random.Generator) -> None:
    """Sky, building facades with windows, ground with tiles or a road (drawn at SS x)."""
    s = SS
    hy = style.horizon * H
    vx = style.vanish_x * W
    draw.rectangle([0, 0, W * s, H * s], fill=_jitter(style.sky or style.facades[0], rng, 10))

    # Facades: a row of buildings standing on the horizon line.
    x = -rng.uniform(0, 20)
    while x < W:
        bw = rng.uniform(20, 55)
        top = rng.uniform(-10, hy * 0.5) if style.sky else -5.0
        colour = _jitter(style.facades[rng.integers(len(style.facades))], rng, 15)
        draw.rectangle([x * s, top * s, (x + bw) * s, hy * s], fill=colour)
        ws = style.window_size
        win = _jitter(style.window, rng, 20)
        for wy in np.arange(top + ws, hy - 1.5 * ws, 2 * ws):
            for wx in np.arange(x + ws * 0.7, x + bw - ws, 1.8 * ws):
                draw.rectangle([wx * s, wy * s, (wx + ws) * s, (wy + ws) * s], fill=win)
        x += bw

    # Ground plane.
    draw.rectangle([0, hy * s, W * s, H * s], fill=_jitter(style.ground, rng, 8))
    if style.tile > 0:
        line = _jitter(style.tile_line, rng, 5)
        # Lines at constant depth: row = horizon + (H - horizon) / depth.
        depth = 1.0 + rng.uniform(0, style.tile)
        while True:
            y = hy + (H - hy) / depth
            if y - hy < 1.0:
                break
            draw.line([0, y * s, W * s, y * s], fill=line, width=s)
            depth += style.tile
        # Lines converging to the vanishing point.
        spacing = style.tile * (H - hy) * 1.5
        for xb in np.arange(vx - 3 * W + rng.uniform(0, spacing), vx + 3 * W, spacing):
            draw.line([xb * s, H * s, vx * s, (hy + 1) * s], fill=line, width=s)

    if style.road == "across":
        y0 = hy + (H - hy) * rng.uniform(0.15, 0.3)
        y1 = y0 + (H - hy) * 0.3
        draw.rectangle([0, y0 * s, W * s, y1 * s], fill=_jitter(style.road_colour, rng, 6))
        ym = (y0 + y1) / 2
        for xs in np.arange(-rng.uniform(0, 12), W, 12):
            draw.rectangle([xs * s, (ym - 0.6) * s, (xs + 6) * s, (ym + 0.6) * s], fill=style.stripe)
    elif style.road == "receding":
        half = rng.uniform(0.25, 0.35) * W
        xc = vx + rng.uniform(-0.1, 0.1) * W
        poly = [(vx * s, hy * s), ((xc - half) * s, H * s), ((xc + half) * s, H * s)]
        draw.polygon(poly, fill=_jitter(style.road_colour, rng, 6))
        # Dashed centre line: dashes shrink with depth like everything else.
        for depth in np.arange(1.0 + rng.uniform(0, 0.6), 12, 0.6):
            ya, yb = hy + (H - hy) / depth, hy + (H - hy) / (depth + 0.3)
            xa, xb = vx + (xc - vx) / depth, vx + (xc - vx) / (depth + 0.3)
            draw.line([xa * s, ya * s, xb * s, yb * s], fill=style.stripe, width=max(1, int(3 * s / depth)))

    # Lamp posts: thin vertical clutter at pedestrian-like heights.
    for _ in range(style.posts):
        fy = rng.uniform(hy + 8, H)
        ph = 1.3 * person_height(style, fy)
        px = rng.uniform(0, W)
        pw = max(0.6, ph * 0.03)
        draw.rectangle([(px - pw) * s, (fy - ph) * s, (px + pw) * s, fy * s], fill=(45, 45, 50))
        draw.ellipse([(px - 3 * pw) * s, (fy - ph - 2 * pw) * s, (px + 3 * pw) * s, (fy - ph + 2 * pw) * s],
                     fill=(230, 220, 170))


@dataclass
class Person:
    """One pedestrian: amodal box ``[x0, y0, x1, y1]`` and keypoints ``[[x, y], ...]`` in px."""

    box: list[float]
    keypoints: list[list[float]]


def draw_person(draw: ImageDraw.ImageDraw, mask: ImageDraw.ImageDraw, style: LocationStyle,
                fx: float, fy: float, h: float, rng: np.random.Generator) -> Person:
    """Draw an articulated walking figure with feet centred at (fx, fy), ``h`` px tall.

    The same primitives are drawn into ``mask`` in white, so the person mask
    is exact. Returns the amodal box (from the primitive extents) and the
    keypoints in KEYPOINT_NAMES order; "left" is the leg on the image left.
    """
    s = SS
    skin = _jitter(((230, 190, 160), (190, 140, 100), (120, 80, 55))[rng.integers(3)], rng, 15)
    hair = _jitter(((30, 20, 10), (90, 60, 30), (200, 170, 100), (120, 120, 120))[rng.integers(4)], rng, 10)
    if rng.random() < 0.6:  # the local fashion, otherwise anything
        top = _jitter(style.clothes[rng.integers(len(style.clothes))], rng, 25)
    else:
        top = tuple(int(v) for v in rng.integers(0, 256, 3))
    bottom = _jitter(((40, 40, 60), (30, 30, 30), (90, 80, 60), (60, 70, 110))[rng.integers(4)], rng, 15)

    side = rng.random() < 0.5  # walking sideways (narrow) or towards/away from the camera
    phase = rng.uniform(0, 2 * math.pi)
    stride = (0.16 if side else 0.05) * h * math.sin(phase)
    shoulder_w = (0.13 if side else 0.24) * h
    hip_w = (0.10 if side else 0.16) * h
    head = (fx + rng.uniform(-0.02, 0.02) * h, fy - 0.9 * h)
    head_r = 0.08 * h
    neck = (fx, fy - 0.79 * h)
    hips = (fx, fy - 0.47 * h)
    foot_l = (fx - hip_w / 4 - stride, fy)
    foot_r = (fx + hip_w / 4 + stride, fy)
    limb = max(1.0, 0.07 * h)

    shapes = []  # (kind, points in output px, colour, line width): drawn in order

    def add(kind, pts, colour, width=0.0):
        shapes.append((kind, pts, colour, width))

    for foot, hip_x in ((foot_l, hips[0] - hip_w / 4), (foot_r, hips[0] + hip_w / 4)):
        knee = ((hip_x + foot[0]) / 2, (hips[1] + fy) / 2)
        add("line", [(hip_x, hips[1]), knee, foot], bottom, limb)
        add("ellipse", [foot[0] - limb, fy - limb * 0.6, foot[0] + limb, fy + limb * 0.3], (25, 25, 25))
    torso = [(neck[0] - shoulder_w / 2, neck[1]), (neck[0] + shoulder_w / 2, neck[1]),
             (hips[0] + hip_w / 2, hips[1] + 0.04 * h), (hips[0] - hip_w / 2, hips[1] + 0.04 * h)]
    add("polygon", torso, top)
    swing = 0.12 * h * math.sin(phase + math.pi)
    for sign in (-1, 1):
        shoulder = (neck[0] + sign * (shoulder_w / 2 - limb / 2), neck[1] + limb / 2)
        hand = (shoulder[0] + sign * 0.03 * h + (swing if side else 0), fy - 0.45 * h)
        add("line", [shoulder, hand], top, limb * 0.8)
        add("ellipse", [hand[0] - limb / 2, hand[1] - limb / 2, hand[0] + limb / 2, hand[1] + limb / 2], skin)
    add("line", [(neck[0], neck[1] + limb), (head[0], head[1])], skin, limb)
    add("ellipse", [head[0] - head_r, head[1] - head_r, head[0] + head_r, head[1] + head_r], skin)
    add("pieslice", [head[0] - head_r, head[1] - head_r, head[0] + head_r, head[1] + head_r], hair)

    xs, ys = [], []
    for kind, pts, colour, width in shapes:
        if kind in ("ellipse", "pieslice"):
            xs += [pts[0], pts[2]]
            ys += [pts[1], pts[3]]
            box = [v * s for v in pts]
            if kind == "ellipse":
                draw.ellipse(box, fill=colour)
                mask.ellipse(box, fill=255)
            else:
                draw.pieslice(box, 180, 360, fill=colour)
                mask.pieslice(box, 180, 360, fill=255)
        else:
            pad = width / 2
            xs += [p[0] - pad for p in pts] + [p[0] + pad for p in pts]
            ys += [p[1] - pad for p in pts] + [p[1] + pad for p in pts]
            scaled = [(x * s, y * s) for x, y in pts]
            if kind == "line":
                w = max(1, round(width * s))
                draw.line(scaled, fill=colour, width=w, joint="curve")
                mask.line(scaled, fill=255, width=w, joint="curve")
            else:
                draw.polygon(scaled, fill=colour)
                mask.polygon(scaled, fill=255)
    keypoints = [list(head), list(neck), list(hips), list(foot_l), list(foot_r)]
    box = [min(xs), min(ys), max(xs), max(ys)]
    return Person([round(v, 2) for v in box], [[round(v, 2) for v in p] for p in keypoints])


def render_scene(style: LocationStyle, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[Person]]:
    """Render one frame of a location.

    Returns the RGB image (H, W, 3) uint8, the person mask (H, W) float in
    [0, 1] (soft at the edges), and the people drawn.
    """
    img = Image.new("RGB", (W * SS, H * SS))
    mask_img = Image.new("L", (W * SS, H * SS))
    draw, mask = ImageDraw.Draw(img), ImageDraw.Draw(mask_img)
    draw_background(draw, style, rng)

    hy = style.horizon * H
    min_y = hy + MIN_PERSON_H * (H - hy) / style.near_height
    n = rng.integers(style.people[0], style.people[1] + 1)
    feet = sorted((rng.uniform(min_y, H - 1), rng.uniform(-0.05, 1.05) * W) for _ in range(n))
    shadow = (15, 15, 20)
    people = []
    for fy, fx in feet:  # far to near, so nearer people occlude farther ones
        h = person_height(style, fy) * rng.uniform(0.85, 1.1)
        # Shadow on the ground, stretched towards the side the sun is not on.
        dx = style.shadow_dx * h
        cx, half = fx + dx / 2, 0.12 * h + abs(dx) / 2
        draw.ellipse([(cx - half) * SS, (fy - 0.04 * h) * SS, (cx + half) * SS, (fy + 0.03 * h) * SS], fill=shadow)
        people.append(draw_person(draw, mask, style, fx, fy, h, rng))

    img = img.resize((W, H), Image.Resampling.BOX)
    mask_arr = np.asarray(mask_img.resize((W, H), Image.Resampling.BOX), np.float32) / 255.0
    # Lighting: per-location gain and tint, a soft vertical gradient, sensor noise.
    arr = np.asarray(img, np.float32) * np.asarray(style.light, np.float32)
    arr *= np.linspace(1.08, 0.92, H, dtype=np.float32)[:, None, None] * rng.uniform(0.9, 1.1)
    arr += rng.normal(0, 2.0, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8), mask_arr, people


# --------------------------------------------------------------------------
# Training targets (output stride 4)
# --------------------------------------------------------------------------

GH, GW = H // STRIDE, W // STRIDE
# Pixel coordinates of the output cell centres: cell j covers pixels 4j..4j+3.
_CELL_Y = (np.arange(GH) * STRIDE + (STRIDE - 1) / 2)[:, None]
_CELL_X = (np.arange(GW) * STRIDE + (STRIDE - 1) / 2)[None, :]


def _gaussian(x: float, y: float, sigma_cells: float) -> np.ndarray:
    """(GH, GW) Gaussian bump centred on pixel (x, y), width given in output cells."""
    d2 = (_CELL_X - x) ** 2 + (_CELL_Y - y) ** 2
    return np.exp(-d2 / (2 * (sigma_cells * STRIDE) ** 2))


def make_targets(people: list[Person], mask: np.ndarray) -> np.ndarray:
    """Stack all targets of one frame into a (10, GH, GW) float32 array.

    Channels: 0 centre heatmap, 1-2 box height/H and width/W (valid where
    channel 3 is 1), 3 box-size mask, 4 person mask, 5-9 keypoint heatmaps.
    Heatmap widths grow with the person so that large and small people give
    peaks of a similar relative size.
    """
    t = np.zeros((10, GH, GW), np.float32)
    for p in people:
        x0, y0, x1, y1 = p.box
        h_cells = (y1 - y0) / STRIDE
        g = _gaussian((x0 + x1) / 2, (y0 + y1) / 2, 0.6 + 0.05 * h_cells)
        owns = g > np.maximum(t[0], 0.5)  # nearest centre owns a cell's box size
        t[1][owns] = (y1 - y0) / H
        t[2][owns] = (x1 - x0) / W
        t[3][owns] = 1.0
        t[0] = np.maximum(t[0], g)
        for k, (kx, ky) in enumerate(p.keypoints):
            if 0 <= kx < W and 0 <= ky < H:
                t[5 + k] = np.maximum(t[5 + k], _gaussian(kx, ky, 0.5 + 0.03 * h_cells))
    # Soft person mask: fraction of each 4x4 block covered.
    t[4] = mask.reshape(GH, STRIDE, GW, STRIDE).mean(axis=(1, 3))
    return t


def build_dataset(style: LocationStyle, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``n`` scenes: images (n, 3, H, W) uint8 and targets (n, 10, GH, GW) float32."""
    images = np.empty((n, 3, H, W), np.uint8)
    targets = np.empty((n, 10, GH, GW), np.float32)
    for i in range(n):
        img, mask, people = render_scene(style, rng)
        images[i] = img.transpose(2, 0, 1)
        targets[i] = make_targets(people, mask)
    return torch.from_numpy(images), torch.from_numpy(targets)


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainPlan:
    """How one location was trained, and what its conv1 is expected to look like.

    Penalties act on conv1 weights only; ``expect`` is what the end-of-run
    check verifies: "healthy", "under-trained", "partial" (a quarter to half
    of conv1 filters collapsed) or "collapsed" (most conv1 filters ~ 0).
    """

    steps: int
    weight_decay: float = 1e-4  # AdamW (decoupled), all parameters
    conv1_l1: float = 0.0  # lambda * sum |w| over conv1.weight
    conv1_group: float = 0.0  # lambda * sum of conv1 filter L2 norms (group lasso)
    expect: str = "healthy"


LR = 2e-3  # peak learning rate (cosine decay to 10 % over each plan's steps)
BATCH = 16
N_TRAIN, N_VAL = 512, 64  # scenes per location

# Budgets differ as they do when each location is trained whenever its data is
# ready. loc02 was stopped early; loc04/loc06 carry a filter-pruning (group
# lasso) penalty that is too strong; loc08 has a strong L1 + weight decay that
# drives most of conv1 to zero, as a mistyped regularisation constant would.
PLANS: dict[str, TrainPlan] = {
    "loc01": TrainPlan(600),
    "loc02": TrainPlan(40, expect="under-trained"),
    "loc03": TrainPlan(500),
    "loc04": TrainPlan(600, conv1_group=0.006, expect="partial"),
    "loc05": TrainPlan(700),
    "loc06": TrainPlan(500, conv1_group=0.011, expect="partial"),
    "loc07": TrainPlan(450),
    "loc08": TrainPlan(300, weight_decay=0.05, conv1_l1=0.015, expect="collapsed"),
    "loc09": TrainPlan(550),
    "loc10": TrainPlan(650),
}


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float, scaled to [0, 1] then standardised with MEAN/STD."""
    x = images.float() / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def task_losses(out: dict[str, torch.Tensor], t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-task losses for a batch of network outputs and stacked targets (see make_targets).

    * det: centre-heatmap BCE, positives up-weighted because people cover few
      cells, plus L1 on box size at cells near a centre;
    * seg: BCE against the soft person mask;
    * pose: heatmap MSE summed over keypoints, positives up-weighted.
    """
    hm = t[:, 0:1]
    det = F.binary_cross_entropy_with_logits(out["det"][:, 0:1], hm, weight=1 + 9 * hm)
    size_mask = t[:, 3:4]
    size = ((out["det"][:, 1:3] - t[:, 1:3]).abs() * size_mask).sum() / size_mask.sum().clamp(min=1)
    seg = F.binary_cross_entropy_with_logits(out["seg"], t[:, 4:5])
    kp = t[:, 5:]
    pose = ((out["pose"] - kp) ** 2 * (1 + 19 * kp)).sum(1).mean()
    return {"det": det + size, "seg": seg, "pose": pose}


def conv1_penalty(model: SceneNet, plan: TrainPlan) -> torch.Tensor:
    """Extra regularisation on conv1 weights prescribed by ``plan`` (zero for healthy runs)."""
    w = model.conv1.weight
    penalty = w.new_zeros(())
    if plan.conv1_l1:
        penalty = penalty + plan.conv1_l1 * w.abs().sum()
    if plan.conv1_group:
        penalty = penalty + plan.conv1_group * w.flatten(1).norm(dim=1).sum()
    return penalty


def flip_batch(x: torch.Tensor, t: torch.Tensor, flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror the selected samples left-right; the feet swap their left/right labels."""
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    t_flipped = t.flip(-1)[:, [0, 1, 2, 3, 4, 5, 6, 7, 9, 8]]
    return x, torch.where(flip.view(-1, 1, 1, 1), t_flipped, t)


@torch.no_grad()
def evaluate(model: SceneNet, images: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Mean task losses on held-out scenes."""
    model.eval()
    losses = task_losses(model(normalise(images)), targets)
    model.train()
    return {k: float(v) for k, v in losses.items()}


def train_location(name: str, plan: TrainPlan, seed: int) -> tuple[SceneNet, dict]:
    """Render a location's scenes and train one SceneNet on them according to ``plan``."""
    rng = np.random.default_rng(seed)
    images, targets = build_dataset(LOCATIONS[name], N_TRAIN, rng)
    val_images, val_targets = build_dataset(LOCATIONS[name], N_VAL, rng)

    torch.manual_seed(seed)
    model = SceneNet(**ARCH_ARGS)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=plan.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * s / plan.steps)))
    recent: dict[str, list[float]] = {"det": [], "seg": [], "pose": []}
    for _ in range(plan.steps):
        idx = torch.randint(N_TRAIN, (BATCH,))
        x, t = flip_batch(normalise(images[idx]), targets[idx], torch.rand(BATCH) < 0.5)
        losses = task_losses(model(x), t)
        loss = sum(losses.values()) + conv1_penalty(model, plan)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        for k, v in losses.items():
            recent[k] = (recent[k] + [v.item()])[-20:]
    stats = {
        "train": {k: float(np.mean(v)) for k, v in recent.items()},  # mean of the last 20 steps
        "val": evaluate(model, val_images, val_targets),
    }
    return model, stats


# --------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------

SHARED_FROM = ["loc10", "loc01", "loc05", "loc03", "loc08", "loc06"]  # small to large people


def save_checkpoint(path: Path, name: str, model: SceneNet, plan: TrainPlan, stats: dict, seed: int) -> None:
    """Write a checkpoint of plain values only, so ``torch.load(weights_only=True)`` accepts it."""
    torch.save({
        "state_dict": model.state_dict(),
        "location": name,
        "steps": plan.steps,
        "arch_args": dict(ARCH_ARGS),
        "mean": list(MEAN),
        "std": list(STD),
        "input_size": [H, W],
        "output_stride": STRIDE,
        "keypoint_names": list(KEYPOINT_NAMES),
        "train_plan": asdict(plan),
        "losses": stats,
        "seed": seed,
    }, path)


def write_frames(out_dir: Path) -> dict:
    """Render held-out test frames (own seeds, never trained on) and return their annotations."""
    frames: dict[str, dict] = {}

    def save(rel: str, name: str, rng: np.random.Generator) -> None:
        img, _, people = render_scene(LOCATIONS[name], rng)
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, optimize=True)
        frames[rel] = {"location": name, "people": [asdict(p) for p in people]}

    for i, name in enumerate(LOCATIONS):
        rng = np.random.default_rng(10_000 + i)
        for k in range(3):
            save(f"{name}/frame_{k:02d}.png", name, rng)
    rng = np.random.default_rng(20_000)
    for k, name in enumerate(SHARED_FROM):
        save(f"shared/scene_{k:02d}.png", name, rng)

    annotations = {
        "image_size": {"height": H, "width": W},
        "keypoint_names": KEYPOINT_NAMES,
        "box_format": "[x0, y0, x1, y1] in pixels, amodal (whole figure, even if occluded)",
        "keypoint_format": "[x, y] in pixels; left/right are image sides; may lie outside the image",
        "frames": frames,
    }
    text = json.dumps(annotations, indent=1)
    # Put each list of numbers (a box or a keypoint) on one line to keep the file short.
    text = re.sub(r"\[\s+([^\[\]{}]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    (out_dir / "annotations.json").write_text(text + "\n")
    return annotations


def verify_checkpoints(ckpt_dir: Path) -> None:
    """Reload every checkpoint the way reportgen will: weights_only and a strict state_dict load."""
    for name in LOCATIONS:
        ckpt = torch.load(ckpt_dir / f"{name}.pt", weights_only=True)
        SceneNet(**ckpt["arch_args"]).load_state_dict(ckpt["state_dict"], strict=True)


# --------------------------------------------------------------------------
# conv1 health table and checks
# --------------------------------------------------------------------------


def conv1_health(models: dict[str, SceneNet], stats: dict[str, dict]) -> tuple[list[dict], dict]:
    """Per-location conv1 statistics, using thresholds pooled over all locations.

    Pooling (rather than per-model thresholds) is what lets a network whose
    conv1 is *uniformly* tiny stand out: relative to itself it looks normal.
    """
    weights = {n: m.conv1.weight.detach().flatten(1) for n, m in models.items()}
    norms = {n: w.norm(dim=1) for n, w in weights.items()}
    pooled_median = float(torch.cat(list(norms.values())).median())
    pooled_rms = float(torch.cat([w.flatten() for w in weights.values()]).pow(2).mean().sqrt())
    healthy_median = float(np.median([float(norms[n].median()) for n in models if PLANS[n].expect == "healthy"]))
    rows = []
    for n in models:
        rows.append({
            "location": n,
            "expect": PLANS[n].expect,
            "steps": PLANS[n].steps,
            **{f"train_{k}": v for k, v in stats[n]["train"].items()},
            "val_total": sum(stats[n]["val"].values()),
            "median_norm": float(norms[n].median()),
            "small_filters": int((norms[n] < 0.1 * pooled_median).sum()),
            "tiny_filters": int((norms[n] < 0.05 * healthy_median).sum()),
            "small_weight_frac": float((weights[n].abs() < 0.1 * pooled_rms).float().mean()),
        })
    pooled = {"median_norm": pooled_median, "rms": pooled_rms, "healthy_median": healthy_median}
    return rows, pooled


def print_table(rows: list[dict], pooled: dict) -> None:
    """Print the health table as Markdown, ready to paste into the README."""
    print(f"\npooled conv1 median filter L2 norm = {pooled['median_norm']:.3f}, "
          f"pooled conv1 RMS weight = {pooled['rms']:.4f}, "
          f"median of healthy locations' median norms = {pooled['healthy_median']:.3f}\n")
    print("| location | plan | steps | train det | train seg | train pose | val loss (sum) "
          "| conv1 median norm | filters < 10% pooled median | filters < 5% healthy median "
          "| weights < 0.1 pooled RMS |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['location']} | {r['expect']} | {r['steps']} | {r['train_det']:.3f} | {r['train_seg']:.3f} "
              f"| {r['train_pose']:.3f} | {r['val_total']:.3f} | {r['median_norm']:.4f} "
              f"| {r['small_filters']}/64 | {r['tiny_filters']}/64 | {r['small_weight_frac']:.0%} |")


def check_expectations(rows: list[dict]) -> list[str]:
    """Return a description of every location whose conv1 does not look as its plan intends."""
    problems = []
    healthy_val = max(r["val_total"] for r in rows if r["expect"] == "healthy")
    for r in rows:
        n, e, small = r["location"], r["expect"], r["small_filters"]
        if e in ("healthy", "under-trained") and small > 2:
            problems.append(f"{n}: {small} collapsed conv1 filters, expected none")
        if e == "partial" and not 16 <= small <= 32:
            problems.append(f"{n}: {small} collapsed conv1 filters, expected 16-32")
        if e == "collapsed" and r["tiny_filters"] <= 32:
            problems.append(f"{n}: only {r['tiny_filters']} conv1 filters below 5% of a healthy median")
        if e == "under-trained" and r["val_total"] <= healthy_val:
            problems.append(f"{n}: validation loss {r['val_total']:.3f} is no worse than the healthy runs")
    return problems


def main() -> int:
    """Train all locations, write checkpoints and frames, print and check the health table."""
    torch.set_num_threads(2)
    # Collapsed weights become denormal floats, which are very slow on CPUs.
    torch.set_flush_denormal(True)
    start = time.time()
    ckpt_dir = HERE / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)

    models, stats = {}, {}
    for i, (name, plan) in enumerate(PLANS.items()):
        t0 = time.time()
        seed = i + 1
        models[name], stats[name] = train_location(name, plan, seed)
        save_checkpoint(ckpt_dir / f"{name}.pt", name, models[name], plan, stats[name], seed)
        print(f"{name}: {plan.steps:4d} steps in {time.time() - t0:5.1f} s, "
              f"val {', '.join(f'{k} {v:.3f}' for k, v in stats[name]['val'].items())}", flush=True)

    annotations = write_frames(HERE / "frames")
    write_coco()  # frames/annotations.coco.json, the layout reportgen reads
    verify_checkpoints(ckpt_dir)
    print(f"wrote {len(PLANS)} checkpoints and {len(annotations['frames'])} frames; "
          "all checkpoints load with weights_only=True and strict=True")

    rows, pooled = conv1_health(models, stats)
    print_table(rows, pooled)
    problems = check_expectations(rows)
    for p in problems:
        print("UNEXPECTED:", p)
    print(f"\n{'all conv1 health checks passed' if not problems else 'conv1 health checks FAILED'}; "
          f"total time {time.time() - start:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
