"""Incremental builds: nothing changed -> nothing computed; a change recomputes only its part."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch

from reportgen.build import build
from reportgen.core.cache import Cache
from reportgen.core.progress import Progress
from tests.conftest import SPEC, tiny_module, write_spec


def run(project, cache_dir, text=SPEC):
    return build(write_spec(project, text), project / "docs", device="cpu", cache_dir=cache_dir)


def test_unchanged_rebuild_computes_nothing_and_gives_the_same_report(project, tmp_path):
    cache = tmp_path / "cache"
    first = run(project, cache)
    # only repeated pictures hit on a first build (the same input image shown for every location)
    assert set(first.cache.hits) <= {"png"} and first.cache.misses["layer"] == 9  # 3 runs x 3 layers
    second = run(project, cache)
    assert sum(second.cache.misses.values()) == 0
    assert second.report == first.report


@pytest.mark.slow
def test_changed_checkpoint_recomputes_only_its_location(project, tmp_path):
    cache = tmp_path / "cache"
    run(project, cache)
    torch.save({"state_dict": tiny_module(seed=7).state_dict()}, project / "ckpt" / "b.pt")
    again = run(project, cache)
    assert again.cache.misses["layer"] == 3  # b's three layers
    assert again.cache.hits["layer"] == 6
    # per layer and measure, the pairs with b: (a,b), (b,b), (b,c) -> 3 of 6 entries
    pairs = again.cache.misses["pair"]
    assert pairs and pairs == again.cache.hits["pair"]
    fresh = build(write_spec(project), project / "docs2", device="cpu", cache_dir=None)
    assert again.report["comparisons"] == fresh.report["comparisons"]
    assert again.report["runs"] == fresh.report["runs"]


def test_changed_option_recomputes_only_what_depends_on_it(project, tmp_path):
    cache = tmp_path / "cache"
    run(project, cache)
    text = SPEC + "analyses:\n  health: {duplicate_cosine: 0.5}\n"
    again = run(project, cache, text)
    assert again.cache.misses["layer"] == 0 and again.cache.misses["pair"] == 0
    assert again.cache.misses["health"] == 9  # the duplicate rule uses the threshold


def test_no_cache_stores_nothing(project, tmp_path):
    result = run(project, None)
    assert not result.cache.enabled and sum(result.cache.hits.values()) == 0
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_corrupt_entry_is_a_miss_and_is_replaced(project, tmp_path):
    cache = tmp_path / "cache"
    run(project, cache)
    entries = sorted((cache / "layer").rglob("*.rge"))
    entries[0].write_bytes(b"\x80garbage")
    again = run(project, cache)
    assert again.cache.misses["layer"] == 1
    assert sum(run(project, cache).cache.misses.values()) == 0


def test_interrupted_write_leaves_no_entry(tmp_path, monkeypatch):
    cache = Cache(tmp_path)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        cache.put("layer", "ab" * 32, {"x": 1})
    monkeypatch.undo()
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # no temp file, no entry
    assert cache.get("layer", "ab" * 32) is None


def test_progress_plain_lines_off_a_terminal():
    out = io.StringIO()
    with Progress(stream=out) as log:
        log("[1/2] a")
        log("[2/2] b")
        log("comparing locations")
    assert out.getvalue() == "[1/2] a\n[2/2] b\ncomparing locations\n"
    quiet = io.StringIO()
    with Progress(enabled=False, stream=quiet) as log:
        log("[1/2] a")
    assert quiet.getvalue() == ""


# --------------------------------------------------------------------------- data, never code

import errno  # noqa: E402
import pickle  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from reportgen.cli import cli  # noqa: E402
from reportgen.core import cache as cache_mod  # noqa: E402


class _Plant:
    """Unpickling this creates ``path``: proof that a cache entry ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def cli_build(project, docs, cache_dir=None):
    args = ["build", str(write_spec(project)), "--docs-dir", str(project / docs), "--device", "cpu", "-q"]
    args += ["--cache-dir", str(cache_dir)] if cache_dir else ["--no-cache"]
    return CliRunner().invoke(cli, args)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A project built without a cache (nocache/) and with one (cache/): built once per module."""
    from tests.conftest import make_project

    project = make_project(tmp_path_factory.mktemp("ref") / "project")
    assert cli_build(project, "nocache").exit_code == 0
    assert cli_build(project, "docs", project.parent / "cache").exit_code == 0
    return project


@pytest.fixture
def project_copy(reference, tmp_path):
    """A copy of the reference project and its filled cache: (project, cache)."""
    import shutil

    shutil.copytree(reference.parent, tmp_path / "copy")
    return tmp_path / "copy" / "project", tmp_path / "copy" / "cache"


@pytest.fixture
def reference_json(reference):
    """report.json of a build without a cache: what every cached build must reproduce."""
    return (reference / "nocache" / "tiny" / "report.json").read_bytes()


def entries(cache_dir, kind="*"):
    return sorted(p for p in (cache_dir).glob(f"{kind}/*/*") if p.is_file())


def test_planted_links_and_fifos_are_misses(project_copy, reference_json):
    """A link to /dev/zero or a FIFO in an entry's place must neither hang nor fill memory."""
    project, cache = project_copy
    layer = entries(cache, "layer")
    for i, p in enumerate(layer):
        p.unlink()
        if i % 2:
            p.symlink_to("/dev/zero")
        else:
            os.mkfifo(p)
    res = cli_build(project, "docs", cache)
    assert res.exit_code == 0, res.output
    assert (project / "docs/tiny/report.json").read_bytes() == reference_json
    assert all(p.is_file() and not p.is_symlink() for p in layer)  # replaced by real entries


