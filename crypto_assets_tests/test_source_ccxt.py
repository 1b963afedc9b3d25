"""CcxtSource through the real ccxt binance client against the local Binance look-alike (127.0.0.1)."""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import re
from collections.abc import Iterator

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from crypto_assets.config.schema import CcxtSection
from crypto_assets.sources.base import RAW_SCHEMA, SourceError
from crypto_assets.sources.ccxt_source import CcxtSource, ConfirmedGap
from crypto_assets_tests.local_exchange import (
    LocalExchange,
    RecordedRequest,
    duplicate_rows,
    edit_rows,
    empty_page,
    garbage_row,
    html_page,
    load_fixture,
    running_exchange,
    short_page,
    skip_rows,
    slow,
    status,
    truncated_json,
)

UTC = dt.UTC
T0 = dt.datetime(2020, 1, 1, tzinfo=UTC)
T1 = dt.datetime(2020, 4, 1, tzinfo=UTC)  # 3 months: 2,177 BTC bars (7 missing in 3 gaps)
HOUR = dt.timedelta(hours=1)
# Binance's real maintenance gaps in the fixtures (../shared/data/ohlcv/README.md, "Gaps"): the last bar
# before each gap and the next bar present, January to September 2020 (BTC and ETH).
README_GAPS_2020 = [
    (dt.datetime(2020, 2, 9, 1, tzinfo=UTC), dt.datetime(2020, 2, 9, 3, tzinfo=UTC)),
    (dt.datetime(2020, 2, 19, 11, tzinfo=UTC), dt.datetime(2020, 2, 19, 17, tzinfo=UTC)),
    (dt.datetime(2020, 3, 4, 9, tzinfo=UTC), dt.datetime(2020, 3, 4, 11, tzinfo=UTC)),
    (dt.datetime(2020, 4, 25, 1, tzinfo=UTC), dt.datetime(2020, 4, 25, 4, tzinfo=UTC)),
    (dt.datetime(2020, 6, 28, 1, tzinfo=UTC), dt.datetime(2020, 6, 28, 5, tzinfo=UTC)),
]


