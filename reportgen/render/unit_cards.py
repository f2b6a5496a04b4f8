"""Pictures of a layer's units: a grid over all units per view, and the top crops of each unit.

The pages show one card per unit as crops of these grids (render.atlas)."""

from __future__ import annotations

import numpy as np

from reportgen.render import tiles as T
from reportgen.render.colour import DENSITY, at_density, fit_width, to_uint8
from reportgen.render.views import LABEL_PX, MARGIN, MAX_WIDTH

CARD_TILE = 48  # CSS px per tile on a unit card
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
    return {name: img for name, (img, _) in unit_grids_and_cells(u).items()}


def unit_grids_and_cells(u) -> dict[str, tuple[np.ndarray, tuple[int, int, int, int]]]:
    """``unit_grids`` with each grid's cells: (columns, cell width, cell height, margin) in px
    before any shrinking (render.atlas.grid_atlas). A unit is one cell of a view's grid and
    one row of ``top_patches``: the unit cards on the pages are crops of these."""
    grids = {}
    stuck = u.stuck if u.stuck is not None else None
    off = _inactive(u)
    for name, tiles in unit_tiles(u).items():
        marks = stuck if name == "maximise_plain" else off if name in DATA_VIEWS else None
        labels = [str(i) for i in range(len(tiles))]
        up = T.upscale_for(tiles.shape[1], 48)
        cell_w, cell_h = tiles.shape[2] * up + 4 * MARGIN, tiles.shape[1] * up + 4 * MARGIN
        cols = T.fit_columns(len(tiles), cell_w, MAX_WIDTH)
        grids[name] = (_fit(T.grid(tiles, ncols=cols, upscale=up, margin=2 * MARGIN, marks=marks, labels=labels,
                                   font_px=LABEL_PX)), (cols, cell_w, cell_h, 2 * MARGIN))
    k = u.patches.shape[1]
    crops = _crop_tiles(u.patches.reshape(-1, *u.patches.shape[2:]))
    labels = [str(i) if j == 0 else "" for i in range(len(u.patches)) for j in range(k)]
    up = min(T.upscale_for(crops.shape[1], 40), max(1, (MAX_WIDTH // k - 2 * MARGIN) // crops.shape[2]))
    cells = (k, crops.shape[2] * up + 2 * MARGIN, crops.shape[1] * up + 2 * MARGIN, MARGIN)
    grids["top_patches"] = (_fit(T.grid(crops, ncols=k, upscale=up, margin=MARGIN, marks=np.repeat(off, k),
                                        labels=labels, font_px=LABEL_PX)), cells)
    return grids


def _fit(img: np.ndarray) -> np.ndarray:
    return fit_width(at_density(img, DENSITY), MAX_WIDTH)


# Names of a unit card's pictures (short: a tile is CARD_TILE CSS px wide).
CARD_NAMES = {"maximise_plain": "max. plain", "maximise_fourier": "max. reg.", "decoded": "decoded",
              "neuron_feature": "feature", "deconvnet": "deconv", "guided_backprop": "guided"}
