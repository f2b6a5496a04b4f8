"""The per-run task: each model loaded once per build, extensions wired through every step."""

from __future__ import annotations

import io
import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from reportgen.build import build
from reportgen.core import extension as extensions
from reportgen.load import models
from tests.conftest import SPEC, write_spec

UNITS = "analyses:\n  units: {layers: [conv1], locations: [a, c], maximise: plain, steps: 2, top_n: 2}\n"
TRACE = "  trace: {batch: batch.json}\n"
REFERENCE = "reference:\n  arch: ref.py:Ref\n  checkpoint: ref.pt\n  layer: conv1\n"


def _count_loads(monkeypatch) -> Counter:
    """Count every model load by run key. Wrapping the loaders behind ``models.load_model``
    counts the loads of every caller, however it imported ``load_model``."""
    loads: Counter = Counter()
    for kind, loader in list(models.LOADERS.items()):
        def counted(spec, run, loader=loader):
            loads[run.key] += 1
            return loader(spec, run)
        monkeypatch.setitem(models.LOADERS, kind, counted)
    return loads


def _reference(project) -> None:
    torch.manual_seed(5)
    conv = torch.nn.Conv2d(3, 6, 3)
    torch.save({"conv1.weight": conv.weight.detach(), "conv1.bias": conv.bias.detach()}, project / "ref.pt")
    (project / "ref.py").write_text("from torch import nn\n\n\nclass Ref(nn.Module):\n    def __init__(self):\n"
                                    "        super().__init__()\n        self.conv1 = nn.Conv2d(3, 6, 3)\n")


def test_each_model_is_loaded_once_per_build(project, monkeypatch, one_thread):
    """Three locations with unit views (two of them), a numeric trace and a reference: every
    run's model is loaded once for all its steps, the reference once; a rebuild whose results
    are all cached loads no run's model (without a trace, which is not cached)."""
    _reference(project)
    (project / "batch.json").write_text(json.dumps({"inputs": [[0.0] * 3], "labels": [[1.0]]}))
    loads = _count_loads(monkeypatch)
    spec = write_spec(project, SPEC + UNITS + TRACE + REFERENCE)
    result = build(spec, project / "docs", device="cpu")
    assert loads == {"a": 1, "b": 1, "c": 1, "reference": 1}
    # every step ran: unit views of a and c, the trace was tried on each run (TinyNet is no MLP)
    runs = {r["key"]: r for r in result.report["runs"]}
    assert "units" in runs["a"]["layers"][0] and "units" in runs["c"]["layers"][0]
    assert "units" not in runs["b"]["layers"][0]
    assert sum("no numeric trace" in w for w in result.warnings) == 3
    loads.clear()
    build(write_spec(project, SPEC + UNITS + REFERENCE), project / "docs", device="cpu")
    assert loads == {"reference": 1}


def _png(value: float) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), int(value) % 256, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def toy_extension(monkeypatch):
    """A registered extension that records every call; removed again after the test."""
    from reportgen.analysis.wording import finding

    calls: Counter = Counter()

    class Toy(extensions.Extension):
        name = "toy"

        def run_wanted(self, spec, run):
            return run.key != "b"

        def run_part(self, ctx):
            calls["run_part"] += 1
            # the loaded model and the layer results of this run
            return {"conv1_sum": float(ctx.model.conv1.weight.detach().double().sum()),
                    "stats_channels": int(len(ctx.layers["conv1"].stats["mean"])), "images": len(ctx.images)}

        def reduce(self, spec, values, report):
            calls["reduce"] += 1
            assert [r["key"] for r in report["runs"]] == ["a", "b", "c"]  # the report so far
            return {"runs": list(values), "total": sum(v["conv1_sum"] for v in values.values())}

        def pictures(self, spec, section, values):
            calls["pictures"] += 1
            return {"sums.png": _png(section["total"])}

        def pages(self, spec, report, pics):
            calls["pages"] += 1
            return {"toy.md": f"# Toy\n\nRuns {report['toy']['runs']}.\n\n![sums]({pics['sums.png']})\n"}

        def findings(self, report, analyses):
            calls["findings"] += 1
            return [finding("danger", "**toy** found something", "a", None, "toy.md", 1e9, kind="toy",
                            locations=["a"])]

    ext = Toy()
    monkeypatch.setitem(extensions.EXTENSIONS, "toy", ext)
    yield calls
    assert "toy" in extensions.EXTENSIONS  # monkeypatch removes it after this


def test_extension_hooks_reach_report_json_and_pages(project, toy_extension, one_thread):
    calls = toy_extension
    docs = project / "docs"
    result = build(write_spec(project), docs, device="cpu")
    assert calls == {"run_part": 2, "reduce": 1, "pictures": 1, "pages": 1, "findings": 1}
    report = json.loads((docs / "tiny/report.json").read_text())
    # the per-run values: conv1's weight sum as plain torch reads it from each checkpoint
    sums = {k: float(torch.load(project / "ckpt" / f"{k}.pt", weights_only=True)["state_dict"]["conv1.weight"]
                     .double().sum()) for k in ("a", "c")}
    assert report["toy"]["runs"] == ["a", "c"]
    assert report["toy"]["total"] == pytest.approx(sums["a"] + sums["c"], rel=1e-12)
    # the finding is ranked with the others (a danger with the largest value comes first); overview stays last
    assert report["findings"][0]["text"] == "**toy** found something" and report["findings"][0]["model"] == "tiny"
    assert report["findings"][-1]["kind"] in ("overview", "next_step")
    assert (docs / "tiny/img/toy/sums.png").read_bytes() == _png(report["toy"]["total"])
    assert "![sums](img/toy/sums.png)" in (docs / "tiny/toy.md").read_text()
    assert result.report["toy"] == report["toy"]
    # a rebuild takes the per-run values from the cache; the report-wide hooks run again
    calls.clear()
    build(write_spec(project), docs, device="cpu")
    assert calls["run_part"] == 0 and calls["reduce"] == 1
    assert json.loads((docs / "tiny/report.json").read_text())["toy"] == report["toy"]


def test_spec_errors_survive_a_process_boundary():
    import pickle

    from reportgen.core.errors import SpecError

    err = pickle.loads(pickle.dumps(SpecError(["a.yaml:1: x: bad", "a.yaml:2: y: bad"])))
    assert err.problems == ["a.yaml:1: x: bad", "a.yaml:2: y: bad"] and str(err).startswith("2 problems")
