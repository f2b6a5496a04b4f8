"""Charts of the concept and importance extensions (matplotlib object API, no pyplot)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reportgen.render.charts import figure_png

FLAG_COLOUR = "tab:red"
UNIT_COLOUR = "tab:blue"


def detector_bars(runs: list[str], concepts: list[str], counts: np.ndarray, title: str) -> bytes:
    """Stacked bars: per run, how many units detect each concept (a unit detects at most one).

    counts: (R, C) ints, runs x concepts.
    """
    counts = np.asarray(counts, dtype=np.float64).reshape(len(runs), len(concepts))
    fig = Figure(figsize=(max(4.0, 0.45 * len(runs) + 2.4), 2.8), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(runs))
    bottom = np.zeros(len(runs))
    for c, name in enumerate(concepts):
        ax.bar(x, counts[:, c], 0.7, bottom=bottom, label=name, color=f"C{c % 10}")
        bottom += counts[:, c]
    ax.set_xticks(x, runs, rotation=45 if len(runs) > 6 else 0, fontsize=8)
    ax.set_ylabel("detector units")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=10, loc="left")
    if concepts:
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_ylim(bottom=0)
    return figure_png(fig)


def importance_bars(panels: list[tuple[str, np.ndarray, np.ndarray]], title: str) -> bytes:
    """Small multiples, one per run: each unit's effect, most important first; flagged
    units (dead, never active, duplicate) in red.

    panels: (run, effect (U,), flagged (U,) bool), each sorted by effect descending.
    """
    cols = min(5, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(2.3 * cols, 1.6 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax, (name, effect, flagged) in zip(axes.ravel(), panels):
        effect = np.nan_to_num(np.asarray(effect, dtype=np.float64))
        colours = np.where(np.asarray(flagged, dtype=bool), FLAG_COLOUR, UNIT_COLOUR)
        ax.bar(np.arange(len(effect)), effect, 1.0, color=list(colours), linewidth=0)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xticks([])
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel("relative change", fontsize=7)
    fig.suptitle(title, fontsize=10)
    return figure_png(fig)
