"""The plain-Python ingestion core: missing spans, catch-up windows and ticks, row-count guards, data-only spans."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from crypto_assets.config.schema import ExperimentConfig
from crypto_assets.ingestion import (
    CatchUpWindow,
    catch_up,
    catch_up_window,
    data_only_note,
    describe_spans,
    missing_spans,
    row_count_drops,
)
from crypto_assets.ingestion.coverage import month_windows
from crypto_assets.sources.base import RAW_SCHEMA, SourceError

H = dt.timedelta(hours=1)
JAN31 = dt.datetime(2024, 1, 31, tzinfo=dt.UTC)
FEB1 = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)


def bars(symbol: str, start: dt.datetime, n: int, *, skip: tuple[int, ...] = (), close: float = 1.0) -> pl.DataFrame:
    rows = [(symbol, start + i * H, close, close, close, close, 1.0) for i in range(n) if i not in skip]
    return pl.DataFrame(rows, schema=RAW_SCHEMA, orient="row")


def spans(frame: pl.DataFrame) -> list[tuple[str, dt.datetime, dt.datetime, int]]:
    return [tuple(r) for r in frame.iter_rows()]  # type: ignore[misc]


# ------------------------------------------------------------------------------------ missing spans


def test_missing_spans_merge_holes_and_tails_across_the_month_boundary() -> None:
    # BTC: stored Jan 31 00:00-19:00 with 05:00-06:00 missing; the window runs to Feb 1 03:00.
    stored = bars("BTC/USDT", JAN31, 20, skip=(5, 6))
    out = missing_spans(stored, ["BTC/USDT"], "1h", JAN31, FEB1 + 3 * H)
    assert spans(out) == [
        ("BTC/USDT", JAN31 + 5 * H, JAN31 + 7 * H, 2),
        ("BTC/USDT", JAN31 + 20 * H, FEB1 + 3 * H, 7),  # one tail span over the month boundary
    ]
    assert describe_spans(out) == (
        "BTC/USDT 2024-01-31 05:00..2024-01-31 06:00 (2 bars); BTC/USDT 2024-01-31 20:00..2024-02-01 02:00 (7 bars)"
    )


def test_missing_spans_start_at_a_listing_and_cover_symbols_with_nothing_stored() -> None:
    stored = pl.concat(
        [
            bars("SOL/USDT", JAN31 + 10 * H, 14),  # listed at 10:00, complete since: nothing missing
            bars("BTC/USDT", JAN31 - 5 * H, 29),  # stored before the window too: the grid starts at the window
        ]
    )
    out = missing_spans(stored, ["BTC/USDT", "ETH/USDT", "SOL/USDT"], "1h", JAN31, FEB1)
    assert spans(out) == [("ETH/USDT", JAN31, FEB1, 24)]  # ETH may have listed since: ask for the window
    assert missing_spans(None, ["BTC/USDT"], "1h", JAN31, JAN31).is_empty()
    with pytest.raises(ValueError, match="start = 2024-01-31T00:30:00\\+00:00 is not on the 1:00:00 bar grid"):
        missing_spans(stored, ["BTC/USDT"], "1h", JAN31 + H / 2, FEB1)


# ------------------------------------------------------------------------------------ catch-up window


def test_catch_up_window_is_the_horizon_before_the_newest_closed_bar_clamped_to_the_data_span() -> None:
    now = FEB1 + 2 * H + dt.timedelta(minutes=2)  # 02:02: bars up to 01:00 have closed
    window = catch_up_window(dt.date(2024, 1, 1), None, "1h", dt.timedelta(days=1), now)
    assert window == CatchUpWindow(JAN31 + 2 * H, FEB1 + 2 * H)
    assert window.months(H) == ["2024-01-01", "2024-02-01"]
    # data.start later than the horizon; data.end before now; a horizon shorter than a bar still covers one bar
    assert catch_up_window(dt.date(2024, 2, 1), None, "1h", dt.timedelta(days=7), now).start == FEB1
    ended = catch_up_window(dt.date(2024, 1, 1), dt.date(2024, 1, 30), "1h", dt.timedelta(days=1), now)
    assert ended.is_empty and ended.months(H) == []
    short = catch_up_window(dt.date(2024, 1, 1), None, "1h", dt.timedelta(minutes=1), now)
    assert (short.start, short.end) == (FEB1 + H, FEB1 + 2 * H) and short.months(H) == ["2024-02-01"]


# ------------------------------------------------------------------------------------ a tick


def test_catch_up_fetches_each_missing_span_once_keeps_stored_rows_and_reports_failures() -> None:
    stored = pl.concat([bars("BTC/USDT", JAN31, 20, skip=(5,)), bars("ETH/USDT", JAN31, 24, close=2.0)])
    exchange = pl.concat([bars("BTC/USDT", JAN31, 27, close=9.0), bars("ETH/USDT", JAN31, 27, close=9.0)])
    calls: list[tuple[str, dt.datetime, dt.datetime]] = []

    def fetch(symbol: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        calls.append((symbol, start, end))
        if symbol == "ETH/USDT":
            raise SourceError("binance: fetching ETH/USDT 1h failed after 2 attempts; last error: 503")
        # answers more than asked (the whole series): only the span may be used
        return exchange.filter(pl.col("symbol") == symbol)

    window = CatchUpWindow(JAN31, FEB1 + 3 * H)
    result = catch_up(stored, fetch, ["BTC/USDT", "ETH/USDT", "XRP/USDT"], "1h", window)
    assert calls == [
        ("BTC/USDT", JAN31 + 5 * H, JAN31 + 6 * H),
        ("BTC/USDT", JAN31 + 20 * H, FEB1 + 3 * H),
        ("ETH/USDT", FEB1, FEB1 + 3 * H),
        ("XRP/USDT", JAN31, FEB1 + 3 * H),
    ]
    assert result.fetched_bars == 1 + 7
    frame = result.frame
    # stored rows are untouched (close 1 / 2), only the missing slots carry the fetched close 9
    assert frame.filter(pl.col("symbol") == "BTC/USDT")["ts"].to_list() == [JAN31 + i * H for i in range(27)]
    fetched = [JAN31 + 5 * H] + [JAN31 + i * H for i in range(20, 27)]
    assert frame.filter(pl.col("close") == 9.0)["ts"].to_list() == fetched
    assert frame.filter(pl.col("symbol") == "ETH/USDT").equals(stored.filter(pl.col("symbol") == "ETH/USDT"))
    assert [(f.symbol, f.start, f.end) for f in result.failures] == [("ETH/USDT", FEB1, FEB1 + 3 * H)]
    assert "503" in str(result.failures[0])
    # XRP answered nothing: not listed, not missing; ETH's failed span is still missing
    assert spans(result.still_missing) == [("ETH/USDT", FEB1, FEB1 + 3 * H, 3)]


def test_catch_up_with_an_unexpected_error_propagates() -> None:
    def fetch(symbol: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        catch_up(None, fetch, ["BTC/USDT"], "1h", CatchUpWindow(JAN31, FEB1))


# ------------------------------------------------------------------------------------ fewer rows


def test_row_count_drops_name_partition_symbols_and_both_counts() -> None:
    stored = pl.concat([bars("BTC/USDT", JAN31, 48), bars("ETH/USDT", JAN31, 48)])
    new = pl.concat([bars("BTC/USDT", JAN31, 30), bars("ETH/USDT", JAN31, 48), bars("SOL/USDT", JAN31, 48)])
    drops = row_count_drops(stored, new, month_windows(["2024-01-01", "2024-02-01"]))
    # January: 48 → 72 rows, every symbol whole; February: 48 → 54 rows in total, but BTC lost 18
    by_key = {d.partition: d for d in drops}
    assert set(by_key) == {"2024-02-01"}
    assert by_key["2024-02-01"].by_symbol == {"BTC/USDT": (24, 6)}
    assert str(by_key["2024-02-01"]) == "partition 2024-02-01: 48 rows stored, the new data has 54 (BTC/USDT 24 → 6)"
    assert row_count_drops(None, new, month_windows(["2024-01-01"])) == []
    assert row_count_drops(stored, stored, month_windows(["2024-01-01", "2024-02-01"])) == []


# ------------------------------------------------------------------------------------ data-only spans


def config(**walk_forward: int) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "experiment": {"name": "short"},
            "data": {"tickers": ["BTC/USDT"], "start": "2024-01-01", "end": "2024-03-31"},
            "walk_forward": walk_forward,
        }
    )


def test_data_only_note_for_a_span_shorter_than_one_fold() -> None:
    assert data_only_note(config(train_months=6, test_months=2)) == (
        "data 2024-01-01..2024-03-31 is shorter than one fold (6 train + 2 test months): fold and report "
        "assets are absent; this is a data-only experiment"
    )
    assert data_only_note(config(train_months=2, test_months=1)) is None
    open_end = ExperimentConfig.model_validate(
        {"experiment": {"name": "live"}, "data": {"tickers": ["BTC/USDT"], "start": "2024-01-01"}}
    )
    note = data_only_note(open_end, today=dt.date(2024, 6, 15))
    assert note is not None and "no closed fold yet" in note and "2026-04-01" in note
