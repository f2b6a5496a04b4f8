"""Trust in a converted ONNX graph: its torch module against onnxruntime on the report's images.

Every view of an ONNX model is computed on the torch module the graph was converted to
(reportgen.load.formats.load_onnx). This check runs the run's own test images through that
module and through onnxruntime (on the CPU, the original file as it is, none of reportgen's
rewrites) and states the largest difference between their outputs: ``runs[].conversion`` in
report.json and a line on the location page. A difference above ``TOLERANCE`` times the
outputs' largest magnitude (at least 1) is a build warning. The result is cached under the
file's content, the images and both libraries' versions.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from reportgen.core.batching import one_image_at_a_time, output_tensors
from reportgen.core.cache import Cache, digest
from reportgen.load.images import LoadedImage
from reportgen.load.models import model_kind
from reportgen.load.spec import Run
from reportgen.run.hooks import inference
from reportgen.run.model import LazyModel

TOLERANCE = 1e-4  # of max(1, the largest |output| onnxruntime gives)


def check_conversion(run: Run, images: list[LoadedImage], model: LazyModel, cache: Cache) -> dict | None:
    """The comparison for an ONNX run with test images (None for other runs): a JSON-ready dict
    with ``reference`` (onnxruntime's version), ``images``, ``outputs``, ``max_abs_difference``,
    ``max_abs_output``, ``tolerance`` (absolute, for these outputs), ``within``, ``rewrites``
    (what reportgen did to the graph before converting it) and ``one_image_at_a_time``;
    or ``{"checked": False, "why": ...}`` when onnxruntime is missing or cannot run the file."""
    if model_kind(run.model) != "onnx" or not images:
        return None
    try:
        import onnxruntime
    except ImportError:
        return {"checked": False, "why": 'onnxruntime is not installed (pip install "reportgen[onnx]")'}
    key = digest("onnx-conversion-1", run.onnx, [im.digest for im in images], run.input.model_dump(),
                 onnxruntime.__version__, torch.__version__, str(model.device.type))
    found = cache.get("conversion", key)
    if found is None:
        found = _compare(run, images, model, onnxruntime)
        cache.put("conversion", key, found)
    return found


def _compare(run: Run, images: list[LoadedImage], lazy: LazyModel, onnxruntime) -> dict:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.log_severity_level = 3  # errors only: its warnings about unused initializers are noise here
    try:
        session = onnxruntime.InferenceSession(str(run.onnx), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
        return {"checked": False, "why": f"onnxruntime cannot load the file ({_first(exc)})"}
    (feed,) = session.get_inputs()[:1]
    dtype = np.float16 if feed.type == "tensor(float16)" else np.float32
    loaded = lazy.get()
    module, device = loaded.module, lazy.device
    diff, scale, outputs = 0.0, 0.0, 0
    with inference(module):
        for im in images:  # one at a time: the graph's batch may be fixed, and sizes may differ
            x = im.tensor[None]
            try:
                want = session.run(None, {feed.name: x.numpy().astype(dtype)})
            except Exception as exc:  # noqa: BLE001
                return {"checked": False, "why": f"onnxruntime cannot run the file on {im.path.name} ({_first(exc)})"}
            got = output_tensors(module(x.to(device)))
            if len(got) != len(want):
                return _result(math.inf, 0.0, 0, len(images), loaded, session,
                               f"the module gives {len(got)} outputs and onnxruntime {len(want)}")
            for g, w in zip(got, want):
                g = g.detach().to("cpu", torch.float64).numpy()
                w = np.asarray(w, dtype=np.float64)
                if g.shape != w.shape:
                    return _result(math.inf, 0.0, len(want), len(images), loaded, session,
                                   f"an output has shape {tuple(g.shape)} in torch and {tuple(w.shape)} in onnxruntime")
                if w.size:
                    d = np.abs(g - w)
                    diff = max(diff, float(np.nanmax(d)) if not np.isnan(d).all() else math.inf)
                    if np.isnan(g).sum() != np.isnan(w).sum():
                        diff = math.inf
                    finite = np.abs(w[np.isfinite(w)])
                    scale = max(scale, float(finite.max()) if finite.size else 0.0)
            outputs = len(want)
    return _result(diff, scale, outputs, len(images), loaded, session)


def _result(diff: float, scale: float, outputs: int, n_images: int, loaded, session, problem: str = "") -> dict:
    import onnxruntime

    facts = getattr(loaded.module, "reportgen_onnx", None)
    tolerance = TOLERANCE * max(1.0, scale)
    return {
        "checked": True,
        "reference": f"onnxruntime {onnxruntime.__version__} (CPU)",
        "images": n_images,
        "outputs": outputs,
        "max_abs_difference": diff if math.isfinite(diff) else None,
        "max_abs_output": scale,
        "tolerance": tolerance,
        "within": math.isfinite(diff) and diff <= tolerance and not problem,
        "problem": problem,
        "rewrites": list(getattr(facts, "rewrites", [])),
        "one_image_at_a_time": one_image_at_a_time(loaded.module),
    }


def conversion_warning(key: str, conversion: dict | None) -> str | None:
    """The build warning for a run's conversion check, if it calls for one."""
    if not conversion:
        return None
    if not conversion.get("checked"):
        return f"{key}: the ONNX conversion was not checked against onnxruntime: {conversion['why']}"
    if conversion["within"]:
        return None
    if conversion["problem"]:
        return f"{key}: the converted ONNX graph does not compute what onnxruntime does: {conversion['problem']}"
    return (f"{key}: the converted ONNX graph's outputs differ from onnxruntime's by up to "
            f"{_num(conversion['max_abs_difference'])} on the report's images (tolerance "
            f"{_num(conversion['tolerance'])}); its views may not show what the graph computes")


def _num(v) -> str:
    return "an undefined amount" if v is None else f"{v:.3g}"


def _first(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
