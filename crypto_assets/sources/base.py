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


def empty_raw() -> pl.DataFrame:
    return pl.DataFrame(schema=RAW_SCHEMA)


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Select and order the raw columns and sort; callers have already checked types."""
    return frame.select(RAW_COLUMNS).sort("symbol", "ts")
