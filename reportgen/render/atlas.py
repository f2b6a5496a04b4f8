"""Atlases: one picture holding many small ones, each shown on its own by a CSS crop.

A report shows every filter of a layer several times: in the layer's grid, in its own
section of the filter pages, as the match of a filter at every other location, beside
its feature maps. Writing a file for each of those made the number of files grow with
the number of filters (5,760 of the example's 6,312 pictures). Instead each (run, layer)
has a few pictures whose cells are addressed by position: an ``Atlas`` says where item
``i`` lies, and the pages crop it out with an attribute list (``width`` and negative
``margin`` on the image, ``width``/``height`` and ``overflow: hidden`` on the link around
it; see ``render.pages.crop``). No script is involved: a page without JavaScript, offline,
shows the same crops.

Per-filter atlases are drawn at a few picture pixels per weight (``views.filter_atlas``); the
page enlarges a crop with ``image-rendering: pixelated``, so a 3 x 3 kernel shown 128 CSS px
wide is nine sharp squares drawn from a few hundred bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Atlas:
    """Where the cells of a grid picture lie, in picture pixels.

    Cell ``k`` (in drawing order) is at column ``k % cols``, row ``k // cols``; its box
    (its ``margin`` included) starts at ``(col * cell_w, row * cell_h)`` and is ``cell_w``
    x ``cell_h``. ``scale``: how much the grid was shrunk after drawing (1 unless a
    single cell was wider than the content column). Item ``i`` (a filter, a channel)
    occupies ``item_cells`` cells from cell ``position[i] * item_cells`` (an activation
    grid draws its most active channel first; None: ``i * item_cells``); a filter atlas
    gives each filter a row. ``density``: picture px per CSS px at natural size.
    """

    path: str
    width: int
    height: int
    cols: int
    cell_w: int
    cell_h: int
    margin: int = 0
    density: float = 1
    scale: float = 1.0
    position: tuple[int, ...] | None = None
    item_cells: int = 1

    def cell(self, i: int, col: int = 0) -> int:
        """The cell of item ``i``'s ``col``-th picture."""
        k = self.position[i] if self.position is not None else i
        return int(k) * self.item_cells + col

    def box(self, cell: int, span: int = 1, inner: bool = True, rows: int = 1) -> tuple[float, float, float, float]:
        """(x, y, w, h) in picture px of ``cell`` and the ``span - 1`` cells after it on its
        row, and the same cells of the ``rows - 1`` rows below; ``inner``: without the margin
        around the cells."""
        row, col = divmod(int(cell), self.cols)
        m = self.margin if inner else 0
        x, y = col * self.cell_w + m, row * self.cell_h + m
        w, h = span * self.cell_w - 2 * m, rows * self.cell_h - 2 * m
        s = self.scale
        return x * s, y * s, w * s, h * s


def grid_atlas(path: str, size: tuple[int, int], cols: int, cell_w: int, cell_h: int, margin: int,
               density: float, order: np.ndarray | None = None) -> Atlas:
    """The atlas of a picture drawn by ``tiles.grid`` (cells of ``cell_w`` x ``cell_h`` px in
    ``cols`` columns), saved with pixel ``size`` (width, height): shrunk to fit the content
    column when ``cols * cell_w`` was wider. ``order``: the item drawn in each cell."""
    position = None
    if order is not None:
        pos = np.empty(len(order), dtype=np.int64)
        pos[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
        position = tuple(int(p) for p in pos)
    return Atlas(path, int(size[0]), int(size[1]), cols, cell_w, cell_h, margin, density,
                 size[0] / (cols * cell_w), position)


__all__ = ["Atlas", "grid_atlas"]
