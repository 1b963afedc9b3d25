"""The unpartitioned reports over all folds: walk_forward_equity / walk_forward_trades, kpis, regime_kpis, trials.

every strategy's weights ─► walk_forward_equity / walk_forward_trades ─► kpis, regime_kpis
backtest[every fold] ─► kpis, trials
"""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

import base64
import json
import math

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, section_hash
from crypto_assets.folds import fold_windows, stitch_months
from crypto_assets.orchestration.assets.common import (
    cost_lookback,
    cost_model,
    fold_spec,
    optional_out,
    order_rows,
    selected_outputs,
    strategy_name,
)
from crypto_assets.orchestration.markdown import md
from crypto_assets.orchestration.partitions import data_end_exclusive
from crypto_assets.timeframes import periods_per_year

KPI_COLUMNS = [
    "scope",
    "strategy",
    "capital",
    "sharpe",
    "sortino",
    "max_drawdown",
    "cagr",
    "calmar",
    "total_return",
    "turnover",
    "cost_share",
    "capped_share",
    "exposure",
    "psr",
    "dsr",
    "passes_constraints",
]


def _png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def build_report_assets(experiment: ExperimentConfig, strategies: list[dg.AssetKey]) -> list[dg.AssetsDefinition]:
    """Walk-forward stitching and the KPI tables over every fold that was run."""
    data = experiment.data
    timeframe = data.timeframe
    spec = fold_spec(experiment)
    # Reports read every fold partition: each is a fold of the stitched run (partitions.fold_partitions), and
    # a fold never run fails the load naming it.
    report_strategy_ins = {key.path[-1]: dg.AssetIn(key=key) for key in strategies}
    names = {key.path[-1]: strategy_name(key) for key in strategies}
    capital = experiment.experiment.capital
    report_version = (
        section_hash(
            experiment,
            "data",
            "validation",
            "features",
            "walk_forward",
            "baselines",
            "baseline_settings",
            "costs",
            "constraints",
        )
        + f"-capital={capital!r}"
    )

    @dg.multi_asset(
        can_subset=True,
        ins={"bars": dg.AssetIn(), **report_strategy_ins},
        outs={
            "walk_forward_equity": optional_out(
                report_version, "One engine run per strategy over the stitched folds: each month traded exactly once."
            ),
            "walk_forward_trades": optional_out(report_version, "Round-trip trades of the stitched runs."),
        },
        group_name="reports",
    )
    def walk_forward(context: dg.AssetExecutionContext, bars: pl.DataFrame, **strategies: pl.DataFrame):  # type: ignore[no-untyped-def]
        from crypto_assets.backtest import run_backtest
        from crypto_assets.evaluation import per_bar_results

        windows = fold_windows(data.start, data_end_exclusive(data), spec)
        spans = stitch_months(windows, spec.step_months)
        first, last = min(s for s, _ in spans.values()), max(e for _, e in spans.values())
        costs = cost_model(experiment)
        history = bars.filter((pl.col("ts") >= first - cost_lookback(experiment)) & (pl.col("ts") < last))
        per_bar, trips = [], []
        for asset_name, weights in sorted(strategies.items()):
            strategy = names[asset_name]
            missing = sorted(set(spans) - set(weights["fold"].unique().to_list()))
            if missing:
                raise dg.Failure(f"{asset_name}: folds {', '.join(missing)} are not materialized; run them first")
            stitched = pl.concat(
                [
                    weights.filter((pl.col("fold") == key) & (pl.col("ts") >= s) & (pl.col("ts") < e))
                    for key, (s, e) in spans.items()
                ]
            )
            result = run_backtest(history, order_rows(stitched), costs, initial_value=capital, timeframe=timeframe)
            per_bar.append(per_bar_results(result, strategy, first, last))
            trips.append(result.round_trips.with_columns(strategy=pl.lit(strategy)))
        yield from selected_outputs(
            context,
            dg.Output(
                pl.concat(per_bar),
                output_name="walk_forward_equity",
                metadata={"folds": len(spans), "span": f"{first:%Y-%m-%d} .. {last:%Y-%m-%d}"},
            ),
            dg.Output(pl.concat(trips, how="diagonal_relaxed"), output_name="walk_forward_trades"),
        )

    P = periods_per_year(timeframe)

    @dg.asset(
        ins={
            "backtest": dg.AssetIn(),
            "trades": dg.AssetIn(),
            "walk_forward_equity": dg.AssetIn(),
            "walk_forward_trades": dg.AssetIn(),
            "bars": dg.AssetIn(),
        },
        code_version=report_version,
        io_manager_key="warehouse_io",
        group_name="reports",
        kinds={"polars", "duckdb"},
        description="KPIs per fold and stitched, per strategy (DESIGN.md §3.4), with constraints and provenance.",
    )
    def kpis(
        backtest: pl.DataFrame,
        trades: pl.DataFrame,
        walk_forward_equity: pl.DataFrame,
        walk_forward_trades: pl.DataFrame,
        bars: pl.DataFrame,
    ) -> dg.Output[pl.DataFrame]:
        from crypto_assets.evaluation import STITCHED, kpi_rows, provenance
        from crypto_assets.evaluation.charts import equity_drawdown_png

        limits = {
            "max_drawdown_limit": experiment.constraints.max_drawdown,
            "min_sharpe": experiment.constraints.min_sharpe,
        }
        rows = kpi_rows(walk_forward_equity, walk_forward_trades, P, scope=STITCHED, **limits)
        for (fold,), group in backtest.sort("fold").group_by("fold", maintain_order=True):
            rows += kpi_rows(group, trades.filter(pl.col("fold") == fold), P, scope=str(fold), **limits)
        table = pl.DataFrame(rows).with_columns(**{k: pl.lit(v) for k, v in provenance(experiment, bars).items()})
        stitched = table.filter(pl.col("scope") == STITCHED)
        chart = equity_drawdown_png(walk_forward_equity, f"{experiment.experiment.name}: stitched walk-forward equity")
        return dg.Output(
            table,
            metadata={
                "stitched": md(stitched.select(KPI_COLUMNS), digits=3),
                "equity_drawdown": dg.MetadataValue.md(_png_markdown(chart, "equity and drawdown")),
                "folds": table["scope"].n_unique() - 1,
            },
        )

    @dg.asset(
        ins={"walk_forward_equity": dg.AssetIn(), "bars": dg.AssetIn()},
        code_version=report_version,
        io_manager_key="warehouse_io",
        group_name="reports",
        kinds={"polars", "duckdb"},
        description="Stitched KPIs per ex-post regime (bull / bear / chop × high / low vol) and exposure by regime.",
    )
    def regime_kpis(walk_forward_equity: pl.DataFrame, bars: pl.DataFrame) -> dg.Output[pl.DataFrame]:
        from crypto_assets.evaluation import regime_kpi_rows
        from crypto_assets.features import pick_benchmark
        from crypto_assets.regimes.ex_post import ex_post_regimes

        # Reporting only: labels from the full sample of the benchmark (BTC) never reach a model.
        benchmark = pick_benchmark(bars) or bars["symbol"].min()
        regimes = ex_post_regimes(bars.filter(pl.col("symbol") == benchmark)).select(
            "ts", "xp_trend_regime", "xp_vol_regime"
        )
        table = regime_kpi_rows(walk_forward_equity, regimes.drop_nulls(), P).with_columns(benchmark=pl.lit(benchmark))
        columns = [
            "strategy",
            "xp_trend_regime",
            "xp_vol_regime",
            "bars",
            "sharpe",
            "total_return",
            "max_drawdown",
            "exposure",
        ]
        return dg.Output(table, metadata={"regimes": md(table.select(columns), digits=3)})

    @dg.asset(
        ins={"backtest": dg.AssetIn()},
        code_version=report_version,
        io_manager_key="warehouse_io",
        group_name="reports",
        kinds={"polars", "duckdb"},
        description="Every strategy × parameters × fold evaluated: the count and spread the deflated Sharpe needs.",
    )
    def trials(backtest: pl.DataFrame) -> dg.Output[pl.DataFrame]:
        params = json.dumps(
            {"costs": experiment.costs.model_dump(), "walk_forward": experiment.walk_forward.model_dump()},
            sort_keys=True,
        )
        table = (
            backtest.group_by("strategy", "fold")
            .agg(
                (pl.col("return").mean() / pl.col("return").std(ddof=1)).alias("sharpe_per_bar"),
                pl.len().alias("n_bars"),
            )
            .with_columns(
                (pl.col("sharpe_per_bar") * math.sqrt(P)).alias("sharpe"),
                pl.lit(params).alias("params"),
                pl.lit(experiment.experiment.name).alias("experiment"),
            )
            .sort("strategy", "fold")
        )
        return dg.Output(
            table,
            metadata={"trials": table.height, "sharpe_variance": float(table["sharpe_per_bar"].var() or math.nan)},
        )

    return [walk_forward, kpis, regime_kpis, trials]
