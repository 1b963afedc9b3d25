"""The raw OHLCV contract every source produces."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import polars as pl

TS_DTYPE = pl.Datetime("us", "UTC")
RAW_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts": TS_DTYPE,  # bar open time, UTC
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),  # base-asset volume
}
RAW_COLUMNS: list[str] = list(RAW_SCHEMA)


class SourceError(ValueError):
    """Bad input from a source: the message names the file or exchange, the row, the column and the rule."""


class OhlcvSource(Protocol):
    """Anything that can produce raw bars in the RAW_SCHEMA."""

    def fetch(self, symbols: list[str], timeframe: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """Bars whose open time `ts` is in [start, end) (UTC-aware datetimes), in RAW_SCHEMA column order,
        sorted by (symbol, ts). Symbols with no bars in the span simply have no rows."""
        ...


# Consecutive-row spacings of one other length that must be seen before data is judged another timeframe's:
# enough that a short answer or file with a maintenance gap or two is never misjudged.
MIN_SPACING_PAIRS = 3


def foreign_spacing(ts: pl.Series, step: int) -> tuple[int, int, int] | None:
    """`(spacing, count, pairs)` when the most common positive spacing between consecutive values of `ts`
    (integer times, any unit; `step` in the same unit) is not `step` and was seen at least MIN_SPACING_PAIRS
    times, else None. Hourly bars served for 30m sit on the 30m grid, so no grid rule catches them and gap
    filling would invent every other bar; maintenance gaps only add a few longer spacings, so data of the
    right timeframe with gaps passes."""
    spacing = ts.diff().drop_nulls()
    spacing = spacing.filter(spacing > 0)
    if spacing.is_empty():
        return None
    counts = spacing.value_counts(name="n").sort(["n", spacing.name], descending=[True, False])
    mode, n_mode = (int(v) for v in counts.row(0))
    if mode == step or n_mode < MIN_SPACING_PAIRS:
        return None
    return mode, n_mode, spacing.len()


def empty_raw() -> pl.DataFrame:
    return pl.DataFrame(schema=RAW_SCHEMA)


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Select and order the raw columns and sort; callers have already checked types."""
    return frame.select(RAW_COLUMNS).sort("symbol", "ts")
