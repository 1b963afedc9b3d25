"""Dagster resources: the torch device, the data source and the warehouse. Heavy imports (torch, ccxt)
happen inside methods, never at code-location load."""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    import torch

    from crypto_assets.config import ExperimentConfig
    from crypto_assets.sources.base import OhlcvSource
    from crypto_assets.storage.warehouse import Warehouse
    from crypto_assets.sweeps.cluster import RaySession


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


class RayResource(dg.ConfigurableResource):
    """Where sweeps run (crypto_assets.sweeps.cluster.ray_session): `address` or else the `RAY_ADDRESS` environment
    variable names an existing cluster (its token from Ray's own `RAY_AUTH_TOKEN` / `RAY_AUTH_TOKEN_PATH`); with
    neither, a local Ray is started for the run and shut down after it. Same code either way; the `crypto_assets`
    package reaches the workers through the session's `runtime_env`."""

    address: str | None = None
    num_cpus: int | None = None
    """Caps a locally started Ray (None: every core); ignored when connecting to a cluster."""

    def session(self) -> AbstractContextManager[RaySession]:
        from crypto_assets.sweeps.cluster import ray_session

        return ray_session(self.address, num_cpus=self.num_cpus)
