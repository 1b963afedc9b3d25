"""Assemble the Dagster `Definitions` for one experiment config."""

from __future__ import annotations

import dagster as dg

from crypto_assets.config import ExperimentConfig
from crypto_assets.orchestration.assets.ingestion import build_ingestion_assets
from crypto_assets.orchestration.io_managers import WarehouseIOManager
from crypto_assets.orchestration.partitions import data_partitions
from crypto_assets.orchestration.schedules import build_ingest_schedule
from crypto_assets.paths import experiment_root

INGEST_JOB = "ingest"


def build_definitions(experiment: ExperimentConfig) -> dg.Definitions:
    ingestion = build_ingestion_assets(experiment)
    ingest_job = dg.define_asset_job(
        INGEST_JOB,
        selection=dg.AssetSelection.assets(*ingestion),
        partitions_def=data_partitions(experiment.data),
        description="raw_ohlcv → bars for the selected months (one run for a whole range).",
    )
    return dg.Definitions(
        assets=ingestion,
        jobs=[ingest_job],
        schedules=[build_ingest_schedule(experiment, ingest_job)],
        resources={"warehouse_io": WarehouseIOManager(storage_root=str(experiment_root(experiment)))},
    )
