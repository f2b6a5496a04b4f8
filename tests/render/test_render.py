"""Tiles and grids: exact pixel values, NaN flagged, marks drawn, no input mutated."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from reportgen.render import tiles as T
from reportgen.render.colour import NAN_RGB, apply_lut, encode_png, lut
from reportgen.render.views import MAX_WIDTH, activation_grid, filter_views


def ramp() -> np.ndarray:
    return np.arange(4 * 3 * 2 * 2, dtype=np.float64).reshape(4, 3, 2, 2) - 23.5  # -23.5 .. 23.5


def test_per_layer_ramp_exact_pixels():
    w = ramp()
    img = T.grid(T.rgb_filter_tiles(T.per_layer(w)), ncols=2, upscale=1, margin=1)
    assert img.shape == (2 * 4, 2 * 4, 3)
    # filter 0 occupies rows 1..2, cols 1..2; pixel (0,0) has RGB weights w[0,:,0,0].
    for k, (r, c) in enumerate([(1, 1), (1, 5), (5, 1), (5, 5)]):
        for y in range(2):
            for x in range(2):
                expected = np.round((0.5 + 0.5 * w[k, :, y, x] / 23.5) * 255).astype(np.uint8)
                assert (img[r + y, c + x] == expected).all(), (k, y, x)
    assert (img[0] == 255).all() and (img[:, 0] == 255).all()  # white margins
    # hand-computed: w[0, :, 0, 0] = (-23.5, -19.5, -15.5) -> 255 * (0.5 + 0.5 * w / 23.5)
    assert tuple(int(v) for v in img[1, 1]) == (0, 22, 43)


def test_per_filter_minmax_and_constant():
    w = ramp()
    out = T.per_filter(w)
    assert np.allclose(out.reshape(4, -1).min(axis=1), 0) and np.allclose(out.reshape(4, -1).max(axis=1), 1)
    assert np.allclose(out[1, 0, 0, 0], 0.0) and np.allclose(out[1, 2, 1, 1], 1.0)
    assert (T.per_filter(np.full((1, 3, 2, 2), 7.0)) == 0.5).all()


def test_dead_filter_looks_dead_on_layer_scale_but_not_per_filter():
    w = np.random.default_rng(0).normal(size=(2, 3, 5, 5))
    w[1] *= 1e-4
    layer = T.per_layer(w)
    assert np.abs(layer[1] - 0.5).max() < 1e-3  # flat mid grey
    assert np.isclose(T.per_filter(w)[1].max(), 1.0)  # per-filter inflates it


def test_nan_is_flagged_never_crashes():
    w = ramp()
    w[2, 1, 0, 1] = np.nan
    w[3, 0, 1, 1] = np.inf
    before = w.copy()
    for norm in (T.per_layer, T.per_filter):
        img = T.grid(T.rgb_filter_tiles(norm(w)), ncols=2, margin=1)
        assert tuple(img[5 + 0, 1 + 1]) == tuple(NAN_RGB)
        assert tuple(img[5 + 1, 5 + 1]) == tuple(NAN_RGB)
    np.testing.assert_array_equal(w, before)  # inputs never mutated
    assert tuple(apply_lut(np.array([np.nan]), "gray")[0]) == tuple(NAN_RGB)


def test_marks_frame_tiles_red():
    tiles = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    img = T.grid(tiles, ncols=2, margin=1, marks=np.array([False, True]))
    assert tuple(img[0, 0]) == (255, 255, 255)
    assert tuple(img[0, 4]) == tuple(T.MARK_RGB)
    assert tuple(img[1, 5]) == (0, 0, 0)


def test_upscale_and_layout():
    tiles = np.arange(5 * 1 * 1 * 3, dtype=np.uint8).reshape(5, 1, 1, 3)
    img = T.grid(tiles, upscale=3, margin=0)
    assert img.shape == (2 * 3, 3 * 3, 3)  # ceil(sqrt(5)) = 3 columns, 2 rows
    assert (img[3:6, 3:6] == tiles[4, 0, 0]).all()


@pytest.mark.parametrize("name", ["viridis", "gray", "RdBu_r", "magma"])
def test_lut_matches_matplotlib(name):
    # the report's maps are stored tables (render._luts), others come from matplotlib
    import matplotlib

    table = lut(name)
    ref = matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3]
    assert table.shape == (256, 3) and table.dtype == np.uint8
    assert np.abs(table / 255 - ref).max() <= 0.5 / 255 + 1e-9


def test_png_roundtrip():
    img = np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(encode_png(img))).convert("RGB"))
    np.testing.assert_array_equal(back, img)
    assert encode_png(img) == encode_png(img)  # deterministic bytes


@pytest.mark.parametrize("kind", ["rgb", "many", "grey", "rgba", "2d"])
def test_png_encoder_decodes_to_the_same_pixels(kind):
    # Pillow's decoder is the reference: repeated rows (stored as "Up"), a flat image,
    # a single row, a grey RGB picture (stored as greyscale) and one of at most 256
    # colours (stored with a palette) all come back exactly.
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8).repeat(4, axis=0).repeat(3, axis=1)
    many = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)  # 600 colours
    img = {"rgb": base, "many": many, "grey": base[..., :1].repeat(3, axis=2), "2d": base[..., 0],
           "rgba": np.concatenate([base, base[..., :1]], axis=2)}[kind]
    for x in (img, img[:1], np.zeros_like(img)):
        im = Image.open(io.BytesIO(encode_png(x)))
        im.load()  # decodes every row and checks the CRCs
        back = np.asarray(im.convert("RGBA" if kind == "rgba" else "RGB"))
        want = x if x.ndim == 3 else x[..., None].repeat(3, axis=2)
        np.testing.assert_array_equal(back, want)
        if x is img:
            assert im.mode == {"rgb": "P", "many": "RGB", "rgba": "RGBA", "grey": "L", "2d": "L"}[kind]


def test_filter_views_by_layer_kind():
    rng = np.random.default_rng(0)
    assert set(filter_views(rng.normal(size=(8, 3, 5, 5)))) == {"filters_per_layer", "filters_per_filter"}
    # the kernels per input channel are the filter atlas's (views.filter_atlas), not a view of their own
    assert set(filter_views(rng.normal(size=(8, 4, 3, 3)))) == {"filters_mean", "filters_l2"}
    assert set(filter_views(rng.normal(size=(8, 1, 3, 3)))) == {"filters_mean", "filters_l2", "filters_per_filter"}
    heat = filter_views(rng.normal(size=(10, 2000)))["weights_heatmap"]
    assert heat.shape[1] <= MAX_WIDTH


def test_heatmap_block_mean_against_numpy():
    m = np.arange(12.0).reshape(2, 6) - 6
    out = T.block_mean(m, max_cells=3)
    np.testing.assert_allclose(out, m.reshape(2, 3, 2).mean(axis=2))


def test_activation_grid_orders_by_mean():
    maps = np.zeros((3, 2, 2))
    maps[1] = 5.0
    maps[2] = 1.0
    img, order = activation_grid(maps, target_px=2)
    assert list(order) == [1, 2, 0]
    assert img.shape[2] == 3


def test_empty_labels_draw_nothing():
    tiles = np.full((2, 10, 10, 3), 200, dtype=np.uint8)
    plain = T.grid(tiles, upscale=4, margin=1)
    labelled = T.grid(tiles, upscale=4, margin=1, labels=["", ""])
    np.testing.assert_array_equal(plain, labelled)
    assert (T.grid(tiles, upscale=4, margin=1, labels=["7", ""]) != plain).any()


def test_relink_rebases_relative_links_only():
    from reportgen.render.pages import relink

    text = "[a](locations/x.md#l) [b](#top) [c](https://e.org/x) [d](layers/c.md)"
    assert relink(text, "../") == "[a](../locations/x.md#l) [b](#top) [c](https://e.org/x) [d](../layers/c.md)"


def test_health_marks_priority_and_colours():
    health = {"dead": np.array([1, 0, 0, 0, 1], bool), "nonfinite": np.array([0, 0, 0, 0, 1], bool),
              "duplicate_of": np.array([-1, 0, -1, -1, -1]), "norm_outlier": np.array([0, 1, 1, 0, 0], bool)}
    codes = T.health_marks(health)
    assert list(codes) == [1, 2, 3, 0, 4]
    img = T.grid(np.zeros((5, 1, 1, 3), np.uint8), ncols=5, margin=1, marks=codes)
    assert [tuple(img[0, 3 * i]) for i in range(5)] == [
        tuple(T.MARK_COLOURS[1]), tuple(T.MARK_COLOURS[2]), tuple(T.MARK_COLOURS[3]), (255, 255, 255),
        tuple(T.MARK_COLOURS[4])]


def test_similarity_heatmap_cells_use_the_colour_map():
    from reportgen.render.charts import similarity_heatmap
    from reportgen.render.colour import lut

    m = np.array([[1.0, 0.0], [0.0, 1.0]])
    img = np.asarray(Image.open(io.BytesIO(similarity_heatmap(m, ["a", "b"], "t"))).convert("RGB"))
    viridis = lut("viridis")
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert tuple(viridis[255]) in colours and tuple(viridis[0]) in colours  # 1 and 0 cells


# --------------------------------------------------------------------------- sized for eyes

from reportgen.render.colour import DENSITY, display_width  # noqa: E402


def _runs(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(edges[1::2] - edges[::2])


def test_display_width_is_what_pillow_reads_as_density():
    img = np.zeros((10, 30, 3), np.uint8)
    for density in (1, 2, 3):
        data = encode_png(img, density=density)
        dpi = Image.open(io.BytesIO(data)).info.get("dpi", (72, 72))[0]
        expected = None if density == 1 else round(30 / (dpi / 72))
        assert display_width(data) == expected == (None if density == 1 else 30 // density)
    assert display_width(b"not a png") is None


def test_filter_tiles_at_least_48_css_px_whole_pixel_upscaled():
    w = np.random.default_rng(1).normal(size=(64, 3, 5, 5))
    img = filter_views(w)["filters_per_layer"]
    data = encode_png(img)
    css_per_px = display_width(data) / img.shape[1]
    assert css_per_px == 1 / DENSITY
    # Kernel row 3 of filter 0 (below its label): 5 equal runs of whole pixels, each
    # exactly the weight's colour (nearest neighbour, nothing blended between them).
    expected = np.round((0.5 + 0.5 * w[0, :, 3, :] / np.abs(w).max()) * 255).astype(np.uint8).T  # (5, 3)
    x0 = np.flatnonzero((img != 255).any(axis=(0, 2)))[0]
    band = _runs((img[:, x0 + 2 * DENSITY] != 255).any(axis=1))[0]  # the first tile row, with its frame
    y0 = np.flatnonzero((img[:, x0 + 2 * DENSITY] != 255).any(axis=1))[0]
    lit = np.flatnonzero((img[y0 + band // 2] != 255).any(axis=1))
    up = _runs((img[y0 + band // 2] != 255).any(axis=1))[0] // 5
    row = img[y0 + 3 * up + up // 2, lit[0]:lit[0] + 5 * up].reshape(5, up, 3)
    assert (row == row[:, :1]).all()
    np.testing.assert_array_equal(row[:, 0], expected)
    assert 5 * up * css_per_px >= 48  # the whole 5 x 5 tile


def test_activation_maps_at_least_96_css_px():
    maps = np.abs(np.random.default_rng(2).normal(size=(16, 48, 64)))
    img, _ = activation_grid(maps)
    css = display_width(encode_png(img)) / img.shape[1]
    # the first row's map widths, from the white margins between them
    lit = (img[img.shape[0] // 8] != 255).any(axis=1)
    assert min(_runs(lit)) * css >= 96
    assert img.shape[1] <= MAX_WIDTH


def test_dense_weights_never_a_hairline():
    w = np.random.default_rng(3).normal(size=(2, 1024))
    img = filter_views(w)["weights_heatmap"]
    css = display_width(encode_png(img)) / img.shape[1]
    assert img.shape[0] * css >= 96 and img.shape[1] * css >= 96
    # each unit is a 32 x 32 tile of its weights, row by row, on one symmetric scale
    from reportgen.render.colour import lut

    colours = lut("RdBu_r")[np.round((0.5 + 0.5 * w / np.abs(w).max()) * 255).astype(int)]
    lit_cols = _runs((img[img.shape[0] // 2] != 255).any(axis=1))
    assert len(lit_cols) == 2 and lit_cols[0] == lit_cols[1]
    up = lit_cols[0] // 32
    x0 = np.flatnonzero((img[img.shape[0] // 2] != 255).any(axis=1))[0]
    y0 = np.flatnonzero((img[:, x0] != 255).any(axis=1))[0]
    for k in (5 * 32, 5 * 32 + 31, 20 * 32 + 7, 1000, 1023):  # rows below the label
        r, c = divmod(k, 32)
        assert tuple(img[y0 + r * up + up // 2, x0 + c * up + up // 2]) == tuple(colours[0, k]), k
    tall = filter_views(np.random.default_rng(4).normal(size=(300, 3)))["weights_heatmap"]
    assert min(tall.shape[:2]) >= 96 * DENSITY


def test_similarity_heatmap_title_is_not_cut():
    from reportgen.render.charts import similarity_heatmap

    title = "conv1: matched |cos| of filter weights, a long title"
    img = np.asarray(Image.open(io.BytesIO(similarity_heatmap(np.eye(2), ["a", "b"], title))).convert("L"))
    ink = np.flatnonzero((img[: 20 * DENSITY] < 128).any(axis=0))
    assert ink.size and ink[-1] < img.shape[1] - 2  # the title's last letter ends inside the picture


def test_norms_chart_legend_is_outside_the_points():
    """The legend sits above the axes: the plot area's top row, where the largest norm
    lands, has no legend text; and the tight box keeps the y label in the picture."""
    from reportgen.render.charts import norms_by_run

    data = norms_by_run({"a": np.full(20, 1.0), "b": np.full(20, 0.95)}, 0.1, "conv1: norms")
    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    red = (img[..., 0] > 180) & (img[..., 1] < 90) & (img[..., 2] < 90)  # the dashed line and its legend key
    rows = np.flatnonzero(red.any(axis=1))
    blue = (img[..., 2] > 150) & (img[..., 0] < 120)
    top_point = np.flatnonzero(blue.any(axis=1))[0]
    assert rows[0] < top_point  # the legend's key is drawn above every point
    assert (img[:, : 3 * DENSITY] < 250).sum() == 0  # a white border: nothing touches the left edge


def test_size_images_gives_widths_and_nothing_else():
    from reportgen.render.pages import size_images

    text = ("![a](../img/x/f.png){ loading=lazy }\n![b](../img/unknown.png){ loading=lazy }\n"
            "![c](img/s.png){ loading=lazy width=240 }\n")
    out = size_images(text, "layers/conv1.md", {"img/x/f.png": 416, "img/s.png": 99})
    assert out.splitlines() == ["![a](../img/x/f.png){ loading=lazy width=416 }",
                                "![b](../img/unknown.png){ loading=lazy }", "![c](img/s.png){ loading=lazy width=240 }"]


def test_code_spans_show_paths_without_escapes():
    """Paths go through the templates' ``code`` filter: shown exactly, no backslashes, no markup."""
    import html as html_lib

    import markdown

    from reportgen.core.names import code

    for text in ("runs/cam_c/best.pt", "frame_00.png", "a`b``c", "`x`", "x{ onclick=alert(1) }[y](javascript:z)",
                 "<img src=x>"):
        out = markdown.markdown(f"file {code(text)} here", extensions=["attr_list"])
        inner = out[out.index("<code>") + 6:out.index("</code>")]
        assert html_lib.unescape(inner) == text, (text, out)
        assert "\\" not in inner and "<a" not in out and "onclick=" not in out.replace(inner, "")


