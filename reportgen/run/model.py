"""A run's model, loaded on first use and then kept for every step of the per-run task."""

from __future__ import annotations

import torch

from reportgen.models import LoadedModel, load_model
from reportgen.spec import ReportSpec, Run


class LazyModel:
    """``get()`` loads the run's model once (eval mode, on ``device``); a fully cached run never loads it."""

    def __init__(self, spec: ReportSpec, run: Run, device: torch.device):
        self.spec, self.run, self.device = spec, run, device
        self._loaded: LoadedModel | None = None

    def get(self) -> LoadedModel:
        if self._loaded is None:
            self._loaded = load_model(self.spec, self.run, self.device)
        return self._loaded

    @property
    def loaded(self) -> bool:
        return self._loaded is not None
