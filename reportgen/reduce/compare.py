"""Cross-run steps of a build: health extras, Gabor fits, location comparison, reference.

Takes the per-run results of ``build.analyse`` and adds numbers to them; no I/O
except loading the reference model through the ordinary loaders.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from reportgen.analysis.compare import matched_similarity
from reportgen.analysis.filters import duplicate_evidence, near_duplicates, norm_over_init
from reportgen.analysis.gabor import GABOR_MARGIN, GaborFit, gabor_scores, is_gabor_like, orientation_histogram
from reportgen.analysis.init_check import init_likeness
from reportgen.analysis.locations import (LayerComparison, chance_shapes, compare_layer, layer_bootstrap,
                                          resize_filters, wants_bootstrap, weights_comparable)
from reportgen.analysis.uncertainty import BOOTSTRAP_RESAMPLES, CHANCE_DRAWS, chance_similarity
from reportgen.core.cache import Cache, digest, register
from reportgen.core.spill import Spill
from reportgen.load.models import load_model
from reportgen.load.spec import ReportSpec
from reportgen.run.executors import in_workers
from reportgen.run.layers import layer_weight

GABOR_MIN_SIZE = 4  # 3x3 kernels have as many pixels as the Gabor has parameters
# Fewer live (fitted) filters than this and a location's Gabor share is not ranked: with
# 16 filters one filter moves the share by 6 points and the 95% binomial interval of a
# 50% share is about +-25 points; below that a ranking is noise.
GABOR_MIN_LIVE = 16
GABOR_VERSION = 2  # 2: with the centre-surround fit

register(GaborFit)  # cached per layer ("gabor" entries)


@dataclass
class Comparisons:
    layers: dict[tuple[str, str], LayerComparison] = field(default_factory=dict)  # (model, layer)
    gabor: dict[tuple[str, str], list[GaborFit]] = field(default_factory=dict)  # (run key, layer)
    reference: dict | None = None  # JSON-ready summary, see report_json docs
    reference_weight: np.ndarray | None = None
    reference_fits: list[GaborFit] | None = None
    warnings: list[str] = field(default_factory=list)
    models: list = field(default_factory=list)  # crossmodel.ModelPair per pair of models


def gabor_applies(w: np.ndarray | None, groups: int = 1) -> bool:
    """Gabor-likeness is a property of image-space filters: a convolution that reads a grey or
    colour image (1 or 3 input channels, not grouped) with kernels of 4x4 or more."""
    return (w is not None and w.ndim == 4 and groups == 1 and w.shape[1] in (1, 3)
            and min(w.shape[2:]) >= GABOR_MIN_SIZE)


def gabor_note(w: np.ndarray | None, groups: int = 1) -> str | None:
    """Why a convolution with kernels big enough to fit is not fitted (None when it is, or when it
    has no spatial kernel worth a note)."""
    if w is None or w.ndim != 4 or min(w.shape[2:]) < GABOR_MIN_SIZE or gabor_applies(w, groups):
        return None
    if groups > 1:
        return (f"not measured: a {'depthwise' if w.shape[1] == 1 else 'grouped'} kernel filters "
                f"{'one channel' if w.shape[1] == 1 else 'a group of channels'} of the layer below, not the image, "
                "so its pattern is not an image-space filter and its likeness to a Gabor says nothing about "
                "edge or grating detectors")
    return (f"not measured: the layer reads {w.shape[1]} channels of the layer below, not a grey or colour image; "
            "Gabor-likeness applies to first layers")


def add_health_extras(spec: ReportSpec, results, cache: Cache) -> None:
    """Near-duplicate and on/off filter pairs, each filter's norm against its initial norm
    (into each layer's ``health``) and the layer's test against its init laws
    (``info["init_check"]``)."""
    h = spec.analyses.health
    for r in results:
        for lr in r.layers:
            if lr.health is None:
                continue
            skip = lr.health["dead"] | lr.health["nonfinite"]

            def extras(lr=lr, skip=skip) -> dict:
                dup, opp = near_duplicates(lr.weight, h.duplicate_cosine, skip, groups=int(lr.info.get("groups", 1)))
                return {"duplicate_of": dup, "opposite_of": opp, "norm_over_init": norm_over_init(lr.weight)}

            groups = int(lr.info.get("groups", 1))
            lr.health.update(cache.memo("health", digest("health-extras-3", lr.weight, skip, h.duplicate_cosine, groups),
                                        extras))
            lr.info["duplicate_evidence"] = duplicate_evidence(lr.weight, lr.health["duplicate_of"],
                                                               lr.health["opposite_of"], h.duplicate_cosine, skip,
                                                               groups)
            lr.info["init_check"] = cache.memo("health", digest("init-check-1", lr.weight),
                                               lambda lr=lr: init_likeness(lr.weight))


def fit_gabors(spec: ReportSpec, results, comp: Comparisons, cache: Cache) -> None:
    if not spec.analyses.gabor.enabled:
        return
    for r in results:
        for lr in r.layers:
            note = gabor_note(lr.weight, int(lr.info.get("groups", 1)))
            if note:
                lr.info["gabor_note"] = note
            if gabor_applies(lr.weight, int(lr.info.get("groups", 1))):
                # Dead and non-finite filters are not fitted (score NaN): their pattern is noise.
                w = lr.weight.astype(np.float64)
                w[lr.health["dead"] | lr.health["nonfinite"]] = np.nan
                fits = cache.memo("gabor", digest("gabor", GABOR_VERSION, w), lambda w=w: gabor_scores(w))
                comp.gabor[(r.run.key, lr.name)] = fits
                lr.health["gabor_score"] = np.array([f.score for f in fits])
                lr.health["dog_score"] = np.array([f.dog_score for f in fits])


class _Features:
    """The runs' comparison features, loaded from the spill store when a pair needs them."""

    def __init__(self, lrs: list, spill):
        self.lrs, self.spill = lrs, spill

    def __len__(self) -> int:
        return len(self.lrs)

    def __getitem__(self, i: int) -> np.ndarray | None:
        return self.spill.load(self.lrs[i], "features") if self.spill is not None else self.lrs[i].features


def _compared_layers(spec: ReportSpec, results) -> dict[tuple[str, str], list]:
    """(model, layer) -> [(run key, layer result)] of every layer compared across runs."""
    if not spec.analyses.compare.enabled:
        return {}
    groups: dict[tuple[str, str], list] = {}
    for r in results:
        for lr in r.layers:
            groups.setdefault((r.run.model.name, lr.name), []).append((r.run.key, lr))
    return {key: items for key, items in groups.items() if len(items) > 1}


def chance_jobs(spec: ReportSpec, results, cache: Cache) -> list["ChanceJob"]:
    """One job per pair of weight shapes whose chance level the comparisons report, the
    largest first (a 512-filter shape takes seconds: 100 optimal matchings)."""
    shapes = {chance_shapes([lr.weight for _, lr in items]) for items in _compared_layers(spec, results).values()
              if weights_comparable([lr.weight for _, lr in items])}
    root = str(cache.root) if cache.enabled else None
    return [ChanceJob(a, b, root) for a, b in sorted(shapes, key=lambda ab: -np.prod(ab[0]) * np.prod(ab[1]))]


@dataclass
class ChanceJob:
    """The chance level of matched |cos| for filters of two shapes (analysis.uncertainty)."""

    shape_a: tuple
    shape_b: tuple
    cache_root: str | None


def run_chance(job: ChanceJob) -> tuple[float, float, dict, dict]:
    """(mean, sd, cache hits, cache misses) of a ChanceJob: the task a worker runs. Cached on
    disk under the shapes and the number of draws (it depends on nothing else)."""
    cache = Cache(job.cache_root)
    mean, sd = cache.memo("chance", digest("chance", list(job.shape_a), list(job.shape_b), CHANCE_DRAWS),
                          lambda: list(chance_similarity(job.shape_a, job.shape_b)))
    return float(mean), float(sd), dict(cache.hits), dict(cache.misses)


def compare_locations(spec: ReportSpec, results, comp: Comparisons, cache: Cache, spill=None) -> list:
    """Compare each layer across the runs, into ``comp.layers``, without the chance level of
    weight similarity (``chance_jobs``) and the bootstrap values; returns the bootstrap jobs
    (``BootstrapJob``) of the layers that get them. ``run_comparisons`` runs both (in the
    build's pool when it has one) and adds them."""
    groups = _compared_layers(spec, results)
    aligned_pairs: dict[tuple[str, str], dict] = {}  # matchings of a pair of runs, shared by their layers
    jobs = []
    for key, items in groups.items():
        # One cache entry per pair and measure, keyed by the two runs' inputs: a changed
        # location recomputes only its own pairs.
        ids = [lr.key or digest("compare-input", lr.weight, lr.features) for _, lr in items]
        lrs = [lr for _, lr in items]
        images = lrs[0].feature_images
        same_rows = images is not None and all(
            lr.feature_images is not None and np.array_equal(lr.feature_images, images) for lr in lrs)
        rows = [None if lr.feature_images is None else len(lr.feature_images) for lr in lrs]
        comp.layers[key] = compare_layer(
            [k for k, _ in items], [lr.weight for lr in lrs], _Features(lrs, spill), memo=_PairMemo(cache, ids),
            feature_rows=rows,
            chains=[lr.chain for lr in lrs], chain_note=next((lr.chain_note for lr in lrs if lr.chain_note), None),
            feature_images=images if same_rows else None, resamples=0, chance_level=False,
            align_memo=lambda i, j, items=items: aligned_pairs.setdefault((items[i][0], items[j][0]), {}))
        if same_rows and wants_bootstrap(rows, images, BOOTSTRAP_RESAMPLES):
            c = comp.layers[key]
            jobs.append(BootstrapJob(key, [_FeatureRef.of(lr) for lr in lrs], images, BOOTSTRAP_RESAMPLES, ids,
                                     str(cache.root) if cache.enabled else None, spill.root if spill else None,
                                     c.activations, c.cka))
    return jobs


class _PairMemo:
    """``memo(measure, i, j, compute)`` of compare_layer: one cache entry per pair of runs
    (by their inputs' digests ``ids``) and measure."""

    def __init__(self, cache: Cache, ids: list[str]):
        self.cache, self.ids = cache, ids

    def __call__(self, measure: str, i: int, j: int, compute):
        return self.cache.memo("pair", digest("pair", measure, self.ids[i], self.ids[j]), compute)


@dataclass
class _FeatureRef:
    """What ``Spill.load`` reads of a layer result for its features: the array, or its key in
    the spill store. Light to send to a worker."""

    key: str | None
    name: str
    spilled: list
    features: np.ndarray | None

    @classmethod
    def of(cls, lr) -> "_FeatureRef":
        if "features" in lr.spilled:
            return cls(lr.key, lr.name, ["features"], None)
        return cls(lr.key, lr.name, [], lr.features)


@dataclass
class BootstrapJob:
    """The bootstrap of one layer's comparison (analysis.locations.layer_bootstrap): what a
    worker needs, light to send (features are read from the spill store there)."""

    layer: tuple[str, str]
    features: list[_FeatureRef]
    images: np.ndarray
    resamples: int
    ids: list[str]
    cache_root: str | None
    spill_root: str | None
    activations: np.ndarray
    cka: np.ndarray


def run_bootstrap(job: BootstrapJob) -> tuple[dict, dict, dict, dict]:
    """(boot, ci, cache hits, cache misses) of a BootstrapJob: the task a worker runs."""
    cache = Cache(job.cache_root)
    boot, ci = layer_bootstrap(_Features(job.features, Spill(job.spill_root)), job.images, job.resamples,
                               _PairMemo(cache, job.ids), job.activations, job.cka)
    return boot, ci, dict(cache.hits), dict(cache.misses)


def gabor_summary(fits: list[GaborFit], min_score: float) -> dict:
    """Shares are of the live filters: dead and non-finite ones are not fitted (score NaN). A
    filter is Gabor-like when its fit reaches ``min_score`` and beats its centre-surround fit by
    ``GABOR_MARGIN`` (``is_gabor_like``); ``blob_like``: those reaching ``min_score`` that a
    centre-surround explains about as well."""
    scores = np.array([f.score for f in fits], dtype=np.float64)
    live = [f for f in fits if np.isfinite(f.score)]
    finite = scores[np.isfinite(scores)]
    like = sum(is_gabor_like(f, min_score) for f in live)
    dog = np.array([f.dog_score for f in live], dtype=np.float64)
    return {
        "median_score": float(np.median(finite)) if finite.size else None,
        "median_dog_score": float(np.nanmedian(dog)) if np.isfinite(dog).any() else None,
        "share_gabor_like": like / len(live) if live else None,
        "gabor_like": int(like),
        "blob_like": int(sum(f.score >= min_score and not is_gabor_like(f, min_score) for f in live)),
        "margin": GABOR_MARGIN,
        "live": int(finite.size),
        "filters": int(scores.size),
        "ranked": bool(finite.size >= GABOR_MIN_LIVE),
        "orientation_histogram": orientation_histogram(fits, bins=8, min_score=min_score).tolist(),
    }


def compare_reference(spec: ReportSpec, results, comp: Comparisons, device, cache: Cache) -> None:
    run = spec.reference_run
    if run is None:
        return
    ref_spec = spec.reference
    module = load_model(spec, run, device).module
    modules = dict(module.named_modules())
    from reportgen.core.errors import SpecError

    ref_w = None
    if ref_spec.layer in modules:
        try:
            ref_w, _ = layer_weight(modules[ref_spec.layer])  # filters by output channel, float32
        except TypeError as exc:
            raise SpecError(f"{spec.where(('reference', 'layer'))}: reference.layer: '{ref_spec.layer}': {exc}") from None
    if ref_w is None:
        raise SpecError(f"{spec.where(('reference', 'layer'))}: reference.layer: the reference has no "
                        f"weighted layer '{ref_spec.layer}'; run 'reportgen check' to list its layers")
    against = ref_spec.against or next(
        (lr.name for lr in results[0].layers if lr.weight is not None and lr.weight.ndim == 4
         and lr.weight.shape[1] == ref_w.shape[1]), None)
    comp.reference_weight = ref_w
    min_score = spec.analyses.gabor.min_score
    comp.reference_fits = (cache.memo("gabor", digest("gabor", GABOR_VERSION, ref_w.astype(np.float64)),
                                      lambda: gabor_scores(ref_w))
                           if gabor_applies(ref_w, int(getattr(modules[ref_spec.layer], "groups", 1)))
                           and spec.analyses.gabor.enabled else None)
    norms = np.linalg.norm(ref_w.reshape(len(ref_w), -1), axis=1)
    per_run = []
    for r in results:
        lr = next((x for x in r.layers if x.name == against), None)
        if lr is None or lr.weight is None or lr.weight.ndim != ref_w.ndim or lr.weight.shape[1] != ref_w.shape[1]:
            continue
        ref_cmp = resize_filters(ref_w, lr.weight.shape[2:]) if ref_w.ndim == 4 else ref_w
        m = matched_similarity(lr.weight, ref_cmp)
        fits = comp.gabor.get((r.run.key, lr.name))
        per_run.append({
            "run": r.run.key,
            "matched_similarity": float(m.mean),
            "median_l2_norm": float(np.nanmedian(lr.health["l2_norm"])),
            **({k: gabor_summary(fits, min_score)[k] for k in ("share_gabor_like", "live")} if fits else {}),
        })
    if against is None or not per_run:
        comp.warnings.append(f"reference: no location layer with {ref_w.shape[1]} input channels to compare "
                             f"with reference layer '{ref_spec.layer}'; set reference.against")
    comp.reference = {
        "name": run.key,
        "layer": ref_spec.layer,
        "against": against,
        "checkpoint": str(run.checkpoint or run.torchscript or run.onnx or run.exported or ""),
        "weight_shape": list(ref_w.shape),
        "median_l2_norm": float(np.median(norms)),
        "gabor": gabor_summary(comp.reference_fits, min_score) if comp.reference_fits else None,
        "resized": bool(per_run) and ref_w.ndim == 4 and tuple(ref_w.shape[2:]) != tuple(
            next(x for x in results[0].layers if x.name == against).weight.shape[2:]),
        "per_run": per_run,
    }


def run_comparisons(spec: ReportSpec, results, device, cache: Cache | None = None, spill=None,
                    executor=None) -> Comparisons:
    """Health extras, Gabor fits, comparisons of locations (features loaded pair block by pair
    block from ``spill``, reportgen.core.spill, when given) and the reference.

    ``executor``: the build's executor (reportgen.run.executors). When its workers are already
    running (``executor.warm``), the chance levels of weight similarity (per shape, largest
    first) and the layers' bootstrap values are computed there while this process compares the
    layers and does the rest; else here."""
    cache = cache or Cache(None)
    comp = Comparisons()
    chances = chance_jobs(spec, results, cache)
    levels = in_workers(executor, run_chance, chances)
    jobs = compare_locations(spec, results, comp, cache, spill)
    boots = in_workers(executor, run_bootstrap, jobs)
    add_health_extras(spec, results, cache)
    fit_gabors(spec, results, comp, cache)
    compare_reference(spec, results, comp, device, cache)
    level = {}
    for job, (mean, sd, hits, misses) in zip(chances, levels):
        level[(job.shape_a, job.shape_b)] = (mean, sd)
        cache.hits.update(hits)  # counted with the build's own, as the per-run tasks' are
        cache.misses.update(misses)
    for key, items in _compared_layers(spec, results).items():
        c = comp.layers.get(key)
        if c is not None and c.weights is not None:
            mean, sd = level[chance_shapes([lr.weight for _, lr in items])]
            comp.layers[key] = replace(c, weight_chance=mean, weight_chance_sd=sd)
    for job, (boot, ci, hits, misses) in zip(jobs, boots):
        comp.layers[job.layer] = replace(comp.layers[job.layer], boot=boot, ci=ci)
        cache.hits.update(hits)
        cache.misses.update(misses)
    return comp
