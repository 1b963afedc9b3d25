"""The `stress` assets (DESIGN.md §6.3): synthetic crash paths and every strategy replayed on them.

    bars ─► stress_paths ─► stress_results ─► stress_kpis (+ check stress_drawdown_tolerance, WARN)
            model_<slug>[every fold] (stored artifacts) ─┘

Unpartitioned, in their own job `stress`, run after the folds: the trained strategies are read from the fold
artifacts on disk (`<storage>/artifacts/model_<slug>/<fold>/`, what ModelArtifactIOManager wrote), the ensemble is
the soft vote of its members' replayed weights, the baselines are recomputed from their rules. The numbers come
from crypto_assets.stress.replay (no Dagster there).
"""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

import base64
import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, section_hash
from crypto_assets.orchestration.assets.baselines import baseline_settings
from crypto_assets.orchestration.assets.common import cost_lookback, cost_model, fold_spec
from crypto_assets.orchestration.assets.families import ENSEMBLE, MODEL_PREFIX
from crypto_assets.orchestration.metadata import table_metadata
from crypto_assets.paths import experiment_root
from crypto_assets.timeframes import timeframe_delta

STRESS_GROUP = "stress"
CHECK_NAME = "stress_drawdown_tolerance"


def stress_history_bars(experiment: ExperimentConfig) -> int:
    """Bars of the experiment's own history spliced before each path: the longest warm-up a strategy or the engine
    reads (baselines' slow SMA / vol window, σ and ADV windows) plus the features' own warm-up (`features.
    lookback_days`), so models see warmed-up inputs from the path's first bar."""
    from crypto_assets.baselines import lookback_bars

    timeframe = experiment.data.timeframe
    bar = timeframe_delta(timeframe)
    rules = [lookback_bars(name, timeframe, **baseline_settings(experiment, name)) for name in experiment.baselines]
    costs = cost_lookback(experiment) // bar
    return max([costs, *rules]) + dt.timedelta(days=experiment.features.lookback_days) // bar


def stress_folds(experiment: ExperimentConfig) -> list[str]:
    """The folds whose trained strategies are replayed (`stress.folds`); a key that is no fold is an error."""
    from crypto_assets.folds import fold_keys
    from crypto_assets.orchestration.partitions import data_end_exclusive

    folds = fold_keys(experiment.data.start, data_end_exclusive(experiment.data), fold_spec(experiment))
    chosen = experiment.stress.folds
    if chosen == "all":
        return folds
    if chosen == "last":
        return folds[-1:]
    keys = [day.isoformat() for day in chosen]
    unknown = sorted(set(keys) - set(folds))
    if unknown:
        raise ValueError(
            f"stress.folds: {', '.join(unknown)} is not a fold of this experiment; folds: {', '.join(folds)}"
        )
    return [key for key in folds if key in keys]


def stress_enabled(experiment: ExperimentConfig) -> bool:
    return bool(experiment.stress.enabled_scenarios)


