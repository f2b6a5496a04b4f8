"""Bad input, as a matrix: each case gets one clear 'Error:' line, a non-zero exit, no
traceback, and leaves the previously built report exactly as it was."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from reportgen.cli import cli
from tests.conftest import ROOT, SPEC, copy_report, tiny_module, write_spec


class Evil:
    def __reduce__(self):
        return (os.system, ("echo unpickled > /dev/null",))


def _replace(old, new):
    return lambda p: write_spec(p, SPEC.replace(old, new))


def _ckpt(loc, make):
    def mutate(p):
        make(p / "ckpt" / f"{loc}.pt")
        return write_spec(p)
    return mutate


def _image(make):
    def mutate(p):
        make(p / "img" / "im1.png")
        return write_spec(p)
    return mutate


def _batch(content: str):
    """A spec with a trace batch file holding ``content``."""
    def mutate(p):
        (p / "batch.json").write_text(content)
        return write_spec(p, SPEC + "analyses:\n  trace: {batch: batch.json}\n")
    return mutate


CASES = {
    "title with a newline": (_replace("title: Tiny report", 'title: "Tiny\\nreport"'),
                             r"spec.yaml:2: title: the title must be one line without control characters"),
    "trace batch of strings": (_batch('{"inputs": [["a", "b"]], "labels": [1]}'),
                               r"spec.yaml:19: analyses.trace.batch: \S+batch.json: inputs\[0\]\[0\] is \"a\", "
                               r"not a finite number"),
    "trace batch of ragged rows": (_batch('{"inputs": [[1, 2], [3]], "labels": [1, 0]}'),
                                   r"spec.yaml:19: analyses.trace.batch: \S+batch.json: inputs\[1\] has 1 numbers "
                                   r"where inputs\[0\] has 2; every entry of 'inputs' must have the same length"),
    "trace batch with a label too few": (_batch('{"inputs": [[1, 2], [3, 4]], "labels": [1]}'),
                                         r"spec.yaml:19: analyses.trace.batch: \S+batch.json: 'labels' has 1 entries "
                                         r"and 'inputs' 2 rows; give one label"),
    "malformed YAML": (lambda p: write_spec(p, SPEC.replace("title: Tiny report", "title: [oops")),
                       r"spec.yaml:\d+:\d+: invalid YAML"),
    "unknown key": (_replace("arch_args", "archargs"), r"spec.yaml:7: models\[0\].archargs: unknown key; did you mean 'arch_args'\?"),
    "wrong type": (_replace("size: [16, 16]", "size: big"), r"spec.yaml:11: input.size: input should be a valid tuple"),
    "empty locations": (_replace("[a, b, c]", "[]"), r"spec.yaml:9: models\[0\].locations: list should have at least 1 item"),
    "missing checkpoint": (_ckpt("b", lambda f: f.unlink()), r"spec.yaml:9: models\[0\].locations\[1\]: checkpoint for location 'b' not found"),
    "truncated checkpoint": (_ckpt("c", lambda f: f.write_bytes(f.read_bytes()[:300])),
                             r"location 'c': checkpoint .*c.pt is truncated, corrupt or not a PyTorch checkpoint"),
    "other architecture": (_ckpt("a", lambda f: torch.save(tiny_module(width=6).state_dict(), f)),
                           r"location 'a': checkpoint .* does not fit the architecture: wrong shapes"),
    "pickle that runs code": (_ckpt("a", lambda f: torch.save({"state_dict": tiny_module().state_dict(), "x": Evil()}, f)),
                              r"refuses, because unpickling them can run code; .* set 'trusted: true'"),
    "unknown layer": (_replace("  - conv2\n", "  - conv9\n"), r"spec.yaml:16: layers\[1\]: model 'tiny' has no layer 'conv9'; did you mean"),
    "unreadable image": (_image(lambda f: f.write_bytes(b"\x89PNG\r\n\x1a\nbroken")), r"image .*im1.png cannot be read"),
    "empty image file": (_image(lambda f: f.write_bytes(b"")), r"image .*im1.png cannot be read"),
    "1x1 image": (_image(lambda f: Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(f)), r"image .*im1.png is 1x1 pixels, too small"),
    "glob matches nothing": (_replace("img/*.png", "img/*.tif"), r"spec.yaml:13: images\[0\]: no image files match 'img/\*.tif'"),
    "slug outside docs": (_replace("report: tiny", "report: ../../etc"), r"spec.yaml:1: report: '../../etc' is not allowed"),
    "location outside docs": (_replace("[a, b, c]", "[a, b, ../../c]"), r"location name '../../c' is not allowed"),
}


# -- the model, image and user-mistake half of the matrix --------------------------------
# Each case returns the CLI arguments to run after mutating the project; the expected
# errors are regexes, one per `Error:` line (several only for `check`, which lists every
# problem at once).

NET = """\
import sys
import torch
from torch import nn


