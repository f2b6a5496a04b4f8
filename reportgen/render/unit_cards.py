"""Pictures of a layer's units: grids over all units, and one card per unit."""

from __future__ import annotations

import numpy as np
from PIL import Image

from reportgen.render import tiles as T
from reportgen.render.colour import DENSITY, at_density, fit_width, to_uint8
from reportgen.render.views import LABEL_PX, MARGIN, MAX_WIDTH

CARD_TILE = 48  # CSS px per tile on a unit card (drawn at DENSITY)
# Fill of the tiles a unit has no picture for (never active: no crops, no
# feature, nothing to project; or fewer separate crops than top_n). Plain grey,
# not the NaN colour, so it reads as "nothing here" rather than "broken".
BLANK_RGB = np.array([228, 228, 228], dtype=np.uint8)
# Views that need the unit to respond to some image.
DATA_VIEWS = ("neuron_feature", "deconvnet", "guided_backprop")


def _inactive(u) -> np.ndarray:
    """(U,) bool, units never active on the images (False for views cached before the flag existed)."""
    n = len(u.patches)
    return np.zeros(n, dtype=bool) if getattr(u, "inactive", None) is None else np.asarray(u.inactive, bool)


def _rgb(x01: np.ndarray) -> np.ndarray:
    """(N, C, h, w) in [0, 1] (C = 1 or 3, NaN allowed) -> (N, h, w, 3) uint8."""
    x = np.asarray(x01, dtype=np.float64)
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    return to_uint8(np.moveaxis(x, 1, -1))


def _signed(g: np.ndarray) -> np.ndarray:
    """(N, C, h, w) signed maps -> [0, 1], each scaled by its own max |value| (0 -> grey)."""
    return np.stack([T.per_layer(gi[None])[0] for gi in np.asarray(g, dtype=np.float64)])


def unit_tiles(u) -> dict[str, np.ndarray]:
    """Per view, (U, h, w, 3) uint8 tiles of every unit (views the run could compute)."""
    out = {}
    if u.plain is not None:
        out["maximise_plain"] = _rgb(u.plain)
    if u.fourier is not None:
        out["maximise_fourier"] = _rgb(u.fourier)
    if u.decoded is not None:
        out["decoded"] = _rgb(T.per_filter(u.decoded))
    out["neuron_feature"] = _rgb(u.nf)
    if u.deconv is not None:
        out["deconvnet"] = _rgb(_signed(np.nan_to_num(u.deconv)))
        out["guided_backprop"] = _rgb(_signed(np.nan_to_num(u.guided)))
    off = _inactive(u)
    for name in DATA_VIEWS:
        if name in out:
            out[name][off] = BLANK_RGB
    return out


def _crop_tiles(patches: np.ndarray) -> np.ndarray:
    """(K, 3, h, w) crops, NaN where there is none -> (K, h, w, 3) uint8, blank where none."""
    tiles = _rgb(np.nan_to_num(patches))
    tiles[~np.isfinite(patches).all(axis=(1, 2, 3))] = BLANK_RGB
    return tiles


def unit_grids(u) -> dict[str, np.ndarray]:
    """Grids of all units for the layer page: one per view, plus the top patches (rows = units)."""
    grids = {}
    stuck = u.stuck if u.stuck is not None else None
    off = _inactive(u)
    for name, tiles in unit_tiles(u).items():
        marks = stuck if name == "maximise_plain" else off if name in DATA_VIEWS else None
        labels = [str(i) for i in range(len(tiles))]
        up = T.upscale_for(tiles.shape[1], 48)
        cols = T.fit_columns(len(tiles), tiles.shape[2] * up + 4 * MARGIN, MAX_WIDTH)
        grids[name] = _fit(T.grid(tiles, ncols=cols, upscale=up, margin=2 * MARGIN, marks=marks, labels=labels,
                                  font_px=LABEL_PX))
    k = u.patches.shape[1]
    crops = _crop_tiles(u.patches.reshape(-1, *u.patches.shape[2:]))
    labels = [str(i) if j == 0 else "" for i in range(len(u.patches)) for j in range(k)]
    up = min(T.upscale_for(crops.shape[1], 40), max(1, (MAX_WIDTH // k - 2 * MARGIN) // crops.shape[2]))
    grids["top_patches"] = _fit(T.grid(crops, ncols=k, upscale=up, margin=MARGIN, marks=np.repeat(off, k),
                                       labels=labels, font_px=LABEL_PX))
    return grids


def _fit(img: np.ndarray) -> np.ndarray:
    return fit_width(at_density(img, DENSITY), MAX_WIDTH)


# Names drawn above the tiles of a unit card (short: a tile is CARD_TILE CSS px wide).
CARD_NAMES = {"maximise_plain": "max. plain", "maximise_fourier": "max. reg.", "decoded": "decoded",
              "neuron_feature": "feature", "deconvnet": "deconv", "guided_backprop": "guided"}


def unit_card(u, i: int, weight_tile: np.ndarray | None, tiles: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """One unit in one row: weights, decoded filter, maximisation images, neuron feature,
    deconvnet, guided backprop; below them its top-activating crops; each tile named in
    a band above it. Drawn at DENSITY px per CSS px: (H, W, 3) uint8 Picture.

    ``tiles``: ``unit_tiles(u)`` when the caller has it already (drawing every card of a
    layer computes it once, not once per card)."""
    views = unit_tiles(u) if tiles is None else tiles
    tiles = [] if weight_tile is None else [weight_tile]
    names = [] if weight_tile is None else ["weights"]
    tiles += [t[i] for t in views.values()]
    names += [CARD_NAMES.get(v, v) for v in views]
    crops = list(_crop_tiles(u.patches[i]))
    side = CARD_TILE * DENSITY
    parts = []
    for row_tiles, row_names in ((tiles, names), (crops, [f"crop {k + 1}" for k in range(len(crops))])):
        if not row_tiles:
            continue
        big = [np.asarray(Image.fromarray(t).resize((side, side), Image.Resampling.NEAREST)) for t in row_tiles]
        row = T.grid(np.stack(big), ncols=len(big), margin=2 * DENSITY)
        parts += [_name_band(row_names, side + 4 * DENSITY, row.shape[1]), row]
    width = max(p.shape[1] for p in parts)
    parts = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in parts]
    return at_density(np.concatenate(parts, axis=0))


def _name_band(names: list[str], cell: int, width: int) -> np.ndarray:
    """A white band with ``names[k]`` in dark grey above column k (cells ``cell`` px wide)."""
    from PIL import ImageDraw, ImageFont

    font_px = 10 * DENSITY
    band = Image.new("RGB", (width, font_px + 4 * DENSITY), (255, 255, 255))
    draw = ImageDraw.Draw(band)
    font = ImageFont.load_default(size=font_px)
    for k, name in enumerate(names):
        if name:
            draw.text((k * cell + 2 * DENSITY, DENSITY), name, fill=(40, 40, 40), font=font)
    return np.asarray(band)


def unit_cards(u, weight_tiles: np.ndarray | None) -> list[np.ndarray]:
    """``unit_card`` of every unit of the layer; weight_tiles: (U, h, w, 3) or None."""
    tiles = unit_tiles(u)
    return [unit_card(u, i, None if weight_tiles is None else weight_tiles[i], tiles) for i in range(len(u.patches))]


def card_legend(u, with_weights: bool) -> list[str]:
    """Names of the card's tiles, left to right (for the page)."""
    names = ["weights (mean over inputs)"] if with_weights else []
    names += [n.replace("_", " ") for n in unit_tiles(u)]
    return names + ["", f"top {u.patches.shape[1]} crops"]
