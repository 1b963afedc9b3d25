"""Engine runs of strategies' target weights: one fold's test window, and the stitched walk-forward run.

Plain Python: the Dagster assets `backtest` and `walk_forward` call these with the frames they load, so
the rules (what an order is, which months of which fold are traded, how results are tagged) exist once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from crypto_assets.evaluation.tables import per_bar_results

if TYPE_CHECKING:  # annotations only: the engine (numba) loads when a run happens
    from crypto_assets.backtest import CostModel


def order_rows(weights: pl.DataFrame) -> pl.DataFrame:
    """A strategy's rows that are orders: a null weight (e.g. a forecast between rebalances) is none."""
    return weights.filter(pl.col("weight").is_not_null()).select("symbol", "ts", "weight")


@dataclass(frozen=True)
class StrategyRuns:
    """Results of several strategies over one window, each tagged with a `strategy` column."""

    per_bar: pl.DataFrame
    """`per_bar_results` of every strategy, concatenated in the order the strategies were given."""
    orders: pl.DataFrame
    """The engine's `weights` (requested, target, filled) per order."""
    trades: pl.DataFrame
    """Round-trip trades."""


def run_strategies(
    bars: pl.DataFrame,
    weights: Mapping[str, pl.DataFrame],
    costs: CostModel,
    *,
    capital: float,
    timeframe: str,
    start: dt.datetime,
    end: dt.datetime,
) -> StrategyRuns:
    """One engine run per strategy (`weights`: strategy → `symbol, ts, weight` rows, null = no order) on
    `bars`, starting from `capital`, with results cut to [start, end). `bars` must reach back far enough
    before `start` for the cost model's σ and ADV windows. Strategies run in the mapping's order."""
    from crypto_assets.backtest import run_backtest  # numba-compiled: imported when a run happens

    per_bar, orders, trades = [], [], []
    for strategy, frame in weights.items():
        result = run_backtest(bars, order_rows(frame), costs, initial_value=capital, timeframe=timeframe)
        per_bar.append(per_bar_results(result, strategy, start, end))
        orders.append(result.weights.with_columns(strategy=pl.lit(strategy)))
        trades.append(result.round_trips.with_columns(strategy=pl.lit(strategy)))
    return StrategyRuns(
        per_bar=pl.concat(per_bar),
        orders=pl.concat(orders, how="diagonal_relaxed"),
        trades=pl.concat(trades, how="diagonal_relaxed"),
    )


class MissingFoldsError(ValueError):
    """A strategy lacks weights for folds the stitched run needs."""

    def __init__(self, strategy: str, folds: list[str]) -> None:
        self.strategy, self.folds = strategy, folds
        super().__init__(f"{strategy}: folds {', '.join(folds)} are not materialized; run them first")


def stitch_fold_weights(
    strategy: str, weights: pl.DataFrame, spans: Mapping[str, tuple[dt.datetime, dt.datetime]]
) -> pl.DataFrame:
    """The walk-forward weights of one strategy: from each fold (`fold` column) only the rows inside its
    stitched span (`folds.stitch_months`), so every month is traded by exactly one fold's model even
    when test windows overlap. Raises MissingFoldsError when a fold of `spans` has no rows at all."""
    missing = sorted(set(spans) - set(weights["fold"].unique().to_list()))
    if missing:
        raise MissingFoldsError(strategy, missing)
    return pl.concat(
        [
            weights.filter((pl.col("fold") == key) & (pl.col("ts") >= start) & (pl.col("ts") < end))
            for key, (start, end) in spans.items()
        ]
    )


def stitched_bounds(spans: Mapping[str, tuple[dt.datetime, dt.datetime]]) -> tuple[dt.datetime, dt.datetime]:
    """[first, last) of the stitched run: from the earliest fold's span start to the latest span end."""
    if not spans:
        raise ValueError("no folds to stitch")
    return min(s for s, _ in spans.values()), max(e for _, e in spans.values())


def walk_forward_runs(
    bars: pl.DataFrame,
    weights: Mapping[str, pl.DataFrame],
    spans: Mapping[str, tuple[dt.datetime, dt.datetime]],
    costs: CostModel,
    *,
    capital: float,
    timeframe: str,
    lookback: dt.timedelta,
) -> StrategyRuns:
    """One engine run per strategy over its stitched weights (`stitch_fold_weights`), from `capital`, on
    `bars` cut to the stitched span plus `lookback` of history before it (the cost model's σ / ADV windows)."""
    first, last = stitched_bounds(spans)
    history = bars.filter((pl.col("ts") >= first - lookback) & (pl.col("ts") < last))
    stitched = {strategy: stitch_fold_weights(strategy, frame, spans) for strategy, frame in weights.items()}
    return run_strategies(history, stitched, costs, capital=capital, timeframe=timeframe, start=first, end=last)
