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
    order_rows,
    selected_outputs,
    strategy_name,
)
from crypto_assets.orchestration.markdown import md
from crypto_assets.orchestration.partitions import fold_partitions, fold_test_mapping


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
        from crypto_assets.backtest import run_backtest
        from crypto_assets.evaluation import per_bar_results

        window = context_fold_window(context, spec)
        costs = cost_model(experiment)
        per_bar, orders, trips = [], [], []
        for asset_name, weights in sorted(strategies.items()):
            strategy = names[asset_name]
            result = run_backtest(bars, order_rows(weights), costs, initial_value=capital, timeframe=timeframe)
            per_bar.append(per_bar_results(result, strategy, window.test_start, window.test_end))
            tag = [pl.lit(strategy).alias("strategy"), pl.lit(window.key).alias("fold")]
            orders.append(result.weights.with_columns(tag))
            trips.append(result.round_trips.with_columns(tag))
        frame = pl.concat(per_bar).with_columns(fold=pl.lit(window.key))
        summary = (
            frame.group_by("strategy")
            .agg(
                ((pl.col("return") + 1).product() - 1).alias("total_return"),
                pl.col("cost").sum().alias("costs"),
                pl.col("turnover").sum(),
            )
            .sort("strategy")
        )
        yield from selected_outputs(
            context,
            dg.Output(frame, output_name="backtest", metadata={"summary": md(summary)}),
            dg.Output(pl.concat(orders, how="diagonal_relaxed"), output_name="weights"),
            dg.Output(pl.concat(trips, how="diagonal_relaxed"), output_name="trades"),
        )

    return [backtest]
