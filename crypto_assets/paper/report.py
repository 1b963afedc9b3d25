"""The paper-trading report: live track record, rolling Sharpe, PSR, minimum track-record length, paper − replay gap.

Every Sharpe here is computed per bar (`crypto_assets.metrics.sharpe_inference`'s convention) and shown annualised
(× √P, P bars per year of the timeframe; crypto trades 24/7: never 252). Each month's ledger starts at the
experiment's capital (one live model per month); the track record chains the months' net bar returns, so
`track_equity` is the growth of one unit traded by the successive live models.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from crypto_assets.metrics import sharpe_ratio
from crypto_assets.metrics.sharpe_inference import probabilistic_sharpe, sharpe_moments
from crypto_assets.paper.ledger import TS_DTYPE, PaperSetup
from crypto_assets.timeframes import periods_per_year, timeframe_delta

if TYPE_CHECKING:
    from crypto_assets.families import Artifact

CONFIDENCE = 0.95
"""Confidence of the minimum track-record length."""
ROLLING_SHARPE = "7d"
"""Window of the rolling Sharpe the `paper_ledger` asset reports (a duration: the same span at every timeframe)."""
GAP_SCHEMA: dict[str, pl.DataType] = {
    "strategy": pl.String(),
    "month": pl.String(),
    "ts": TS_DTYPE,
    "paper_equity": pl.Float64(),
    "replay_equity": pl.Float64(),
    "replay_return": pl.Float64(),
    "gap": pl.Float64(),
}


def min_track_record_length(
    returns: np.ndarray | pl.Series, benchmark_sharpe: float = 0.0, confidence: float = 0.95
) -> float:
    """Bars of track record needed for PSR(benchmark) to reach `confidence`, given the observed returns' per-bar
    Sharpe, skewness and (non-excess) kurtosis (`sharpe_moments`):

        MinTRL = 1 + (1 − γ̂₃·SR̂ + (γ̂₄ − 1)/4 · SR̂²) · (z_confidence / (SR̂ − SR*))²

    Bailey, D. H. & López de Prado, M. (2012), "The Sharpe Ratio Efficient Frontier", Journal of Risk 15(2),
    3–44. Per-bar, non-annualised Sharpes (SR* too). Infinite when SR̂ ≤ SR* (no length suffices); NaN when the
    moments are undefined (fewer than 2 bars, constant returns)."""
    sr, skew, kurt, _ = sharpe_moments(returns)
    if math.isnan(sr) or math.isnan(benchmark_sharpe):
        return math.nan
    if sr <= benchmark_sharpe:
        return math.inf
    z = NormalDist().inv_cdf(confidence)
    return 1.0 + (1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2) * (z / (sr - benchmark_sharpe)) ** 2


def replay_gap(
    setup: PaperSetup, artifact: Artifact, bars: pl.DataFrame, ledger: pl.DataFrame, end: dt.datetime
) -> pl.DataFrame:
    """Paper equity vs a backtest replay of the same bars: the artifact replayed ONCE on every closed bar up to
    `end` (open time of the ledger's last bar; `crypto_assets.families.replay`'s path), run through
    `run_backtest` at the same capital and costs. `gap` = (paper − replay equity) / capital per bar; 0 when the
    ledger's bar-by-bar decisions equal the one-shot replay's (a causal artifact) and its bookkeeping is the
    engine's. GAP_SCHEMA columns."""
    from crypto_assets.backtest import run_backtest

    paper = ledger.group_by("ts").agg(pl.col("equity").first().alias("paper_equity")).sort("ts")
    if paper.is_empty():
        return pl.DataFrame(schema=GAP_SCHEMA)
    tf = timeframe_delta(artifact.context.timeframe)
    start = artifact.window.test_start
    seen = bars.with_columns(pl.col("ts").cast(TS_DTYPE)).filter(pl.col("ts") <= end)
    weights = artifact.weights(seen, start=start, end=end + tf)
    engine_bars = seen.filter(pl.col("ts") >= start - setup.cost_lookback)
    run = run_backtest(
        engine_bars, weights, setup.costs, initial_value=setup.capital, timeframe=artifact.context.timeframe
    )
    replay = run.equity.select("ts", pl.col("value").alias("replay_equity")).join(
        run.returns.select("ts", pl.col("return").alias("replay_return")), on="ts"
    )
    return (
        paper.join(replay, on="ts", how="left")
        .with_columns(
            strategy=pl.lit(setup.strategy),
            month=pl.lit(setup.month),
            gap=(pl.col("paper_equity") - pl.col("replay_equity")) / setup.capital,
        )
        .select(list(GAP_SCHEMA))
        .cast(GAP_SCHEMA)  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class PaperReport:
    track: pl.DataFrame
    """Per strategy × bar: `strategy, month, ts, equity` (the month's ledger, quote currency), `return` (net bar
    return), `track_equity` (the months chained, from 1), `rolling_sharpe` (annualised, last `rolling_bars`),
    `replay_equity`, `gap` ((paper − replay) / capital)."""
    summary: pl.DataFrame
    """Per strategy: `strategy, bars, first_bar, last_bar, watermark, total_return, sharpe` (annualised),
    `psr_vs_zero`, `backtest_sharpe` (annualised) and its `backtest_source` (`kpis`: the stitched walk-forward
    run; `replay`: the replay of the same bars; `none`: neither given), `psr_vs_backtest`, `min_track_record_bars` (vs 0, at
    CONFIDENCE), `min_track_record_bars_vs_backtest`, `max_abs_gap`."""


def paper_report(
    ledger: pl.DataFrame,
    gaps: pl.DataFrame,
    timeframe: str,
    rolling_bars: int,
    backtest_sharpes: Mapping[str, float] | None = None,
) -> PaperReport:
    """The report of the stored ledger rows (any months, strategies). `gaps`: `replay_gap` frames of the same rows;
    `backtest_sharpes`: strategy → annualised Sharpe of its walk-forward backtest (the `kpis` table's stitched row);
    a strategy missing there is compared with the replay's Sharpe of the same bars."""
    p = periods_per_year(timeframe)
    bars = (
        ledger.group_by("strategy", "month", "ts")
        .agg(pl.col("equity").first(), pl.col("return").first(), pl.col("watermark").max())
        .sort("strategy", "ts")
    )
    track = (
        bars.join(
            gaps.select("strategy", "ts", "replay_equity", "replay_return", "gap"), on=["strategy", "ts"], how="left"
        )
        .sort("strategy", "ts")
        .with_columns(
            track_equity=(1.0 + pl.col("return")).cum_prod().over("strategy"),
            rolling_sharpe=(
                pl.col("return").rolling_mean(rolling_bars) / pl.col("return").rolling_std(rolling_bars) * math.sqrt(p)
            ).over("strategy"),
        )
        .with_columns(pl.col("rolling_sharpe").fill_nan(None))
    )
    rows = []
    for (strategy,), part in track.partition_by("strategy", as_dict=True, maintain_order=True).items():
        r = part["return"].to_numpy()
        gap = np.abs(part["gap"].drop_nulls().to_numpy())
        known = (backtest_sharpes or {}).get(str(strategy))
        replayed = part["replay_return"].drop_nulls().to_numpy()
        if known is not None:
            bt_annual, source = known, "kpis"
        else:
            bt_annual, source = (sharpe_ratio(replayed, p), "replay") if replayed.size else (math.nan, "none")
        bt_bar = bt_annual / math.sqrt(p) if math.isfinite(bt_annual) else math.nan
        rows.append(
            {
                "strategy": strategy,
                "bars": part.height,
                "first_bar": part["ts"].min(),
                "last_bar": part["ts"].max(),
                "watermark": part["watermark"].max(),
                "total_return": float(part["track_equity"][-1]) - 1.0,
                "sharpe": sharpe_ratio(r, p),
                "psr_vs_zero": probabilistic_sharpe(r, 0.0),
                "backtest_sharpe": bt_annual,
                "backtest_source": source,
                "psr_vs_backtest": probabilistic_sharpe(r, bt_bar) if math.isfinite(bt_bar) else math.nan,
                "min_track_record_bars": min_track_record_length(r, 0.0, CONFIDENCE),
                "min_track_record_bars_vs_backtest": min_track_record_length(r, bt_bar, CONFIDENCE),
                "max_abs_gap": float(gap.max()) if gap.size else math.nan,
            }
        )
    summary_schema: dict[str, pl.DataType] = {
        "strategy": pl.String(),
        "bars": pl.Int64(),
        "first_bar": TS_DTYPE,
        "last_bar": TS_DTYPE,
        "watermark": TS_DTYPE,
        "total_return": pl.Float64(),
        "sharpe": pl.Float64(),
        "psr_vs_zero": pl.Float64(),
        "backtest_sharpe": pl.Float64(),
        "backtest_source": pl.String(),
        "psr_vs_backtest": pl.Float64(),
        "min_track_record_bars": pl.Float64(),
        "min_track_record_bars_vs_backtest": pl.Float64(),
        "max_abs_gap": pl.Float64(),
    }
    track_out = track.select(
        "strategy", "month", "ts", "equity", "return", "track_equity", "rolling_sharpe", "replay_equity", "gap"
    )
    return PaperReport(track=track_out, summary=pl.DataFrame(rows, schema=summary_schema))