def test_plot_ticks_are_round_values_inside_the_range():
    from reportgen.render.plot import nice_ticks, tick_label

    assert nice_ticks(0.0, 1.05) == [0.0, 0.5, 1.0]  # step >= 1.05 / 4, the next of 1, 2, 2.5, 5 x 10^k
    assert nice_ticks(-0.14, 0.14) == [-0.1, 0.0, 0.1]
    assert nice_ticks(0.0, 2.6, 3) == [0.0, 2.0]
    assert nice_ticks(3.0, 3.0) == [3.0]
    assert [tick_label(t, [0.0, 0.25]) for t in (0.0, 0.25, -0.5)] == ["0.00", "0.25", "-0.50"]
    assert tick_label(20.0, [0.0, 10.0]) == "20"


def test_histogram_bars_follow_the_counts():
    """Each panel's bars are as tall as its counts, relative to its highest bar."""
    from reportgen.render.plot import histograms

    counts = {"a": np.array([0, 5, 10, 5]), "b": np.array([8, 0, 0, 2])}
    img = np.asarray(Image.open(io.BytesIO(histograms(counts, np.linspace(-1, 1, 5), "t"))).convert("RGB")).astype(int)
    blue = (img[..., 2] > 150) & (img[..., 0] < 60)
    cols = np.flatnonzero(blue.any(axis=0))
    panels = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
    assert len(panels) == 3  # a: bins 1-3 side by side; b: bins 0 and 3 (empty bins draw nothing)
    a, b0, b3 = panels
    height = lambda x: int(blue[:, x].sum())  # noqa: E731
    ha = [height(a[round(len(a) * f)]) for f in (1 / 6, 3 / 6, 5 / 6)]  # the middle of each of a's bins
    assert ha[1] > 0 and abs(ha[0] - ha[1] / 2) <= 2 and ha[0] == ha[2]
    assert height(b0[len(b0) // 2]) == ha[1] and abs(height(b3[len(b3) // 2]) - ha[1] / 4) <= 2
    assert len(b0) == len(b3) and abs(len(a) - 3 * len(b0)) <= 3  # equal bin widths


@pytest.mark.parametrize("signed", [False, True])
def test_activation_grids_fit_a_palette_and_keep_their_pixels(signed):
    """An activation grid (its shades, white margins, the NaN colour, two-tone channel numbers)
    has at most 256 colours, so it is stored with a palette, and decodes to the same pixels."""
    rng = np.random.default_rng(5)
    maps = rng.normal(size=(40, 12, 20)) if signed else np.abs(rng.normal(size=(40, 12, 20)))
    maps[3, 2, 2] = np.nan
    img, _ = activation_grid(maps)
    im = Image.open(io.BytesIO(encode_png(img)))
    assert im.mode == "P"
    np.testing.assert_array_equal(np.asarray(im.convert("RGB")), np.asarray(img))


def test_layer_charts_stay_bounded_at_many_locations():
    """The similarity matrix and the strip chart of norms of 200 locations fit the page's
    width instead of growing with the locations (their square, for the matrix); the matrix
    still shows each cell's value in its colour."""
    from reportgen.render.charts import SHADES, norms_by_run, similarity_heatmap
    from reportgen.render.colour import lut

    rng = np.random.default_rng(9)
    n = 200
    mat = rng.uniform(size=(n, n))
    png = similarity_heatmap(mat, [f"loc{i:03d}" for i in range(n)], "conv1: linear CKA")
    css = display_width(png)
    assert css is not None and css <= 680
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    cell = (640 * 2) // n
    y0 = img.shape[0] - 8 * 2 - n * cell  # the matrix sits above an 8 CSS px margin
    for i, j in ((0, 0), (17, 150), (199, 3)):
        shade = np.round(mat[i, j] * (SHADES - 1)) / (SHADES - 1)  # the chart's shades of viridis
        want = lut("viridis")[int(np.round(shade * 255))]
        assert np.abs(img[y0 + i * cell + cell // 2, 8 + j * cell + cell // 2].astype(int) - want).max() <= 1
    norms = {f"loc{i:03d}": rng.uniform(0.5, 1.5, 64) for i in range(n)}
    assert display_width(norms_by_run(norms, 0.1, "conv1: filter L2 norms")) <= 1200 + 1


def test_a_similarity_matrix_is_stored_with_a_palette_and_keeps_its_shades():
    from reportgen.render.charts import SHADES, similarity_heatmap
    from reportgen.render.colour import lut

    mat = np.random.default_rng(2).uniform(size=(10, 10))
    im = Image.open(io.BytesIO(similarity_heatmap(mat, [f"loc{i:02d}" for i in range(10)], "t")))
    assert im.mode == "P"
    colours = {tuple(c) for c in np.asarray(im.convert("RGB")).reshape(-1, 3)}
    shades = {tuple(lut("viridis")[int(np.round(k / (SHADES - 1) * 255))]) for k in range(SHADES)}
    assert len(colours - shades - {(0, 0, 0), (255, 255, 255)}) == 0  # viridis shades, black, white only
