"""The per-run task: one run's every per-run analysis, with its model loaded once.

``run_task`` is a pure, picklable top-level function of a small ``RunTask`` value, so any
executor (reportgen.run.executors) can run it: in the build's process, in a local process
pool or on a Ray cluster. Its only side effect is the content-addressed cache, which is
safe to share between processes (entries are written atomically under the digest of
their inputs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from reportgen.core.cache import Cache, file_digest
from reportgen.core.results import RunResult
from reportgen.core.spill import Spill
from reportgen.load.images import LoadedImage, load_image
from reportgen.load.spec import ReportSpec, load_spec
from reportgen.run.conversion import check_conversion
from reportgen.run.crossmodel import cross_model_runs, cross_shared_images
from reportgen.run.extension_parts import run_extensions
from reportgen.run.layers import analyse_run, shared_images
from reportgen.run.model import LazyModel, ModelNeeded
from reportgen.run.trace import run_trace
from reportgen.run.units import run_units

Log = Callable[[str], None]


@dataclass(frozen=True)
class RunTask:
    """What one per-run task needs; plain strings, so it travels to any process or machine."""

    spec_path: str  # the spec file; a worker loads it once and keeps it for its next tasks
    run_key: str  # which of the spec's runs
    device: str  # a resolved torch device: "cpu", "cuda", "cuda:1"
    cache_dir: str | None  # the content-addressed cache (reportgen.core.cache); None: no cache
    threads: int = 0  # torch threads for this task's process (0: leave torch's choice)
    spill_dir: str | None = None  # where heavy arrays go after the task (reportgen.core.spill); None: kept


def run_task(task: RunTask, log: Log | None = None, cached_only: bool = False) -> RunResult | None:
    """Load the run's model (only if some result is not cached) and compute its layers
    (weights, statistics, maps, comparison features, chains), unit views, numeric trace and
    the active extensions' per-run parts. ``log`` gets progress lines (in-process only).
    ``cached_only``: return None, having written nothing, if anything would need the model."""
    log = log or (lambda msg: None)
    if task.threads and torch.get_num_threads() != task.threads:
        torch.set_num_threads(task.threads)
    spec = spec_for(task.spec_path)
    run = next(r for r in spec.runs if r.key == task.run_key)
    device = torch.device(task.device)
    cache = Cache(task.cache_dir)
    images = _images(run)
    cross = cross_shared_images(spec) if run.key in {r.key for r in cross_model_runs(spec).values()} else []
    model = LazyModel(spec, run, device, load=not cached_only)
    spill = Spill(task.spill_dir)
    try:
        result = analyse_run(spec, run, device, images, shared_images(spec).get(run.model.name, []), cache,
                             cross, model=model, spill=spill)
        result.unit_notes = run_units(spec, result, images, model, device, cache, log)
        result.trace_notes = run_trace(spec, result, model)
        result.extras = run_extensions(spec, result, images, model, device, cache, spill)
        result.conversion = check_conversion(run, images, model, cache)
    except ModelNeeded:
        return None
    for lr in result.layers:
        spill.strip(lr)
    result.images = [_pixels_only(im) for im in result.images]
    result.shared_shown = [_pixels_only(im) for im in result.shared_shown]
    result.cache_hits, result.cache_misses = dict(cache.hits), dict(cache.misses)
    result.cache_warnings = list(cache.warnings)
    return result


# Per process: the spec of the build (tasks of one build share it) and the last run's images
# (runs of one model usually see the same files, so they are read once per input spec).
_SPECS: dict[tuple[str, str], ReportSpec] = {}
_IMAGES: dict[tuple[Path, object], LoadedImage] = {}


def spec_for(path: str) -> ReportSpec:
    """The loaded spec of ``path``, read again only when the file's content changed."""
    key = (str(Path(path).resolve()), file_digest(Path(path)))
    if key not in _SPECS:
        _SPECS.clear()
        _SPECS[key] = load_spec(path)
    return _SPECS[key]


def remember_spec(spec: ReportSpec) -> None:
    """Let tasks in this process use the sequencer's own spec object instead of loading it again."""
    _SPECS.clear()
    _SPECS[(str(spec.path.resolve()), file_digest(spec.path))] = spec


def _images(run) -> list[LoadedImage]:
    """The run's test images at its input spec; only the previous run's images are kept."""
    fresh = {}
    for p in run.images:
        key = (p, run.input)
        fresh[key] = _IMAGES[key] if key in _IMAGES else load_image(p, run.input)
    _IMAGES.clear()
    _IMAGES.update(fresh)
    return list(fresh[(p, run.input)] for p in run.images)


def _pixels_only(im: LoadedImage) -> LoadedImage:
    """The image as later steps use it (pixels shown on pages), without the network's input tensor."""
    return dataclasses.replace(im, tensor=None)
