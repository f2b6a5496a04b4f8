"""Tiles and grids: exact pixel values, NaN flagged, marks drawn, no input mutated."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from reportgen.render import tiles as T
from reportgen.render.colour import NAN_RGB, apply_lut, encode_png, lut
from reportgen.render.views import activation_grid, filter_views


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


def test_lut_matches_matplotlib():
    import matplotlib

    table = lut("viridis")
    ref = matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3]
    assert np.abs(table / 255 - ref).max() <= 0.5 / 255 + 1e-9


def test_png_roundtrip():
    img = np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(encode_png(img))))
    np.testing.assert_array_equal(back, img)
    assert encode_png(img) == encode_png(img)  # deterministic bytes


def test_filter_views_by_layer_kind():
    rng = np.random.default_rng(0)
    assert set(filter_views(rng.normal(size=(8, 3, 5, 5)))) == {"filters_per_layer", "filters_per_filter"}
    assert set(filter_views(rng.normal(size=(8, 4, 3, 3)))) == {"filters_mean", "filters_l2", "filters_channels"}
    assert set(filter_views(rng.normal(size=(8, 1, 3, 3)))) == {"filters_mean", "filters_l2", "filters_per_filter"}
    heat = filter_views(rng.normal(size=(10, 2000)))["weights_heatmap"]
    assert heat.shape[1] <= 512


def test_heatmap_block_mean_against_numpy():
    m = np.arange(12.0).reshape(2, 6) - 6
    out = T._block_mean(m, max_side=3)
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
    from reportgen.pages import relink

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
