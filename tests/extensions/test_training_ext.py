"""The training extension end to end: a tiny model with planted checkpoints over training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reportgen.load.spec import load_spec
from tests.conftest import SPEC, make_project, tiny_module, write_spec

STEPS = [0, 10, 20, 30, 40]
DYING = 1  # conv1 filter of location 'a' decayed on purpose: below the dead bound from step 30 on


def _planted(folder, only_conv1: bool = False):
    """runs/{loc}/step_{s}.pt: every weight drifts each step, except that at location 'a'
    conv1 filter DYING halves each step and is 1e-4 of its size from step 30, and conv2 stops
    changing after step 20. The last step is the run's checkpoint."""
    project = make_project(folder)
    for i, loc in enumerate("abc"):
        (project / "runs" / loc).mkdir(parents=True)
        base = tiny_module(seed=i).state_dict()
        gen = torch.Generator().manual_seed(100 + i)
        state = {k: v.clone() for k, v in base.items()}
        for k, step in enumerate(STEPS):
            if k:
                for name, v in state.items():
                    if not (loc == "a" and name.startswith("conv2") and k > 2):
                        v += 0.02 * torch.randn(v.shape, generator=gen)
            saved = {n: v.clone() for n, v in state.items()}
            if loc == "a":
                saved["conv1.weight"][DYING] *= 0.5 ** k if k < 3 else 1e-4
            if only_conv1 and k < len(STEPS) - 1:
                saved = {n: v for n, v in saved.items() if n.startswith("conv1.")}
            torch.save({"state_dict": saved}, project / "runs" / loc / f"step_{step}.pt")
    text = SPEC.replace("checkpoint: ckpt/{location}.pt",
                        "checkpoint: runs/{location}/step_{step}.pt\n    checkpoint_key: state_dict\n"
                        f"    steps: {STEPS}")
    # Weights are all the trajectories need: no activations keeps the builds quick.
    text += "analyses:\n  activations: {enabled: false}\n  compare: {enabled: false}\n  gabor: {enabled: false}\n"
    return write_spec(project, text)


def _run_extension(spec_path, docs):
    """The build (the training extension runs in it), then its values, pictures and page as the
    build published them."""
    import json

    from reportgen.build import build

    result = build(spec_path, docs, device="cpu", cache_dir=None)
    spec = load_spec(spec_path)
    out = docs / spec.report
    report = json.loads((out / "report.json").read_text())
    pics = {p.relative_to(out / "img" / "training").as_posix(): p.read_bytes()
            for p in sorted((out / "img" / "training").rglob("*.png"))}
    pages = {"training.md": (out / "training.md").read_text()}
    found = [f for f in report["findings"] if f.get("kind") == "training"]
    return spec, report, result, pics, pages, found


@pytest.fixture(scope="module")
def planted(tmp_path_factory, one_thread):
    folder = tmp_path_factory.mktemp("traj")
    return _run_extension(_planted(folder / "p"), folder / "docs")


def test_spec_resolves_every_step_and_the_last_is_the_checkpoint(planted):
    spec = planted[0]
    run = spec.runs[0]
    assert run.steps == tuple(STEPS)
    assert [p.name for p in run.step_checkpoints] == [f"step_{s}.pt" for s in STEPS]
    assert run.checkpoint == run.step_checkpoints[-1]


def test_the_planted_filter_dies_between_step_20_and_30(planted):
    _, report, *_ = planted
    runs = {r["run"]: r for r in report["training"]["runs"]}
    conv1 = next(lay for lay in runs["a"]["layers"] if lay["layer"] == "conv1")
    assert conv1["deaths"] == [{"filter": DYING, "step": 30, "after": 20}]
    assert conv1["died"] == [{"after": 20, "by": 30, "count": 1}]
    assert conv1["dead"] == [0, 0, 0, 1, 1]
    for key in "bc":
        assert all(lay["deaths"] == [] for lay in runs[key]["layers"])


def test_dead_rule_is_the_health_rule_at_the_final_step(planted):
    _, report, *_ = planted
    entries = {r["key"]: r for r in report["runs"]}
    for run in report["training"]["runs"]:
        for lay in run["layers"]:
            entry = next(x for x in entries[run["run"]]["layers"] if x["name"] == lay["layer"])
            assert lay["dead_threshold"] == pytest.approx(0.1 * entry["pooled_scale"]["median_norm"])
            assert lay["dead"][-1] == sum(f["dead"] for f in entry["filters"])