class Head32(nn.Module):
    \"\"\"A Linear head sized for 32x32 inputs (8 channels of 16x16 after one pooling).\"\"\"

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16 * 16, 3)

    def forward(self, x):
        return self.fc(self.conv2(self.pool(self.conv1(x))).flatten(1))


class Grey(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.conv1(x)


class Extras(nn.Module):
    \"\"\"Layers of kinds reportgen cannot show, and one that never runs.\"\"\"

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.spare = nn.Conv2d(4, 4, 3)
        self.c1d = nn.Conv1d(4, 4, 3)
        self.c3d = nn.Conv3d(1, 2, 3)
        self.flat = nn.Flatten(2)
        self.flat1 = nn.Flatten(1)
        self.nothing = Nothing()
        self.mapping = Mapping()

    def forward(self, x):
        x = self.conv1(x)
        self.nothing(x)
        self.mapping(x)
        self.flat1(x)
        self.c3d(x[:, None])
        return self.c1d(self.flat(x))


class Nothing(nn.Module):
    def forward(self, x):
        return None


class Mapping(nn.Module):
    def forward(self, x):
        return {"out": x}


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)

    def forward(self, x, y):
        return self.conv1(x) + y


class Unfinished(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        raise NotImplementedError("forward is still to be written")


class Picky(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        if width % 2:
            raise ValueError("width must be even")
        assert width < 100, "width too large"
        self.conv1 = nn.Conv2d(3, width, 3)

    def forward(self, x):
        return self.conv1(x)


class Needs(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3)

    def forward(self, x):
        return self.conv1(x)


class Quits(nn.Module):
    def __init__(self):
        super().__init__()
        sys.exit(0)


class Interrupted(nn.Module):
    def __init__(self):
        super().__init__()
        raise KeyboardInterrupt


def forgets_return():
    Head32()


def state_dict_instead():
    return Head32().state_dict()


WIDTH = 4
"""

MODEL_LINES = "    arch: arch.py:TinyNet\n    arch_args: {width: 4}\n    checkpoint: ckpt/{location}.pt\n    locations: [a, b, c]\n"
LAYER_LINES = "layers:\n  - conv1\n  - conv2\n  - fc\n"


def _net(cls, layers=("conv1",), replace=(), args="", prefix="", command="build"):
    """The spec with model `cls` of NET (initial weights, one run) and these layers."""
    def mutate(p):
        (p / "net.py").write_text(prefix + NET)
        text = SPEC.replace(MODEL_LINES, f"    arch: net.py:{cls}\n{args}")
        text = text.replace(LAYER_LINES, "layers:\n" + "".join(f"  - {n}\n" for n in layers))
        for old, new in replace:
            assert old in text, old
            text = text.replace(old, new)
        return _cli(command, write_spec(p, text), p)
    return mutate


def _cli(command, spec, p):
    if command == "build":
        return ["build", str(spec), "--docs-dir", str(p / "docs"), "--device", "cpu", "--no-cache"]
    return [command, str(spec)]


def _spec(old, new, command="build"):
    def mutate(p):
        return _cli(command, write_spec(p, SPEC.replace(old, new)), p)
    return mutate


def _with_image(make, replace=(), command="build"):
    def mutate(p):
        make(p / "img" / "im1.png")
        text = SPEC
        for old, new in replace:
            text = text.replace(old, new)
        return _cli(command, write_spec(p, text), p)
    return mutate


def _tiff(make):
    def mutate(p):
        (p / "img" / "im1.png").unlink()
        make(p / "img" / "im1.tif")
        return _cli("build", write_spec(p, SPEC.replace("img/*.png", "img/*.*")), p)
    return mutate


def _bilevel(w, h):
    return lambda f: Image.new("1", (w, h)).save(f)


def _init(target, *extra, prefix=""):
    def mutate(p):
        (p / "net.py").write_text(prefix + NET)
        return ["init", target, "-o", str(p / "specs" / "new.yaml"), *extra]
    return mutate


def _ckpt_tensor(make):
    def mutate(p):
        sd = tiny_module().state_dict()
        sd["conv1.weight"] = make(sd["conv1.weight"])
        torch.save(sd, p / "ckpt" / "b.pt")
        return _cli("build", write_spec(p), p)
    return mutate


def _all_phases(p):
    """A top-level typo, a wrong layer, a missing checkpoint and a wrong channel count at once."""
    (p / "ckpt" / "c.pt").unlink()
    text = (SPEC.replace("title: Tiny report", "title: Tiny report\ntheme: dark")
            .replace("  - conv2\n", "  - conv9\n").replace("size: [16, 16]", "size: [16, 16]\n  channels: grey\n  mean: [0.5]\n  std: [0.5]"))
    return ["check", str(write_spec(p, text))]


def _all_phases_images(p):
    """A broken image, a Conv1d layer and an arch_args typo in a second model, at once."""
    (p / "img" / "im2.png").write_bytes(b"not a png")
    (p / "net.py").write_text(NET)
    text = SPEC.replace("    locations: [a, b, c]\n", "    locations: [a, b, c]\n  - name: extras\n"
                        "    arch: net.py:Extras\n    layers: [conv1, c1d]\n  - name: tiny2\n"
                        "    arch: arch.py:TinyNet\n    arch_args: {widht: 4}\n")
    return ["check", str(write_spec(p, text))]


HERE = r"spec.yaml:\d+: "
BUILDING = HERE + r"models\[0\].arch: building 'net.py:"

MODEL_CASES = {
    # the architecture's own code
    "constructor raises": (_net("Picky", args="    arch_args: {width: 3}\n"),
                           [BUILDING + r"Picky' raised ValueError: width must be even; check the constructor"]),
    "constructor assert fails": (_net("Picky", args="    arch_args: {width: 200}\n"),
                                 [BUILDING + r"Picky' raised AssertionError: width too large"]),
    "arch_args typo": (_spec("{width: 4}", "{widht: 4}"),
                       [r"spec.yaml:7: models\[0\].arch_args: 'widht' is not an argument of TinyNet\(width\); "
                        r"did you mean 'width'\?"]),
    "arch_args unknown": (_spec("{width: 4}", "{colour: red}"),
                          [r"spec.yaml:7: models\[0\].arch_args: 'colour' is not an argument of TinyNet\(width\); "
                           r"it takes: width"]),
    "arch_args missing": (_net("Needs"), [HERE + r"models\[0\].arch_args: Needs\(width\) needs 'width'; add it"]),
    "factory returns None": (_net("forgets_return"),
                             [HERE + r"models\[0\].arch: 'net.py:forgets_return' returned NoneType, not a torch.nn.Module"]),
    "factory returns a dict": (_net("state_dict_instead"),
                               [HERE + r"models\[0\].arch: 'net.py:state_dict_instead' returned OrderedDict, not a torch.nn.Module"]),
    "arch not callable": (_net("WIDTH"), [HERE + r"models\[0\].arch: 'net.py:WIDTH' is a int, not a class or function"]),
    "sys.exit(0) on import": (_net("Head32", prefix="import sys; sys.exit(0)\n"),
                              [HERE + r"models\[0\].arch: importing net.py called sys.exit\(0\); remove the exit"]),
    "SystemExit with a message on import": (_net("Head32", prefix="raise SystemExit('usage: net.py DATA')\n"),
                                            [HERE + r"models\[0\].arch: importing net.py called sys.exit\('usage: net.py DATA'\)"]),
    "KeyboardInterrupt on import": (_net("Head32", prefix="raise KeyboardInterrupt\n"),
                                    [HERE + r"models\[0\].arch: importing net.py raised KeyboardInterrupt"]),
    "sys.exit(0) in constructor": (_net("Quits"), [BUILDING + r"Quits' called sys.exit\(0\)"]),
    "KeyboardInterrupt in constructor": (_net("Interrupted"), [BUILDING + r"Interrupted' raised KeyboardInterrupt"]),
    # the dry forward pass
    "Linear head, input too large": (_net("Head32", ["conv1", "fc"], replace=[("size: [16, 16]", "size: [224, 224]")]),
                                     [HERE + r"input.size: model 'tiny' cannot run at input.size \[224, 224\]: "
                                      r"RuntimeError: mat1 and mat2 shapes cannot be multiplied.*; set input.size: "
                                      r"\[32, 32\] \(inferred from the first Linear layer's in_features"]),
    "Linear head, input too small (only an early layer listed)": (_net("Head32"), [HERE + r"input.size: model 'tiny' cannot run at input.size "
                                                      r"\[16, 16\]: .*; set input.size: \[32, 32\]"]),
    "Linear head, no input.size": (_net("Head32", ["conv1", "fc"], replace=[("input:\n  size: [16, 16]\n", "")]),
                                   [HERE + r"input.size: model 'tiny' cannot run at image .*im0.png \(16x20, "
                                    r"input.size not set\): .*; set input.size: \[32, 32\]"]),
    "grey input, RGB model": (_spec("size: [16, 16]", "size: [16, 16]\n  channels: grey\n  mean: [0.5]\n  std: [0.5]"),
                              [r"spec.yaml:12: input.channels: model 'tiny' expects 3 input channels but input.channels "
                               r"gives 1; set input.channels: rgb"]),
    "RGB input, grey model": (_net("Grey"), [HERE + r"input.channels: model 'tiny' expects 1 input channel but input.channels gives 3; "
                                             r"set input.channels: grey"]),
    "forward takes two inputs": (_net("TwoInputs"), [HERE + r"input.size: model 'tiny' cannot run at input.size "
                                                     r"\[16, 16\]: TypeError: .*forward\(\) missing 1 required "
                                                     r"positional argument.*fails at every size tried"]),
    "forward raises": (_net("Unfinished"), [HERE + r".*NotImplementedError: forward is still to be written; .*fails at "
                                            r"every size tried"]),
    "2x2 image without input.size": (_with_image(lambda f: Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(f),
                                                 [("input:\n  size: [16, 16]\n", "")]),
                                     [HERE + r"input.size: model 'tiny' cannot run at image .*im1.png \(2x2, input.size "
                                      r"not set\): .*; set input.size: \[\d+, \d+\] \(.*checked by a forward pass"]),
    "check: Linear head at the wrong size": (_net("Head32", command="check"),
                                             [HERE + r"input.size: model 'tiny' cannot run at input.size \[16, 16\]"]),
    "check: grey input, RGB model": (_spec("size: [16, 16]", "size: [16, 16]\n  channels: grey\n  mean: [0.5]\n  std: [0.5]", "check"),
                                     [r"expects 3 input channels but input.channels gives 1; set input.channels: rgb"]),
    # layers
    "layer never runs": (_net("Extras", ["conv1", "spare"]),
                         [HERE + r"layers\[1\]: layer 'spare' never runs in the forward pass of model 'tiny'"]),
    "Conv1d layer": (_net("Extras", ["c1d"]), [HERE + r"layers\[0\]: layer 'c1d' is a Conv1d, which is not supported; "
                                               r"reportgen shows Conv2d and Linear layers"]),
    "Conv3d layer": (_net("Extras", ["conv1", "c3d"]), [HERE + r"layers\[1\]: layer 'c3d' is a Conv3d, which is not "
                                                        r"supported"]),
    "layer returns None": (_net("Extras", ["nothing"]), [HERE + r"layers\[0\]: layer 'nothing' returns NoneType, not a "
                                                          r"tensor"]),
    "layer returns a dict": (_net("Extras", ["mapping"]), [HERE + r"layers\[0\]: layer 'mapping' returns dict, not a tensor"]),
    "layer with 3-D output": (_net("Extras", ["flat"]), [HERE + r"layers\[0\]: layer 'flat' \(Flatten\) outputs 3-D tensors "
                                                         r"\(1, 4, 256\), which is not supported"]),
    "units on a Linear layer": (_spec("  - fc\n", "  - fc\nanalyses:\n  units:\n    layers: [fc]\n"),
                                [r"spec.yaml:20: analyses.units.layers\[0\]: layer 'fc' is a Linear with output 3; "
                                 r"unit views need a convolutional layer"]),
    "units on a flattened layer": (_net("Extras", ["conv1", "flat1"], replace=[("  - flat1\n", "  - flat1\nanalyses:\n"
                                                                                  "  units:\n    layers: [flat1]\n")]),
                                   [HERE + r"analyses.units.layers\[0\]: layer 'flat1' is a Flatten with output 1024; "
                                    r"unit views need a convolutional layer"]),
    "check: never-running and Conv1d layers": (_net("Extras", ["spare", "c1d"], command="check"),
                                               [r"layers\[1\]: layer 'c1d' is a Conv1d", r"layers\[0\]: layer 'spare' "
                                                r"never runs"]),
    # checkpoints
    "sparse tensor in checkpoint": (_ckpt_tensor(lambda t: t.to_sparse()),
                                    [r"location 'b': checkpoint .*b.pt: tensor 'conv1.weight' is stored as sparse_coo, "
                                     r"not as a dense tensor; re-save"]),
    "sparse CSR tensor in checkpoint": (_ckpt_tensor(lambda t: t.reshape(4, 27).to_sparse_csr()),
                                        [r"tensor 'conv1.weight' is stored as sparse_csr"]),
    "meta tensor in checkpoint": (_ckpt_tensor(lambda t: torch.empty(t.shape, device="meta")),
                                  [r"location 'b': checkpoint .*b.pt: tensor 'conv1.weight' is a meta tensor"]),
    # images and sizes
    "decompression bomb": (_with_image(_bilevel(20000, 10000)),
                           [r"image .*im1.png claims more pixels than Pillow will decode, over reportgen's limit"]),
    "100-megapixel image": (_with_image(_bilevel(10000, 10000)),
                            [r"image .*im1.png claims 10000x10000 pixels, over reportgen's limit of 67,108,864"]),
    "check: 100-megapixel image": (_with_image(_bilevel(10000, 10000), command="check"),
                                   [r"image .*im1.png claims 10000x10000 pixels"]),
    "NaN in a float TIFF": (_tiff(lambda f: Image.fromarray(np.full((16, 16), np.nan, np.float32)).save(f)),
                            [r"image .*im1.tif holds NaN or infinite values"]),
    "infinity in a float TIFF": (_tiff(lambda f: Image.fromarray(np.full((16, 16), np.inf, np.float32)).save(f)),
                                 [r"image .*im1.tif holds NaN or infinite values"]),
    "input.size 100000": (_spec("size: [16, 16]", "size: [100000, 100000]"),
                          [r"spec.yaml:11: input.size: 100000 pixels is too large: sides are at most 4096"]),
    "input.size 5000 square": (_spec("size: [16, 16]", "size: 5000"), [r"spec.yaml:11: input.size: 5000 pixels is too large"]),
    "units.size 100000": (_spec("  - fc\n", "  - fc\nanalyses:\n  units:\n    layers: [conv2]\n    size: 100000\n"),
                          [r"spec.yaml:21: analyses.units.size: input should be less than or equal to 1024, got 100000"]),
    "units.size 2048": (_spec("  - fc\n", "  - fc\nanalyses:\n  units:\n    size: 2048\n"),
                        [r"analyses.units.size: input should be less than or equal to 1024"]),
    # reportgen init
    "init: factory returns a dict": (_init("net.py:state_dict_instead"),
                                     [r"--arch: 'net.py:state_dict_instead' returned OrderedDict, not a torch.nn.Module"]),
    "init: factory returns None": (_init("net.py:forgets_return"), [r"returned NoneType, not a torch.nn.Module"]),
    "init: constructor raises": (_init("net.py:Picky", "--arch-args", '{"width": 3}'),
                                 [r"--arch: building 'net.py:Picky' raised ValueError: width must be even"]),
    "init: sys.exit on import": (_init("net.py:Head32", prefix="import sys; sys.exit(0)\n"),
                                 [r"importing net.py called sys.exit\(0\)"]),
    "init: arch-args typo": (_init("net.py:Picky", "--arch-args", '{"widht": 4}'),
                             [r"--arch-args: 'widht' is not an argument of Picky\(width\); did you mean 'width'\?"]),
    # check lists every problem of every stage at once
    "check: all phases at once": (_all_phases, [
        r"spec.yaml:3: theme: unknown key", r"spec.yaml:\d+: models\[0\].locations\[2\]: checkpoint for location 'c' "
        r"not found", r"spec.yaml:\d+: layers\[1\]: model 'tiny' has no layer 'conv9'",
        r"expects 3 input channels but input.channels gives 1"]),
    "check: images, kinds and arch_args at once": (_all_phases_images, [
        r"image .*im2.png cannot be read", r"layers\[1\]: layer 'c1d' is a Conv1d",
        r"models\[2\].arch_args: 'widht' is not an argument"]),
}


@pytest.fixture
def built(tiny_build, tmp_path, monkeypatch):
    """A copy of a project with a good report in docs/ (``tiny_build``, built once per session),
    and the working directory inside it."""
    dst = tmp_path / "p"
    shutil.copytree(tiny_build[1], dst)
    monkeypatch.chdir(dst)
    return dst


def snapshot(folder, skip=None):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not (skip and p.is_relative_to(skip))}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_matrix(built, case):
    mutate, message = CASES[case]
    before = snapshot(built / "docs")
    spec = mutate(built)
    res = CliRunner().invoke(cli, ["build", str(spec), "--docs-dir", str(built / "docs"), "--device", "cpu"])
    assert res.exit_code == 1, (case, res.output)
    assert isinstance(res.exception, SystemExit), f"{case}: unexpected exception {res.exception!r}"
    errors = [line for line in res.stderr.strip().splitlines() if not line.startswith("[")]  # progress lines
    assert len(errors) == 1 and errors[0].startswith("Error: "), (case, res.stderr)
    assert re.search(message, errors[0]), (case, errors[0])
    assert "Traceback" not in res.output
    assert snapshot(built / "docs") == before, f"{case}: the previous report changed"


def run_case(root, case):
    """Mutate a copy of the built project as ``case`` says, run the command; return
    (CliRunner result, docs before, docs after, other files before, other files after)."""
    mutate, _ = MODEL_CASES[case]
    docs_before = snapshot(root / "docs")
    args = mutate(root)
    rest_before = snapshot(root, skip=root / "docs")
    res = CliRunner().invoke(cli, args)
    return res, docs_before, snapshot(root / "docs"), rest_before, snapshot(root, skip=root / "docs")


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_model_and_image_mistakes(built, case):
    res, docs_before, docs_after, rest_before, rest_after = run_case(built, case)
    expected = MODEL_CASES[case][1]
    assert "Traceback" not in res.output, (case, res.output)
    assert res.exit_code == 1, (case, res.output)
    assert isinstance(res.exception, SystemExit), f"{case}: unexpected exception {res.exception!r}"
    errors = [line for line in res.stderr.strip().splitlines() if not line.startswith("[")]  # progress lines
    assert len(errors) == len(expected) and all(e.startswith("Error: ") for e in errors), (case, res.stderr)
    for pattern in expected:
        assert any(re.search(pattern, e) for e in errors), (case, pattern, errors)
    assert docs_after == docs_before, f"{case}: the previous report changed"
    assert rest_after == rest_before, f"{case}: files outside docs/ were written: " + ", ".join(
        sorted(set(rest_after) ^ set(rest_before)))
    assert not (built / "RAN").exists(), f"{case}: code ran"


def test_trusted_flag_accepts_the_pickle(built):
    torch.save({"state_dict": tiny_module().state_dict(), "x": Evil()}, built / "ckpt" / "a.pt")
    spec = write_spec(built, SPEC.replace("checkpoint: ckpt", "trusted: true\n    checkpoint: ckpt"))
    res = CliRunner().invoke(cli, ["build", str(spec), "--docs-dir", str(built / "docs"), "-q"])
    assert res.exit_code == 0, res.output


def test_cuda_without_gpu_leaves_report(built):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    before = snapshot(built / "docs")
    res = CliRunner().invoke(cli, ["build", str(write_spec(built)), "--docs-dir", str(built / "docs"), "--device", "cuda"])
    assert res.exit_code == 1 and res.stderr.startswith("Error: device 'cuda' was asked for")
    assert snapshot(built / "docs") == before


def test_layer_without_weights_builds_with_activations_only(built):
    spec = write_spec(built, SPEC.replace("  - fc\n", "  - pool\n  - relu1\n"))
    res = CliRunner().invoke(cli, ["build", str(spec), "--docs-dir", str(built / "docs"), "-q"])
    assert res.exit_code == 0, res.output
    page = (built / "docs/tiny/locations/a.md").read_text()
    assert "This layer has no weight tensor, so only its activations are shown." in page


def test_nan_weights_build_and_are_flagged(built):
    sd = tiny_module().state_dict()
    sd["conv2.weight"][3] = float("nan")
    torch.save(sd, built / "ckpt" / "b.pt")
    res = CliRunner().invoke(cli, ["build", str(write_spec(built)), "--docs-dir", str(built / "docs"), "-q"])
    assert res.exit_code == 0, res.output
    index = (built / "docs/tiny/index.md").read_text()
    assert "[1 of 8 filters of `conv2` hold NaN or Inf](" in index and "**b**" in index


def test_html_and_markdown_in_title_are_escaped(built):
    spec = write_spec(built, SPEC.replace("title: Tiny report", "title: '<script>alert(1)</script> **bold** [x](y)'")
                      .replace("description: Three locations of a tiny network.",
                               "description: 'A <img src=x onerror=alert(1)> *desc*'"))
    res = CliRunner().invoke(cli, ["build", str(spec), "--docs-dir", str(built / "docs"), "-q"])
    assert res.exit_code == 0, res.output
    index = (built / "docs/tiny/index.md").read_text()
    # HTML is neutralised; bold and link syntax are escaped (brackets suffice for the link)
    assert index.startswith("# &lt;script&gt;alert(1)&lt;/script&gt; \\*\\*bold\\*\\* \\[x\\](y)\n")
    assert "<script" not in index and "<img" not in index
    assert "A &lt;img src=x onerror=alert(1)&gt; *desc*" in index  # Markdown kept, HTML neutralised


def test_second_build_at_once_refuses_cleanly(built):
    from reportgen.publish.site import build_lock

    before = snapshot(built / "docs")
    with build_lock(built / "docs", "tiny"):
        res = CliRunner().invoke(cli, ["build", str(write_spec(built)), "--docs-dir", str(built / "docs")])
    assert res.exit_code == 1
    assert res.stderr.startswith("Error: another build of report 'tiny' is running")
    assert snapshot(built / "docs") == {k: v for k, v in before.items()}


def test_ctrl_c_during_a_build_leaves_the_previous_report(tmp_path, edges_build, towncenter_build):
    """A real SIGINT to a real build of the TownCentre example."""
    docs = tmp_path / "docs"
    env = {**os.environ, "REPORTGEN_CACHE_DIR": str(tmp_path / "cache")}
    # The previous reports: the examples as built once per session (tests/conftest.py).
    before = snapshot(copy_report(edges_build, docs))
    before_tc = snapshot(copy_report(towncenter_build, docs))
    cmd = [sys.executable, "-m", "reportgen", "build", str(ROOT / "specs/towncenter.yaml"), "--docs-dir",
           str(docs), "--no-cache"]
    # A test worker may run with SIGINT ignored (pytest-xdist's), which a child inherits and
    # Python then respects: give the build the default disposition a terminal gives it.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in proc.stderr:  # progress lines; interrupt once the analysis of a location began
        seen.append(line)
        if "loc0" in line:
            break
    assert any("loc0" in line for line in seen), "".join(seen)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    err = "".join(seen) + err
    assert proc.returncode != 0
    assert "Traceback" not in err
    assert snapshot(docs / "towncenter") == before_tc
    assert snapshot(docs / "edges") == before
    assert not list(docs.glob(".towncenter~staging-*"))
