"""`features[month]`: causal features and causal regime codes, reading a warm-up lookback of `bars`."""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

import datetime as dt

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, section_hash
from crypto_assets.orchestration.assets.common import months_covering
from crypto_assets.orchestration.io_managers import SPLIT_BY_TS
from crypto_assets.orchestration.partitions import data_partitions
from crypto_assets.timeframes import timeframe_delta


def build_feature_assets(experiment: ExperimentConfig) -> list[dg.AssetsDefinition]:
    from crypto_assets.features import warmup_bars
    from crypto_assets.regimes.causal import regime_warmup_bars

    data = experiment.data
    timeframe = data.timeframe
    bar = timeframe_delta(timeframe)

    # Features read enough history for every indicator and causal regime to be exact (EWMs to ~1e-10).
    needed = max(warmup_bars(ewm_tolerance=1e-10), regime_warmup_bars()) * bar
    feature_lookback = max(dt.timedelta(days=experiment.features.lookback_days), needed)

    @dg.asset(
        partitions_def=data_partitions(data),
        ins={
            "bars": dg.AssetIn(
                partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-months_covering(feature_lookback))
            )
        },
        backfill_policy=dg.BackfillPolicy.single_run(),
        code_version=section_hash(experiment, "data", "validation", "features"),
        io_manager_key="warehouse_io",
        group_name="features",
        kinds={"polars", "parquet"},
        metadata=SPLIT_BY_TS,
        description="Causal features and causal regime codes per symbol and bar (crypto_assets.features).",
    )
    def features(context: dg.AssetExecutionContext, bars: pl.DataFrame) -> dg.Output[pl.DataFrame]:
        from crypto_assets.families import compute_inputs  # what replaying an artifact recomputes, too

        window = context.partition_time_window
        history = bars.filter(pl.col("ts") >= window.start - feature_lookback)
        try:
            inputs = compute_inputs(history, timeframe)
        except ValueError as exc:
            if experiment.validation.gap_policy == "ffill":
                raise
            raise ValueError(
                f"{exc}. validation.gap_policy is {experiment.validation.gap_policy!r}, which leaves missing bars "
                "in `bars`; indicators need a regular grid: set validation.gap_policy: ffill"
            ) from exc
        out = inputs.filter((pl.col("ts") >= window.start) & (pl.col("ts") < window.end))
        nulls = {c: n for c, n in zip(out.columns, out.null_count().row(0), strict=True) if n}
        return dg.Output(
            out,
            metadata={
                "rows": out.height,
                "columns": len(out.columns) - 2,
                "warm_up_nulls": dg.MetadataValue.json(nulls),
            },
        )

    return [features]
