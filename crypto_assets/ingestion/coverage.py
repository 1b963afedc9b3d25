"""What the warehouse is missing, and the catch-up that fetches exactly that (no Dagster here).

The ingestion schedule runs `catch_up` on every tick over a *catch-up window*: the bars from
`now - data.catch_up` to the last closed bar at `now` (clamped to the configured span). Inside it,
each symbol's expected grid starts at the window start, or at the symbol's first stored bar when
that is later (a symbol that listed mid-window has nothing missing before its listing). Every
expected bar that is not stored is missing, holes and tails alike, across month boundaries; the
missing bars are merged into contiguous spans and each span is fetched once. What is stored is
never dropped: fetched bars only fill missing (symbol, ts) slots. A span whose fetch fails is kept
as a failure with its cause, and whatever is still missing afterwards is reported, so a failed
tick loses nothing and the next tick retries exactly the same spans.

An explicit materialization (a full re-fetch) must not silently replace stored bars with fewer:
`row_count_drops` lists the partitions (and symbols) a new frame would shrink.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from crypto_assets.sources.base import RAW_COLUMNS, TS_DTYPE, SourceError, empty_raw
from crypto_assets.timeframes import EPOCH, epoch_us, timeframe_delta

MONTH_KEY_FMT = "%Y-%m-%d"
SPAN_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "start": TS_DTYPE,  # open time of the first missing bar
    "end": TS_DTYPE,  # exclusive: open time of the bar after the last missing one
    "bars": pl.Int64(),
}


def floor_to_grid(moment: dt.datetime, bar: dt.timedelta) -> dt.datetime:
    """The open time of the `bar`-long candle containing `moment` (the grid starts at the epoch)."""
    epoch_us(moment, "moment")  # refuses a naive datetime, naming it
    return EPOCH + ((moment - EPOCH) // bar) * bar


def _on_grid(moment: dt.datetime, bar: dt.timedelta, name: str) -> dt.datetime:
    if floor_to_grid(moment, bar) != moment:
        raise ValueError(f"{name} = {moment.isoformat()} is not on the {bar} bar grid")
    return moment.astimezone(dt.UTC)


def _next_month(day: dt.date) -> dt.date:
    return dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)


@dataclass(frozen=True)
class CatchUpWindow:
    """Bar open times [start, end) a tick is responsible for; empty when start == end."""

    start: dt.datetime
    end: dt.datetime

    @property
    def is_empty(self) -> bool:
        return self.start >= self.end

    def months(self, bar: dt.timedelta) -> list[str]:
        """`YYYY-MM-01` keys of every month holding a bar of the window, oldest first."""
        if self.is_empty:
            return []
        last = (self.end - bar).date()
        day, keys = dt.date(self.start.year, self.start.month, 1), []
        while day <= last:
            keys.append(day.strftime(MONTH_KEY_FMT))
            day = _next_month(day)
        return keys


def requested_end(data_end: dt.date | None, timeframe: str, now: dt.datetime) -> dt.datetime:
    """Exclusive end of what may be stored at `now`: the open time of the bar still forming at `now`
    (an open candle is never stored), or the day after `data_end` when that is earlier."""
    end = floor_to_grid(now, timeframe_delta(timeframe))
    if data_end is not None:
        end = min(end, dt.datetime.combine(data_end + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC))
    return end


def catch_up_window(
    data_start: dt.date, data_end: dt.date | None, timeframe: str, horizon: dt.timedelta, now: dt.datetime
) -> CatchUpWindow:
    """The bars a tick at `now` looks after: those that opened within `horizon` before the bar still
    forming at `now`, no earlier than `data_start` (00:00 UTC) and none after `data_end` (empty once the
    data span ended more than `horizon` ago). The start is floored to the bar grid, so a horizon shorter
    than a bar still covers the newest closed bar."""
    if horizon <= dt.timedelta(0):
        raise ValueError(f"the catch-up horizon must be positive, got {horizon}")
    bar = timeframe_delta(timeframe)
    end = requested_end(data_end, timeframe, now)
    first = dt.datetime.combine(data_start, dt.time(), tzinfo=dt.UTC)
    start = max(floor_to_grid(floor_to_grid(now, bar) - horizon, bar), first)
    return CatchUpWindow(start, max(start, end))


def missing_spans(
    stored: pl.DataFrame | None, symbols: Sequence[str], timeframe: str, start: dt.datetime, end: dt.datetime
) -> pl.DataFrame:
    """Contiguous spans of bars missing from `stored` in [start, end), per symbol (SPAN_SCHEMA, sorted).

    `stored`: any frame with `symbol` and `ts` (bar open time), e.g. the stored raw partitions; rows
    outside [start, end) only tell when a symbol's history begins. A symbol's expected grid runs from
    `start`, or from its first stored bar when that is later (nothing before a listing is missing), to
    the last bar before `end`; a symbol with no stored bar at all is expected from `start` (it may have
    listed since). `start` and `end` must be on the timeframe's grid."""
    bar = timeframe_delta(timeframe)
    start, end = _on_grid(start, bar, "start"), _on_grid(end, bar, "end")
    if not symbols or start >= end:
        return pl.DataFrame(schema=SPAN_SCHEMA)
    bar_us = bar // dt.timedelta(microseconds=1)
    known = (
        stored.select(pl.col("symbol").cast(pl.String), pl.col("ts").cast(TS_DTYPE))
        if stored is not None and stored.height
        else pl.DataFrame(schema={"symbol": pl.String(), "ts": TS_DTYPE})
    ).filter(pl.col("symbol").is_in(list(symbols)))
    firsts = known.group_by("symbol").agg(pl.col("ts").min().alias("first"))
    grid = (
        pl.DataFrame({"symbol": list(symbols)}, schema={"symbol": pl.String()})
        .join(firsts, on="symbol", how="left")
        .select("symbol", pl.max_horizontal(pl.lit(start, dtype=TS_DTYPE), pl.col("first")).alias("grid_start"))
        .filter(pl.col("grid_start") < end)
    )
    inside = (
        known.join(grid, on="symbol")
        .filter((pl.col("ts") >= pl.col("grid_start")) & (pl.col("ts") < end))
        .select("symbol", "ts")
        .unique()
    )
    # Sentinels one bar before each grid's start and at `end` turn head and tail gaps into ordinary gaps.
    sentinels = pl.concat(
        [
            grid.select("symbol", (pl.col("grid_start") - bar).alias("ts")),
            grid.select("symbol", pl.lit(end, dtype=TS_DTYPE).alias("ts")),
        ]
    )
    series = pl.concat([inside, sentinels]).sort("symbol", "ts")
    step = (pl.col("ts") - pl.col("prev")).dt.total_microseconds()
    return (
        series.with_columns(pl.col("ts").shift(1).over("symbol").alias("prev"))
        .filter(pl.col("prev").is_not_null() & (step > bar_us))
        .select(
            "symbol",
            (pl.col("prev") + bar).alias("start"),
            pl.col("ts").alias("end"),
            (step // bar_us - 1).alias("bars"),
        )
        .cast(SPAN_SCHEMA)  # type: ignore[arg-type]
        .sort("symbol", "start")
    )


def describe_spans(spans: pl.DataFrame, limit: int = 10) -> str:
    """`BTC/USDT 2024-01-31 21:00..2024-02-01 01:00 (5 bars); ...` (the last bar inclusive), for logs."""
    if spans.is_empty():
        return "nothing"
    parts = []
    for symbol, start, end, bars in spans.head(limit).iter_rows():
        last = end - (end - start) / bars
        parts.append(f"{symbol} {start:%Y-%m-%d %H:%M}..{last:%Y-%m-%d %H:%M} ({bars} bar{'s' if bars != 1 else ''})")
    more = f"; and {spans.height - limit} more span(s)" if spans.height > limit else ""
    return "; ".join(parts) + more


@dataclass(frozen=True)
class FetchFailure:
    """A span the source could not deliver, with the source's own explanation."""

    symbol: str
    start: dt.datetime
    end: dt.datetime
    cause: str

    def __str__(self) -> str:
        return f"{self.symbol} [{self.start:%Y-%m-%d %H:%M}, {self.end:%Y-%m-%d %H:%M}): {self.cause}"


def run_catch_up_window(
    run_start: dt.datetime, run_end: dt.datetime, horizon: CatchUpWindow, *, first_month_stored: bool
) -> CatchUpWindow:
    """The part of a run's span [run_start, run_end) that an incremental tick fetches (the resume rule).

    Normally the catch-up `horizon` (`catch_up_window`) cut to the run's months: the months bound the work.
    When the run's first month has never been stored, it is fetched whole from `run_start`: written holding
    only the horizon's part, it would look complete from its first bar on and the gap before would never
    be asked for again."""
    first_start = horizon.start if first_month_stored else run_start
    return CatchUpWindow(max(run_start, first_start), max(run_start, min(run_end, horizon.end)))


def per_symbol_fetch(
    fetch_many: Callable[[list[str], dt.datetime, dt.datetime], pl.DataFrame],
    universe: Sequence[str],
    *,
    joint: bool,
) -> Fetch:
    """A `Fetch` of one symbol from a source that fetches a list. A `joint` source (the synthetic market
    draws all symbols together: betas and seeds by position) is asked for the whole `universe` and the
    symbol kept, since a subset would be another market; any other source is asked for the symbol alone."""

    def fetch(symbol: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        asked = list(universe) if joint else [symbol]
        return fetch_many(asked, start, end).filter(pl.col("symbol") == symbol)

    return fetch


@dataclass(frozen=True)
class CatchUpResult:
    frame: pl.DataFrame
    """Every stored row plus the fetched ones (RAW columns, sorted by symbol, ts)."""
    requested: pl.DataFrame
    """The spans that were missing before the fetch (SPAN_SCHEMA)."""
    fetched_bars: int
    failures: list[FetchFailure] = field(default_factory=list)
    still_missing: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=SPAN_SCHEMA))
    """Missing after the fetch: failed spans, and bars the source does not have (real exchange gaps).
    Symbols that have no bar at all and whose fetch succeeded are simply not listed yet: not missing."""


