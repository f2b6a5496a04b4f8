"""The report dict: every number of a build, as report.json holds it
(docs/reference/report-json.md), from the runs' results and the comparisons."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from reportgen import __version__
from reportgen.analysis.evidence import CONFIDENCE, MAX_RATE, MIN_IMAGES
from reportgen.analysis.findings import Z_ABOVE_CHANCE
from reportgen.analysis.gabor import GABOR_MARGIN
from reportgen.core.report_json import SCHEMA_VERSION
from reportgen.load.spec import ReportSpec
from reportgen.reduce.compare import GABOR_MIN_LIVE, Comparisons, gabor_summary

FILTER_KEYS = ["l2_norm", "norm_over_init", "max_abs", "near_zero_fraction", "dead", "nonfinite",
               "duplicate_of", "opposite_of", "gabor_score", "dog_score"]



CHANNEL_KEYS = ["mean", "max", "active_fraction", "active_images", "saturated_images", "never_active",
                "never_active_label", "saturated", "saturated_label"]



def report_dict(spec: ReportSpec, results, comp: Comparisons, device: torch.device) -> dict:
    """The machine-readable report (documented in docs/reference/report-json.md)."""
    min_score = spec.analyses.gabor.min_score
    runs = []
    for r in results:
        layers = []
        for lr in r.layers:
            entry = {
                "name": lr.name,
                "type": lr.type,
                "weight_shape": list(lr.weight.shape) if lr.weight is not None else None,
                "relu_applied": lr.relu_applied,
                "activation": lr.activation,
                "activation_source": lr.activation_source,
                "activation_note": getattr(lr, "activation_note", ""),
                **lr.info,
                "filters": table_rows(lr.health, FILTER_KEYS),
                "channels": table_rows(lr.stats, CHANNEL_KEYS),
            }
            fits = comp.gabor.get((r.run.key, lr.name))
            if fits:
                entry["gabor"] = gabor_summary(fits, min_score)
            if lr.name in r.units:
                entry["units"] = _units_json(r.units[lr.name])
            if r.trace:
                lt = next((t for t in r.trace["trace"].layers if t.name == lr.name), None)
                if lt is not None:
                    entry["trace"] = {k: getattr(lt, k).tolist() for k in
                                      ("Z", "A", "dZ", "grad_weight", "grad_bias", "weight", "bias")}
                    entry["trace"]["activation"] = lt.activation_kind
            entry["summary"] = layer_summary(entry)
            layers.append(entry)
        trace = None
        if r.trace:
            t = r.trace["trace"]
            trace = {"inputs": t.x.tolist(), "targets": t.y.tolist(), "output": t.output.tolist(),
                     "loss": t.loss, "loss_kind": t.loss_kind, "finite_difference_max_error": r.trace["fd_error"],
                     "names": r.trace["names"], "layers": [lt.name for lt in t.layers]}
        runs.append({
            "key": r.run.key,
            **({"trace": trace} if trace else {}),
            "model": r.run.model.name,
            "location": r.run.location,
            "checkpoint": _display_path(r.run.checkpoint or r.run.torchscript or r.run.onnx or r.run.exported, spec),
            "checkpoint_sha256": r.checkpoint_sha256,
            "notes": list(getattr(r, "notes", [])),
            **({"conversion": r.conversion} if getattr(r, "conversion", None) else {}),
            "images": [_display_path(p, spec) for p in r.run.images],
            "input": r.run.input.model_dump(mode="json"),
            "layers": layers,
        })
    comparisons = [{"model": model, "layer": layer, **c.to_dict()} for (model, layer), c in comp.layers.items()]
    reference = dict(comp.reference) if comp.reference else None
    if reference:
        reference["checkpoint"] = _display_path(Path(reference["checkpoint"]), spec) if reference["checkpoint"] else None
    return {
        "schema_version": SCHEMA_VERSION,
        "report": spec.report,
        "title": spec.title,
        "spec": _display_path(spec.path.resolve(), spec),
        "spec_sha256": sha256(spec.path),
        "versions": {"reportgen": __version__, "torch": torch.__version__, "numpy": np.__version__},
        "device": str(device),
        "thresholds": {**spec.analyses.health.model_dump(), "gabor_min_score": min_score,
                       "gabor_min_live": GABOR_MIN_LIVE, "similar": spec.analyses.compare.similar,
                       "above_chance_sd": Z_ABOVE_CHANCE, "gabor_margin": GABOR_MARGIN,
                       "evidence_confidence": CONFIDENCE, "evidence_max_rate": MAX_RATE,
                       "evidence_min_images": MIN_IMAGES},
        "runs": runs,
        "comparisons": comparisons,
        "reference": reference,
        "model_comparisons": [pair.to_dict() for pair in comp.models],
    }



def _units_json(u) -> dict:
    n = len(u.patches)

    def val(a, i):
        return None if a is None else json_value("", a[i])

    def field(name):  # fields missing from views cached before they existed
        return getattr(u, name, None)

    inactive, fidelity = field("inactive"), field("fidelity")
    return {
        "receptive_field": list(u.rf_size), "jump": list(u.rf_jump), "image_size": list(u.image_size),
        "decoded": u.decoded is not None, "decode_note": u.decode_note, "pooling": field("pooling"),
        "top_n": int(u.patches.shape[1]),
        "inactive_count": None if inactive is None else int(np.sum(inactive)),
        "median_fidelity": None if fidelity is None or not np.isfinite(fidelity).any()
        else float(np.nanmedian(fidelity)),
        "units": [{"index": i, "inactive": val(inactive, i), "max_activation": val(field("max_activation"), i),
                   "plain_loss": val(u.plain_loss, i), "stuck": val(u.stuck, i),
                   "plain_outside": val(field("plain_outside"), i),
                   "plain_clipped_loss": val(field("plain_clipped"), i),
                   "fourier_loss": val(u.fourier_loss, i),
                   "fourier_outside": val(field("fourier_outside"), i),
                   "fourier_clipped_loss": val(field("fourier_clipped"), i),
                   "fidelity": val(fidelity, i),
                   "colour_selectivity": json_value("", u.colour_index[i]),
                   "top_values": [json_value("", v) for v in u.patch_values[i] if np.isfinite(v)],
                   "top_images": [int(j) for j in u.patch_images[i] if j >= 0],
                   "top_positions": [] if field("patch_positions") is None
                   else [[int(p) for p in pos] for pos in u.patch_positions[i] if pos[0] >= 0]}
                  for i in range(n)],
    }



def table_rows(arrays: dict[str, np.ndarray] | None, keys: list[str]) -> list[dict]:
    if not arrays:
        return []
    keys = [k for k in keys if k in arrays]
    n = len(arrays[keys[0]])
    return [{"index": i, **{k: json_value(k, arrays[k][i]) for k in keys}} for i in range(n)]



def json_value(key: str, v):
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if key in ("duplicate_of", "opposite_of"):
        return None if int(v) < 0 else int(v)
    if isinstance(v, (np.integer, int)):
        return int(v)
    f = float(v)
    return f if np.isfinite(f) else None  # JSON has no NaN; null means "not a number"



def layer_summary(layer: dict) -> dict:
    f, c = layer["filters"], layer["channels"]
    norms = [x["l2_norm"] for x in f if x["l2_norm"] is not None]
    nz = [x["near_zero_fraction"] for x in f if x["near_zero_fraction"] is not None]
    out = {
        "filters": len(f),
        "dead": sum(x["dead"] for x in f),
        "nonfinite": sum(x["nonfinite"] for x in f),
        "duplicates": sum(x.get("duplicate_of") is not None for x in f),
        "on_off_pairs": sum(x.get("opposite_of") is not None for x in f),
        "median_l2_norm": float(np.median(norms)) if norms else None,
        "near_zero_fraction": float(np.mean(nz)) if nz else None,
        "channels": len(c),
        "never_active": sum(x["never_active"] for x in c),
        "never_active_label": sum(x.get("never_active_label", False) for x in c),
        "saturated": sum(x["saturated"] for x in c),
        "saturated_label": sum(x.get("saturated_label", False) for x in c),
    }
    if "gabor" in layer:
        out["gabor_like"] = layer["gabor"]["share_gabor_like"]
    init = layer.get("init_check")
    out["looks_like_init"] = init["looks_like_init"] if init else None
    out["init_family"] = init["family"] if init else None
    # Filters of channels silent on every test image against those of active ones, both against
    # the initial norm: channels that died in training kept the size they started with.
    out["never_active_norm_over_init"], out["active_norm_over_init"] = (
        _median([x.get("norm_over_init") for x, ch in zip(f, c) if ch["never_active"] and not x["dead"]]),
        _median([x.get("norm_over_init") for x, ch in zip(f, c) if not ch["never_active"] and not x["dead"]]))
    return out



def _median(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.median(vals)) if vals else None



def sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()



def _display_path(p: Path | None, spec: ReportSpec) -> str | None:
    if p is None:
        return None
    p = Path(p).resolve()
    for base in (Path.cwd(), spec.base_dir):
        try:
            return p.relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
    return p.as_posix()

