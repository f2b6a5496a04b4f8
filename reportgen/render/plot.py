"""Simple charts drawn with numpy and Pillow: a strip chart and small-multiple histograms.

Drawn at DENSITY px per CSS px like every picture of the report. matplotlib drew these
before (same layout and colours), at about 0.5-1 s each: more than all the statistics
behind them. Axes are plain: a frame, outward ticks at round values, labels in CSS px.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reportgen.render.colour import DENSITY, encode_png

BLUE = (31, 119, 180)  # matplotlib's tab:blue
RED = (214, 39, 40)  # tab:red
INK = (0, 0, 0)
TICK_CSS = 4  # outward tick length


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round values (1, 2, 2.5 or 5 times a power of ten apart) inside [lo, hi], about ``target``."""
    span = hi - lo
    if not np.isfinite(span) or span <= 0:
        return [float(lo)]
    raw = span / max(target - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * 0.999)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = first
    while v <= hi + 1e-9 * step:
        ticks.append(0.0 if abs(v) < 1e-12 * step else round(v, 12))
        v += step
    return ticks


def tick_label(v: float, ticks: list[float]) -> str:
    """A tick's text with as many decimals as the tick spacing needs (0.25 steps: two)."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = next(k for k in range(10) if abs(round(step, k) - step) <= 1e-9 * max(step, 1e-300)) if step else 0
    return f"{v:.{decimals}f}"  # an ASCII minus: the built-in font has no U+2212


def font(css_px: float) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=round(css_px * DENSITY))


def text_size(text: str, f) -> tuple[int, int]:
    box = f.getbbox(text)
    return box[2] - box[0], box[3] - box[1]


def rotated_text(text: str, f, angle: float, fill=INK) -> Image.Image:
    """The text on a transparent background, turned ``angle`` degrees anticlockwise."""
    left, top, right, bottom = f.getbbox(text)
    img = Image.new("RGBA", (right - left + 2, bottom - top + 2), (255, 255, 255, 0))
    ImageDraw.Draw(img).text((-left + 1, -top + 1), text, font=f, fill=fill)
    return img.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)


def frame(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int]) -> None:
    """The axes' rectangle, 1 CSS px wide, drawn on the plot area's outer edge."""
    x0, y0, x1, y1 = box
    draw.rectangle((x0 - DENSITY, y0 - DENSITY, x1 + DENSITY - 1, y1 + DENSITY - 1), outline=INK, width=DENSITY)


def dashed_hline(draw: ImageDraw.ImageDraw, y: int, x0: int, x1: int, colour, on: int, off: int, width: int) -> None:
    for x in range(x0, x1, on + off):
        draw.line((x, y, min(x + on, x1), y), fill=colour, width=width)


def splat(shape: tuple[int, int], xs: np.ndarray, ys: np.ndarray, radius: float, colour, alpha: float) -> np.ndarray:
    """(H, W, 3) uint8: discs of ``colour`` at (xs, ys) px on white, each ``alpha`` opaque,
    overlapping discs darker (as a scatter plot with transparency)."""
    r = int(math.ceil(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    disc = dx * dx + dy * dy <= radius * radius
    oy, ox = dy[disc], dx[disc]
    py = (np.round(ys).astype(np.int64)[:, None] + oy[None]).ravel()
    px = (np.round(xs).astype(np.int64)[:, None] + ox[None]).ravel()
    ok = (py >= 0) & (py < shape[0]) & (px >= 0) & (px < shape[1])
    count = np.bincount(py[ok] * shape[1] + px[ok], minlength=shape[0] * shape[1]).reshape(shape)
    keep = ((1.0 - alpha) ** count).astype(np.float32)  # share of the white background left
    out = np.empty((*shape, 3), dtype=np.uint8)
    for c, v in enumerate(colour):  # a channel at a time: no (H, W, 3) float copy
        out[..., c] = np.round(255.0 * keep + float(v) * (1.0 - keep))
    return out


def strip_chart(columns: dict[str, np.ndarray], threshold: float | None, title: str, ylabel: str,
                threshold_label: str) -> bytes:
    """One column of jittered points per name, its median as a black bar, an optional
    dashed red threshold with its legend above the axes, y from 0. PNG bytes.

    columns: name -> (N,) finite values.
    """
    d = DENSITY
    names = list(columns)
    n = len(names)
    f_tick, f_label = font(10), font(11)
    hi = max([float(np.max(v)) for v in columns.values() if len(v)] + [threshold or 0.0, 0.0])
    top_val = hi * 1.05 if hi > 0 else 1.0
    ticks = nice_ticks(0.0, top_val)
    labels = [tick_label(t, ticks) for t in ticks]
    rotate = 45 if n > 6 else 0
    xlab = [rotated_text(s, f_tick, rotate) for s in names]
    ylab = rotated_text(ylabel, f_label, 90)
    tick_w = max(text_size(s, f_tick)[0] for s in labels)
    left = 6 * d + ylab.width + 6 * d + tick_w + (TICK_CSS + 3) * d
    top = 26 * d
    bottom = (TICK_CSS + 4) * d + max(im.height for im in xlab) + 6 * d
    # a column a run, 55 CSS px each up to 12 runs, then narrower: at most 1,200 CSS px in all
    plot_w = max(400 * d, min(55 * n + 150, 1200) * d) - left - 12 * d
    plot_h = 230 * d
    width, height = left + plot_w + 12 * d, top + plot_h + bottom
    x_of = lambda i: left + (i + 0.5) / n * plot_w  # noqa: E731  column i at the middle of its slot
    y_of = lambda v: top + plot_h - v / top_val * plot_h  # noqa: E731

    rng = np.random.default_rng(0)  # jitter only; fixed so the PNG is reproducible
    xs, ys = [], []
    for i, name in enumerate(names):
        y = np.asarray(columns[name], dtype=np.float64)
        xs.append(x_of(i + rng.uniform(-0.18, 0.18, y.size)))
        ys.append(y_of(y))
    canvas = splat((height, width), np.concatenate(xs + [np.zeros(0)]), np.concatenate(ys + [np.zeros(0)]),
                   1.6 * d, BLUE, 0.6)
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    for i, name in enumerate(names):
        y = np.asarray(columns[name], dtype=np.float64)
        if y.size:
            ym = y_of(float(np.median(y)))
            draw.line((x_of(i - 0.3), ym, x_of(i + 0.3), ym), fill=INK, width=round(1.2 * d))
    if threshold is not None:
        dashed_hline(draw, round(y_of(threshold)), left, left + plot_w, RED, 4 * d, 2 * d, d)
        key_w = 22 * d
        text_w = text_size(threshold_label, f_tick)[0]
        kx = left + plot_w - text_w - key_w - 6 * d
        ky = top - 10 * d
        dashed_hline(draw, ky, kx, kx + key_w, RED, 4 * d, 2 * d, d)
        draw.text((kx + key_w + 4 * d, ky), threshold_label, font=f_tick, fill=INK, anchor="lm")
    frame(draw, (left, top, left + plot_w, top + plot_h))
    for t, s in zip(ticks, labels):
        yt = round(y_of(t))
        draw.line((left - (TICK_CSS + 1) * d, yt, left - d, yt), fill=INK, width=d)
        draw.text((left - (TICK_CSS + 3) * d, yt), s, font=f_tick, fill=INK, anchor="rm")
    for i, im in enumerate(xlab):
        xc = round(x_of(i))
        draw.line((xc, top + plot_h + d, xc, top + plot_h + (TICK_CSS + 1) * d), fill=INK, width=d)
        # a turned label ends at its tick (its right end under the tick), an upright one is centred
        x_at = xc - im.width + 4 * d if rotate else xc - im.width // 2
        img.paste(im, (x_at, top + plot_h + (TICK_CSS + 4) * d), im)
    img.paste(ylab, (6 * d, top + (plot_h - ylab.height) // 2), ylab)
    draw.text((left, 6 * d), title, font=f_label, fill=INK)
    return encode_png(np.asarray(img.convert("RGB")), density=d)


def histograms(counts: dict[str, np.ndarray], edges: np.ndarray, title: str, max_cols: int = 5) -> bytes:
    """Small multiples: one filled histogram per name on a shared x range, in rows of
    ``max_cols``, each panel scaled to its own highest bar (no y ticks); x tick labels
    under the lowest panel of each column. PNG bytes.

    counts: name -> (B,) counts of the B bins; edges: (B + 1,) shared bin edges.
    """
    d = DENSITY
    names = list(counts)
    cols = min(max_cols, max(len(names), 1))
    rows = -(-len(names) // cols)
    f_title, f_name, f_tick = font(11), font(9), font(8)
    lo, hi = float(edges[0]), float(edges[-1])
    ticks = nice_ticks(lo, hi, 5)
    labels = [tick_label(t, ticks) for t in ticks]
    pw, ph = 196 * d, 104 * d  # plot area of a panel
    gap_x, name_h, tick_h = 14 * d, 16 * d, (TICK_CSS + 14) * d
    top = 26 * d
    cell_h = name_h + ph + tick_h
    width = 12 * d + cols * pw + (cols - 1) * gap_x + 12 * d
    height = top + rows * cell_h + 4 * d
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((width // 2, 6 * d), title, font=f_title, fill=INK, anchor="ma")
    lowest = {c: max(i for i in range(len(names)) if i % cols == c) for c in range(min(cols, len(names)))}
    for i, name in enumerate(names):
        r, c = divmod(i, cols)
        x0 = 12 * d + c * (pw + gap_x)
        y0 = top + r * cell_h + name_h
        cnt = np.asarray(counts[name], dtype=np.float64)
        peak = cnt.max() if cnt.size and cnt.max() > 0 else 1.0
        xs = x0 + (np.asarray(edges, dtype=np.float64) - lo) / (hi - lo) * pw
        heights = np.round(cnt / (peak * 1.05) * ph).astype(int)
        for k, h in enumerate(heights):
            if h > 0:
                draw.rectangle((round(xs[k]), y0 + ph - h, max(round(xs[k + 1]) - 1, round(xs[k])), y0 + ph - 1),
                               fill=BLUE)
        frame(draw, (x0, y0, x0 + pw, y0 + ph))
        draw.text((x0 + pw // 2, y0 - 3 * d), name, font=f_name, fill=INK, anchor="md")
        for t, s in zip(ticks, labels):
            xt = round(x0 + (t - lo) / (hi - lo) * pw)
            draw.line((xt, y0 + ph + d, xt, y0 + ph + (TICK_CSS + 1) * d), fill=INK, width=d)
            if lowest.get(c) == i:
                draw.text((xt, y0 + ph + (TICK_CSS + 2) * d), s, font=f_tick, fill=INK, anchor="ma")
    return encode_png(np.asarray(img), density=d)
