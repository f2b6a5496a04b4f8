"""Comparing different models of one report: linear CKA of every layer of one model
against every layer of another, on the images all models see.

Models may differ in architecture and input size, so their layers have different channel
counts and spatial sizes. Linear CKA compares representations of the same samples whatever
their width; the samples are the shared images, each seen by every model through its own
``input`` (resize, normalisation). For a conv layer, each image's maps are average-pooled
to a fixed ``CROSS_GRID`` x ``CROSS_GRID`` grid, so a row of one model and the same row of
another describe the same region of the same image; a pair involving a dense layer uses
one row per image (spatial means). See docs/reference/methods.md#comparing-models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reportgen.analysis.compare import linear_cka
from reportgen.run.crossmodel import CROSS_GRID, cross_model_runs

CHANCE_DRAWS = 8  # image shuffles behind each cell's chance level


@dataclass
class ModelPair:
    """Linear CKA of model A's layers (rows) against model B's layers (columns)."""

    models: tuple[str, str]
    runs: tuple[str, str]  # the run of each model whose activations are compared
    layers: tuple[list[str], list[str]]
    cka: np.ndarray  # (La, Lb) in [0, 1]; NaN where a layer is constant on the images
    chance: np.ndarray  # (La, Lb) mean CKA with B's images shuffled: the level unrelated layers reach
    n_images: int

    def to_dict(self) -> dict:
        return {"models": list(self.models), "runs": list(self.runs), "layers": [list(x) for x in self.layers],
                "images": self.n_images, "grid": CROSS_GRID,
                "cka": _rows(self.cka), "cka_chance": _rows(self.chance)}


def _rows(m: np.ndarray) -> list[list[float | None]]:
    return [[float(v) if np.isfinite(v) else None for v in row] for row in m]


def pair_features(pooled_a: np.ndarray | None, mean_a: np.ndarray, pooled_b: np.ndarray | None,
                  mean_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (S, Ca) and (S, Cb) matrices CKA compares for one pair of layers.

    pooled: (N, C, G, G) or None (a layer without spatial maps); mean: (N, C).
    Both pooled: S = N * G * G rows (image, grid cell); otherwise S = N (image).
    """
    if pooled_a is not None and pooled_b is not None:
        def rows(p: np.ndarray) -> np.ndarray:
            return p.transpose(0, 2, 3, 1).reshape(-1, p.shape[1])

        return rows(pooled_a), rows(pooled_b)
    return mean_a, mean_b


def cka_grid(layers_a: list[tuple], layers_b: list[tuple], chance_draws: int = 0,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Linear CKA of each of A's layers against each of B's, and its chance level.

    layers_*: per layer (pooled (N, C, G, G) or None, mean (N, C)), same N images in the same
    order on both sides. Returns (cka, chance), each (La, Lb). chance: the mean CKA over
    ``chance_draws`` shuffles of B's images (NaN when 0 draws or fewer than 2 images); with
    few samples CKA runs high even for unrelated layers, and this says how high.
    """
    out = np.full((len(layers_a), len(layers_b)), np.nan)
    chance = np.full_like(out, np.nan)
    n = len(layers_a[0][1]) if layers_a else 0
    rng = np.random.default_rng(seed)
    perms = [p for p in (rng.permutation(n) for _ in range(4 * chance_draws)) if (p != np.arange(n)).any()]
    perms = perms[:chance_draws]
    for i, (pa, ma) in enumerate(layers_a):
        for j, (pb, mb) in enumerate(layers_b):
            x, y = pair_features(pa, ma, pb, mb)
            if x.shape[0] < 2:
                continue
            out[i, j] = linear_cka(x, y)
            if perms:
                draws = [linear_cka(x, pair_features(pa, ma, None if pb is None else pb[p], mb[p])[1])
                         for p in perms]
                chance[i, j] = float(np.nanmean(draws)) if np.isfinite(draws).any() else np.nan
    return out, chance


def cross_model_cka(spec, results, spill=None) -> list[ModelPair]:
    """One ModelPair per pair of compared models, in spec order. ``spill``: where the
    pooled grids were spilled (reportgen.core.spill), if they were."""
    def pooled(lr):
        return spill.load(lr, "cross_pooled") if spill is not None else lr.cross_pooled

    chosen = cross_model_runs(spec)
    by_key = {r.run.key: r for r in results}
    picked = []
    for name, run in chosen.items():
        r = by_key.get(run.key)
        if r is None:
            continue
        layers = [lr for lr in r.layers if lr.cross_mean is not None]
        if layers:
            picked.append((name, run.key, layers))
    pairs = []
    for i in range(len(picked)):
        for j in range(i + 1, len(picked)):
            (ma, ra, la), (mb, rb, lb) = picked[i], picked[j]
            grid, chance = cka_grid([(pooled(lr), lr.cross_mean) for lr in la],
                                    [(pooled(lr), lr.cross_mean) for lr in lb], CHANCE_DRAWS)
            pairs.append(ModelPair(models=(ma, mb), runs=(ra, rb),
                                   layers=([lr.name for lr in la], [lr.name for lr in lb]),
                                   cka=grid, chance=chance, n_images=int(la[0].cross_mean.shape[0])))
    return pairs
