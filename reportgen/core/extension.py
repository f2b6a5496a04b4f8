"""Optional analyses that join the stages of a build: one class per extension, found through
the ``reportgen.extensions`` entry points.

An extension subclasses ``Extension`` and overrides the methods of the stages it joins,
each named after its stage (as MkDocs names its plugin events); the others keep the base
class's defaults, which add nothing. A package adds one by declaring it in its
``pyproject.toml``::

    [project.entry-points."reportgen.extensions"]
    hello = "hello_reportgen:HelloExtension"

The entry point's name is the extension's ``name``. The built-in extensions are declared
the same way in reportgen's own ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from reportgen.load.images import LoadedImage
    from reportgen.load.spec import ReportSpec, Run

GROUP = "reportgen.extensions"  # the entry-point group extensions are declared in

# The built-in extensions, in the order their pages and findings appear, and where each one
# is (as in the entry points of pyproject.toml; tests/extensions/test_extension_api.py checks they agree).
BUILTIN: dict[str, str] = {
    "data": "reportgen.extensions.data:DataExtension",
    "training": "reportgen.extensions.training:TrainingExtension",
    "concepts": "reportgen.extensions.concepts:ConceptsExtension",
    "importance": "reportgen.extensions.importance:ImportanceExtension",
}


@dataclass
class RunContext:
    """What a per-run part sees: the run, its loaded model and its layer results."""

    spec: "ReportSpec"
    run: "Run"
    model: Any  # nn.Module in eval mode on ``device``; None when the run's model cannot run hooks
    device: Any  # torch.device
    images: list["LoadedImage"]  # the run's test images, loaded at the run's input spec
    layers: dict[str, Any] = field(default_factory=dict)  # layer name -> LayerResult (weights, stats)


class Extension:
    """An optional analysis. Override the methods of the stages it joins; in build order:

    - load: ``wanted(spec)``, then per run ``run_wanted(spec, run)``;
    - run, inside each run's task: ``run_key(ctx)`` and ``run_part(ctx)``;
    - reduce, once the report dict is built: ``reduce``, then ``findings``;
    - render: ``pictures``, then ``pages``.

    One instance serves a whole build (and each worker process makes its own): keep no
    state between calls.
    """

    name: ClassVar[str] = ""  # report.json key, cache kind suffix (ext-<name>), picture folder img/<name>/
    version: ClassVar[int] = 1  # bump when run_part's output changes for the same inputs (invalidates the cache)

    def wanted(self, spec: "ReportSpec") -> bool:
        """Whether this spec asks for the extension at all (load stage). Default: always."""
        return True

    def run_wanted(self, spec: "ReportSpec", run: "Run") -> bool:
        """Whether ``run_part`` runs for this run (run stage). Default: every run."""
        return True

    def run_key(self, ctx: RunContext) -> tuple:
        """What ``run_part`` reads beyond the run's layers, for its cache key (run stage).

        Called before the model is loaded (``ctx.model`` is None and ``ctx.layers`` holds the
        layers' summaries), so a run whose value is cached never loads its model. Paths are
        hashed by what the files hold (reportgen.core.cache.digest). Default: nothing more.
        """
        return ()

    def run_part(self, ctx: RunContext) -> Any:
        """Per-run work while the run's model is loaded (run stage, inside the per-run task, on
        whichever executor runs it). ``ctx.layers`` holds the run's layer results with their
        maps and features.

        The value is cached under ``ext-<name>`` by ``version``, the run's layer keys and
        ``run_key(ctx)``, so it must be a value the cache can store (a
        ``reportgen.core.cache.register``-ed dataclass of arrays, numbers, strings, lists,
        dicts). It should be small or summarised: the reduce stage holds one per run.
        An extension that does not override it has no per-run values and no cache entries.
        """
        return None

    def reduce(self, spec: "ReportSpec", values: dict[str, Any], report: dict) -> dict | None:
        """The report-wide numbers (reduce stage), from every run's ``run_part`` value (run key ->
        value, in run order; runs it did not run on are left out) and the report dict built so
        far (runs, layers, health, comparisons). Returns a JSON-ready dict, stored as
        ``report[name]``. Default: None."""
        return None

    def findings(self, report: dict, analyses) -> list[dict]:
        """Finding dicts (reportgen.analysis.findings; reduce stage, after ``reduce``), ranked
        among the report's own; ``analyses`` is the spec's ``analyses``. Default: none."""
        return []

    def pictures(self, spec: "ReportSpec", section: dict | None, values: dict[str, Any]) -> dict[str, bytes]:
        """``{path under img/<name>/: PNG bytes}`` (render stage), from ``report[name]`` and the
        per-run values. Default: none."""
        return {}

    def pages(self, spec: "ReportSpec", report: dict, pictures: dict[str, str]) -> dict[str, str]:
        """``{page path: Markdown}`` (render stage, after ``pictures``); ``pictures`` maps the
        keys ``pictures`` returned to the paths they were published at. Default: none."""
        return {}


def has_run_part(ext: Extension) -> bool:
    """Whether the extension's class overrides ``run_part``: one that does not has no per-run
    values, so the run stage neither calls it nor writes a cache entry for it."""
    return type(ext).run_part is not Extension.run_part


EXTENSIONS: dict[str, Extension] = {}  # name -> instance: the built-in and installed ones, once loaded


def register(ext: Extension) -> Extension:
    """Add an extension instance to the registry (the entry points are read into it; a test may
    register one directly, before the build, and remove it from ``EXTENSIONS`` after)."""
    if not ext.name:
        raise ValueError(f"extension {type(ext).__qualname__} has no name")
    if ext.name in EXTENSIONS:
        raise ValueError(f"extension {ext.name!r} is registered twice")
    EXTENSIONS[ext.name] = ext
    return ext


def active(spec: "ReportSpec") -> list[Extension]:
    """The extensions this spec asks for, in ``ordered`` order."""
    return [e for e in ordered() if e.wanted(spec)]


def ordered() -> list[Extension]:
    """Every extension: the built-in ones in ``BUILTIN`` order, then any other by name. Never
    the order they were found or registered in: that depends on the installed packages, the
    executor and on what the cache held, and the report must not."""
    _load()
    rank = {name: i for i, name in enumerate(BUILTIN)}
    return sorted(EXTENSIONS.values(), key=lambda e: (rank.get(e.name, len(rank)), e.name))


_loaded = False


def _load() -> None:
    """Register the extensions the entry points declare, once per process (kept lazy: they
    may import torch). A name already registered is kept (a test registered it)."""
    global _loaded
    if _loaded:
        return
    for name, value in declared().items():
        if name not in EXTENSIONS:
            register(load_entry_point(name, value))
    _loaded = True


def declared() -> dict[str, str]:
    """Extension name -> "module:Class" of every ``reportgen.extensions`` entry point, with the
    built-in ones this reportgen lacks in its metadata added.

    A checkout run from its folder (PYTHONPATH) sees the metadata of whatever reportgen was
    installed, which may predate an extension or the entry points themselves; the built-in
    extensions then come from ``BUILTIN``, which names the same classes.
    """
    found: dict[str, str] = {}
    for ep in metadata.entry_points(group=GROUP):
        value = ep.value
        if ep.name in BUILTIN and value != BUILTIN[ep.name]:
            dist = ep.dist.name if ep.dist is not None else "a package"
            if dist != "reportgen":
                raise ValueError(f"{dist} declares an extension named {ep.name!r}, as a built-in one is")
            value = BUILTIN[ep.name]  # this reportgen's installed metadata is older than its code
        if found.get(ep.name, value) != value:
            raise ValueError(f"extension {ep.name!r} is declared twice: {found[ep.name]} and {value}")
        found[ep.name] = value
    for name, value in BUILTIN.items():
        found.setdefault(name, value)  # stale metadata: the checkout's own
    return found


def load_entry_point(name: str, value: str) -> Extension:
    """An instance of the Extension class that entry point ``name = value`` ("module:Class") names;
    TypeError when it is not an Extension class, ValueError when its ``name`` is not ``name``."""
    module, _, attr = value.partition(":")
    cls = importlib.import_module(module)
    for part in attr.split("."):
        cls = getattr(cls, part)
    if not (isinstance(cls, type) and issubclass(cls, Extension)):
        raise TypeError(f"entry point {name} = {value!r} is not a subclass of reportgen's Extension")
    if cls.name != name:
        raise ValueError(f"entry point {name} = {value!r} names an extension called {cls.name!r}")
    return cls()
