"""Optional analyses that plug into every step of a build: a registry keyed by name.

An extension contributes, in build order:

1. ``run_part(ctx)``: per-run work while the run's model is loaded (inside the per-run
   task, on whichever executor runs it). Its value is cached under a digest of the
   run's layer keys and ``run_key(ctx)``, so it must be a value the cache can store
   (a ``reportgen.core.cache.register``-ed dataclass of arrays, numbers, strings, lists,
   dicts). It should be small or summarised: the reduce step holds one per run.
2. ``reduce(spec, values, report)``: the report-wide numbers, from every run's value
   (run key -> value, in run order) and the report dict built so far (runs, layers,
   health, comparisons). Returns a JSON-ready dict stored as ``report[name]``.
3. ``pictures(spec, section, values)``: ``{path under img/: PNG bytes}``.
4. ``pages(spec, report, pictures)``: ``{page path: Markdown}``; ``pictures`` maps the
   extension's picture keys to the paths they were published at.
5. ``findings(report, analyses)``: finding dicts (see reportgen.analysis.findings).

Every callable but ``wanted`` and ``reduce`` may be None. Registration order is the
order does not matter: see ``active``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from reportgen.load.images import LoadedImage
    from reportgen.load.spec import ReportSpec, Run


@dataclass
class RunContext:
    """What a per-run part sees: the run, its loaded model and its layer results."""

    spec: "ReportSpec"
    run: "Run"
    model: Any  # nn.Module in eval mode on ``device``; None when the run's model cannot run hooks
    device: Any  # torch.device
    images: list["LoadedImage"]  # the run's test images, loaded at the run's input spec
    layers: dict[str, Any] = field(default_factory=dict)  # layer name -> LayerResult (weights, stats)


@dataclass(frozen=True)
class Extension:
    name: str  # report.json key, cache kind suffix, page folder
    wanted: Callable[["ReportSpec"], bool]
    reduce: Callable[["ReportSpec", dict[str, Any], dict], dict | None]
    run_part: Callable[[RunContext], Any] | None = None
    run_key: Callable[[RunContext], tuple] = lambda ctx: ()  # inputs beyond the layers' keys
    run_wanted: Callable[["ReportSpec", "Run"], bool] = lambda spec, run: True
    pictures: Callable[["ReportSpec", dict, dict[str, Any]], dict[str, bytes]] | None = None
    pages: Callable[["ReportSpec", dict, dict[str, str]], dict[str, str]] | None = None
    findings: Callable[[dict, Any], list[dict]] | None = None
    version: int = 1  # bump when run_part's output changes for the same inputs (invalidates the cache)


EXTENSIONS: dict[str, Extension] = {}


def register_extension(ext: Extension) -> Extension:
    if ext.name in EXTENSIONS:
        raise ValueError(f"extension {ext.name!r} is registered twice")
    EXTENSIONS[ext.name] = ext
    return ext


def active(spec: "ReportSpec") -> list[Extension]:
    """The registered extensions this spec asks for: the built-in ones in ``BUILTIN`` order,
    then any other by name. Never registration order: which module is imported first
    depends on the executor and on what the cache held (unpickling a result imports its
    extension), and the report must not."""
    _load_builtin()
    rank = {mod.rsplit(".", 1)[-1]: i for i, mod in enumerate(BUILTIN)}
    ordered = sorted(EXTENSIONS.values(), key=lambda e: (rank.get(e.name, len(rank)), e.name))
    return [e for e in ordered if e.wanted(spec)]


def _load_builtin() -> None:
    """Import the modules that register the built-in extensions (kept lazy: they may import torch)."""
    import importlib

    for mod in BUILTIN:
        importlib.import_module(mod)


BUILTIN: list[str] = [  # module names, in the order their pages and findings appear
    "reportgen.extensions.data",
    "reportgen.extensions.training",
    "reportgen.extensions.concepts",
    "reportgen.extensions.importance",
]
