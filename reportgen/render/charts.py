"""Charts of a layer across runs, as PNG bytes (no pyplot, no global state).

The layer charts are drawn with numpy and Pillow, not matplotlib: the similarity matrix here,
the strip chart of norms and the weight histograms with the small plotting helpers of
render.plot (a matplotlib figure per chart cost more than the statistics it showed).
``figure_png`` saves the matplotlib figures that render.data still draws.
"""

from __future__ import annotations

import io

import numpy as np

from reportgen.render.colour import DENSITY


def figure_png(fig) -> bytes:
    """A matplotlib figure (render.data's charts) at 100 dpi x DENSITY, marked with that
    density for the pages; the bounding box is fitted to every label and legend, so nothing
    is clipped. matplotlib is imported only by the callers that draw such figures."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100 * DENSITY, metadata={"Software": None}, bbox_inches="tight",
                pad_inches=0.08, pil_kwargs={"dpi": (72 * DENSITY,) * 2})
    return buf.getvalue()


def norms_by_run(norms: dict[str, np.ndarray], dead_threshold: float | None, title: str) -> bytes:
    """Strip chart of per-filter L2 norms, one column per run, dead threshold dashed.

    norms: run name -> (N,) filter norms (non-finite ones are left out). Drawn with
    numpy and Pillow (render.plot), not matplotlib: a figure cost more than the layer's
    statistics.
    """
    from reportgen.render.plot import strip_chart

    finite = {name: np.asarray(v, dtype=np.float64)[np.isfinite(v)] for name, v in norms.items()}
    return strip_chart(finite, dead_threshold, title, "filter L2 norm", "dead below")


def similarity_heatmap(mat: np.ndarray, names: list[str], title: str, col_names: list[str] | None = None) -> bytes:
    """Runs x runs similarity matrix in [0, 1] (viridis), each cell annotated with its value.

    mat: (R, C); names: R row labels; col_names: C column labels (default: ``names``, a
    square matrix). Composed with numpy and Pillow rather than matplotlib: a report draws
    one per layer and measure, and a figure per matrix cost more than the comparison itself.
    """
    from PIL import Image, ImageDraw, ImageFont

    from reportgen.render.colour import apply_lut, encode_png

    m = np.asarray(mat, dtype=np.float64)
    cols = list(names if col_names is None else col_names)
    k, kc = len(names), len(cols)
    d = DENSITY
    cell = (44 if max(k, kc) <= 12 else 28) * d
    if max(k, kc) > HEATMAP_ANNOTATED:
        # too many runs to write every value and name: the matrix fills the content column,
        # whole pixels a cell (a picture growing with the square of the runs outgrew memory)
        return _plain_heatmap(m, title)
    font = ImageFont.load_default(size=(11 if max(k, kc) <= 12 else 9) * d)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(int(probe.textlength(n, font=font)) for n in names) + 8 * d
    col_h = max(int(probe.textlength(n, font=font)) for n in cols) + 8 * d
    top, bar_w = 24 * d + col_h, 46 * d
    # wide enough for the title too (a matrix of few runs is narrower than its title)
    width = max(label_w + kc * cell + bar_w + 10 * d, int(probe.textlength(title, font=font)) + 8 * d)
    height = top + k * cell + 8 * d
    img = Image.new("RGB", (width, height), "white")
    cells = apply_lut(_shades(np.clip(m, 0, 1)), "viridis").repeat(cell, axis=0).repeat(cell, axis=1)
    grid = cells.copy()
    grid[::cell, :] = 255
    grid[:, ::cell] = 255
    img.paste(Image.fromarray(grid), (label_w, top))
    draw = ImageDraw.Draw(img)
    draw.fontmode = "1"  # two-tone text: with SHADES colours the chart fits a palette (colour.encode_png)
    draw.text((4 * d, 4 * d), title, fill="black", font=font)
    for j, name in enumerate(cols):
        # column labels, written vertically above the matrix
        txt = Image.new("RGB", (col_h, cell), "white")
        label = ImageDraw.Draw(txt)
        label.fontmode = "1"
        label.text((4 * d, cell // 2), name, fill="black", font=font, anchor="lm")
        img.paste(txt.rotate(90, expand=True), (label_w + j * cell, top - col_h))
    for i, name in enumerate(names):
        y = top + i * cell + cell // 2
        draw.text((label_w - 4 * d, y), name, fill="black", font=font, anchor="rm")
        for j in range(kc):
            v = m[i, j]
            if np.isfinite(v):
                draw.text((label_w + j * cell + cell // 2, y), f"{v:.2f}", font=font, anchor="mm",
                          fill="white" if v < 0.6 else "black")
    bar = apply_lut(_shades(np.linspace(1, 0, k * cell))[:, None].repeat(12 * d, axis=1), "viridis")
    x_bar = label_w + kc * cell + 8 * d
    img.paste(Image.fromarray(bar), (x_bar, top))
    for v in (0.0, 0.5, 1.0):
        # the end labels sit inside the bar's span, so neither is cut at the image's edge
        anchor = {0.0: "ld", 0.5: "lm", 1.0: "la"}[v]
        draw.text((x_bar + 16 * d, top + (1 - v) * (k * cell - 1)), f"{v:g}", fill="black", font=font, anchor=anchor)
    return encode_png(np.asarray(img), density=d)


HEATMAP_ANNOTATED = 24  # runs up to which a similarity matrix shows every value and name
# Shades of viridis a similarity matrix uses (steps of 0.0042): with two-tone text it has at
# most 242 colours, so it is stored with a palette, a third of the bytes of RGB.
SHADES = 240


def _shades(x01: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(x01, dtype=np.float64) * (SHADES - 1)) / (SHADES - 1)


def _plain_heatmap(m: np.ndarray, title: str) -> bytes:
    """A large similarity matrix (viridis on [0, 1]) at whole pixels a cell, no wider than the
    content column, under its title; values and names are in the page's table and report.json."""
    from PIL import Image, ImageDraw, ImageFont

    from reportgen.render.colour import apply_lut, encode_png

    d = DENSITY
    side = 640 * d
    cell = max(1, side // max(m.shape))
    cells = apply_lut(_shades(np.clip(np.nan_to_num(m, nan=0.0), 0, 1)), "viridis").repeat(cell, axis=0).repeat(
        cell, axis=1)
    font = ImageFont.load_default(size=11 * d)
    top = 24 * d
    img = Image.new("RGB", (max(cells.shape[1], 8 * d + int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(
        title, font=font))) + 8 * d, top + cells.shape[0] + 8 * d), "white")
    img.paste(Image.fromarray(cells), (4 * d, top))
    draw = ImageDraw.Draw(img)
    draw.fontmode = "1"
    draw.text((4 * d, 4 * d), title, fill="black", font=font)
    return encode_png(np.asarray(img), density=d)


def weight_histograms(weights: dict[str, np.ndarray], title: str) -> bytes:
    """One histogram of weight values per run, on a shared x range (small multiples).

    The range is +-the largest 99.5th percentile of |w| over the runs, 40 bins; values
    beyond it count in the end bins. Drawn with numpy and Pillow (render.plot).
    """
    from reportgen.render.plot import histograms

    finite = [np.asarray(w, dtype=np.float64).ravel() for w in weights.values()]
    finite = [x[np.isfinite(x)] for x in finite]
    lim = max((np.percentile(np.abs(x), 99.5) for x in finite if x.size), default=1.0) or 1.0
    bins = np.linspace(-lim, lim, 41)
    counts = {name: np.histogram(np.clip(x, -lim, lim), bins=bins)[0] for name, x in zip(weights, finite)}
    return histograms(counts, bins, title)
