"""Pictures of the data per location, side by side (matplotlib's object API; no pyplot).

Each function takes values and returns PNG bytes; ``data_pictures`` makes the set the
data page shows, keyed by path under img/.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from reportgen.analysis import datastats as ds
from reportgen.core.names import slug
from reportgen.render.charts import figure_png
from reportgen.render.colour import DENSITY, at_density, encode_png, to_uint8
from reportgen.render.tiles import fit_columns, grid, upscale_for

BACKGROUND_CSS = 128  # CSS width of one background tile
MAX_CSS = 680  # widest picture on a page


def backgrounds(images: dict[str, np.ndarray]) -> bytes:
    """One tile per location: run name -> (H, W, 3) RGB in [0, 1] (all the same size)."""
    names = list(images)
    tiles = np.stack([to_uint8(images[n]) for n in names])
    h, w = tiles.shape[1:3]
    up = upscale_for(w, BACKGROUND_CSS)
    ncols = fit_columns(len(names), w * up + 4 * DENSITY, MAX_CSS * DENSITY)
    return encode_png(at_density(grid(tiles, ncols=ncols, upscale=up, margin=2 * DENSITY, labels=names,
                                      font_px=11 * DENSITY)))


def colour(names: list[str], means: np.ndarray, sds: np.ndarray, space: str) -> bytes:
    """means, sds: (K, 3) CIELAB per location, drawn as mean ± sd in three panels."""
    fig = Figure(figsize=(max(5.0, 0.5 * len(names) + 2.5), 2.6))
    axes = fig.subplots(1, 3)
    x = np.arange(len(names))
    for c, (ax, label) in enumerate(zip(axes, ("L* (lightness)", "a* (green – red)", "b* (blue – yellow)"))):
        ax.errorbar(x, means[:, c], yerr=sds[:, c], fmt="o", ms=4, capsize=2, color="tab:blue")
        ax.set_title(label, fontsize=9)
        ax.set_xticks(x, names, rotation=90, fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"Colour per location: mean ± sd over all pixels ({space})", fontsize=9)
    fig.tight_layout()
    return figure_png(fig)


def spectra(names: list[str], power: np.ndarray, slopes: list[float | None]) -> bytes:
    """power: (K, B) mean power per ``datastats.SPECTRUM_EDGES`` bin (NaN where empty)."""
    f = ds.spectrum_centres()
    fig = Figure(figsize=(5.6, 3.4))
    ax = fig.add_subplot()
    cmap = _colours(len(names))
    for i, name in enumerate(names):
        ok = np.isfinite(power[i]) & (power[i] > 0)
        slope = "–" if slopes[i] is None else f"{slopes[i]:.2f}"
        ax.loglog(f[ok], power[i][ok], color=cmap[i], lw=1.2, label=f"{name} (slope {slope})")
    ax.axvspan(*ds.SLOPE_RANGE, color="0.92", zorder=0, label="slope fitted here")
    ax.set_xlabel("frequency (cycles per pixel)")
    ax.set_ylabel("power of the luminance")
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("Radially averaged power spectrum per location", fontsize=9, loc="left")
    return figure_png(fig)


def objects(names: list[str], hists: dict[str, np.ndarray]) -> bytes:
    """hists: title -> (K, 20) counts per location over ``datastats.HIST_EDGES``; each
    row is drawn as shares of that location's boxes."""
    fig = Figure(figsize=(3.0 * len(hists) + 0.8, 0.28 * len(names) + 1.4))
    axes = fig.subplots(1, len(hists), squeeze=False)[0]
    for ax, (title, h) in zip(axes, hists.items()):
        h = np.asarray(h, dtype=np.float64)
        totals = h.sum(axis=1, keepdims=True)
        share = np.divide(h, totals, out=np.full_like(h, np.nan), where=totals > 0)
        im = ax.imshow(share, aspect="auto", cmap="viridis", vmin=0, interpolation="nearest",
                       extent=(0, 1, len(names) - 0.5, -0.5))
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title(title, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02).ax.tick_params(labelsize=6)
    fig.suptitle("Objects per location: share of boxes in each bin", fontsize=9)
    fig.tight_layout()
    return figure_png(fig)


def distance_heatmaps(names: list[str], matrices: dict[str, list]) -> dict[str, bytes]:
    """measure -> runs x runs heatmap of its distances divided by their largest (0 = alike)."""
    from reportgen.render.charts import similarity_heatmap

    out = {}
    for measure, rows in matrices.items():
        m = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
        top = np.nanmax(m) if np.isfinite(m).any() else np.nan
        if not np.isfinite(top) or top <= 0:
            continue
        out[measure] = similarity_heatmap(m / top, names, f"{measure} distance / its largest ({top:.3g})")
    return out


def _colours(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def data_pictures(section: dict, values: dict[str, ds.LocationData]) -> dict[str, bytes]:
    """The data page's pictures, per model: ``<model slug>/<view>.png`` (published under img/data/)."""
    out = {}
    entries = section["locations"]
    for model in dict.fromkeys(e["model"] for e in entries):
        own = [e for e in entries if e["model"] == model and e["run"] in values]
        names = [e["run"] for e in own]
        vals = [values[n] for n in names]
        size = vals[0].background.shape[:2]
        bgs = {n: (v.background if v.background.shape[:2] == size else ds.resize(v.background, size))
               for n, v in zip(names, vals)}
        out[f"{slug(model)}/backgrounds.png"] = backgrounds(bgs)
        out[f"{slug(model)}/colour.png"] = colour(names, np.stack([v.colour_mean for v in vals]),
                                                np.stack([v.colour_sd for v in vals]), section["colour_space"])
        out[f"{slug(model)}/spectra.png"] = spectra(names, np.stack([v.spectrum for v in vals]),
                                                  [e["spectrum_slope"] for e in own])
        dist = next((d for d in section["distances"] if d["model"] == model), None)
        if dist is not None:
            for measure, png in distance_heatmaps(dist["runs"], dist["matrices"]).items():
                out[f"{slug(model)}/distance-{measure}.png"] = png
        if any(v.boxes for v in vals):
            empty = np.zeros(len(ds.HIST_EDGES) - 1)

            def rows(attr: str) -> np.ndarray:
                return np.stack([empty if getattr(v, attr) is None else getattr(v, attr) for v in vals])

            out[f"{slug(model)}/objects.png"] = objects(names, {
                "box height / image height": rows("scale_hist"),
                "foot row / image height (0 = top)": rows("foot_hist"),
                "box centre / image width": rows("centre_hist")})
    return out
