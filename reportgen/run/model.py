"""A run's model, loaded on first use and then kept for every step of the per-run task."""

from __future__ import annotations

import torch

from reportgen.load import models
from reportgen.load.models import LoadedModel
from reportgen.load.spec import ReportSpec, Run


class ModelNeeded(Exception):
    """A result is not cached and ``LazyModel(..., load=False)`` may not load the model."""


class LazyModel:
    """``get()`` loads the run's model once (eval mode, on ``device``); a fully cached run never
    loads it. With ``load=False``, ``get()`` raises ModelNeeded instead: every step computes
    through the model, so this tells a run whose results are all cached from one that needs work."""

    def __init__(self, spec: ReportSpec, run: Run, device: torch.device, load: bool = True):
        self.spec, self.run, self.device, self.load = spec, run, device, load
        self._loaded: LoadedModel | None = None

    def get(self) -> LoadedModel:
        if self._loaded is None:
            if not self.load:
                raise ModelNeeded(self.run.key)
            self._loaded = models.load_model(self.spec, self.run, self.device)
        return self._loaded

    @property
    def loaded(self) -> bool:
        return self._loaded is not None
