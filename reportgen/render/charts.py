"""Charts drawn with matplotlib's object API (no pyplot, no global state)."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def norms_by_run(norms: dict[str, np.ndarray], dead_threshold: float | None, title: str) -> bytes:
    """Strip chart of per-filter L2 norms, one column per run, dead threshold dashed.

    norms: run name -> (N,) filter norms.
    """
    names = list(norms)
    fig = Figure(figsize=(max(4.0, 0.55 * len(names) + 1.5), 3.2))
    fig.subplots_adjust(left=0.12, right=0.97, top=0.88, bottom=0.22)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # jitter only; fixed so the PNG is reproducible
    for i, name in enumerate(names):
        y = np.asarray(norms[name], dtype=np.float64)
        y = y[np.isfinite(y)]
        ax.scatter(i + rng.uniform(-0.18, 0.18, y.size), y, s=6, alpha=0.6, color="tab:blue")
        if y.size:
            ax.plot([i - 0.3, i + 0.3], [np.median(y)] * 2, color="black", lw=1.2)
    if dead_threshold is not None:
        ax.axhline(dead_threshold, color="tab:red", ls="--", lw=1, label="dead below")
        ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 6 else 0, fontsize=8)
    ax.set_ylabel("filter L2 norm")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(bottom=0)
    return _png(fig)


def similarity_heatmap(mat: np.ndarray, names: list[str], title: str) -> bytes:
    """Runs x runs similarity matrix in [0, 1], each cell annotated with its value."""
    k = len(names)
    side = max(3.2, 0.42 * k + 1.6)
    fig = Figure(figsize=(side + 0.8, side))
    fig.subplots_adjust(left=0.14, right=0.98, top=0.93, bottom=0.14)
    ax = fig.add_subplot()
    shown = np.ma.masked_invalid(np.asarray(mat, dtype=np.float64))
    im = ax.imshow(shown, vmin=0, vmax=1, cmap="viridis")
    for i in range(k):
        for j in range(k):
            v = mat[i][j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7 if k > 6 else 9,
                        color="white" if v < 0.6 else "black")
    ax.set_xticks(range(k), names, rotation=90 if k > 6 else 0, fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _png(fig)


def weight_histograms(weights: dict[str, np.ndarray], title: str) -> bytes:
    """One histogram of weight values per run, on a shared x range (small multiples)."""
    names = list(weights)
    cols = min(5, len(names))
    rows = -(-len(names) // cols)
    finite = [np.asarray(w, dtype=np.float64).ravel() for w in weights.values()]
    finite = [x[np.isfinite(x)] for x in finite]
    lim = max((np.percentile(np.abs(x), 99.5) for x in finite if x.size), default=1.0) or 1.0
    bins = np.linspace(-lim, lim, 41)
    fig = Figure(figsize=(2.2 * cols, 1.7 * rows + 0.4))
    fig.subplots_adjust(left=0.04, right=0.98, top=1 - 0.5 / (1.7 * rows + 0.4), bottom=0.12 / rows,
                        hspace=0.45, wspace=0.12)
    axes = fig.subplots(rows, cols, sharex=True, squeeze=False)
    for ax, name, x in zip(axes.ravel(), names, finite):
        ax.hist(np.clip(x, -lim, lim), bins=bins, color="tab:blue")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return _png(fig)
