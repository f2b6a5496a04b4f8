"""ReportFiles: each file is on disk as soon as it is added; only a small record stays."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from reportgen.core.files import ReportFiles
from reportgen.render.colour import display_width, encode_png


def test_a_file_is_written_when_added(tmp_path):
    files = ReportFiles(tmp_path)
    rel = files.add("img/a/conv1/tile.png", b"\x00\x01picture")
    assert rel == "img/a/conv1/tile.png"
    assert (tmp_path / rel).read_bytes() == b"\x00\x01picture"  # before any other step runs
    files.add("index.md", "# Title é\n")
    assert (tmp_path / "index.md").read_bytes() == "# Title é\n".encode("utf-8")
    assert "index.md" in files and "other.md" not in files and len(files) == 2
    assert files.count(".md") == 1 and files.count(".png") == 1


def test_records_are_the_digests_and_sizes_of_what_is_on_disk(tmp_path):
    files = ReportFiles(tmp_path)
    rng = np.random.default_rng(1)
    for i in range(5):
        files.add(f"img/{i}.bin", rng.bytes(int(rng.integers(0, 5000))))
    for rel, rec in files.records():
        data = (tmp_path / rel).read_bytes()
        assert rec.size == len(data) and rec.sha256 == hashlib.sha256(data).hexdigest()
    assert files.digests() == {rel: hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest()
                               for rel in (p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.bin"))}
    assert list(files.digests()) == sorted(files.digests())


def test_widths_are_read_from_the_pictures_when_added(tmp_path):
    files = ReportFiles(tmp_path, width=display_width)
    dense = encode_png(np.zeros((10, 30, 3), dtype=np.uint8))
    files.add("img/dense.png", dense)
    files.add("img/plain.png", b"not a png")
    files.add("notes.md", dense)  # not a picture: no width
    want = display_width(dense)
    assert files.widths() == ({"img/dense.png": want} if want is not None else {})
    seen = []
    counted = ReportFiles(tmp_path / "other", width=lambda data: seen.append(data) or 7)
    counted.add("a.png", b"x")
    counted.add("b.md", b"y")
    assert seen == [b"x"] and counted.widths() == {"a.png": 7}


@pytest.mark.parametrize("rel", ["../escape.md", "/etc/passwd", "img/../../x.png", ""])
def test_paths_outside_the_report_are_refused(tmp_path, rel):
    files = ReportFiles(tmp_path / "report")
    with pytest.raises(ValueError, match="outside the report"):
        files.add(rel, b"x")
    assert not (tmp_path / "escape.md").exists() and not (tmp_path / "x.png").exists()
    assert len(files) == 0


def test_a_file_added_twice_is_refused_and_keeps_its_first_bytes(tmp_path):
    files = ReportFiles(tmp_path)
    files.add("index.md", "first")
    with pytest.raises(ValueError, match="written twice: index.md"):
        files.add("index.md", "second")
    assert (tmp_path / "index.md").read_text() == "first"
    assert files.digests()["index.md"] == hashlib.sha256(b"first").hexdigest()