def missing_spans(start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """The README's gaps inside [start, end) as (first missing bar, last missing bar)."""
    return [(before + HOUR, after - HOUR) for before, after in README_GAPS_2020 if start <= before and after < end]


def span(frame: pl.DataFrame, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
    return frame.filter((pl.col("ts") >= start) & (pl.col("ts") < end)).sort("symbol", "ts")


@pytest.fixture(scope="module")
def recorded() -> pl.DataFrame:
    """Real Binance bars for BTC, ETH and SOL (SOL lists 2020-08-11 06:00), 2020-01 to 2020-09."""
    bars = pl.concat([load_fixture(s) for s in ("BTC/USDT", "ETH/USDT", "SOL/USDT")])
    return span(bars, T0, dt.datetime(2020, 9, 1, tzinfo=UTC))


@pytest.fixture
def exchange(recorded: pl.DataFrame) -> Iterator[LocalExchange]:
    with running_exchange(recorded) as ex:
        yield ex


class SleepRecorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make_source(
    ex: LocalExchange,
    sleep: SleepRecorder | None = None,
    clock: dt.datetime | None = None,
    **settings: float | None,
) -> CcxtSource:
    defaults: dict[str, float | int | None] = {
        "rate_limit_ms": 0,
        "page_limit": 500,
        "max_retries": 3,
        "backoff_s": 0.01,
    }
    return CcxtSource(
        "binance",
        CcxtSection(**{**defaults, **settings}),  # type: ignore[arg-type]
        api_url=ex.url,
        clock=(lambda: clock) if clock is not None else None,
        sleep=sleep or SleepRecorder(),
    )


def ms(moment: dt.datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def asked(ex: LocalExchange, first: dt.datetime, last: dt.datetime, symbol: str = "BTCUSDT") -> list[RecordedRequest]:
    """The klines requests for exactly [first, last] (startTime = first, endTime = last)."""
    return [
        r
        for r in ex.klines_requests()
        if r.query["symbol"] == symbol and r.query["startTime"] == ms(first) and r.query.get("endTime") == ms(last)
    ]


def starting_at(ex: LocalExchange, moment: dt.datetime, symbol: str = "BTCUSDT") -> list[RecordedRequest]:
    return [r for r in ex.klines_requests() if r.query["symbol"] == symbol and r.query["startTime"] == ms(moment)]


# --- paging ---------------------------------------------------------------------------------------


def test_multi_page_fetch_equals_recorded_bars(exchange: LocalExchange, recorded: pl.DataFrame) -> None:
    symbols = ["BTC/USDT", "ETH/USDT"]
    with make_source(exchange) as source:
        got = source.fetch(symbols, "1h", T0, T1)
    expected = span(recorded.filter(pl.col("symbol").is_in(symbols)), T0, T1)
    assert got.schema == pl.Schema(RAW_SCHEMA)
    assert_frame_equal(got, expected)
    # Each symbol's last slot (2020-03-31 23:00) has a bar, so paging stops on the cursor, with no
    # trailing empty request: ceil(bars / 500) pages per symbol, plus one re-request per real gap
    # (3 per symbol in Q1 2020), plus one exchangeInfo.
    pages = {s: math.ceil(expected.filter(pl.col("symbol") == s).height / 500) for s in symbols}
    assert pages == {"BTC/USDT": 5, "ETH/USDT": 5}
    gaps = missing_spans(T0, T1)
    assert len(gaps) == 3
    assert source.request_count == 1 + sum(pages.values()) + len(symbols) * len(gaps)
    # Markets come from the spot exchangeInfo alone (no fapi / dapi / sapi call), then only klines.
    assert [r.path for r in exchange.requests] == ["/api/v3/exchangeInfo"] + ["/api/v3/klines"] * 16
    klines = exchange.klines_requests()
    pages_asked = [r for r in klines if r.query["endTime"] == str(int(T1.timestamp() * 1000) - 1)]
    assert len(pages_asked) == 10 and {r.query["limit"] for r in pages_asked} == {"500"}
    for symbol_id in ("BTCUSDT", "ETHUSDT"):
        for first, last in gaps:  # each real gap asked once more, for exactly its bars
            again = asked(exchange, first, last, symbol_id)
            assert len(again) == 1 and again[0].query["limit"] == str((last - first) // HOUR + 1), (first, again)
    btc = [r for r in pages_asked if r.query["symbol"] == "BTCUSDT"]
    assert btc[0].query["startTime"] == ms(T0)
    # The cursor moves one bar past the last bar received: page 2 starts after 500 bars.
    assert btc[1].query["startTime"] == ms(T0 + dt.timedelta(hours=500))
    assert [(g.symbol, g.first, g.last) for g in source.confirmed_gaps] == [
        (symbol, first, last) for symbol in symbols for first, last in gaps
    ]


def test_symbol_listing_mid_span(exchange: LocalExchange, recorded: pl.DataFrame) -> None:
    start, end = dt.datetime(2020, 8, 1, tzinfo=UTC), dt.datetime(2020, 9, 1, tzinfo=UTC)
    with make_source(exchange) as source:
        got = source.fetch(["SOL/USDT", "BTC/USDT"], "1h", start, end)
    assert_frame_equal(got, span(recorded.filter(pl.col("symbol").is_in(["SOL/USDT", "BTC/USDT"])), start, end))
    sol = got.filter(pl.col("symbol") == "SOL/USDT")
    assert sol["ts"][0] == dt.datetime(2020, 8, 11, 6, tzinfo=UTC)
    assert sol.height == 498  # 2020-08-11 06:00 .. 2020-08-31 23:00, no gaps
    # The span before the listing was asked once more, in one request, and confirmed empty.
    listing = dt.datetime(2020, 8, 11, 6, tzinfo=UTC)
    assert len(asked(exchange, start, listing - HOUR, "SOLUSDT")) == 1
    assert len(exchange.klines_requests()) == 2 + 2  # SOL: a page + the leading span; BTC: 744 bars in 2 pages
    assert source.confirmed_gaps == [ConfirmedGap("SOL/USDT", "1h", start, listing - HOUR)]


def test_data_ending_before_span_end_is_accepted_after_one_re_request(
    exchange: LocalExchange, recorded: pl.DataFrame
) -> None:
    start, end = dt.datetime(2020, 8, 20, tzinfo=UTC), dt.datetime(2020, 10, 1, tzinfo=UTC)
    with make_source(exchange, page_limit=1000) as source:
        got = source.fetch(["BTC/USDT"], "1h", start, end)
    assert_frame_equal(got, span(recorded.filter(pl.col("symbol") == "BTC/USDT"), start, end))
    # 288 bars (a short page that is not the end yet), then an empty page, asked once more: empty
    # twice is real (the recorded data ends, as for a delisted symbol).
    end_of_data = dt.datetime(2020, 9, 1, tzinfo=UTC)
    assert len(exchange.klines_requests()) == 3 and len(starting_at(exchange, end_of_data)) == 2
    assert source.confirmed_gaps == [ConfirmedGap("BTC/USDT", "1h", end_of_data, end - HOUR)]


# --- short answers: re-asked once, real gaps stay gaps ----------------------------------------------


@pytest.mark.parametrize("page_limit", [1000, 97], ids=["gaps-inside-pages", "gap-at-a-page-start"])
def test_real_maintenance_gaps_come_out_as_gaps_after_one_re_request(
    exchange: LocalExchange, recorded: pl.DataFrame, page_limit: int
) -> None:
    # With 97-bar pages from 02-01 00:00, page 3 asks from 02-09 02:00, the first missing bar of the
    # first gap: the answer starts late instead of having a hole inside.
    start, end = dt.datetime(2020, 2, 1, tzinfo=UTC), dt.datetime(2020, 3, 15, tzinfo=UTC)
    with make_source(exchange, page_limit=page_limit) as source:
        got = source.fetch(["BTC/USDT"], "1h", start, end)
    fixture = span(load_fixture("BTC/USDT"), start, end)
    assert_frame_equal(got, fixture)  # exactly the exchange's rows: the gaps were not filled
    gaps = missing_spans(start, end)
    assert [(f.hour, (last - f) // HOUR + 1) for f, last in gaps] == [(2, 1), (12, 5), (10, 1)]
    for first, last in gaps:
        assert len(asked(exchange, first, last)) == 1, (first, last)
    pages = math.ceil(fixture.height / page_limit) if page_limit == 1000 else 11
    assert len(exchange.klines_requests()) == pages + len(gaps)  # nothing else is asked twice
    if page_limit == 97:
        assert len(starting_at(exchange, gaps[0][0])) == 2  # the page that started late, then the gap
    assert [(g.first, g.last) for g in source.confirmed_gaps] == gaps


def test_empty_page_mid_range_is_re_requested(exchange: LocalExchange, recorded: pl.DataFrame) -> None:
    page2 = T0 + 500 * HOUR
    exchange.inject(empty_page(since=page2))
    with make_source(exchange, page_limit=500) as source:
        got = source.fetch(["BTC/USDT"], "1h", T0, T1)
    assert exchange.pending_faults == 0
    assert_frame_equal(got, span(recorded.filter(pl.col("symbol") == "BTC/USDT"), T0, T1))
    assert len(starting_at(exchange, page2)) == 2
    assert [(g.first, g.last) for g in source.confirmed_gaps] == missing_spans(T0, T1)


def test_persistent_empty_page_is_accepted_after_exactly_one_re_request(
    exchange: LocalExchange, recorded: pl.DataFrame
) -> None:
    # Empty twice claims "no bars from here to the stop" (a delisting): believed, never asked a third time.
    page2 = T0 + 500 * HOUR
    exchange.inject(*[empty_page(since=page2)] * 3)
    with make_source(exchange, page_limit=500) as source:
        got = source.fetch(["BTC/USDT"], "1h", T0, T1)
    assert exchange.pending_faults == 1
    assert_frame_equal(got, span(recorded.filter(pl.col("symbol") == "BTC/USDT"), T0, page2))
    assert len(starting_at(exchange, page2)) == 2
    assert len(exchange.klines_requests()) == 3  # page 1, then page 2 twice; nothing after
    assert source.confirmed_gaps == [ConfirmedGap("BTC/USDT", "1h", page2, T1 - HOUR)]


@pytest.mark.parametrize(("row", "count"), [(100, 7), (0, 3), (499, 1)], ids=["middle", "page-start", "page-end"])
def test_skipped_rows_are_re_requested_for_exactly_the_missing_span(
    exchange: LocalExchange, recorded: pl.DataFrame, row: int, count: int
) -> None:
    page2 = T0 + 500 * HOUR  # page 2: 500 bars from here (through the real gap at 2020-02-09 02:00)
    exchange.inject(skip_rows(row, count, since=page2))
    with make_source(exchange, page_limit=500) as source:
        got = source.fetch(["BTC/USDT"], "1h", T0, T1)
    assert exchange.pending_faults == 0
    btc = span(recorded.filter(pl.col("symbol") == "BTC/USDT"), T0, T1)
    assert_frame_equal(got, btc)
    served = btc.filter(pl.col("ts") >= page2).head(500)["ts"]
    first, last = served[row], served[row + count - 1]
    if row + count < 500:  # the skipped bars are a hole in (or before) the answer: asked once, exactly
        again = asked(exchange, first, last)
        assert len(again) == 1 and again[0].query["limit"] == str(count)
    else:  # dropped from the page's end: the next page asks from there anyway, no extra request
        assert len(starting_at(exchange, first)) == 1
    assert [(g.first, g.last) for g in source.confirmed_gaps] == missing_spans(T0, T1)


def test_rows_missing_twice_are_a_real_gap(exchange: LocalExchange, recorded: pl.DataFrame) -> None:
    page2 = T0 + 500 * HOUR
    first, last = page2 + 100 * HOUR, page2 + 106 * HOUR
    exchange.inject(skip_rows(100, 7, since=page2), empty_page(since=first), empty_page(since=first))
    with make_source(exchange, page_limit=500) as source:
        got = source.fetch(["BTC/USDT"], "1h", T0, T1)
    assert exchange.pending_faults == 1  # asked once more, not twice
    btc = span(recorded.filter(pl.col("symbol") == "BTC/USDT"), T0, T1)
    assert_frame_equal(got, btc.filter((pl.col("ts") < first) | (pl.col("ts") > last)))
    assert len(asked(exchange, first, last)) == 1
    assert ConfirmedGap("BTC/USDT", "1h", first, last) in source.confirmed_gaps


# --- truncated / malformed answers --------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [truncated_json(cut_at=23), truncated_json(), html_page(), status(200, body="")],
    ids=["cut-in-a-number", "cut-in-half", "proxy-html", "empty-body"],
)
def test_malformed_json_is_retried_like_a_server_error(
    exchange: LocalExchange, recorded: pl.DataFrame, fault: object
) -> None:
    page2 = T0 + 500 * HOUR
    exchange.inject(edit_rows(lambda rows: rows), fault, fault)  # type: ignore[arg-type]
    sleep = SleepRecorder()
    with make_source(exchange, sleep=sleep, backoff_s=0.25, page_limit=500) as source:
        got = source.fetch(["BTC/USDT"], "1h", T0, T1)
    assert exchange.pending_faults == 0
    assert sleep.waits == [0.25, 0.5]
    assert_frame_equal(got, span(recorded.filter(pl.col("symbol") == "BTC/USDT"), T0, T1))
    assert len(starting_at(exchange, page2)) == 3


def test_persistent_truncated_json_fails_naming_the_real_cause(exchange: LocalExchange) -> None:
    exchange.inject(*[truncated_json(cut_at=23)] * 4)
    sleep = SleepRecorder()
    source = make_source(exchange, sleep=sleep, max_retries=3, backoff_s=0.5)
    with source, pytest.raises(SourceError) as info:
        source.fetch(["BTC/USDT"], "1h", T0, T1)
    message = str(info.value)
    for part in (
        "binance: fetching BTC/USDT 1h since 2020-01-01T00:00:00Z",
        "span [2020-01-01T00:00:00Z, 2020-04-01T00:00:00Z)",
        "after 4 attempts",
        """the answer was not valid JSON (truncated?): '[[1577836800000,"7195.2' (23 chars)""",
    ):
        assert part in message, (part, message)
    assert "klines must be a JSON array" not in message
    assert sleep.waits == [0.5, 1.0, 2.0]
    assert len(exchange.klines_requests()) == 4


def test_truncated_market_list_is_retried(exchange: LocalExchange) -> None:
    exchange.inject(truncated_json(path="/api/v3/exchangeInfo"))
    sleep = SleepRecorder()
    with make_source(exchange, sleep=sleep) as source:
        got = source.fetch(["BTC/USDT"], "1h", T0, dt.datetime(2020, 1, 2, tzinfo=UTC))
    assert got.height == 24 and len(sleep.waits) == 1
    assert [r.path for r in exchange.requests].count("/api/v3/exchangeInfo") == 2


def test_short_pages_and_duplicated_rows_give_the_recorded_bars(
    exchange: LocalExchange, recorded: pl.DataFrame
) -> None:
    exchange.inject(short_page(37), duplicate_rows(5, at_end=True), short_page(1), duplicate_rows(4, at_end=False))
    with make_source(exchange) as source:
        got = source.fetch(["BTC/USDT"], "1h", T0, T1)
    assert exchange.pending_faults == 0
    assert_frame_equal(got, span(recorded.filter(pl.col("symbol") == "BTC/USDT"), T0, T1))
    starts = [int(r.query["startTime"]) for r in exchange.klines_requests()]
    assert starts[1] == int(T0.timestamp() * 1000) + 37 * 3_600_000  # resumed right after the short page


def test_conflicting_duplicate_is_an_error(exchange: LocalExchange) -> None:
    def clash(rows: list[list[object]]) -> list[list[object]]:
        twin = list(rows[10])
        twin[4] = str(float(str(twin[4])) + 1.0)  # same open time, different close
        return rows + [twin]

    exchange.inject(edit_rows(clash))
    with (
        make_source(exchange) as source,
        pytest.raises(SourceError, match=r"conflicting candles for ts=2020-01-01T10:00:00Z"),
    ):
        source.fetch(["BTC/USDT"], "1h", T0, T1)


def test_hourly_bars_served_for_30m_are_refused_not_filled(recorded: pl.DataFrame) -> None:
    """1h bars all sit on the 30m grid: only their spacing shows that every other bar is missing."""
    with running_exchange({"30m": recorded.filter(pl.col("symbol") == "BTC/USDT")}) as ex, make_source(ex) as source:
        with pytest.raises(SourceError, match=r"BTC/USDT 30m .*bars must be 30m apart; the most common spacing is 1h"):
            source.fetch(["BTC/USDT"], "30m", T0, T1)
        assert len(ex.klines_requests()) == 1  # refused on the first page: no re-request of every other bar


def test_open_candle_is_dropped(recorded: pl.DataFrame) -> None:
    bars = span(recorded.filter(pl.col("symbol") == "ETH/USDT"), T0, dt.datetime(2020, 1, 3, tzinfo=UTC))
    last = bars["ts"][-1]  # 2020-01-02 23:00, open until 2020-01-03 00:00
    far = dt.datetime(2030, 1, 1, tzinfo=UTC)
    with running_exchange(bars) as ex:
        with make_source(ex, clock=last + dt.timedelta(minutes=30)) as source:
            open_now = source.fetch(["ETH/USDT"], "1h", T0, far)
        with make_source(ex, clock=last + dt.timedelta(hours=1)) as source:
            closed_now = source.fetch(["ETH/USDT"], "1h", T0, far)
    assert open_now["ts"][-1] == last - dt.timedelta(hours=1)
    assert_frame_equal(open_now, bars.head(bars.height - 1))
    assert_frame_equal(closed_now, bars)


# --- retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [429, 418])
def test_rate_limit_retry_after_is_honoured(exchange: LocalExchange, recorded: pl.DataFrame, code: int) -> None:
    exchange.inject(status(code, retry_after=7))
    sleep = SleepRecorder()
    with make_source(exchange, sleep=sleep, backoff_s=0.01) as source:
        got = source.fetch(["BTC/USDT"], "1h", T0, dt.datetime(2020, 1, 15, tzinfo=UTC))
    assert len(sleep.waits) == 1 and sleep.waits[0] >= 7.0  # the server's 7 s beat the 0.01 s back-off
    assert_frame_equal(
        got, span(recorded.filter(pl.col("symbol") == "BTC/USDT"), T0, dt.datetime(2020, 1, 15, tzinfo=UTC))
    )
    assert source.request_count == 1 + 2  # exchangeInfo, the 429, the retry (one page of 336 bars)


def test_retry_after_as_http_date(exchange: LocalExchange) -> None:
    now = dt.datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    exchange.inject(status(429, retry_after=email.utils.format_datetime(now + dt.timedelta(seconds=30), usegmt=True)))
    sleep = SleepRecorder()
    with make_source(exchange, sleep=sleep, clock=now) as source:
        got = source.fetch(["BTC/USDT"], "1h", T0, dt.datetime(2020, 1, 2, tzinfo=UTC))
    assert got.height == 24 and sleep.waits == [30.0]


@pytest.mark.parametrize(
    "fault",
    [status(500), status(502), status(503), status(500, body='{"code":-1000,"msg":"An unknown error occurred."}')],
    ids=["500", "502", "503", "500-binance-1000"],
)
def test_server_errors_are_retried_with_doubling_backoff(
    exchange: LocalExchange, recorded: pl.DataFrame, fault: object
) -> None:
    exchange.inject(fault, fault)  # type: ignore[arg-type]
    sleep = SleepRecorder()
    end = dt.datetime(2020, 1, 15, tzinfo=UTC)
    with make_source(exchange, sleep=sleep, backoff_s=0.25) as source:
        got = source.fetch(["ETH/USDT"], "1h", T0, end)
    assert sleep.waits == [0.25, 0.5]
    assert_frame_equal(got, span(recorded.filter(pl.col("symbol") == "ETH/USDT"), T0, end))


def test_market_loading_is_retried(exchange: LocalExchange) -> None:
    exchange.inject(status(503, path="/api/v3/exchangeInfo"))
    sleep = SleepRecorder()
    with make_source(exchange, sleep=sleep) as source:
        got = source.fetch(["BTC/USDT"], "1h", T0, dt.datetime(2020, 1, 2, tzinfo=UTC))
    assert got.height == 24 and len(sleep.waits) == 1


def test_timeout_is_retried(exchange: LocalExchange, recorded: pl.DataFrame) -> None:
    exchange.inject(slow(2.0))
    sleep = SleepRecorder()
    end = dt.datetime(2020, 1, 8, tzinfo=UTC)
    with make_source(exchange, sleep=sleep, timeout_ms=500, max_retries=5) as source:
        got = source.fetch(["BTC/USDT"], "1h", T0, end)
    assert len(sleep.waits) >= 1  # at least the injected slow answer timed out
    assert_frame_equal(got, span(recorded.filter(pl.col("symbol") == "BTC/USDT"), T0, end))


def test_persistent_failure_gives_up_with_a_clear_message(exchange: LocalExchange) -> None:
    exchange.inject(*[status(503)] * 4)
    sleep = SleepRecorder()
    with make_source(exchange, sleep=sleep, max_retries=3, backoff_s=0.5) as source, pytest.raises(SourceError) as info:
        source.fetch(["BTC/USDT"], "1h", T0, T1)
    message = str(info.value)
    for part in (
        "binance",
        "BTC/USDT",
        "1h",
        "since 2020-01-01T00:00:00Z",
        "after 4 attempts",
        "ExchangeNotAvailable",
        "503",
    ):
        assert part in message, (part, message)
    assert sleep.waits == [0.5, 1.0, 2.0]
    assert len(exchange.klines_requests()) == 4


def test_ban_longer_than_the_cap_fails_without_waiting(exchange: LocalExchange) -> None:
    exchange.inject(status(418, retry_after=86_400))
    sleep = SleepRecorder()
    with (
        make_source(exchange, sleep=sleep) as source,
        pytest.raises(SourceError, match=r"wait 86400 s \(Retry-After\)"),
    ):
        source.fetch(["BTC/USDT"], "1h", T0, T1)
    assert sleep.waits == []


# --- bad input ------------------------------------------------------------------------------------


def test_unknown_symbol_is_a_clear_error(exchange: LocalExchange) -> None:
    with (
        make_source(exchange) as source,
        pytest.raises(SourceError, match=r"binance: the exchange has no market 'DOGE/USDT'"),
    ):
        source.fetch(["BTC/USDT", "DOGE/USDT"], "1h", T0, T1)
    assert exchange.klines_requests() == []  # checked before any download


@pytest.mark.parametrize(
    ("fault", "pattern"),
    [
        (
            garbage_row(3, "non_numeric", column=4),
            r"raw row 3 \(ts=2020-01-02T03:00:00Z\), column 'close': must be numeric \(got '12,5abc'\)",
        ),
        (
            garbage_row(5, "null", column=5),
            r"raw row 5 \(ts=2020-01-02T05:00:00Z\), column 'volume': must be numeric \(got None\)",
        ),
        (garbage_row(2, "null", column=0), r"raw row 2 \(ts=None\), column 'ts': must be numeric"),
        (garbage_row(7, "short"), r"raw row 7, column '\*': a candle needs at least 6 fields"),
        (garbage_row(1, "not_array"), r"raw row 1, column '\*': a candle must be an array \(got 'garbage'\)"),
        (
            garbage_row(4, "off_grid"),
            r"row 4 \(ts=2020-01-02T04:00:01.234000Z\), column 'ts': open time must be on the 1h grid",
        ),
        (
            garbage_row(6, "ohlc"),
            r"row 6 \(ts=2020-01-02T06:00:00Z\), column 'high': high must be >= max\(open, close\)",
        ),
        (edit_rows(lambda rows: {"data": rows}), r"response, column '\*': klines must be a JSON array"),
    ],
    ids=["non-numeric", "null-value", "null-ts", "short-row", "not-array", "off-grid", "ohlc-rule", "object"],
)
def test_garbage_is_rejected_naming_row_and_column(exchange: LocalExchange, fault: object, pattern: str) -> None:
    # Garbage on the second page: nothing of the good first page may come back either.
    exchange.inject(edit_rows(lambda rows: rows), fault)  # type: ignore[arg-type]
    with make_source(exchange, page_limit=24) as source, pytest.raises(SourceError) as info:
        source.fetch(["BTC/USDT"], "1h", T0, T1)
    message = str(info.value)
    assert message.startswith("binance: BTC/USDT 1h page since 2020-01-02T00:00:00Z: "), message
    assert re.search(pattern, message), message


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize("exchange_id", ["binance", "kraken", "okx"])
def test_api_url_replaces_every_rest_base_url(exchange_id: str) -> None:
    source = CcxtSource(exchange_id, CcxtSection(), api_url="http://127.0.0.1:9/")

    def leaves(urls: object) -> list[str]:
        return [u for v in urls.values() for u in leaves(v)] if isinstance(urls, dict) else [str(urls)]

    api = source._exchange.urls["api"]
    assert leaves(api) and all(u.startswith("http://127.0.0.1:9") for u in leaves(api))
    if exchange_id == "binance":
        assert api["public"] == "http://127.0.0.1:9/api/v3"  # the spot data path: exchangeInfo, klines
        assert source._exchange.options["fetchMarkets"] == {"types": ["spot"]}


def test_naive_datetimes_are_refused(exchange: LocalExchange) -> None:
    with make_source(exchange) as source, pytest.raises(ValueError, match="timezone-aware"):
        source.fetch(["BTC/USDT"], "1h", dt.datetime(2020, 1, 1), T1)