def test_planted_pickles_never_run(project_copy, tmp_path, reference_json):
    project, cache = project_copy
    ran = tmp_path / "code-ran"
    evil = pickle.dumps(_Plant(ran))
    planted = 0
    for p in entries(cache):
        p.write_bytes(evil)  # in place of every entry ...
        p.with_suffix(".pkl").write_bytes(evil)  # ... and where older versions looked
        p.with_suffix(".bin").write_bytes(evil)
        planted += 1
    assert planted > 50
    res = cli_build(project, "docs", cache)
    assert res.exit_code == 0, res.output
    assert not ran.exists()
    assert (project / "docs/tiny/report.json").read_bytes() == reference_json
    # every planted entry was a miss and has been replaced by a good one
    assert pickle.dumps(_Plant(ran)) not in {p.read_bytes() for p in entries(cache) if p.suffix == ".rge"}


@pytest.mark.parametrize("kind,damage", [
    ("png", "zero bytes"), ("layer", "zero bytes"), ("pair", "zero bytes"), ("layer", "truncated"),
    ("layer", "flipped byte in an array"), ("pair", "flipped byte in an array"), ("pair", "flipped byte in the JSON"),
])
def test_damaged_entries_are_misses(project_copy, reference, reference_json, kind, damage):
    project, cache = project_copy
    hit = entries(cache, kind)
    assert hit
    for p in hit:
        data = bytearray(p.read_bytes())
        if damage == "zero bytes":
            data = b""
        elif damage == "truncated":
            data = data[: len(data) // 2]
        elif damage == "flipped byte in an array":
            data[-1] ^= 0x01  # the last buffer: an array's (or a PNG's) last byte
        else:
            data[cache_mod.HEADER.size + 2] ^= 0x20
        p.write_bytes(bytes(data))
    res = cli_build(project, "docs", cache)
    assert res.exit_code == 0 and "Warning" not in res.output, res.output
    assert (project / "docs/tiny/report.json").read_bytes() == reference_json
    for png in (project / "docs/tiny").rglob("*.png"):
        assert png.read_bytes() == (reference / "nocache/tiny" / png.relative_to(project / "docs/tiny")).read_bytes()
    # replaced: the next build computes nothing
    again = build(write_spec(project), project / "docs", device="cpu", cache_dir=cache)
    assert sum(again.cache.misses.values()) == 0


def _cache_is_a_file(tmp_path, monkeypatch):
    (tmp_path / "cachefile").write_text("not a folder")
    return tmp_path / "cachefile"


def _cache_read_only(tmp_path, monkeypatch):
    from tests.test_bad_input_env import read_only

    (tmp_path / "ro").mkdir()
    read_only(monkeypatch, tmp_path / "ro")
    return tmp_path / "ro" / "cache"


def _disk_full(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache_mod.tempfile, "mkstemp", full)
    return tmp_path / "cache"


def _unreadable(tmp_path, monkeypatch):
    real = os.open
    root = str(tmp_path / "cache")

    def denied(path, *args, **kwargs):
        if os.fsdecode(path).startswith(root):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    return tmp_path / "cache"


@pytest.mark.parametrize("make", [_cache_is_a_file, _cache_read_only, _disk_full, _unreadable],
                         ids=["path is a file", "read-only", "disk full", "permission denied"])
@pytest.mark.parametrize("how", ["--cache-dir", "$REPORTGEN_CACHE_DIR"])
def test_unusable_cache_warns_once_and_builds(project_copy, tmp_path, reference_json, monkeypatch, make, how):
    project, _ = project_copy
    with monkeypatch.context() as mp:
        where = make(tmp_path, mp)
        args = ["build", str(write_spec(project)), "--docs-dir", str(project / "docs"), "--device", "cpu", "-q"]
        if how == "--cache-dir":
            args += ["--cache-dir", str(where)]
        else:
            mp.setenv("REPORTGEN_CACHE_DIR", str(where))
        res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, (res.output, res.exception)
    warnings = [line for line in res.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "cache" in warnings[0] and "building without it" in warnings[0], res.stderr
    assert "Traceback" not in res.output
    assert (project / "docs/tiny/report.json").read_bytes() == reference_json


# --------------------------------------------------------------------------- the entry format


@dataclass
class _Point:
    x: float
    tags: list


def test_values_round_trip_exactly():
    cache_mod.register(_Point)
    value = {
        "floats": [1.5, -0.0, float("nan"), float("inf"), -float("inf"), 1e308, 5e-324],
        "ints": (0, -1, 2**70, True, False, None), "text": "é\n\x00", "bytes": b"\x00\xff",
        "arrays": [np.arange(6, dtype=np.uint16).reshape(2, 3), np.asfortranarray(np.eye(3, dtype=np.float32)),
                   np.array([np.nan, np.inf], dtype=np.float64), np.zeros((0, 4), bool), np.array(3 + 4j),
                   np.arange(4, dtype=np.int8)[::2]],
        "scalars": [np.float32(0.1), np.int64(-7), np.bool_(True)],
        "point": _Point(2.0, [np.ones(2)]),
    }
    back = cache_mod.decode(cache_mod.encode(value))
    assert back["ints"] == value["ints"] and type(back["ints"]) is tuple
    assert back["text"] == value["text"] and back["bytes"] == value["bytes"]
    np.testing.assert_array_equal(back["floats"], value["floats"])
    assert np.signbit(back["floats"][1])
    for a, b in zip(back["arrays"], value["arrays"]):
        fortran = [x.flags.f_contiguous and not x.flags.c_contiguous for x in (a, b)]  # kept: BLAS rounding
        assert a.dtype == b.dtype and a.shape == b.shape and fortran[0] == fortran[1]
        np.testing.assert_array_equal(a, b)
    assert [type(s) for s in back["scalars"]] == [np.float32, np.int64, np.bool_]
    assert back["point"].x == 2.0 and isinstance(back["point"], _Point)


def test_only_plain_values_can_be_stored():
    @dataclass
    class Unregistered:
        x: int

    for bad in [Unregistered(1), np.array([object()]), {1: "int key"}, {"f": len}, Path("x"), bytearray(b"x")]:
        with pytest.raises(TypeError):
            cache_mod.encode(bad)


def _forged(tree: dict, blobs: bytes = b"") -> bytes:
    """An entry with a valid digest around any JSON tree: what a cache-folder writer could plant."""
    import hashlib
    import json
    import struct

    body = json.dumps(tree).encode()
    rest = struct.pack("<Q", len(body)) + body + blobs
    return cache_mod.MAGIC + hashlib.sha256(rest).digest() + rest


@pytest.mark.parametrize("tree", [
    {"a": ["|O", [1], 0, 8, True, "C"]},  # object array
    {"a": ["i4,O", [1], 0, 12, True, "C"]},  # structured dtype holding an object
    {"a": ["<f8", [2], 0, 8, True, "C"]},  # shape larger than the buffer
    {"a": ["<f8", [1], 4, 8, True, "C"]},  # buffer past the end
    {"c": "os._wrap_close", "v": {}},  # a class that is not registered
    {"c": "reportgen.core.results.LayerResult", "v": {"name": "x"}},  # fields that do not match
    {"x": 1},  # unknown tag
])
def test_forged_entries_are_refused(tree):
    import reportgen.build  # noqa: F401  (registers LayerResult)

    with pytest.raises(cache_mod.CorruptEntry):
        cache_mod.decode(_forged(tree, b"\x00" * 8))


def test_result_types_of_a_build_round_trip():
    """Every registered result type, with the kinds of values a build puts in them."""
    from dataclasses import fields

    from reportgen.analysis.gabor import gabor_scores
    from reportgen.core.results import LayerResult
    from reportgen.run.unit_views import UnitViews

    rng = np.random.default_rng(0)
    arr = {"f32": rng.normal(size=(2, 3)).astype(np.float32), "b": np.array([True, False])}
    views = UnitViews(**{f.name: arr["f32"] for f in fields(UnitViews)})
    views.layer, views.rf_size, views.decode_note, views.deconv = "conv2", (5, 5), None, None
    layer = LayerResult("conv1", "Conv2d", {"kernel_size": [3, 3], "pooled_scale": {"median_norm": 0.5}},
                        arr["f32"], True, stats={"mean": arr["f32"][0]}, maps=[arr["f32"]], health=dict(arr),
                        key="k" * 64)
    fits = gabor_scores(rng.normal(size=(2, 1, 7, 7)))
    back_views, back_layer, back_fits = cache_mod.decode(cache_mod.encode((views, layer, fits)))
    assert back_views.rf_size == (5, 5) and back_views.deconv is None
    np.testing.assert_array_equal(back_views.plain, views.plain)
    assert back_layer.info == layer.info and back_layer.health["b"].dtype == bool
    np.testing.assert_array_equal([f.score for f in back_fits], [f.score for f in fits])  # NaN == NaN here
    np.testing.assert_array_equal(back_fits[0].fitted, fits[0].fitted)