def _png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def build_stress_assets(experiment: ExperimentConfig) -> list[dg.AssetsDefinition]:
    """stress_paths, stress_results and stress_kpis (with its WARN check); none when every scenario is off."""
    if not stress_enabled(experiment):
        return []
    timeframe = experiment.data.timeframe
    stress = experiment.stress
    capital = experiment.experiment.capital
    limit = experiment.constraints.max_drawdown
    paths_version = section_hash(experiment, "data", "validation", "stress") + f"-seed={experiment.experiment.seed}"
    replay_version = (
        paths_version
        + "-"
        + section_hash(
            experiment, "features", "walk_forward", "costs", "baselines", "baseline_settings", "models", "constraints"
        )
        + f"-capital={capital!r}"
    )
    trained = [params.slug for params in experiment.models.trained]

    @dg.asset(
        ins={"bars": dg.AssetIn()},
        code_version=paths_version,
        io_manager_key="warehouse_io",
        group_name=STRESS_GROUP,
        kinds={"polars", "parquet"},
        description=(
            "Synthetic stress paths per scenario × seed (crash bootstrap, panic ABM): OHLCV of the universe, cost "
            "multipliers per bar and the high-vol-bear flag; seeded from the experiment seed."
        ),
    )
    def stress_paths(bars: pl.DataFrame) -> dg.Output[pl.DataFrame]:
        from crypto_assets.stress.replay import generate_paths, paths_table

        paths = generate_paths(bars, timeframe, stress, experiment.experiment.seed)
        table = paths_table(paths)
        summary = (
            table.group_by("scenario", "seed", "path_id")
            .agg(
                pl.col("ts").n_unique().alias("bars"),
                pl.col("ts").min().alias("start"),
                pl.col("high_vol_bear").mean().alias("high_vol_bear_share"),
                pl.col("spread_mult").max().alias("max_spread_mult"),
                pl.col("note").first(),
            )
            .sort("scenario", "seed", "path_id")
        )
        return dg.Output(table, metadata={"paths": len(paths), "summary": table_metadata(summary, digits=3)})

    @dg.asset(
        ins={"stress_paths": dg.AssetIn(), "bars": dg.AssetIn()},
        deps=[dg.AssetKey(f"{MODEL_PREFIX}{slug}") for slug in trained],
        code_version=replay_version,
        io_manager_key="warehouse_io",
        group_name=STRESS_GROUP,
        kinds={"polars", "parquet"},
        description=(
            "Every baseline, every fold's trained family artifact and the ensemble replayed on every stress path "
            "through the engine at the experiment's capital and costs: MaxDD, return, time under water, exposure "
            "in high-vol bear per strategy × path."
        ),
    )
    def stress_results(
        context: dg.AssetExecutionContext, stress_paths: pl.DataFrame, bars: pl.DataFrame
    ) -> dg.Output[pl.DataFrame]:
        from crypto_assets.stress.replay import (
            Strategy,
            artifact_strategy,
            baseline_strategy,
            paths_from_table,
            replay_paths,
        )

        try:
            keys = stress_folds(experiment)
        except ValueError as exc:
            raise dg.Failure(str(exc)) from exc
        root = experiment_root(experiment) / "artifacts"
        missing = [
            f"{MODEL_PREFIX}{slug}[{key}]"
            for key in keys
            for slug in trained
            if not (root / f"{MODEL_PREFIX}{slug}" / key).is_dir()
        ]
        if missing:
            raise dg.Failure(
                f"no stored artifact for {', '.join(missing)}: run those folds first (crypto-lab run --only folds), "
                "or replay fewer folds (stress.folds)"
            )
        strategies: list[Strategy] = [
            baseline_strategy(name, baseline_settings(experiment, name), timeframe) for name in experiment.baselines
        ]
        votes = {member.type.lower(): member.weight for member in experiment.models.ensemble}
        for key in keys:
            strategies += [
                artifact_strategy(slug, key, str(Path(root / f"{MODEL_PREFIX}{slug}" / key))) for slug in trained
            ]
            strategies.append(Strategy(name=ENSEMBLE, fold=key, votes=votes))
        paths = paths_from_table(stress_paths)
        history_bars = stress_history_bars(experiment)
        run = replay_paths(
            strategies,
            paths,
            cost_model(experiment),
            capital=capital,
            timeframe=timeframe,
            history=bars,
            history_bars=history_bars,
        )
        context.log.info(
            f"{run.replays} replays ({len(strategies)} strategies × {len(paths)} paths) in {run.seconds:.1f} s: "
            f"{run.replays_per_s:.1f} replays/s ({run.engine_replays_per_s:.1f}/s in the engine alone)"
        )
        return dg.Output(
            run.results,
            metadata={
                "replays": run.replays,
                "paths": len(paths),
                "strategies": len(strategies),
                "folds": dg.MetadataValue.json(keys),
                "history_bars": history_bars,
                "seconds": round(run.seconds, 2),
                "replays_per_s": round(run.replays_per_s, 2),
                "engine_replays_per_s": round(run.engine_replays_per_s, 2),
            },
        )

    @dg.asset(
        ins={"stress_results": dg.AssetIn()},
        code_version=replay_version + f"-tolerance={stress.tolerance!r}",
        io_manager_key="warehouse_io",
        group_name=STRESS_GROUP,
        kinds={"polars", "duckdb"},
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_NAME,
                asset="stress_kpis",
                description=(
                    f"Every strategy's P(MaxDD > {limit:g}) on every scenario is at most stress.tolerance "
                    f"({stress.tolerance:g}); WARN severity, so a run still completes."
                ),
            )
        ],
        description=(
            "Per strategy × scenario: MaxDD and return distribution (mean, median, 5th / 95th percentile), "
            "P(MaxDD > constraints.max_drawdown), time under water, exposure while in high-vol bear."
        ),
    )
    def stress_kpis(stress_results: pl.DataFrame):  # type: ignore[no-untyped-def]
        from crypto_assets.stress.replay import KPI_DESCRIPTIONS, aggregate, breaches, stress_chart_png

        table = aggregate(stress_results, max_drawdown_limit=limit, tolerance=stress.tolerance)
        chart = stress_chart_png(
            stress_results, limit, f"{experiment.experiment.name}: max drawdown on stress paths (limit {limit:g})"
        )
        notes = table.select("scenario", "note").unique(maintain_order=True).filter(pl.col("note") != "")
        note_text = "\n".join(f"- **{row['scenario']}**: {row['note']}" for row in notes.iter_rows(named=True))
        yield dg.Output(
            table,
            metadata={
                "kpis": table_metadata(table.drop("note"), digits=3, descriptions=KPI_DESCRIPTIONS),
                "max_drawdown_chart": dg.MetadataValue.md(_png_markdown(chart, "max drawdown on stress paths")),
                "notes": dg.MetadataValue.md(note_text or "(no notes)"),
                "max_drawdown_limit": limit,
                "tolerance": stress.tolerance,
            },
        )
        failing = breaches(table)
        yield dg.AssetCheckResult(
            check_name=CHECK_NAME,
            passed=failing.height == 0,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                "every strategy within tolerance"
                if failing.height == 0
                else f"{failing.height} strategy × scenario rows breach the {limit:g} drawdown limit on more than "
                f"{stress.tolerance:.0%} of paths: "
                + ", ".join(
                    f"{r['strategy']} ({r['scenario']}: {r['p_breach']:.0%})" for r in failing.iter_rows(named=True)
                )
            ),
            metadata={"failing": table_metadata(failing, digits=3)},
        )

    return [stress_paths, stress_results, stress_kpis]