Fetch = Callable[[str, dt.datetime, dt.datetime], pl.DataFrame]
"""`fetch(symbol, start, end)` → RAW_SCHEMA bars of one symbol with open time in [start, end)."""


def catch_up(
    stored: pl.DataFrame | None,
    fetch: Fetch,
    symbols: Sequence[str],
    timeframe: str,
    window: CatchUpWindow,
    *,
    recoverable: tuple[type[Exception], ...] = (SourceError,),
) -> CatchUpResult:
    """Fetch exactly what `stored` misses in `window` (see `missing_spans`), one call per span, and
    merge it in without touching a stored row. A span whose fetch raises one of `recoverable`
    (a `SourceError`: the source already retried transient faults and explains the cause) becomes a
    `FetchFailure`; anything else propagates (a bug, not an outage)."""
    base = stored.select(RAW_COLUMNS) if stored is not None and stored.height else empty_raw()
    spans = missing_spans(base, symbols, timeframe, window.start, window.end)
    fetched: list[pl.DataFrame] = []
    failures: list[FetchFailure] = []
    for symbol, start, end, _ in spans.iter_rows():
        try:
            part = fetch(symbol, start, end)
        except recoverable as exc:
            failures.append(FetchFailure(symbol, start, end, str(exc)))
            continue
        # Only the asked symbol and span: a source answering more must not overwrite anything.
        fetched.append(
            part.select(RAW_COLUMNS).filter(
                (pl.col("symbol") == symbol) & (pl.col("ts") >= start) & (pl.col("ts") < end)
            )
        )
    new = pl.concat(fetched).unique(["symbol", "ts"], keep="first") if fetched else empty_raw()
    new = new.join(base.select("symbol", "ts"), on=["symbol", "ts"], how="anti")  # stored rows win
    merged = pl.concat([base, new]).sort("symbol", "ts")
    present = set(merged["symbol"].unique().to_list()) | {f.symbol for f in failures}
    listed = [s for s in symbols if s in present]
    still = missing_spans(merged, listed, timeframe, window.start, window.end)
    return CatchUpResult(merged, spans, new.height, failures, still)


