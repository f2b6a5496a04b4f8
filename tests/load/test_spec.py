"""Spec validation: every message is pinned, with file:line and key path."""

from __future__ import annotations

import pytest

from reportgen.core.errors import SpecError
from reportgen.load.spec import load_spec
from tests.conftest import SPEC, write_spec


def problems(folder, text):
    path = write_spec(folder, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return [p.replace(str(path), "SPEC") for p in info.value.problems]


def test_valid_spec_expands_runs(project):
    spec = load_spec(write_spec(project))
    assert [r.key for r in spec.runs] == ["a", "b", "c"]
    assert spec.runs[1].checkpoint == project / "ckpt" / "b.pt"
    assert [p.name for p in spec.runs[0].images] == ["im0.png", "im1.png", "im2.png"]
    assert [layer.name for layer in spec.runs[0].layers] == ["conv1", "conv2", "fc"]
    assert spec.input.size == (16, 16)


def test_unknown_keys_suggest_the_right_one(project):
    text = SPEC.replace("layers:\n", "layer:\n  - x\nlayers:\n").replace("arch_args", "archargs")
    assert problems(project, text) == [
        "SPEC:7: models[0].archargs: unknown key; did you mean 'arch_args'?",
        "SPEC:14: layer: unknown key; did you mean 'layers'?",
    ]


def test_unknown_key_without_close_match_lists_allowed(project):
    assert problems(project, SPEC + "colour: red\n") == [
        "SPEC:18: colour: unknown key; allowed keys: report, title, description, models, input, "
        "images, annotations, extra_frames, layers, analyses, reference"
    ]


def test_wrong_types_and_values(project):
    text = SPEC.replace("size: [16, 16]", "size: big\n  channels: cmyk")
    assert problems(project, text) == [
        "SPEC:11: input.size: input should be a valid tuple, got 'big'",
        "SPEC:12: input.channels: 'cmyk' is not one of 'rgb' or 'grey'",
    ]


def test_missing_required_key(project):
    text = SPEC.replace("title: Tiny report\n", "")
    assert problems(project, text) == ["SPEC:1: title: missing required key; add it"]


def test_empty_locations(project):
    text = SPEC.replace("locations: [a, b, c]", "locations: []")
    assert problems(project, text) == [
        "SPEC:9: models[0].locations: list should have at least 1 item after validation, not 0, got []"
    ]


def test_slug_cannot_escape_docs_dir(project):
    assert problems(project, SPEC.replace("report: tiny", "report: ../evil")) == [
        "SPEC:1: report: '../evil' is not allowed; use letters, digits, '-', '_' and '.', "
        "starting with a letter or digit, at most 64 in all"
    ]
    assert problems(project, SPEC.replace("[a, b, c]", "[a, ../b]")) == [
        "SPEC:9: models[0].locations: location name '../b' is not allowed; use letters, digits, "
        "'-', '_' and '.', starting with a letter or digit, at most 64 in all"
    ]


def test_missing_checkpoint_names_location_and_line(project):
    (project / "ckpt" / "b.pt").unlink()
    assert problems(project, SPEC) == [
        "SPEC:9: models[0].locations[1]: checkpoint for location 'b' not found: "
        f"{project / 'ckpt' / 'b.pt'}; check the 'checkpoint' template and the location name"
    ]


def test_image_glob_matching_nothing(project):
    assert problems(project, SPEC.replace("img/*.png", "pics/*.png")) == [
        "SPEC:13: images[0]: no image files match 'pics/*.png' (relative to the spec file); "
        "fix the pattern or add images"
    ]


def test_every_problem_reported_at_once(project):
    text = SPEC.replace("title: Tiny report", "title: ''").replace(
        "  - fc\n", "  - {name: fc, relu: sometimes}\n") + "extra: 1\n"
    assert problems(project, text) == [
        "SPEC:2: title: string should have at least 1 character, got ''",
        "SPEC:17: layers[2].relu: 'sometimes' is not one of 'auto', 'yes' or 'no'",
        "SPEC:18: extra: unknown key; allowed keys: report, title, description, models, input, "
        "images, annotations, extra_frames, layers, analyses, reference",
    ]


def test_malformed_yaml_points_at_line(project):
    path = write_spec(project, "report: x\ntitle: [unclosed\nmodels: []\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    msg = str(info.value).replace(str(path), "SPEC")
    assert msg.startswith("SPEC:3:")
    assert "invalid YAML" in msg and "fix the syntax" in msg


def test_duplicate_key_is_an_error(project):
    assert problems(project, SPEC + "title: again\n") == [
        "SPEC:18: title: duplicate key; keep only one of them"
    ]


def test_spec_must_be_a_mapping(project):
    assert problems(project, "- just\n- a list\n") == [
        "SPEC:1: the spec must be a YAML mapping with keys like 'report', 'title', 'models' and "
        "'layers'; see docs/reference/spec.md"
    ]


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_model_sources_that_do_not_go_together(project):
    # arch + torchscript is allowed (the file's weights go into the class); onnx stands alone.
    text = SPEC.replace("    checkpoint: ckpt/{location}.pt\n", "    onnx: m{location}.onnx\n")
    assert problems(project, text) == [
        "SPEC:5: models[0]: an ONNX model carries its architecture and weights; remove 'arch', "
        "'torchscript' and 'checkpoint'"
    ]
    text = SPEC.replace("    arch: arch.py:TinyNet\n", "").replace("    checkpoint: ckpt/{location}.pt\n", "")
    assert problems(project, text) == [
        "SPEC:5: models[0]: give 'arch' (with an optional 'checkpoint'), 'exported', 'torchscript' or 'onnx'"
    ]


def test_location_template_required_for_several_locations(project):
    text = SPEC.replace("ckpt/{location}.pt", "ckpt/a.pt")
    assert problems(project, text) == [
        "SPEC:5: models[0]: several locations share one file; put '{location}' in the checkpoint path"
    ]


def test_numeric_location_names_become_strings(project):
    for i in (1, 2):
        (project / "ckpt" / f"{i}.pt").write_bytes((project / "ckpt" / "a.pt").read_bytes())
    spec = load_spec(write_spec(project, SPEC.replace("[a, b, c]", "[1, 2]")))
    assert [r.location for r in spec.runs] == ["1", "2"]


def test_reference_and_compare_base(project):
    text = SPEC + """reference:
  arch: arch.py:TinyNet
  checkpoint: ckpt/missing.pt
  locations: [x]
  layer: conv1
analyses:
  compare: {base: bb}
"""
    assert problems(project, text) == [
        "SPEC:18: reference: a reference is one model: remove 'locations'",
    ]
    text = text.replace("  locations: [x]\n", "")
    assert problems(project, text) == [
        f"SPEC:20: reference.checkpoint: file not found: {project / 'ckpt' / 'missing.pt'}",
        "SPEC:23: analyses.compare.base: no location 'bb'; did you mean 'b'?",
    ]
    spec = load_spec(write_spec(project, text.replace("missing", "a").replace("bb", "b")))
    assert spec.reference_run.key == "reference" and spec.reference_run.layers[0].name == "conv1"


def test_grey_input_takes_one_value_defaults(tmp_path):
    from reportgen.load.spec import InputSpec

    grey = InputSpec(channels="grey")
    assert grey.mean == (0.0,) and grey.std == (1.0,)
    assert InputSpec(channels="grey", mean=[0.5], std=[0.25]).mean == (0.5,)
    assert InputSpec().mean == (0.0, 0.0, 0.0)


def test_one_mean_value_keeps_rgb_units_input():
    import numpy as np

    from reportgen.run.unit_views import normalise_pixels

    pixels = np.random.default_rng(0).random((2, 3, 4, 5))
    x = normalise_pixels(pixels, [0.5], [0.25], channels=3).numpy()
    assert x.shape == (2, 3, 4, 5)
    np.testing.assert_allclose(x, (pixels - 0.5) / 0.25, rtol=1e-6)
    assert normalise_pixels(pixels, [0.5], [0.25], channels=1).shape == (2, 1, 4, 5)


def test_a_loaded_spec_survives_pickling(project):
    """Build steps send the spec to worker processes (render.report's extension pictures)."""
    import pickle

    spec = load_spec(write_spec(project))
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec and again.report == "tiny" and [r.key for r in again.runs] == ["a", "b", "c"]
