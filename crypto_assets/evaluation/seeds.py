"""Seed dispersion: how much a learned family's stitched walk-forward result owes to its training seed.

A family with `n_seeds` > 1 trains every fold once per seed index (index 0 is its strategy, the one in `kpis`).
Each seed's decisions over all folds are stitched exactly as the family's own (`walk_forward_runs`: every month
traded once, same capital, costs and span), and the dispersion table summarises their KPIs across seeds. Plain
Python: the Dagster asset `seed_dispersion` wraps these.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING

import polars as pl

from crypto_assets.evaluation.runs import walk_forward_runs
from crypto_assets.metrics import compute_kpis

if TYPE_CHECKING:
    from crypto_assets.backtest import CostModel

DISPERSION_METRICS = ("sharpe", "total_return", "max_drawdown")
"""The stitched KPIs summarised across seeds (`compute_kpis` names)."""


def seed_runs(
    bars: pl.DataFrame,
    seed_predictions: Mapping[str, pl.DataFrame],
    spans: Mapping[str, tuple[dt.datetime, dt.datetime]],
    costs: CostModel,
    *,
    capital: float,
    timeframe: str,
    lookback: dt.timedelta,
    periods_per_year: int,
) -> pl.DataFrame:
    """One stitched engine run per family × seed index: `family, seed_index, sharpe, total_return, max_drawdown`.

    `seed_predictions`: family (KPI strategy name) → its decisions over every fold of every seed (`symbol, ts,
    weight, fold, seed_index`)."""
    rows = []
    for family, frame in seed_predictions.items():
        indices = sorted(frame["seed_index"].unique().to_list())
        weights = {f"{family}#{i}": frame.filter(pl.col("seed_index") == i) for i in indices}
        runs = walk_forward_runs(
            bars, weights, spans, costs, capital=capital, timeframe=timeframe, lookback=lookback
        ).per_bar
        for i in indices:
            run = runs.filter(pl.col("strategy") == f"{family}#{i}")
            kpis = compute_kpis(run["return"], periods_per_year, timestamps=run["ts"])
            rows.append({"family": family, "seed_index": i, **{m: kpis[m] for m in DISPERSION_METRICS}})
    return pl.DataFrame(
        rows, schema={"family": pl.String, "seed_index": pl.Int64, **dict.fromkeys(DISPERSION_METRICS, pl.Float64)}
    )


def seed_dispersion(per_seed: pl.DataFrame) -> pl.DataFrame:
    """Per family and metric, across its seeds: `family, metric, n_seeds, mean, std (ddof=1), min, max`."""
    long = per_seed.unpivot(index=["family", "seed_index"], on=list(DISPERSION_METRICS), variable_name="metric")
    order = {m: i for i, m in enumerate(DISPERSION_METRICS)}
    return (
        long.group_by("family", "metric")
        .agg(
            pl.len().alias("n_seeds"),
            pl.col("value").mean().alias("mean"),
            pl.col("value").std(ddof=1).alias("std"),
            pl.col("value").min().alias("min"),
            pl.col("value").max().alias("max"),
        )
        .sort("family", pl.col("metric").replace_strict(order, return_dtype=pl.Int64))
    )
