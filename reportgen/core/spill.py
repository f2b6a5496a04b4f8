"""The heavy arrays of a layer result, kept on disk between the map step and their use.

After its per-run task, a run keeps in memory only what the reduce and render steps need
in summary (weights, channel statistics, shapes); its activation maps, the stage maps,
the comparison features and the cross-model grids are *spilled*: stored as entries of
kind ``spill`` under ``digest("spill", layer key, field)`` and loaded when a step needs
them (rendering one run's pictures, one block of comparison pairs). So a build's memory
does not grow with the number of locations.

The store is the build's cache folder, where the layer entries name their spilled fields
(``LayerResult.spilled``); with ``--no-cache`` it is a temporary folder that the build
removes (see ``spill_store``). A store that cannot be written (an unusable cache) spills nothing and
the arrays stay in memory.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from reportgen.core.cache import Cache, digest
from reportgen.core.stopping import shielded

HEAVY = ("maps", "shared_maps", "features", "cross_pooled")  # LayerResult fields that may be spilled
_EMPTY = {"maps": list, "shared_maps": list, "features": lambda: None, "cross_pooled": lambda: None}


class Spill:
    """Spilled fields of layer results in the store at ``root`` (None: nothing is spilled)."""

    def __init__(self, root: str | Path | None):
        self.root = str(root) if root is not None else None
        # A cache of its own: spilled entries are not counted among the build's cache hits.
        self._store = Cache(root)

    def _key(self, layer_key: str, name: str) -> str:
        return digest("spill", layer_key, name)

    def write(self, lr) -> None:
        """Store ``lr``'s heavy fields (those not already stored) and name them in ``lr.spilled``;
        ``lr`` keeps its arrays (see ``strip``)."""
        if not self._store.enabled or not lr.key:
            return
        for name in HEAVY:
            value = getattr(lr, name)
            if value is None or (isinstance(value, list) and not value):
                continue
            key = self._key(lr.key, name)
            if not self._store.intact("spill", key):
                self._store.put("spill", key, value)
            if self._store.warnings:  # the store cannot be written: keep everything in memory
                lr.spilled = []
                return
            if name not in lr.spilled:
                lr.spilled.append(name)

    def complete(self, lr) -> bool:
        """Whether every field ``lr`` names as spilled is in the store, intact (a planted or
        damaged entry is replaced when the layer is computed again)."""
        return all(self._store.intact("spill", self._key(lr.key, name)) for name in lr.spilled)

    def stripped(self, lr):
        """A shallow copy of ``lr`` without its spilled arrays (what a layer entry stores)."""
        out = copy.copy(lr)
        for name in lr.spilled:
            setattr(out, name, _EMPTY[name]())
        return out

    def strip(self, lr) -> None:
        """Drop ``lr``'s spilled arrays from memory."""
        for name in lr.spilled:
            setattr(lr, name, _EMPTY[name]())

    def load(self, lr, name: str):
        """``lr.<name>``, from the store when it was spilled."""
        if name not in lr.spilled:
            return getattr(lr, name)
        value = self._store.get("spill", self._key(lr.key, name))
        if value is None:
            raise RuntimeError(f"the spilled {name} of layer {lr.name} are missing from {self.root}; "
                               "was the cache folder cleared during the build? Build again")
        return value

    def restored(self, lr):
        """A shallow copy of ``lr`` with its spilled arrays loaded back."""
        out = copy.copy(lr)
        for name in lr.spilled:
            setattr(out, name, self.load(lr, name))
        out.spilled = []
        return out


NO_SPILL = Spill(None)


@contextmanager
def spill_store(cache: Cache, docs_dir: Path, slug: str) -> Iterator[Spill]:
    """The build's store: its cache folder, else a temporary folder removed on exit.

    The temporary folder is ``docs_dir/.<slug>~staging-spill-*``, next to the report's
    staging folder, so that one left by a killed build (SIGKILL runs no clean-up) is
    removed by the next build of the report, with the other leftovers (reportgen.publish.site).
    Call it while holding the report's build lock.
    """
    if cache.enabled:
        yield Spill(cache.root.resolve())
        return
    tmp = tempfile.mkdtemp(prefix=f".{slug}~staging-spill-", dir=docs_dir)
    try:
        yield Spill(tmp)
    finally:
        with shielded():  # a stop signal meanwhile must not leave half the folder behind
            shutil.rmtree(tmp, ignore_errors=True)
