"""Dagster resources. Heavy imports (torch) happen inside methods, never at code-location load."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    import torch


class TorchDeviceResource(dg.ConfigurableResource):
    """The experiment's torch device: `cuda:N` from `experiment.gpu_id` when present, else CPU with a
    logged warning; `None` forces CPU. Training assets using it run in the `gpu` pool (limit 1)."""

    gpu_id: int | None = None

    def device(self, log: Any | None = None) -> torch.device:
        from crypto_assets.models import select_device

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            device = select_device(self.gpu_id)
        for warning in caught:
            (log.warning if log is not None else warnings.warn)(str(warning.message))
        return device