def test_norms_distance_and_cosine_match_the_files(planted, tmp_path):
    spec, report, *_ = planted
    run = spec.runs[0]
    ws = [torch.load(p, weights_only=True)["state_dict"]["conv1.weight"].double().numpy() for p in run.step_checkpoints]
    flat = [w.ravel() for w in ws]
    conv1 = next(lay for lay in report["training"]["runs"][0]["layers"] if lay["layer"] == "conv1")
    assert conv1["median_norm"] == pytest.approx([np.median(np.sqrt((w.reshape(4, -1) ** 2).sum(1))) for w in ws])
    assert conv1["distance_from_init"] == pytest.approx(
        [np.sqrt(((v - flat[0]) ** 2).sum() / (flat[0] ** 2).sum()) for v in flat])
    assert conv1["cosine_to_final"] == pytest.approx(
        [(v @ flat[-1]) / np.sqrt((v @ v) * (flat[-1] @ flat[-1])) for v in flat])


def test_the_frozen_layer_stops_moving_at_step_20(planted):
    _, report, *_ = planted
    layers = {lay["layer"]: lay for lay in report["training"]["runs"][0]["layers"]}
    assert layers["conv2"]["stopped_moving"] == 20
    assert layers["conv1"]["stopped_moving"] is None  # it drifts to the end


def test_pictures_page_and_findings(planted):
    _, report, result, pics, pages, found = planted
    assert {"a.png", "b.png", "c.png", "a/conv1.png"} <= set(pics)
    assert not result.warnings
    assert all(data[:8] == b"\x89PNG\r\n\x1a\n" for data in pics.values())
    page = pages["training.md"]
    assert "## a { #a }" in page and "(img/training/a.png)" in page and "(img/training/a/conv1.png)" in page
    assert "| 1: between step 20 and 30 |" in page
    died = [f for f in found if "died" in f["text"]]
    assert len(died) == 1 and died[0]["location"] == "a" and died[0]["link"] == "training.md#a"
    assert "1 of 4 `conv1` filters died, between step 20 and 30" in died[0]["text"]
    assert died[0]["severity"] == "warning"  # 1 of 4 dead at the end reaches dead_share_warn (a quarter)
    moving = [f for f in found if f["location"] == "a" and "stopped moving" in f["text"]]
    assert moving and "stopped moving: `conv2` at step 20;" in moving[0]["text"]


@pytest.mark.slow
def test_partial_step_files_keep_the_layers_they_hold(tmp_path, one_thread):
    _, report, *_ = _run_extension(_planted(tmp_path / "p", only_conv1=True), tmp_path / "docs")
    run = report["training"]["runs"][0]
    assert [lay["layer"] for lay in run["layers"]] == ["conv1"]
    assert run["notes"] == ["conv2 and fc: no weights in the checkpoint of step 0 (step_0.pt), so they are not "
                            "followed over training"]
    assert run["layers"][0]["deaths"] == [{"filter": DYING, "step": 30, "after": 20}]


def test_the_value_survives_the_cache(planted):
    from reportgen.core.cache import decode, encode
    from reportgen.core.extension import RunContext
    from reportgen.extensions.training import TrainingExtension

    spec = planted[0]
    ctx = RunContext(spec=spec, run=spec.runs[0], model=None, device=torch.device("cpu"), images=[])
    value = TrainingExtension().run_part(ctx)
    back = decode(encode(value))
    assert back.steps == STEPS and np.array_equal(back.layers["conv1"].norms, value.layers["conv1"].norms)
    assert back.layers["conv1"].snapshots.dtype == np.float32


@pytest.mark.slow
def test_a_process_pool_gives_the_same_training_section(planted, tmp_path):
    import json

    from reportgen.build import build

    spec = planted[0]
    build(spec.path, tmp_path / "docs", device="cpu", cache_dir=None, jobs=2, executor="process")
    pooled = json.loads((tmp_path / "docs" / "tiny" / "report.json").read_text())
    assert pooled["training"] == planted[1]["training"]
    assert (tmp_path / "docs/tiny/training.md").read_text() == planted[4]["training.md"]


def test_towncenter_home_page_says_when_and_how_loc08_broke(towncenter_build):
    """The example ships conv1 snapshots of loc08 (collapsed by an L1 penalty under AdamW) and
    loc02 (stopped early): the home page's findings say when loc08's filters died and that the
    fall was a straight line, not weight decay's geometric one."""
    result, docs, _ = towncenter_build
    report = result.report
    ranked = [f for f in report["findings"] if f["kind"] not in ("overview", "next_step")]
    died = [f for f in ranked[:10] if f["kind"] == "training" and "died" in f["text"]]
    assert [f["location"] for f in died] == ["loc08"] and died[0]["severity"] == "warning"
    assert "the first between step 40 and 50" in died[0]["text"] and "straight line" in died[0]["text"]
    assert "training.md#loc08" in (docs / "towncenter" / "index.md").read_text()
    runs = {r["run"]: r for r in report["training"]["runs"]}
    assert set(runs) == {"loc02", "loc08"}
    conv1 = runs["loc08"]["layers"][0]
    entry = next(r for r in report["runs"] if r["key"] == "loc08")["layers"][0]
    assert conv1["dead"][0] == 0 and conv1["dead"][-1] == entry["summary"]["dead"]
    assert runs["loc02"]["layers"][0]["stopped_moving"] is None  # stopped early, still moving
