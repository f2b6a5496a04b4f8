"""Pictures of training trajectories: a chart per run and a filter strip per small layer.

Pure: arrays in, PNG bytes out (matplotlib's object API, no pyplot, as in charts.py).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from reportgen.render import tiles as T
from reportgen.render.charts import figure_png
from reportgen.render.colour import DENSITY, encode_png
from reportgen.render.views import filter_tiles


def training_chart(layers: list[dict], title: str) -> bytes:
    """Three panels over training steps, one line per layer: median filter norm relative to the
    first step, dead filters, and distance from initialisation with cosine to the final weights.

    layers: dicts with ``layer``, ``steps`` (S,), ``median_norm`` (S,), ``dead`` (S,),
    ``distance_from_init`` (S,), ``cosine_to_final`` (S,) (lists; None for NaN).
    """
    fig = Figure(figsize=(9.6, 2.7))
    ax_norm, ax_dead, ax_dist = fig.subplots(1, 3)
    colours = [f"C{i % 10}" for i in range(len(layers))]
    for lay, colour in zip(layers, colours):
        steps = np.asarray(lay["steps"], dtype=np.float64)
        norm = _arr(lay["median_norm"])
        first = norm[0] if np.isfinite(norm[0]) and norm[0] > 0 else np.nan
        ax_norm.plot(steps, norm / first, marker=".", color=colour, label=lay["layer"])
        ax_dead.plot(steps, _arr(lay["dead"]), marker=".", color=colour, label=lay["layer"])
        ax_dist.plot(steps, _arr(lay["distance_from_init"]), marker=".", color=colour, label=lay["layer"])
        ax_dist.plot(steps, _arr(lay["cosine_to_final"]), ls=":", color=colour)
    ax_norm.set_yscale("log")
    ax_norm.set_title("median filter norm / at first step", fontsize=9, loc="left")
    ax_dead.set_title("dead filters", fontsize=9, loc="left")
    ax_dead.set_ylim(bottom=0)
    ax_dist.set_title("distance from init (solid), cos to final (dotted)", fontsize=9, loc="left")
    for ax in (ax_norm, ax_dead, ax_dist):
        ax.set_xlabel("training step", fontsize=8)
        ax.tick_params(labelsize=7)
    ax_dead.legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return figure_png(fig)


def _arr(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def filter_strip(snapshots: np.ndarray, dead: np.ndarray | None = None) -> bytes:
    """Every filter of a layer at every step: one row per step, one column per filter, on one
    symmetric scale for the whole run (max |w| over all steps), so a filter that shrinks fades
    to grey. snapshots: (S, N, C, kh, kw); dead: (S, N) bool, outlined red."""
    s, n = snapshots.shape[:2]
    w = np.asarray(snapshots, dtype=np.float64)
    scale = T.layer_scale(w)
    tiles = np.concatenate([filter_tiles(w[i], scale) for i in range(s)])
    kh = tiles.shape[1]
    upscale = max(1, T.upscale_for(kh, 12))
    img = T.grid(tiles, ncols=n, upscale=upscale, margin=DENSITY,
                 marks=None if dead is None else np.asarray(dead).reshape(-1))
    return encode_png(img)
