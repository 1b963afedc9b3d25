"""The research graph after `bars`: features, folds, baselines, backtests and KPI tables (DESIGN.md §1).

features[month] ─► fold_dataset[fold]  (─► the models: crypto_assets.orchestration.assets.models)
bars[month] ─► baseline_<name>[fold]
every strategy's weights ─► backtest / weights / trades [fold]
                         └► walk_forward_equity / walk_forward_trades ─► kpis, regime_kpis, trials
"""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

import base64
import datetime as dt
import json
import math
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, section_hash
from crypto_assets.folds import FoldSpec, FoldWindow, fold_window_for_key, fold_windows, stitch_months
from crypto_assets.orchestration.io_managers import SPLIT_BY_TS, STORED_PARTITIONS_ONLY
from crypto_assets.orchestration.markdown import md
from crypto_assets.orchestration.partitions import (
    data_end_exclusive,
    data_partitions,
    fold_partitions,
    fold_window_mapping,
)
from crypto_assets.timeframes import duration_bars, parse_duration, periods_per_year, timeframe_delta

if TYPE_CHECKING:
    from crypto_assets.backtest import CostModel

STRATEGY_PREFIX = "baseline_"
PREDICTIONS_PREFIX = "predictions_"
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


def fold_spec(experiment: ExperimentConfig) -> FoldSpec:
    wf = experiment.walk_forward
    return FoldSpec(
        train_months=wf.train_months,
        test_months=wf.test_months,
        step_months=wf.step_months,
        purge_bars=wf.purge,
        label_horizon=wf.label_horizon,
    )


def _months_covering(span: dt.timedelta) -> int:
    """Whole months of lookback that surely contain `span` (28-day months, rounded up)."""
    return math.ceil(span / dt.timedelta(days=28)) if span > dt.timedelta(0) else 0


def _fold_window(context: dg.AssetExecutionContext, spec: FoldSpec) -> FoldWindow:
    return fold_window_for_key(context.partition_key, spec)


def cost_model(experiment: ExperimentConfig) -> "CostModel":
    """The engine's cost model of the experiment: the config's duration windows become bars of its timeframe."""
    from crypto_assets.backtest import CostModel  # numba-compiled: imported when a step needs it

    section = experiment.costs.model_dump()
    for key in ("vol_window", "adv_window"):
        section[key] = duration_bars(section[key], experiment.data.timeframe, f"costs.{key}")
    return CostModel(**section)


def cost_lookback(experiment: ExperimentConfig) -> dt.timedelta:
    """History the engine needs before a window's first decision bar: σ's and ADV's windows."""
    costs = experiment.costs
    return max(
        parse_duration(costs.vol_window, "costs.vol_window"),
        parse_duration(costs.adv_window, "costs.adv_window"),
    )


def baseline_settings(experiment: ExperimentConfig, name: str) -> dict[str, object]:
    """Keyword arguments of baseline `name` from the config's `baseline_settings` (durations as written)."""
    from crypto_assets.baselines import baseline_params

    return baseline_params(name, experiment.baseline_settings.model_dump())


def optional_out(code_version: str, description: str, io_manager_key: str = "warehouse_io") -> dg.AssetOut:
    """A multi-asset output (warehouse table by default); optional, so a run may select only some."""
    return dg.AssetOut(
        is_required=False, io_manager_key=io_manager_key, code_version=code_version, description=description
    )


def selected_outputs(context: dg.AssetExecutionContext, *outputs: dg.Output) -> list[dg.Output]:
    """The outputs of a multi-asset that this run selected (`--select backtest` alone works: the step
    computes everything and stores only what was asked for)."""
    return [o for o in outputs if o.output_name in context.selected_output_names]


