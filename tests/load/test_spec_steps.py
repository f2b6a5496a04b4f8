"""Spec: checkpoints over training (models[].steps, step_checkpoint); every message is pinned."""

from __future__ import annotations

import shutil

import pytest

from reportgen.core.errors import SpecError
from reportgen.load.spec import load_spec
from tests.conftest import SPEC, write_spec

IN_CKPT = "checkpoint: runs/{location}/step_{step}.pt\n    steps: [0, 5, 10]"
APART = "checkpoint: ckpt/{location}.pt\n    step_checkpoint: runs/{location}/step_{step}.pt\n    steps: "


@pytest.fixture
def stepped(project):
    for loc in "abc":
        (project / "runs" / loc).mkdir(parents=True)
        for step in (0, 5, 10):
            shutil.copy(project / "ckpt" / f"{loc}.pt", project / "runs" / loc / f"step_{step}.pt")
    return project


def spec_with(folder, models_line: str):
    return write_spec(folder, SPEC.replace("checkpoint: ckpt/{location}.pt", models_line))


def problems(folder, models_line: str) -> list[str]:
    path = spec_with(folder, models_line)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return [p.replace(str(path), "SPEC").replace(str(folder) + "/", "") for p in info.value.problems]


def test_one_template_for_every_step(stepped):
    spec = load_spec(spec_with(stepped, IN_CKPT))
    run = spec.runs[1]
    assert run.steps == (0, 5, 10)
    assert run.step_checkpoints == tuple(stepped / "runs" / "b" / f"step_{s}.pt" for s in (0, 5, 10))
    assert run.checkpoint == stepped / "runs" / "b" / "step_10.pt"


def test_earlier_steps_apart_from_the_checkpoint(stepped):
    spec = load_spec(spec_with(stepped, APART + "{a: [0, 5, 99], 'c': [0, 10]}"))
    a, b, c = spec.runs
    assert a.steps == (0, 5, 99) and a.checkpoint == stepped / "ckpt" / "a.pt"
    assert a.step_checkpoints == (stepped / "runs/a/step_0.pt", stepped / "runs/a/step_5.pt", stepped / "ckpt/a.pt")
    assert b.steps == () and b.step_checkpoints == () and b.checkpoint == stepped / "ckpt" / "b.pt"
    assert c.step_checkpoints == (stepped / "runs/c/step_0.pt", stepped / "ckpt/c.pt")


def test_missing_step_files(stepped):
    assert problems(stepped, IN_CKPT.replace("10]", "7]").replace("5,", "6,")) == [
        "SPEC:9: models[0].steps: checkpoint of step 6 for location 'a' not found: runs/a/step_6.pt; "
        "check the steps and the '{step}' template",
        "SPEC:10: models[0].locations[0]: checkpoint for location 'a' not found: runs/a/step_7.pt; "
        "check the 'checkpoint' template and the location name",
    ] + [p for loc in "bc" for p in (
        f"SPEC:9: models[0].steps: checkpoint of step 6 for location '{loc}' not found: runs/{loc}/step_6.pt; "
        "check the steps and the '{step}' template",
        f"SPEC:10: models[0].locations[{'abc'.index(loc)}]: checkpoint for location '{loc}' not found: "
        f"runs/{loc}/step_7.pt; check the 'checkpoint' template and the location name")]


def test_step_and_steps_go_together(stepped):
    assert problems(stepped, "checkpoint: runs/{location}/step_{step}.pt") == [
        "SPEC:5: models[0]: the path uses '{step}' but the model lists no 'steps'; add steps: [0, 200, ...] "
        "(the steps of the saved checkpoints)"]
    assert problems(stepped, "checkpoint: ckpt/{location}.pt\n    steps: [0, 5]") == [
        "SPEC:5: models[0]: 'steps' needs '{step}' in the checkpoint path (e.g. runs/{location}/step_{step}.pt) "
        "or a 'step_checkpoint' template with '{step}'"]
    assert problems(stepped, "checkpoint: ckpt/{location}.pt\n    step_checkpoint: runs/{location}/x.pt\n"
                             "    steps: [0]") == [
        "SPEC:5: models[0]: 'step_checkpoint' needs '{step}' in its path, e.g. runs/{location}/step_{step}.pt"]
    assert problems(stepped, "checkpoint: runs/{location}/step_{step}.pt\n    step_checkpoint: "
                             "runs/{location}/step_{step}.pt\n    steps: [0, 10]") == [
        "SPEC:5: models[0]: '{step}' is in both 'checkpoint' and 'step_checkpoint'; keep one template with "
        "'{step}' (the checkpoint then is its last step)"]


def test_bad_step_lists(stepped):
    assert problems(stepped, IN_CKPT.replace("[0, 5, 10]", "[10, 5]")) == [
        "SPEC:9: models[0].steps: the steps must be ascending with no repeats, got [10, 5]"]
    assert problems(stepped, IN_CKPT.replace("[0, 5, 10]", "[0, -5]")) == [
        "SPEC:9: models[0].steps: steps must be a list of whole numbers >= 0 (training steps), got [0, -5]"]
    assert problems(stepped, IN_CKPT.replace("[0, 5, 10]", "last")) == [
        "SPEC:9: models[0].steps: give a list of training steps ([0, 200, 400]) or a mapping of location to "
        "such a list, got 'last'"]
    assert problems(stepped, APART + "{a: []}") == [
        "SPEC:10: models[0].steps: the step list of 'a' is empty; list the steps of the saved checkpoints"]


def test_mapping_names_known_locations_and_covers_them_when_needed(stepped):
    assert problems(stepped, APART + "{a: [0, 5], d: [0, 5]}") == [
        "SPEC:10: models[0].steps.d: no location 'd'; locations are: a, b, c"]
    assert problems(stepped, "checkpoint: runs/{location}/step_{step}.pt\n    steps: {a: [0, 10], b: [5, 10]}") == [
        "SPEC:9: models[0].steps: location 'c' has no steps, but its checkpoint path needs '{step}'; "
        "list its steps"]


def test_a_reference_has_no_steps(stepped):
    text = SPEC + "reference:\n  arch: arch.py:TinyNet\n  layer: conv1\n  checkpoint: ckpt/a.pt\n  steps: [0]\n"
    path = write_spec(stepped, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert [p.replace(str(path), "SPEC") for p in info.value.problems] == [
        "SPEC:18: reference: a reference is compared by its final weights: remove 'steps' and '{step}'"]
