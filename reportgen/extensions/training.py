"""Training trajectories: how each location's filters evolved over the checkpoints saved in
training (``TrainingExtension``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reportgen.analysis.trajectory import (LayerTrajectory, dead_over_steps, death_index, shrink_fit,
                                           stopped_moving, trajectory)
from reportgen.analysis.wording import listing
from reportgen.core.cache import register
from reportgen.core.errors import ModelLoadError
from reportgen.core.extension import Extension, RunContext

NAME = "training"
# A layer has stopped moving once each checkpoint interval moves it by less than this
# fraction of its size per training step (0.01% per step: 1% over a hundred steps).
STILL_PER_STEP = 1e-4
SHRINK_MIN_FALL = 4.0  # the dying filters' median norm must fall this many times for the shape fit


@dataclass
class TrainingRun:
    """One run's trajectories: layer name -> LayerTrajectory, and why a layer has none."""

    steps: list[int]
    layers: dict[str, LayerTrajectory] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


register(TrainingRun, LayerTrajectory)


def step_weights(run, path: Path, names: list[str], shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """The weights of the named layers in one step's checkpoint: {name: (N, ...) float32}.

    Weight names are ``<layer>.weight``, after stripping the model's ``checkpoint_prefix``;
    without one, a single unique prefix before them is accepted (``model.``, ``module.``).
    A step file may hold the whole state_dict or only these layers. A shape that differs
    from the final checkpoint's is an error (the files belong to another architecture).
    """
    from reportgen.load.models import read_checkpoint

    state = read_checkpoint(path, run.location, run.model.trusted, run.model.checkpoint_key)
    prefix = run.model.checkpoint_prefix
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    out = {}
    for name in names:
        key = f"{name}.weight"
        hits = [key] if key in state else [k for k in state if k.endswith("." + key)]
        if len(hits) != 1:
            continue
        w = state[hits[0]].detach().float().cpu().numpy()
        if name in shapes and tuple(w.shape) != tuple(shapes[name]):
            raise ModelLoadError(
                f"location '{run.location}': checkpoint {path}: {key} has shape {tuple(w.shape)}, the final "
                f"checkpoint's has {tuple(shapes[name])}; check the model's 'steps' and their files")
        if w.ndim >= 2:
            out[name] = w
    return out


# -- the numbers of one layer over steps: the dead rule, deaths, stillness ----------------------


def layer_summary(name: str, traj: LayerTrajectory, dead_threshold: float | None) -> dict:
    """One layer's trajectory as JSON-ready numbers; deaths need the dead threshold."""
    steps = [int(s) for s in traj.steps]
    out = {
        "layer": name,
        "steps": steps,
        "filters": int(traj.norms.shape[1]),
        "median_norm": _floats(np.median(traj.norms, axis=1)),
        "distance_from_init": _floats(traj.distance_from_init),
        "cosine_to_final": _floats(traj.cosine_to_final),
        "relative_change": _floats(traj.relative_change),
        "stopped_moving": stopped_moving(traj.steps, traj.relative_change, STILL_PER_STEP),
        "dead_threshold": dead_threshold,
        "dead": None, "deaths": [], "died": [], "shrink": None,
    }
    if dead_threshold is None:
        return out
    dead = dead_over_steps(traj.norms, dead_threshold)
    idx = death_index(dead)
    out["dead"] = [int(x) for x in dead.sum(axis=1)]
    out["deaths"] = [{"filter": int(n), "step": steps[k], "after": steps[k - 1] if k > 0 else None}
                     for n, k in enumerate(idx) if k >= 0]
    groups: dict[int, int] = {}
    for k in idx[idx >= 0]:
        groups[int(k)] = groups.get(int(k), 0) + 1
    out["died"] = [{"after": steps[k - 1] if k > 0 else None, "by": steps[k], "count": c}
                   for k, c in sorted(groups.items())]
    out["shrink"] = _shrink(traj, idx)
    return out


def _shrink(traj: LayerTrajectory, idx: np.ndarray) -> dict | None:
    """How the filters that died during training fell: the median norm of those filters from the
    step where it peaked to the last step before the median filter died (a death can be a cliff
    the fit should not see), fitted as a line and as a geometric decay
    (analysis.trajectory.shrink_fit). None without a fall of SHRINK_MIN_FALL times over at
    least four checkpoints."""
    died = np.flatnonzero(idx > 0)
    if died.size == 0:
        return None
    curve = np.median(traj.norms[:, died], axis=1)
    end = int(np.median(idx[died])) - 1
    start = int(np.argmax(curve[: end + 1]))
    if end - start < 3 or not curve[end] > 0 or curve[start] / curve[end] < SHRINK_MIN_FALL:
        return None
    fit = shrink_fit(traj.steps[start:end + 1], curve[start:end + 1])
    if fit is None:
        return None
    return {"filters": int(died.size), "from_step": int(traj.steps[start]), "to_step": int(traj.steps[end]),
            "from_norm": float(curve[start]), "to_norm": float(curve[end]), **fit}


def _floats(a) -> list:
    return [float(x) if np.isfinite(x) else None for x in np.asarray(a, dtype=np.float64)]


class TrainingExtension(Extension):
    """How each location's filters evolved over the checkpoints saved in training.

    A model whose spec lists ``steps`` has one checkpoint per step (the last is the run's own
    checkpoint). Per run, ``run_part`` reads every step's weights of the inspected layers and
    computes their trajectories (reportgen.analysis.trajectory); ``reduce`` applies the dead rule
    of the final step's pooled scale to every step and says when filters died and when layers
    stopped moving; the pictures, the training page and the findings show it.
    """

    name = NAME
    version = 1

    def wanted(self, spec) -> bool:
        return any(len(r.steps) >= 2 for r in spec.runs)

    def run_wanted(self, spec, run) -> bool:
        return len(run.steps) >= 2

    def run_key(self, ctx: RunContext) -> tuple:
        # The step files by content (cache.digest hashes paths by what they hold).
        return (list(ctx.run.steps), list(ctx.run.step_checkpoints), ctx.run.model.checkpoint_key,
                ctx.run.model.checkpoint_prefix)

    def run_part(self, ctx: RunContext) -> TrainingRun:
        """Every step's weights of the run's inspected layers -> their trajectories.

        The last step's weights are the run's checkpoint as the other analyses read it
        (``ctx.layers``); the earlier ones are read through the same safe loader
        (models.read_checkpoint: weights_only unless the model is trusted). A layer whose
        weights a step file lacks, or that has no weight, gets no trajectory and a note.
        """
        run = ctx.run
        final = {name: lr.weight for name, lr in ctx.layers.items() if getattr(lr, "weight", None) is not None
                 and lr.weight.ndim >= 2}
        if not final:  # called without layer results: read the final weights the same way as the others
            final = step_weights(run, run.step_checkpoints[-1], [ls.name for ls in run.layers], {})
        series: dict[str, list[np.ndarray]] = {name: [] for name in final}
        notes = []
        for step, path in zip(run.steps[:-1], run.step_checkpoints[:-1]):
            found = step_weights(run, path, list(series), {n: w.shape for n, w in final.items()})
            lacking = [name for name in series if name not in found]
            if lacking:
                notes.append(f"{listing(lacking)}: no weights in the checkpoint of step {step} ({path.name}), so "
                             f"{'it is' if len(lacking) == 1 else 'they are'} not followed over training")
            for name in list(series):
                if name in found:
                    series[name].append(found[name])
                else:
                    del series[name]
        layers = {name: trajectory(ws + [final[name]], list(run.steps)) for name, ws in series.items()}
        return TrainingRun(steps=list(run.steps), layers=layers, notes=notes)

    def reduce(self, spec, values: dict[str, TrainingRun], report: dict) -> dict | None:
        """report["training"]: per run and layer, the numbers over steps (docs/reference/report-json.md)."""
        if not values:
            return None
        ratio = spec.analyses.health.dead_norm_ratio
        entries = {r["key"]: r for r in report.get("runs", [])}
        runs = []
        for key, value in values.items():
            entry = entries.get(key, {})
            layer_info = {lay["name"]: lay for lay in entry.get("layers", [])}
            layers = []
            for name, traj in value.layers.items():
                scale = (layer_info.get(name, {}).get("pooled_scale") or {}).get("median_norm")
                layers.append(layer_summary(name, traj, None if scale is None else ratio * scale))
            runs.append({"run": key, "model": entry.get("model"), "location": entry.get("location", key),
                         "steps": list(value.steps), "notes": list(value.notes), "layers": layers})
        return {"still_per_step": STILL_PER_STEP, "dead_norm_ratio": ratio, "runs": runs}

    def findings(self, report: dict, analyses) -> list[dict]:
        from reportgen.extensions.training_text import training_findings

        return training_findings(report.get(NAME), analyses)

    # -- render -------------------------------------------------------------------------------

    def pictures(self, spec, section: dict | None, values: dict[str, TrainingRun]) -> dict[str, bytes]:
        """Per run a chart over steps (``<run>.png``) and, for layers small enough to keep every step's
        weights, a strip of all filters at every step (``<run>/<layer>.png``); the build publishes
        them under img/training/."""
        from reportgen.core.names import slug
        from reportgen.render.trajectory import filter_strip, training_chart

        out = {}
        for run in (section or {}).get("runs", []):
            key = run["run"]
            if run["layers"]:
                out[f"{key}.png"] = training_chart(run["layers"], f"{key}: over training")
            value = values.get(key)
            for lay in run["layers"]:
                traj = value.layers.get(lay["layer"]) if value else None
                if traj is not None and traj.snapshots is not None and traj.snapshots.ndim == 5:
                    dead = (dead_over_steps(traj.norms, lay["dead_threshold"])
                            if lay["dead_threshold"] is not None else None)
                    out[f"{key}/{slug(lay['layer'])}.png"] = filter_strip(traj.snapshots, dead)
        return out

    def pages(self, spec, report: dict, pictures: dict[str, str]) -> dict[str, str]:
        from reportgen.extensions.training_text import training_page

        section = report.get(NAME)
        return {"training.md": training_page(section, pictures)} if section else {}
