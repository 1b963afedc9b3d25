"""`baseline_<name>[fold]`: target weights of the rule-based baselines over each fold's test window."""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, section_hash
from crypto_assets.orchestration.assets.common import STRATEGY_PREFIX, context_fold_window, fold_spec, months_covering
from crypto_assets.orchestration.partitions import fold_partitions, fold_test_mapping
from crypto_assets.timeframes import timeframe_delta


def baseline_settings(experiment: ExperimentConfig, name: str) -> dict[str, object]:
    """Keyword arguments of baseline `name` from the config's `baseline_settings` (durations as written)."""
    from crypto_assets.baselines import baseline_params

    return baseline_params(name, experiment.baseline_settings.model_dump())


def build_baseline_assets(experiment: ExperimentConfig) -> list[dg.AssetsDefinition]:
    from crypto_assets.baselines import lookback_bars

    timeframe = experiment.data.timeframe
    bar = timeframe_delta(timeframe)
    spec = fold_spec(experiment)
    folds = fold_partitions(experiment.data, spec)

    def baseline_asset(name: str) -> dg.AssetsDefinition:
        params = baseline_settings(experiment, name)
        lookback = lookback_bars(name, timeframe, **params) * bar

        @dg.asset(
            name=f"{STRATEGY_PREFIX}{name}",
            partitions_def=folds,
            ins={"bars": dg.AssetIn(partition_mapping=fold_test_mapping(spec, months_covering(lookback)))},
            code_version=section_hash(experiment, "data", "validation", "walk_forward", "baseline_settings")
            + f"-{name}",
            io_manager_key="warehouse_io",
            group_name="strategies",
            kinds={"polars", "parquet"},
            description=f"Target weights of the `{name}` baseline over the fold's test window (causal rules).",
        )
        def _baseline(context: dg.AssetExecutionContext, bars: pl.DataFrame) -> dg.Output[pl.DataFrame]:
            from crypto_assets.baselines import BASELINES

            window = context_fold_window(context, spec)
            weights = BASELINES[name](bars, window.test_start, window.test_end, timeframe=timeframe, **params)
            out = weights.with_columns(fold=pl.lit(window.key))
            return dg.Output(out, metadata={"orders": out.height, "symbols": out["symbol"].n_unique()})

        return _baseline

    return [baseline_asset(name) for name in experiment.baselines]