@dataclass(frozen=True)
class RowCountDrop:
    """A partition a new frame would store with fewer rows than it holds now."""

    partition: str
    stored_rows: int
    new_rows: int
    by_symbol: dict[str, tuple[int, int]]
    """Symbols with fewer new rows: symbol → (stored, new)."""

    def __str__(self) -> str:
        symbols = ", ".join(f"{s} {old} → {new}" for s, (old, new) in sorted(self.by_symbol.items()))
        return f"partition {self.partition}: {self.stored_rows} rows stored, the new data has {self.new_rows}" + (
            f" ({symbols})" if symbols else ""
        )


def row_count_drops(
    stored: pl.DataFrame | None, new: pl.DataFrame, windows: Mapping[str, tuple[dt.datetime, dt.datetime]]
) -> list[RowCountDrop]:
    """Partitions (key → [start, end) of `ts`) where `new` has fewer rows than `stored`, in total or for
    any symbol (a symbol's rows vanishing is a loss even when another symbol gained some)."""
    if stored is None or stored.is_empty():
        return []
    drops = []
    for key, (start, end) in windows.items():
        inside = (pl.col("ts") >= start) & (pl.col("ts") < end)
        old = dict(stored.filter(inside).group_by("symbol").len().iter_rows())
        fresh = dict(new.filter(inside).group_by("symbol").len().iter_rows())
        shrunk = {s: (n, fresh.get(s, 0)) for s, n in old.items() if fresh.get(s, 0) < n}
        total_old, total_new = sum(old.values()), sum(fresh.values())
        if shrunk or total_new < total_old:
            drops.append(RowCountDrop(key, total_old, total_new, shrunk))
    return drops


def month_windows(keys: Iterable[str]) -> dict[str, tuple[dt.datetime, dt.datetime]]:
    """`YYYY-MM-01` keys → their [start, end) in UTC."""
    out = {}
    for key in keys:
        day = dt.datetime.strptime(key, MONTH_KEY_FMT).date()
        out[key] = (
            dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC),
            dt.datetime.combine(_next_month(day), dt.time(), tzinfo=dt.UTC),
        )
    return out


__all__ = [
    "SPAN_SCHEMA",
    "CatchUpResult",
    "CatchUpWindow",
    "FetchFailure",
    "RowCountDrop",
    "catch_up",
    "catch_up_window",
    "describe_spans",
    "floor_to_grid",
    "missing_spans",
    "month_windows",
    "requested_end",
    "row_count_drops",
]