def _png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def build_research_assets(experiment: ExperimentConfig) -> list[dg.AssetsDefinition]:
    """features, fold_dataset and the rule-based baselines."""
    from crypto_assets.baselines import lookback_bars
    from crypto_assets.features import warmup_bars
    from crypto_assets.regimes.causal import regime_warmup_bars

    data = experiment.data
    timeframe = data.timeframe
    bar = timeframe_delta(timeframe)
    spec = fold_spec(experiment)
    folds = fold_partitions(experiment.data, spec)
    months = data_partitions(data)

    # Features read enough history for every indicator and causal regime to be exact (EWMs to ~1e-10).
    needed = max(warmup_bars(ewm_tolerance=1e-10), regime_warmup_bars()) * bar
    feature_lookback = max(dt.timedelta(days=experiment.features.lookback_days), needed)

    @dg.asset(
        partitions_def=months,
        ins={
            "bars": dg.AssetIn(
                partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-_months_covering(feature_lookback))
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
        from crypto_assets.features import compute_features
        from crypto_assets.regimes.causal import causal_regimes

        window = context.partition_time_window
        history = bars.filter(pl.col("ts") >= window.start - feature_lookback)
        try:
            feats = compute_features(history, timeframe)
        except ValueError as exc:
            if experiment.validation.gap_policy == "ffill":
                raise
            raise ValueError(
                f"{exc}. validation.gap_policy is {experiment.validation.gap_policy!r}, which leaves missing bars "
                "in `bars`; indicators need a regular grid: set validation.gap_policy: ffill"
            ) from exc
        regimes = causal_regimes(history, timeframe).select("symbol", "ts", "vol_regime_code", "trend_regime_code")
        out = feats.join(regimes, on=["symbol", "ts"], how="left").filter(
            (pl.col("ts") >= window.start) & (pl.col("ts") < window.end)
        )
        nulls = {c: n for c, n in zip(out.columns, out.null_count().row(0), strict=True) if n}
        return dg.Output(
            out,
            metadata={
                "rows": out.height,
                "columns": len(out.columns) - 2,
                "warm_up_nulls": dg.MetadataValue.json(nulls),
            },
        )

    @dg.asset(
        partitions_def=folds,
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
        from crypto_assets.folds import RobustZScore, add_labels, split_fold

        window = _fold_window(context, spec)
        frame = features.join(bars.select("symbol", "ts", "close"), on=["symbol", "ts"], how="left")
        labelled = add_labels(frame, spec.label_horizon, timeframe=timeframe).drop("close")
        train, test = split_fold(labelled, window, spec.purge_bars, timeframe)  # asserts a complete window
        columns = [c for c in RobustZScore.default_columns(train) if not c.endswith("_code")]
        scaler = RobustZScore().fit(train, columns)
        out = pl.concat(
            [
                scaler.transform(train).with_columns(split=pl.lit("train")),
                scaler.transform(test).with_columns(split=pl.lit("test")),
            ]
        )
        return dg.Output(
            out,
            metadata={
                "train_rows": train.height,
                "test_rows": test.height,
                "train_window": f"{window.train_start:%Y-%m-%d} .. {window.train_end:%Y-%m-%d} (minus {spec.purge_bars} purged bars)",
                "test_window": f"{window.test_start:%Y-%m-%d} .. {window.test_end:%Y-%m-%d}",
                "scaler": dg.MetadataValue.json(scaler.to_dict()),
            },
        )

    def baseline_asset(name: str) -> dg.AssetsDefinition:
        params = baseline_settings(experiment, name)
        lookback = lookback_bars(name, timeframe, **params) * bar

        @dg.asset(
            name=f"{STRATEGY_PREFIX}{name}",
            partitions_def=folds,
            ins={
                "bars": dg.AssetIn(
                    partition_mapping=dg.TimeWindowPartitionMapping(
                        start_offset=-_months_covering(lookback), end_offset=spec.test_months - 1
                    )
                )
            },
            code_version=section_hash(experiment, "data", "validation", "walk_forward", "baseline_settings")
            + f"-{name}",
            io_manager_key="warehouse_io",
            group_name="strategies",
            kinds={"polars", "parquet"},
            description=f"Target weights of the `{name}` baseline over the fold's test window (causal rules).",
        )
        def _baseline(context: dg.AssetExecutionContext, bars: pl.DataFrame) -> dg.Output[pl.DataFrame]:
            from crypto_assets.baselines import BASELINES

            window = _fold_window(context, spec)
            weights = BASELINES[name](bars, window.test_start, window.test_end, timeframe=timeframe, **params)
            out = weights.with_columns(fold=pl.lit(window.key))
            return dg.Output(out, metadata={"orders": out.height, "symbols": out["symbol"].n_unique()})

        return _baseline

    baselines = [baseline_asset(name) for name in experiment.baselines]
    return [features, fold_dataset, *baselines]


def strategy_name(asset_key: dg.AssetKey) -> str:
    """`baseline_trend_following` → `trend_following`, `predictions_lstm_attn` → `lstm_attn`."""
    name = asset_key.path[-1]
    for prefix in (STRATEGY_PREFIX, PREDICTIONS_PREFIX):
        name = name.removeprefix(prefix)
    return name


def build_evaluation_assets(experiment: ExperimentConfig, strategies: list[dg.AssetKey]) -> list[dg.AssetsDefinition]:
    """Backtests of every strategy's target weights (`symbol, ts, weight, fold`; a null weight = no
    order), walk-forward stitching and the KPI tables."""
    data = experiment.data
    timeframe = data.timeframe
    spec = fold_spec(experiment)
    folds = fold_partitions(experiment.data, spec)
    strategy_ins = {key.path[-1]: dg.AssetIn(key=key) for key in strategies}
    # Reports read every fold that was run (see STORED_PARTITIONS_ONLY) and check completeness themselves.
    all_folds = {STORED_PARTITIONS_ONLY: True}
    report_strategy_ins = {key.path[-1]: dg.AssetIn(key=key, metadata=all_folds) for key in strategies}
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
    cost_months = max(1, _months_covering(cost_lookback(experiment)))

    @dg.multi_asset(
        can_subset=True,
        partitions_def=folds,
        ins={
            "bars": dg.AssetIn(
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-cost_months, end_offset=spec.test_months - 1
                )
            ),
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

        window = _fold_window(context, spec)
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
            "backtest": dg.AssetIn(metadata=all_folds),
            "trades": dg.AssetIn(metadata=all_folds),
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
        ins={"backtest": dg.AssetIn(metadata=all_folds)},
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

    return [backtest, walk_forward, kpis, regime_kpis, trials]


def order_rows(weights: pl.DataFrame) -> pl.DataFrame:
    """A strategy's rows that are orders: a null weight (e.g. a forecast between rebalances) is none."""
    return weights.filter(pl.col("weight").is_not_null()).select("symbol", "ts", "weight")
