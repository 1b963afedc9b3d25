"""`fold_dataset[fold]`: one walk-forward fold's purged train and test rows, labelled and scaled."""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, section_hash
from crypto_assets.orchestration.assets.common import context_fold_window, fold_spec
from crypto_assets.orchestration.metadata import table_metadata
from crypto_assets.orchestration.partitions import fold_partitions, fold_window_mapping


def build_fold_assets(experiment: ExperimentConfig) -> list[dg.AssetsDefinition]:
    timeframe = experiment.data.timeframe
    spec = fold_spec(experiment)

    @dg.asset(
        partitions_def=fold_partitions(experiment.data, spec),
        ins={
            "features": dg.AssetIn(partition_mapping=fold_window_mapping(spec)),
            "bars": dg.AssetIn(partition_mapping=fold_window_mapping(spec)),
        },
        code_version=section_hash(experiment, "data", "validation", "features", "walk_forward"),
        io_manager_key="warehouse_io",
        group_name="folds",
        kinds={"polars", "parquet"},
        description="One walk-forward fold: purged train and test rows, labels, robust z-scores fitted on train only.",
    )
    def fold_dataset(
        context: dg.AssetExecutionContext, features: pl.DataFrame, bars: pl.DataFrame
    ) -> dg.Output[pl.DataFrame]:
        from crypto_assets.folds.dataset import build_fold_dataset

        window = context_fold_window(context, spec)
        fold = build_fold_dataset(
            features,
            bars,
            window,
            purge_bars=spec.purge_bars,
            label_horizon=spec.label_horizon,
            timeframe=timeframe,
        )
        return dg.Output(
            fold.frame,
            metadata={
                "train_rows": fold.train_rows,
                "test_rows": fold.test_rows,
                "train_window": f"{window.train_start:%Y-%m-%d} .. {window.train_end:%Y-%m-%d} (minus {spec.purge_bars} purged bars)",
                "test_window": f"{window.test_start:%Y-%m-%d} .. {window.test_end:%Y-%m-%d}",
                "scaler": table_metadata(fold.scaler_stats(), digits=4, limit=500),
                "scaler_clip": fold.scaler.clip,
            },
        )

    return [fold_dataset]
