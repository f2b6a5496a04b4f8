"""Atlases: every crop a page asks for shows exactly the picture it names.

The filter pages show each filter, its kernels, its matches and its feature maps as crops
of a few shared pictures (render/atlas.py). These tests cut the crop boxes out of the
drawn pictures and compare them with the filter, kernel or map computed independently
with numpy, and check the Markdown a crop becomes.
"""

from __future__ import annotations

import io
import re

import matplotlib
import numpy as np
import pytest
from PIL import Image

from reportgen.render.colour import encode_png, png_size
from reportgen.render.views import (ACTIVATION_SHADES, MAP_CSS, activation_atlas, activation_grid, filter_atlas, filter_atlas_cells)


def _cut(img: np.ndarray, box) -> np.ndarray:
    x, y, w, h = (int(round(v)) for v in box)
    return img[y:y + h, x:x + w]


def _shared_rgb(w: np.ndarray, s: float) -> np.ndarray:
    """(C=3, kh, kw) -> (kh, kw, 3) uint8 on the symmetric scale, as numpy computes it."""
    return np.round(np.clip(0.5 + 0.5 * w / s, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def _grey(x: np.ndarray, s: float) -> np.ndarray:
    return np.round(np.clip(0.5 + 0.5 * x / s, 0, 1) * 255)


@pytest.mark.parametrize("kernel", [(5, 5), (3, 7), (1, 1)])
def test_filter_atlas_crops_are_the_filter_its_kernels_and_its_matches(kernel):
    rng = np.random.default_rng(1)
    kh, kw = kernel
    w = rng.normal(size=(6, 3, kh, kw))
    other = rng.normal(size=(6, 3, kh, kw))
    idx = np.array([4, -1, 0, 5, 1, 2])
    s = 2 * max(np.abs(w).max(), np.abs(other).max())
    img, columns = filter_atlas(w, s, [(other, idx)], max_inputs=64)
    data = encode_png(img)
    atlas = filter_atlas_cells("a.png", png_size(data), (kh, kw), columns)
    up = columns["upscale"]
    assert up * max(kh, kw) >= 12
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    for i in range(6):
        tile = _cut(decoded, atlas.box(atlas.cell(i)))
        assert tile.shape == (kh * up, kw * up, 3)
        assert np.abs(tile[::up, ::up].astype(int) - _shared_rgb(w[i], s)).max() <= 1, i
        first, count = columns["inputs"]
        assert count == 3
        row = _cut(decoded, atlas.box(atlas.cell(i, first), span=count))
        for c in range(3):  # kernel c of filter i, grey on the same scale, 2 px apart
            x0 = c * (kw * up + 2)
            got = row[::up, x0:x0 + kw * up:up, 0].astype(int)
            assert np.abs(got - _grey(w[i, c], s)).max() <= 1, (i, c)
        match = _cut(decoded, atlas.box(atlas.cell(i, columns["matches"][0])))
        if idx[i] < 0:
            assert (match == 255).all()
        else:
            assert np.abs(match[::up, ::up].astype(int) - _shared_rgb(other[idx[i]], s)).max() <= 1, i


def test_filter_atlas_of_many_inputs_shows_the_first_64_and_the_mean_tile():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(3, 80, 3, 3))
    s = np.abs(w).max()
    img, columns = filter_atlas(w, s, [], max_inputs=64)
    assert columns["inputs"] == (1, 64) and columns["matches"] == []
    atlas = filter_atlas_cells("a.png", (img.shape[1], img.shape[0]), (3, 3), columns)
    up = columns["upscale"]
    mean = w.mean(axis=1)
    tile = _cut(img, atlas.box(atlas.cell(2)))
    assert np.abs(tile[::up, ::up, 0].astype(int) - _grey(mean[2], np.abs(mean).max())).max() <= 1
    last = _cut(img, atlas.box(atlas.cell(2, 64)))
    assert np.abs(last[::up, ::up, 0].astype(int) - _grey(w[2, 63], s)).max() <= 1


@pytest.mark.parametrize("shape", [(7, 6, 8), (40, 3, 3), (3, 90, 800)])
def test_activation_atlas_finds_each_channel_in_the_ranked_grid(shape):
    """The grid draws the most active channel first (and shrinks a too-wide grid): the atlas's
    crop of channel i is channel i's map on the image's one colour scale."""
    rng = np.random.default_rng(3)
    maps = np.abs(rng.normal(size=shape)) * rng.uniform(0.1, 2, size=(shape[0], 1, 1))
    if shape[2] > 700:  # shrunk to fit the column (box filter): smooth maps stay comparable
        yy, xx = np.mgrid[:shape[1], :shape[2]]
        maps = 1 + np.sin(yy / 30 + xx / 120 + 2 * np.arange(shape[0])[:, None, None])
    img, order = activation_grid(maps)
    atlas = activation_atlas("g.png", maps.shape, (img.shape[1], img.shape[0]), order)
    viridis = matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3]
    for i in range(shape[0]):
        crop = _cut(np.asarray(img), atlas.box(atlas.cell(i)))
        h, w = crop.shape[:2]
        assert abs(h / w - shape[1] / shape[2]) < 0.05, (h, w)
        shade = np.round(maps[i] / maps.max() * (ACTIVATION_SHADES - 1)) / (ACTIVATION_SHADES - 1)
        want = np.round(viridis[np.round(shade * 255).astype(int)] * 255)  # in the grid's shades
        # sample the centre of each map pixel (the grid may have been shrunk by a fraction)
        ys = ((np.arange(shape[1]) + 0.5) * h / shape[1]).astype(int)
        xs = ((np.arange(shape[2]) + 0.5) * w / shape[2]).astype(int)
        got = crop[ys][:, xs].astype(int)
        # the label stamp covers the top-left corner of every map: compare the rest
        keep = np.ones(shape[1:], bool)
        keep[: max(1, shape[1] // 3 + 1), : max(1, shape[2] // 2 + 1)] = False
        if atlas.scale < 1:  # the box filter mixes the outermost map pixels with the margin
            keep[[0, -1], :] = keep[:, [0, -1]] = False
        if shape[1] * shape[2] > 9:
            tol = 1 if atlas.scale == 1 else 16
            assert np.abs(got - want)[keep].max() <= tol, i
    x, y, w, h = atlas.box(atlas.cell(0))
    assert atlas.scale < 1 or max(w, h) / atlas.density >= MAP_CSS  # each map at least 96 CSS px
    assert (atlas.scale < 1) == (shape[2] > 700)  # only the 800-px-wide maps overflow the column


def test_a_crop_is_markdown_the_page_builders_turn_into_one_cropped_image():
    """Python-Markdown with attr_list (what MkDocs, ProperDocs and Zensical run) makes the crop
    one image: the whole atlas in a box of the cell's size, placed and enlarged by its style."""
    import markdown

    from reportgen.render.atlas import Atlas
    from reportgen.render.pages import crop

    atlas = Atlas("img/a/b/filter_atlas.png", 40, 70, cols=4, cell_w=10, cell_h=14, margin=1, item_cells=4)
    text = crop(atlas, atlas.cell(2, 3), "#filter-2", "filter 2 [x]", "../", width=48)
    html = markdown.markdown(text, extensions=["attr_list"])
    a = re.search(r'<a href="#filter-2"><img alt="filter 2 \[x\]" class="rg-crop" loading="lazy" '
                  r'src="../img/a/b/filter_atlas.png" style="([^"]+)" /></a>', html)
    assert a, html
    # cell 11 = row 2, column 3; inner box x = 31, y = 29, 8 x 12 px, shown 48 px wide: 6 CSS px per px
    assert a.group(1) == "width:8px;height:12px;object-position:-31px -29px;--z:6"
    plain = markdown.markdown(crop(atlas, 0, None, "t"), extensions=["attr_list"])
    assert plain.startswith('<p><img alt="t" class="rg-crop"') and "<a" not in plain  # the lightbox's


def test_the_report_css_crops_and_enlarges_with_square_pixels():
    from importlib.resources import files

    css = files("reportgen.render.pages").joinpath("report.css").read_text(encoding="utf-8")
    rule = re.search(r"img\.rg-crop \{([^}]*)\}", css).group(1)
    for decl in ("object-fit: none", "zoom: var(--z)", "max-width: none", "image-rendering: pixelated"):
        assert decl in rule, decl
    assert re.search(r"max-width: 44\.9375em\) \{ \.md-typeset img\.rg-crop\.rg-wide \{ zoom: calc\(var\(--z\) / 2\)", css)


def test_unit_grid_cells_hold_each_units_picture_and_its_top_crops():
    """A unit card is cell i of each view's grid and row i of the top crops: cut out, they are
    unit i's own tiles, enlarged by whole pixels."""
    from types import SimpleNamespace

    from reportgen.render.atlas import grid_atlas
    from reportgen.render.unit_cards import unit_grids_and_cells, unit_tiles

    rng = np.random.default_rng(4)
    n, k = 11, 3
    u = SimpleNamespace(plain=rng.uniform(size=(n, 3, 9, 9)), fourier=None, decoded=None,
                        nf=rng.uniform(size=(n, 3, 9, 9)), patches=rng.uniform(size=(n, k, 3, 7, 7)),
                        deconv=None, guided=None, stuck=np.zeros(n, bool), inactive=np.zeros(n, bool))
    tiles = unit_tiles(u)
    for name, (img, (cols, cw, ch, margin)) in unit_grids_and_cells(u).items():
        atlas = grid_atlas(name, (img.shape[1], img.shape[0]), cols, cw, ch, margin, 2)
        if name == "top_patches":
            for i in (0, 5, 10):
                for j in range(k):
                    cell = _cut(np.asarray(img), atlas.box(i * k + j))
                    up = cell.shape[0] // 7
                    want = np.round(np.moveaxis(u.patches[i, j], 0, -1) * 255)
                    # the unit's number is stamped on its first crop's corner: compare the bottom half
                    assert np.abs(cell[::up, ::up].astype(int) - want)[4:].max() <= 1, (i, j)
            continue
        for i in (0, 5, 10):
            cell = _cut(np.asarray(img), atlas.box(atlas.cell(i)))
            up = cell.shape[0] // 9
            assert cell.shape[:2] == (9 * up, 9 * up) and 9 * up >= 2 * 48
            assert np.abs(cell[::up, ::up].astype(int) - tiles[name][i])[5:].max() <= 1, (name, i)


def test_a_row_of_many_kernels_fits_the_column_and_halves_on_a_phone():
    import markdown

    from reportgen.render.atlas import Atlas
    from reportgen.render.pages import NARROW_CSS, crop

    atlas = Atlas("a.png", 66 * 14, 14 * 3, cols=66, cell_w=14, cell_h=14, margin=1, item_cells=66)
    html = markdown.markdown(crop(atlas, atlas.cell(1, 1), None, "inputs", "", 24, 64, 640), extensions=["attr_list"])
    box = re.search(r'class="([^"]+)" .*style="width:([\d.]+)px;height:([\d.]+)px;[^"]*--z:([\d.]+)"', html)
    assert box.group(1) == "rg-crop rg-wide"
    zoom = float(box.group(4))
    assert abs(float(box.group(2)) * zoom - 640) < 0.05 and float(box.group(3)) == 12  # the row, 640 CSS px
    small = markdown.markdown(crop(atlas, atlas.cell(1), "#x", "t", "", 48), extensions=["attr_list"])
    assert 'class="rg-crop"' in small and 48 <= NARROW_CSS


def test_a_picture_key_changes_with_the_renderer_not_only_with_the_inputs(monkeypatch):
    """A cached picture drawn by other code (another colour map, layout or encoder) is not reused."""
    from reportgen.render import keys

    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    before = keys.picture_key("png", "grid", a)
    assert keys.picture_key("png", "grid", a) == before and keys.picture_key("png", "grid", a + 1) != before
    monkeypatch.setattr(keys, "render_code", lambda: "0" * 64)
    assert keys.picture_key("png", "grid", a) != before
