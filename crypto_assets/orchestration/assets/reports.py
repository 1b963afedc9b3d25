"""The unpartitioned reports over all folds: walk_forward_equity / walk_forward_trades, kpis, regime_kpis, trials,
and seed_dispersion when a family trains several seeds.

every strategy's weights ─► walk_forward_equity / walk_forward_trades ─► trials ─► kpis, regime_kpis
backtest[every fold] ─► kpis, trials
seed_predictions_<slug>[every fold] ─► seed_dispersion   (families with n_seeds > 1)

`trials` is the evaluator of the trials registry (crypto_assets.evaluation.trials, DESIGN §3.4): it appends
this run's stitched strategies to the experiment's append-only registry and outputs the whole registry, whose
N, Sharpe variance and PBO the `kpis` verdict uses.
"""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

import base64

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, section_hash
from crypto_assets.folds import fold_windows, stitch_months
from crypto_assets.orchestration.assets.common import (
    cost_lookback,
    cost_model,
    fold_spec,
    optional_out,
    selected_outputs,
    strategy_name,
)
from crypto_assets.orchestration.metadata import table_metadata
from crypto_assets.orchestration.partitions import data_end_exclusive
from crypto_assets.paths import experiment_root
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
    "total_cost",
    "cost_share",
    "capped_share",
    "exposure",
    "psr",
    "dsr",
    "n_trials",
    "pbo",
    "passes_constraints",
]
"""The KPI columns shown in the UI (the stored table has all of them, plus costs by kind and provenance)."""
KPI_DESCRIPTIONS = {
    "scope": "`stitched` (the walk-forward run, each month traded once) or a fold key (its whole test window).",
    "capital": "Portfolio value (quote currency) at the start of the scope.",
    "sharpe": "mean / std (ddof=1) of net bar returns × √P (bars per year, 24/7).",
    "sortino": "mean × P / (downside deviation over all bars × √P).",
    "max_drawdown": "Largest fall from a running peak of bar-level equity (a positive fraction).",
    "cagr": "(V_T / V_0)^(P/T) − 1.",
    "calmar": "CAGR / max drawdown; empty when there was no drawdown.",
    "total_return": "V_T / V_0 − 1, after costs.",
    "turnover": "Σ traded notional / portfolio value.",
    "total_cost": "Fees + slippage + impact + funding, as a fraction of the starting capital.",
    "cost_share": (
        "Share of the pre-cost profit that costs consumed, in [0, 1]: costs / (net profit + costs) when the "
        "net profit is ≥ 0; 1 when costs left no net profit (net loss); 0 without costs."
    ),
    "capped_share": "Share of fills the participation cap cut short; empty without fills.",
    "exposure": "Mean gross exposure (Σ|w|).",
    "psr": "Probabilistic Sharpe vs 0 (Bailey & López de Prado 2012).",
    "dsr": (
        "Deflated Sharpe (Bailey & López de Prado 2014). Stitched: over the experiment's trials registry (every "
        "configuration ever evaluated); per fold: over that fold's strategies. Empty for one trial."
    ),
    "n_trials": "N of the deflated Sharpe: distinct configurations in the trials registry (stitched rows).",
    "pbo": "Probability of backtest overfitting (CSCV, Bailey et al. 2017) of the registry's trials; stitched rows.",
    "passes_constraints": (
        "Stitched rows only: max drawdown ≤ limit, Sharpe ≥ min_sharpe and DSR ≥ min_dsr (PSR when one trial "
        "exists). Empty on fold rows: folds report, never pass."
    ),
}
REGIME_COLUMNS = [
    "strategy",
    "xp_trend_regime",
    "xp_vol_regime",
    "bars",
    "sharpe",
    "total_return",
    "max_drawdown",
    "exposure",
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
        from crypto_assets.evaluation import MissingFoldsError, stitched_bounds, walk_forward_runs

        spans = stitch_months(fold_windows(data.start, data_end_exclusive(data), spec), spec.step_months)
        first, last = stitched_bounds(spans)
        weights = {names[asset_name]: frame for asset_name, frame in sorted(strategies.items())}
        try:
            runs = walk_forward_runs(
                bars,
                weights,
                spans,
                cost_model(experiment),
                capital=capital,
                timeframe=timeframe,
                lookback=cost_lookback(experiment),
            )
        except MissingFoldsError as exc:
            raise dg.Failure(str(exc)) from exc
        yield from selected_outputs(
            context,
            dg.Output(
                runs.per_bar,
                output_name="walk_forward_equity",
                metadata={"folds": len(spans), "span": f"{first:%Y-%m-%d} .. {last:%Y-%m-%d}"},
            ),
            dg.Output(runs.trades, output_name="walk_forward_trades"),
        )

    P = periods_per_year(timeframe)

    @dg.asset(
        ins={
            "backtest": dg.AssetIn(),
            "trades": dg.AssetIn(),
            "walk_forward_equity": dg.AssetIn(),
            "walk_forward_trades": dg.AssetIn(),
            "bars": dg.AssetIn(),
            "trials": dg.AssetIn(),
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
        trials: pl.DataFrame,
    ) -> dg.Output[pl.DataFrame]:
        from crypto_assets.evaluation import STITCHED, kpi_table, provenance
        from crypto_assets.evaluation.charts import equity_drawdown_png
        from crypto_assets.evaluation.trials import deflation_inputs, registry_pbo

        n_trials, variance = deflation_inputs(trials)
        pbo = registry_pbo(trials)
        table = kpi_table(
            walk_forward_equity,
            walk_forward_trades,
            backtest,
            trades,
            P,
            max_drawdown_limit=experiment.constraints.max_drawdown,
            min_sharpe=experiment.constraints.min_sharpe,
            min_dsr=experiment.constraints.min_dsr,
            n_trials=n_trials,
            trials_sharpe_variance=variance,
            provenance=provenance(experiment, bars),
        )
        # PBO is one number per experiment (the registry's), shown on the stitched rows it judges.
        table = table.with_columns(
            pbo=pl.when(pl.col("scope") == STITCHED).then(pl.lit(pbo, dtype=pl.Float64)).otherwise(None)
        )
        stitched = table.filter(pl.col("scope") == STITCHED)
        chart = equity_drawdown_png(walk_forward_equity, f"{experiment.experiment.name}: stitched walk-forward equity")
        per_fold = table.filter(pl.col("scope") != STITCHED).sort("scope", "strategy")
        return dg.Output(
            table,
            metadata={
                "stitched": table_metadata(stitched.select(KPI_COLUMNS), digits=3, descriptions=KPI_DESCRIPTIONS),
                "per_fold": table_metadata(
                    per_fold.select(KPI_COLUMNS), digits=3, limit=500, descriptions=KPI_DESCRIPTIONS
                ),
                "equity_drawdown": dg.MetadataValue.md(_png_markdown(chart, "equity and drawdown")),
                "folds": table["scope"].n_unique() - 1,
                "n_trials": n_trials,
                "pbo": pbo,
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
        from crypto_assets.evaluation import regime_table

        table = regime_table(walk_forward_equity, bars, P)
        return dg.Output(table, metadata={"regimes": table_metadata(table.select(REGIME_COLUMNS), digits=3)})

    @dg.asset(
        ins={"walk_forward_equity": dg.AssetIn(), "backtest": dg.AssetIn()},
        code_version=report_version,
        io_manager_key="warehouse_io",
        group_name="reports",
        kinds={"polars", "duckdb"},
        description=(
            "The trials registry: every distinct configuration this experiment ever evaluated (append-only across "
            "runs), with its stitched per-bar Sharpe and returns; the N, variance and PBO behind the verdict."
        ),
    )
    def trials(walk_forward_equity: pl.DataFrame, backtest: pl.DataFrame) -> dg.Output[pl.DataFrame]:
        from crypto_assets.evaluation import trial_rows
        from crypto_assets.evaluation.trials import (
            TrialRegistry,
            deflation_inputs,
            experiment_definitions,
            registry_pbo,
            stitched_trials,
        )
        from crypto_assets.storage.warehouse import Warehouse

        # Written beside the warehouse's tables, not through its IO manager: a re-materialization replaces
        # this asset's snapshot table, never the registry (first wins: a known configuration adds nothing).
        registry = TrialRegistry(Warehouse(experiment_root(experiment)).tables_dir, experiment.experiment.name)
        names = sorted(walk_forward_equity["strategy"].unique().to_list())
        try:
            added = registry.record(stitched_trials(walk_forward_equity, experiment_definitions(experiment, names)))
        except KeyError as exc:
            raise dg.Failure(f"trials: {exc}") from exc
        table = registry.read()
        n_trials, variance = deflation_inputs(table)
        per_fold = trial_rows(backtest, P)
        return dg.Output(
            table,
            metadata={
                "trials": n_trials,
                "added": len(added),
                "sharpe_variance": variance,
                "pbo": registry_pbo(table),
                "registry": str(registry.directory),
                "trials_table": table_metadata(
                    table.select("trial_id", "strategy", "kind", "pruned", "n_bars", "sharpe_per_bar"),
                    digits=3,
                    limit=500,
                ),
                # Folds are time periods, not trials: their Sharpes show stability only.
                "sharpes": table_metadata(per_fold.select("strategy", "fold", "n_bars", "sharpe"), digits=3, limit=500),
            },
        )

    return [walk_forward, kpis, regime_kpis, trials, *build_seed_dispersion_asset(experiment, report_version)]


SEED_DISPERSION_DESCRIPTIONS = {
    "family": "The family's KPI strategy name; its seed index 0 is the row of `kpis`.",
    "metric": "A stitched walk-forward KPI: sharpe (bar returns × √P), total_return, max_drawdown.",
    "n_seeds": "Seeds trained per fold (`n_seeds`), each stitched over every fold like the family itself.",
    "std": "Sample standard deviation (ddof=1) across the seeds.",
}


def build_seed_dispersion_asset(experiment: ExperimentConfig, report_version: str) -> list[dg.AssetsDefinition]:
    """`seed_dispersion`: per family with n_seeds > 1, the stitched KPIs of every seed and their mean / std / min /
    max across seeds (crypto_assets.evaluation.seeds); none when every family trains one seed."""
    from crypto_assets.orchestration.assets.families import SEED_PREDICTIONS_PREFIX

    seeded = [p for p in experiment.models.trained if p.n_seeds > 1]
    if not seeded:
        return []
    ins = {f"{SEED_PREDICTIONS_PREFIX}{p.slug}": dg.AssetIn() for p in seeded}
    spec = fold_spec(experiment)
    data = experiment.data
    version = report_version + "-" + ",".join(f"{p.slug}={p.n_seeds}" for p in seeded)

    @dg.asset(
        ins={"bars": dg.AssetIn(), **ins},
        code_version=version,
        io_manager_key="warehouse_io",
        group_name="reports",
        kinds={"polars", "duckdb"},
        description=(
            "Seed dispersion: each seed of a family stitched over every fold like the family itself; mean / std / "
            "min / max of its Sharpe, total return and MaxDD across seeds (seed 0 is the family in kpis)."
        ),
    )
    def seed_dispersion(bars: pl.DataFrame, **seed_predictions: pl.DataFrame) -> dg.Output[pl.DataFrame]:
        from crypto_assets.evaluation import MissingFoldsError
        from crypto_assets.evaluation.seeds import seed_dispersion as dispersion
        from crypto_assets.evaluation.seeds import seed_runs

        spans = stitch_months(fold_windows(data.start, data_end_exclusive(data), spec), spec.step_months)
        frames = {name.removeprefix(SEED_PREDICTIONS_PREFIX): frame for name, frame in sorted(seed_predictions.items())}
        try:
            per_seed = seed_runs(
                bars,
                frames,
                spans,
                cost_model(experiment),
                capital=experiment.experiment.capital,
                timeframe=data.timeframe,
                lookback=cost_lookback(experiment),
                periods_per_year=periods_per_year(data.timeframe),
            )
        except MissingFoldsError as exc:
            raise dg.Failure(str(exc)) from exc
        table = dispersion(per_seed)
        return dg.Output(
            table,
            metadata={
                "dispersion": table_metadata(table, digits=3, descriptions=SEED_DISPERSION_DESCRIPTIONS),
                "per_seed": table_metadata(per_seed, digits=4, limit=500),
            },
        )

    return [seed_dispersion]
