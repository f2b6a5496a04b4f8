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
    fig = Figure(figsize=(max(4.0, 0.55 * len(names) + 1.5), 3.2), layout="constrained")
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
