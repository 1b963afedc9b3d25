"""`backtest / weights / trades [fold]`: one engine run per strategy over the fold's test window."""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, section_hash
from crypto_assets.orchestration.assets.common import (
    context_fold_window,
    cost_lookback,
    cost_model,
    fold_spec,
    months_covering,
    optional_out,
    selected_outputs,
    strategy_name,
)
from crypto_assets.orchestration.metadata import table_metadata
from crypto_assets.orchestration.partitions import fold_partitions, fold_test_mapping

SUMMARY_DESCRIPTIONS = {
    "total_return": "Compounded net return over the fold's test window.",
    "costs": "Fees + slippage + impact + funding, as a fraction of the value at the window's start.",
    "turnover": "Σ traded notional / portfolio value.",
    "exposure": "Mean gross exposure (Σ|w|).",
    "fills": "Orders filled (partly or wholly).",
    "capped_fills": "Fills the participation cap cut short.",
}


def build_backtest_assets(experiment: ExperimentConfig, strategies: list[dg.AssetKey]) -> list[dg.AssetsDefinition]:
    """Backtests of every strategy's target weights (`symbol, ts, weight, fold`; a null weight = no order)."""
    timeframe = experiment.data.timeframe
    spec = fold_spec(experiment)
    strategy_ins = {key.path[-1]: dg.AssetIn(key=key) for key in strategies}
    names = {key.path[-1]: strategy_name(key) for key in strategies}
    capital = experiment.experiment.capital
    # the capital changes every fill; the rest of `experiment` (name, seed, gpu) changes no backtest
    costs_version = (
        section_hash(
            experiment, "data", "validation", "features", "walk_forward", "baselines", "baseline_settings", "costs"
        )
        + f"-capital={capital!r}"
    )
    # σ and ADV look back from the first decision bar: read whole months that surely contain their windows
    cost_months = max(1, months_covering(cost_lookback(experiment)))

    @dg.multi_asset(
        can_subset=True,
        partitions_def=fold_partitions(experiment.data, spec),
        ins={
            "bars": dg.AssetIn(partition_mapping=fold_test_mapping(spec, cost_months)),
            **strategy_ins,
        },
        outs={
            "backtest": optional_out(
                costs_version,
                "Per-bar equity, returns, costs, turnover and exposure of every strategy over the fold's test window (`strategy` column).",
            ),
            "weights": optional_out(
                costs_version, "Every order: requested, target (after the leverage cap) and filled weight."
            ),
            "trades": optional_out(costs_version, "Round-trip trades (DESIGN.md §3.4) with costs and P&L."),
        },
        group_name="backtests",
    )
    def backtest(context: dg.AssetExecutionContext, bars: pl.DataFrame, **strategies: pl.DataFrame):  # type: ignore[no-untyped-def]
        from crypto_assets.evaluation import backtest_summary, run_strategies

        window = context_fold_window(context, spec)
        weights = {names[asset_name]: frame for asset_name, frame in sorted(strategies.items())}
        runs = run_strategies(
            bars,
            weights,
            cost_model(experiment),
            capital=capital,
            timeframe=timeframe,
            start=window.test_start,
            end=window.test_end,
        )
        fold = pl.lit(window.key).alias("fold")
        frame = runs.per_bar.with_columns(fold)
        summary = table_metadata(backtest_summary(frame), digits=4, descriptions=SUMMARY_DESCRIPTIONS)
        yield from selected_outputs(
            context,
            dg.Output(frame, output_name="backtest", metadata={"summary": summary}),
            dg.Output(runs.orders.with_columns(fold), output_name="weights"),
            dg.Output(runs.trades.with_columns(fold), output_name="trades"),
        )

    return [backtest]
