"""Dagster resources: the torch device, the data source and the warehouse. Heavy imports (torch, ccxt)
happen inside methods, never at code-location load."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    import torch

    from crypto_assets.config import ExperimentConfig
    from crypto_assets.sources.base import OhlcvSource
    from crypto_assets.storage.warehouse import Warehouse


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


class DataSourceResource(dg.ConfigurableResource):
    """Where `raw_ohlcv` gets its bars: the experiment's configured source (`sources.factory.make_source`).

    A resource, not a call inside the asset, so a test or a user can swap it (a fake source, a recorded
    exchange) with `Definitions(resources={"data_source": ...})` or `materialize(..., resources=...)`:
    subclass it and override `source()`. The experiment travels as its JSON, since resource fields must be
    plain config values."""

    experiment_json: str

    @classmethod
    def for_experiment(cls, experiment: ExperimentConfig) -> DataSourceResource:
        return cls(experiment_json=experiment.model_dump_json())

    def experiment(self) -> ExperimentConfig:
        from crypto_assets.config import ExperimentConfig

        return ExperimentConfig.model_validate_json(self.experiment_json)

    def source(self) -> OhlcvSource:
        from crypto_assets.sources.factory import make_source  # ccxt alone takes ~0.5 s to import

        return make_source(self.experiment())

    def draws_jointly(self) -> bool:
        """Whether the source draws all symbols together (the synthetic market), so a catch-up must ask
        for the whole universe to get the same bars for one symbol."""
        return self.experiment().data.source_kind == "synthetic"


class WarehouseResource(dg.ConfigurableResource):
    """The experiment's warehouse for assets that read stored tables directly, beyond their inputs (`bars`
    reads the month before its range, `raw_ohlcv`'s catch-up what is already stored)."""

    storage_root: str

    @classmethod
    def for_experiment(cls, experiment: ExperimentConfig) -> WarehouseResource:
        from crypto_assets.paths import experiment_root

        return cls(storage_root=str(experiment_root(experiment)))

    def warehouse(self) -> Warehouse:
        from crypto_assets.storage.warehouse import Warehouse

        return Warehouse(self.storage_root)
