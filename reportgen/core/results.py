"""The plain result types every step of a build shares.

The per-run task (reportgen.run) produces them, the reduce steps add numbers to them,
rendering reads them. They live below every step so that no step imports the
sequencer (reportgen.build).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from reportgen.core.cache import register

if TYPE_CHECKING:  # the types of fields; the values are made by the load step
    from reportgen.load.images import LoadedImage
    from reportgen.load.spec import Run


@dataclass
class LayerResult:
    name: str
    type: str
    info: dict  # kernel_size, stride, padding, output_shape, ... (JSON-ready)
    weight: np.ndarray | None  # (N, ...) float32 on the CPU
    relu_applied: bool  # the activation is a ReLU or ReLU6 (unit views rectify only then)
    stats: dict[str, np.ndarray] | None = None  # ChannelStats.result()
    maps: list[np.ndarray] = field(default_factory=list)  # (C, H, W) per shown image
    health: dict[str, np.ndarray] | None = None
    features: np.ndarray | None = None  # (S, C) sampled positions of the shared images
    key: str = ""  # cache key: a digest of everything this result depends on
    shared_maps: list[np.ndarray] = field(default_factory=list)  # (C, H, W) of the first shared images
    activation: str = "none"  # the activation kind the statistics and maps come after
    activation_source: str = ""  # how it was found, e.g. "module 'act1'", "F.silu in forward"
    activation_note: str = ""  # with no activation found: why (the output feeds a residual add, ...)
    cross_pooled: np.ndarray | None = None  # (N, C, G, G) images all models see, pooled to a G x G grid
    cross_mean: np.ndarray | None = None  # (N, C) the same images' spatial means
    feature_images: np.ndarray | None = None  # (S,) int: the shared image each row of ``features`` comes from
    chain: list[dict] | None = None  # weighted layers from the input to this one (reportgen.run.chain), for alignment
    chain_note: str | None = None  # why there is no chain (a residual add, a model fx cannot trace, ...)
    spilled: list[str] = field(default_factory=list)  # heavy fields kept on disk (reportgen.core.spill), not here


register(LayerResult)  # cached per layer ("layer" entries)


@dataclass
class RunResult:
    """Everything the per-run task (reportgen.run.run_task) found for one run."""

    run: Run
    layers: list[LayerResult]
    images: list[LoadedImage]  # the images shown (first max_images)
    n_images: int
    checkpoint_sha256: str | None
    notes: list[str] = field(default_factory=list)
    shared_shown: list[LoadedImage] = field(default_factory=list)  # first shared images (stages view)
    units: dict = field(default_factory=dict)  # layer -> units.UnitViews (analyses.units)
    trace: dict | None = None  # {"trace": analysis.trace.Trace, "fd_error": float, "names": [...]}
    extras: dict = field(default_factory=dict)  # extension name -> its run_part value (reportgen.core.extension)
    conversion: dict | None = None  # an ONNX run: its converted module against onnxruntime (reportgen.run.conversion)
    # Warnings of the unit views and the trace (the build lists them after every run's notes).
    unit_notes: list[str] = field(default_factory=list)
    trace_notes: list[str] = field(default_factory=list)
    # The task's own cache counters and warning, added to the build's (a worker has its own Cache).
    cache_hits: dict[str, int] = field(default_factory=dict)
    cache_misses: dict[str, int] = field(default_factory=dict)
    cache_warnings: list[str] = field(default_factory=list)
