"""Bar validation: every rule on hand-built frames, gap policies, partition boundaries, wick outliers,
liquidity, and the continuity rule against the real Binance fixtures' documented gap list."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from crypto_assets.config.schema import ValidationSection
from crypto_assets.sources.base import RAW_COLUMNS, RAW_SCHEMA, empty_raw
from crypto_assets.validation import (
    BARS_COLUMNS,
    BARS_SCHEMA,
    RULE_NAMES,
    BarValidationError,
    ValidationReport,
    find_gaps,
    validate_bars,
)

UTC = dt.UTC
H = dt.timedelta(hours=1)
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv"


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def frame(
    symbol: str,
    start: dt.datetime,
    closes: list[float],
    *,
    volume: float = 1e5,
    step: dt.timedelta = H,
    skip: tuple[int, ...] = (),
) -> pl.DataFrame:
    """Hand-built bars: open = previous close, high/low 0.1% outside the body; bar i at start + i·step,
    indices in `skip` left out (missing bars)."""
    opens = [closes[0], *closes[:-1]]
    rows = [
        (symbol, start + i * step, o, max(o, c) * 1.001, min(o, c) * 0.999, c, volume)
        for i, (o, c) in enumerate(zip(opens, closes, strict=True))
        if i not in skip
    ]
    return pl.DataFrame(rows, schema=RAW_SCHEMA, orient="row")


def walk(
    symbol: str, start: dt.datetime, n: int, *, seed: int, vol: float = 0.01, price: float = 100.0
) -> pl.DataFrame:
    """A seeded random walk (log-return σ = `vol` per bar) with small wicks, liquid volume."""
    rng = np.random.default_rng(seed)
    closes = (price * np.exp(np.cumsum(rng.normal(0.0, vol, n)))).tolist()
    return frame(symbol, start, closes)


def with_wick(bars: pl.DataFrame, symbol: str, ts: dt.datetime, depth: float) -> pl.DataFrame:
    """Pull the low of one bar down by `depth` × the previous close (a lower wick of that length)."""
    prev_close = bars.filter((pl.col("symbol") == symbol) & (pl.col("ts") == ts - H))["close"].item()
    hit = (pl.col("symbol") == symbol) & (pl.col("ts") == ts)
    return bars.with_columns(
        pl.when(hit).then(pl.min_horizontal("open", "close") - depth * prev_close).otherwise(pl.col("low")).alias("low")
    )


def rules(**overrides: object) -> ValidationSection:
    return ValidationSection(**overrides)  # type: ignore[arg-type]


def gaps_of(report: ValidationReport) -> list[tuple[str, dt.datetime, dt.datetime, int]]:
    return [tuple(r) for r in report.result("continuity").samples.iter_rows()]  # type: ignore[misc]


# --------------------------------------------------------------------------------------- report shape


def test_clean_frame_passes_every_rule_and_returns_sorted_bars_in_schema_order() -> None:
    raw = pl.concat([frame("ETH/USDT", T0, [10.0, 11.0, 12.0]), frame("BTC/USDT", T0, [100.0, 101.0, 99.0])])
    report = validate_bars(raw, "1h", rules())
    assert [r.name for r in report.results] == list(RULE_NAMES)
    assert all(r.passed for r in report.results) and report.errors == [] and report.ok
    assert report.bars is not None
    assert report.bars.schema == pl.Schema(BARS_SCHEMA)
    assert report.bars["symbol"].to_list() == ["BTC/USDT"] * 3 + ["ETH/USDT"] * 3
    assert report.bars["close"].to_list() == [100.0, 101.0, 99.0, 10.0, 11.0, 12.0]
    assert not report.bars.select(pl.any_horizontal("is_filled", "is_wick_outlier", "is_illiquid").any()).item()
    report.raise_for_errors("2024-01")  # no error: returns


def test_empty_frame_is_valid_and_yields_empty_bars() -> None:
    report = validate_bars(empty_raw(), "1h", rules())
    assert report.ok and report.bars is not None and report.bars.is_empty()
    assert report.bars.columns == BARS_COLUMNS


def test_unknown_timeframe_and_naive_span_start_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown timeframe '2h'"):
        validate_bars(empty_raw(), "2h", rules())
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_bars(empty_raw(), "1h", rules(), span_start=dt.datetime(2024, 1, 1))


def test_extra_columns_are_dropped_from_bars() -> None:
    raw = frame("BTC/USDT", T0, [1.0, 2.0]).with_columns(pl.lit("x").alias("note"))
    report = validate_bars(raw, "1h", rules())
    assert report.ok and report.bars is not None and report.bars.columns == BARS_COLUMNS


# --------------------------------------------------------------------------------------------- schema


def test_schema_missing_column_and_wrong_dtypes_are_collected_lazily() -> None:
    raw = (
        frame("BTC/USDT", T0, [1.0, 2.0])
        .drop("open")
        .with_columns(pl.col("ts").dt.replace_time_zone(None), pl.col("volume").cast(pl.Int64))
    )
    report = validate_bars(raw, "1h", rules())
    assert [r.name for r in report.results] == ["schema"]  # the other rules need the columns
    schema = report.result("schema")
    assert not schema.passed and schema.severity == "error" and report.bars is None
    assert schema.failures == 3
    cases = {(r["column"], r["check"]) for r in schema.samples.iter_rows(named=True)}
    assert ("open", "column_in_dataframe") in cases
    assert ("ts", "dtype('Datetime(time_unit='us', time_zone='UTC')')") in cases
    assert ("volume", "dtype('Float64')") in cases
    assert "column_in_dataframe" in schema.message


def test_schema_rejects_non_utc_timezone() -> None:
    raw = frame("BTC/USDT", T0, [1.0, 2.0]).with_columns(pl.col("ts").dt.convert_time_zone("Europe/Berlin"))
    schema = validate_bars(raw, "1h", rules()).result("schema")
    assert not schema.passed and schema.samples["column"].to_list() == ["ts"]


def test_schema_lists_every_null_with_its_row() -> None:
    raw = frame("BTC/USDT", T0, [1.0, 2.0, 3.0, 4.0]).with_columns(
        pl.when(pl.int_range(pl.len()).is_in([1, 3])).then(None).otherwise(pl.col("close")).alias("close")
    )
    report = validate_bars(raw, "1h", rules())
    schema = report.result("schema")
    assert not schema.passed and schema.failures == 2
    assert schema.samples.select("column", "check", "row").rows() == [
        ("close", "not_nullable", 1),
        ("close", "not_nullable", 3),
    ]
    with pytest.raises(BarValidationError) as info:
        report.raise_for_errors("raw_ohlcv[2024-01]")
    text = str(info.value)
    assert text.startswith("raw_ohlcv[2024-01]: bars failed 1 hard rule(s)")
    assert "schema [FAILED, error]" in text and "row=3" in text
    assert isinstance(info.value, ValueError) and info.value.report is report


def test_schema_counts_nan_as_missing() -> None:
    raw = frame("BTC/USDT", T0, [1.0, 2.0]).with_columns(pl.Series("volume", [1.0, float("nan")]))
    schema = validate_bars(raw, "1h", rules()).result("schema")
    assert not schema.passed and schema.samples.select("column", "row").rows() == [("volume", 1)]


# ------------------------------------------------------------------------------------ ohlc_consistency


def test_ohlc_consistency_names_row_symbol_ts_and_rule() -> None:
    raw = pl.concat([frame("BTC/USDT", T0, [100.0, 101.0, 102.0]), frame("ETH/USDT", T0, [10.0, 11.0])])
    raw = raw.with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(100.5).otherwise(pl.col("high")).alias("high"),  # below close 101
        pl.when(pl.int_range(pl.len()) == 4).then(float("inf")).otherwise(pl.col("open")).alias("open"),
    )
    report = validate_bars(raw, "1h", rules())
    ohlc = report.result("ohlc_consistency")
    assert not ohlc.passed and ohlc.severity == "error" and report.bars is None
    assert ohlc.failures == 3  # violations, not rows: row 4's infinite open also tops its high
    rows = ohlc.samples.select("row", "symbol", "ts", "column", "rule").rows()
    assert rows == [
        (1, "BTC/USDT", T0 + H, "high", "high must be >= max(open, close)"),
        (4, "ETH/USDT", T0 + H, "open", "open must be a finite price > 0"),
        (4, "ETH/USDT", T0 + H, "high", "high must be >= max(open, close)"),
    ]
    assert ohlc.message.startswith(
        "3 violation(s) in 2 row(s): high must be >= max(open, close) ×2; open must be a finite price > 0 ×1"
    )
    # the other rules still ran, so one report lists every problem
    assert [r.name for r in report.results] == list(RULE_NAMES)
    with pytest.raises(BarValidationError, match="ohlc_consistency"):
        report.raise_for_errors("bars[2024-01]")


# ---------------------------------------------------------------------------- unique_sorted_timestamps


def test_duplicates_unsorted_and_off_grid_timestamps_fail() -> None:
    good = frame("BTC/USDT", T0, [1.0, 2.0, 3.0, 4.0])
    dup = pl.concat([good, good[2:3]])  # row 4 repeats 02:00 after 03:00 → duplicate of an earlier ts
    dup_result = validate_bars(dup, "1h", rules()).result("unique_sorted_timestamps")
    assert not dup_result.passed and dup_result.failures == 1
    assert dup_result.samples.select("row", "ts").rows() == [(4, T0 + 2 * H)]

    adjacent = pl.concat([good[:2], good[1:]])  # 01:00 twice in a row
    result = validate_bars(adjacent, "1h", rules()).result("unique_sorted_timestamps")
    assert result.samples.select("row", "rule").rows() == [(2, "duplicate timestamp")]

    unsorted = good[[0, 2, 1, 3]]
    result = validate_bars(unsorted, "1h", rules()).result("unique_sorted_timestamps")
    assert result.samples.select("row", "rule").rows() == [(2, "timestamp earlier than the previous row (unsorted)")]

    off = good.with_columns(
        pl.when(pl.col("ts") == T0 + 3 * H)
        .then(pl.col("ts") + dt.timedelta(minutes=30))
        .otherwise(pl.col("ts"))
        .alias("ts")
    )
    result = validate_bars(off, "1h", rules()).result("unique_sorted_timestamps")
    assert result.samples.select("row", "rule").rows() == [(3, "timestamp not on the 1h grid")]
    assert validate_bars(off, "1h", rules()).bars is None


def test_symbols_interleaved_by_time_are_fine_and_come_back_sorted() -> None:
    a, b = frame("BTC/USDT", T0, [1.0, 2.0, 3.0]), frame("ETH/USDT", T0, [5.0, 6.0, 7.0])
    interleaved = pl.concat([a, b]).sort("ts", "symbol", descending=[False, True])
    report = validate_bars(interleaved, "1h", rules())
    assert report.ok and report.bars is not None
    assert report.bars.select("symbol", "close").rows() == [
        ("BTC/USDT", 1.0),
        ("BTC/USDT", 2.0),
        ("BTC/USDT", 3.0),
        ("ETH/USDT", 5.0),
        ("ETH/USDT", 6.0),
        ("ETH/USDT", 7.0),
    ]


# ------------------------------------------------------------------------------------------ continuity

CLOSES = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0]
GAPPY = frame("BTC/USDT", T0, CLOSES, skip=(3, 4, 7))  # missing 03:00, 04:00 and 07:00


def test_gap_policy_fail_blocks_the_write_and_lists_every_gap() -> None:
    report = validate_bars(GAPPY, "1h", rules(gap_policy="fail"))
    cont = report.result("continuity")
    assert not cont.passed and cont.severity == "error" and cont.failures == 3
    assert gaps_of(report) == [("BTC/USDT", T0 + 3 * H, T0 + 4 * H, 2), ("BTC/USDT", T0 + 7 * H, T0 + 7 * H, 1)]
    assert (
        cont.message.startswith("3 missing bar(s) in 2 gap(s) across 1 symbol(s)") and "nothing written" in cont.message
    )
    assert report.bars is None and report.errors == [cont]
    with pytest.raises(
        BarValidationError,
        match=r"(?s)continuity.*gap_start=2024-01-01 03:00, gap_end=2024-01-01 04:00, missing_bars=2",
    ):
        report.raise_for_errors("bars[2024-01]")


def test_gap_policy_flag_warns_and_keeps_the_holes() -> None:
    report = validate_bars(GAPPY, "1h", rules(gap_policy="flag"))
    cont = report.result("continuity")
    # passed describes the input (it had gaps); severity warn means the bars are still written
    assert not cont.passed and cont.severity == "warn" and cont.failures == 3 and report.ok
    assert "listed, not filled" in cont.message
    assert report.bars is not None
    assert report.bars["ts"].to_list() == GAPPY["ts"].to_list()
    assert not report.bars["is_filled"].any()


def test_gap_policy_ffill_inserts_previous_close_with_zero_volume() -> None:
    report = validate_bars(GAPPY, "1h", rules(gap_policy="ffill"))
    cont = report.result("continuity")
    assert not cont.passed and cont.severity == "warn" and cont.failures == 3 and report.ok
    assert "3 bar(s) forward-filled" in cont.message
    bars = report.bars
    assert bars is not None
    assert bars["ts"].to_list() == [T0 + i * H for i in range(10)]  # complete grid
    filled = bars.filter("is_filled")
    assert filled.select("ts", "open", "high", "low", "close", "volume").rows() == [
        (T0 + 3 * H, 12.0, 12.0, 12.0, 12.0, 0.0),
        (T0 + 4 * H, 12.0, 12.0, 12.0, 12.0, 0.0),
        (T0 + 7 * H, 16.0, 16.0, 16.0, 16.0, 0.0),
    ]
    real = bars.filter(~pl.col("is_filled"))
    assert real.select(RAW_COLUMNS).equals(GAPPY)  # real bars untouched


def test_mid_sample_listing_has_no_false_gaps_before_the_first_bar() -> None:
    btc = frame("BTC/USDT", T0, CLOSES)
    sol = frame("SOL/USDT", T0 + 6 * H, [1.0, 1.1, 1.2, 1.3], skip=(2,))  # lists at 06:00, misses 08:00
    report = validate_bars(pl.concat([btc, sol]), "1h", rules(gap_policy="ffill"))
    assert gaps_of(report) == [("SOL/USDT", T0 + 8 * H, T0 + 8 * H, 1)]
    assert report.bars is not None
    sol_bars = report.bars.filter(pl.col("symbol") == "SOL/USDT")
    assert sol_bars["ts"].to_list() == [T0 + i * H for i in range(6, 10)]
    assert sol_bars["is_filled"].to_list() == [False, False, True, False]


def test_history_gap_at_the_partition_boundary_is_found_and_filled_inside_the_span() -> None:
    feb = utc("2024-02-01 00:00")
    jan = frame("BTC/USDT", feb - 24 * H, [float(i) + 1 for i in range(24)])  # ends 2024-01-31 23:00, close 24
    raw = frame("BTC/USDT", feb, [30.0, 31.0, 32.0, 33.0], skip=(0, 1))  # Feb starts at 02:00
    without = validate_bars(raw, "1h", rules())
    assert without.result("continuity").passed  # alone, the frame looks complete

    report = validate_bars(raw, "1h", rules(), history=jan, span_start=feb)
    assert gaps_of(report) == [("BTC/USDT", feb, feb + H, 2)]
    bars = report.bars
    assert bars is not None
    assert bars["ts"].min() == feb  # history itself is never emitted
    assert bars.filter("is_filled").select("ts", "close", "volume").rows() == [(feb, 24.0, 0.0), (feb + H, 24.0, 0.0)]
    # without span_start the span begins at the frame's first bar: the gap is counted, filled bars
    # before the span are not emitted, and the message says so
    default = validate_bars(raw, "1h", rules(), history=jan)
    assert default.result("continuity").failures == 2
    assert default.bars is not None and default.bars["ts"].min() == feb + 2 * H
    assert "2 before this frame's span left to the earlier partition" in default.result("continuity").message


def test_history_gap_inside_the_previous_month_counts_but_is_not_emitted() -> None:
    feb = utc("2024-02-01 00:00")
    jan = frame("BTC/USDT", feb - 24 * H, [1.0] * 24, skip=(22, 23))  # the exchange skipped Jan 31 22:00-23:00
    raw = frame("BTC/USDT", feb, [2.0, 3.0])
    report = validate_bars(raw, "1h", rules(), history=jan, span_start=feb)
    cont = report.result("continuity")
    assert gaps_of(report) == [("BTC/USDT", feb - 2 * H, feb - H, 2)] and cont.failures == 2
    assert report.bars is not None and report.bars["ts"].to_list() == [feb, feb + H]
    assert not report.bars["is_filled"].any()
    assert validate_bars(raw, "1h", rules(gap_policy="fail"), history=jan).bars is None


def test_history_of_a_symbol_listing_this_month_and_filled_history_bars() -> None:
    feb = utc("2024-02-01 00:00")
    # SOL is not in history (lists this month): no gap; BTC's history ends in a forward-filled bar,
    # which continues the grid, so no gap either
    hist = frame("BTC/USDT", feb - 3 * H, [5.0, 6.0, 6.0]).with_columns(pl.Series("is_filled", [False, False, True]))
    raw = pl.concat([frame("BTC/USDT", feb, [7.0, 8.0]), frame("SOL/USDT", feb + 5 * H, [1.0, 2.0])])
    report = validate_bars(raw, "1h", rules(), history=hist, span_start=feb)
    assert report.result("continuity").passed and report.ok


def test_find_gaps_lists_every_gap_uncapped() -> None:
    closes = [1.0] * 100
    raw = frame("BTC/USDT", T0, closes, skip=tuple(range(1, 100, 3)))  # 33 one-bar gaps
    gaps = find_gaps(raw, "1h")
    assert gaps.height == 33 and gaps["missing_bars"].sum() == 33
    report = validate_bars(raw, "1h", rules(gap_policy="flag"))
    assert report.result("continuity").failures == 33 and report.result("continuity").samples.height == 20


# ------------------------------------------------------------------ continuity to the end of the span


def test_bars_stopping_early_leave_a_tail_gap_up_to_the_span_end_per_policy() -> None:
    # BTC stops after 07:00 in a span that runs to 10:00 (exclusive); ETH is complete.
    end = T0 + 10 * H
    raw = pl.concat([frame("BTC/USDT", T0, [float(i + 1) for i in range(8)]), frame("ETH/USDT", T0, [5.0] * 10)])
    alone = validate_bars(raw, "1h", rules(gap_policy="fail"))
    assert alone.result("continuity").passed  # to the last bar received, the short answer looks complete

    failed = validate_bars(raw, "1h", rules(gap_policy="fail"), span_start=T0, span_end=end)
    assert failed.bars is None and failed.errors[0].name == "continuity"
    assert gaps_of(failed) == [("BTC/USDT", T0 + 8 * H, T0 + 9 * H, 2)]

    flagged = validate_bars(raw, "1h", rules(gap_policy="flag"), span_start=T0, span_end=end)
    assert not flagged.result("continuity").passed and flagged.result("continuity").severity == "warn"
    assert flagged.bars is not None and flagged.bars.filter(pl.col("symbol") == "BTC/USDT").height == 8

    filled = validate_bars(raw, "1h", rules(gap_policy="ffill"), span_start=T0, span_end=end)
    assert filled.bars is not None
    btc = filled.bars.filter(pl.col("symbol") == "BTC/USDT")
    assert btc["ts"].to_list() == [T0 + i * H for i in range(10)]
    assert btc.filter("is_filled").select("ts", "open", "close", "volume").rows() == [
        (T0 + 8 * H, 8.0, 8.0, 0.0),
        (T0 + 9 * H, 8.0, 8.0, 0.0),
    ]
    assert find_gaps(raw, "1h", span_end=end).rows() == [("BTC/USDT", T0 + 8 * H, T0 + 9 * H, 2)]


def test_span_end_ignores_unlisted_symbols_and_starts_a_listing_at_its_first_bar() -> None:
    end = T0 + 10 * H
    btc = frame("BTC/USDT", T0, [1.0] * 10)
    sol = frame("SOL/USDT", T0 + 6 * H, [2.0] * 4)  # lists at 06:00 and runs to the end: no gap at all
    report = validate_bars(pl.concat([btc, sol]), "1h", rules(gap_policy="fail"), span_start=T0, span_end=end)
    assert report.ok and report.result("continuity").passed  # XRP (no bar anywhere) is simply not listed
    assert report.bars is not None and report.bars.filter(pl.col("symbol") == "SOL/USDT").height == 4


def test_a_symbol_with_history_and_no_bar_in_the_span_shows_the_whole_span_as_a_gap() -> None:
    feb = utc("2024-02-01 00:00")
    hist = pl.concat([frame("BTC/USDT", feb - 2 * H, [1.0, 2.0]), frame("ETH/USDT", feb - 2 * H, [3.0, 4.0])])
    raw = frame("BTC/USDT", feb, [5.0, 6.0, 7.0])  # the source answered nothing for ETH
    report = validate_bars(raw, "1h", rules(gap_policy="ffill"), history=hist, span_start=feb, span_end=feb + 3 * H)
    assert gaps_of(report) == [("ETH/USDT", feb, feb + 2 * H, 3)]
    assert report.bars is not None
    eth = report.bars.filter(pl.col("symbol") == "ETH/USDT")
    assert (
        eth["ts"].to_list() == [feb, feb + H, feb + 2 * H]
        and eth["is_filled"].all()
        and eth["close"].to_list() == [4.0] * 3
    )
    # an empty frame (a whole outage) is judged the same way instead of passing as "no rows, no gaps"
    empty = validate_bars(empty_raw(), "1h", rules(gap_policy="fail"), history=hist, span_start=feb, span_end=feb + H)
    assert empty.bars is None and [g[0] for g in gaps_of(empty)] == ["BTC/USDT", "ETH/USDT"]


def test_15m_grid() -> None:
    q = dt.timedelta(minutes=15)
    raw = frame("ETH/USDT", T0, [1.0, 2.0, 3.0, 4.0, 5.0], step=q, skip=(2,))
    report = validate_bars(raw, "15m", rules())
    assert gaps_of(report) == [("ETH/USDT", T0 + 2 * q, T0 + 2 * q, 1)]
    assert report.bars is not None and report.bars.filter("is_filled")["close"].to_list() == [2.0]


# --------------------------------------------------------------------------------------- wick_outliers

SPIKE = T0 + 200 * H


def three_walks(n: int = 300) -> pl.DataFrame:
    return pl.concat([walk(s, T0, n, seed=i) for i, s in enumerate(["BTC/USDT", "ETH/USDT", "SOL/USDT"])])


def test_lone_wick_on_one_symbol_is_flagged_not_dropped() -> None:
    raw = with_wick(three_walks(), "ETH/USDT", SPIKE, 0.30)  # a 30% flash wick, σ ≈ 1%
    report = validate_bars(raw, "1h", rules())
    wick = report.result("wick_outliers")
    assert not wick.passed and wick.severity == "warn" and wick.failures == 1 and report.ok
    sample = wick.samples.row(0, named=True)
    assert (sample["symbol"], sample["ts"]) == ("ETH/USDT", SPIKE)
    assert sample["wick"] == pytest.approx(0.30, abs=1e-9)
    assert 0.008 < sample["sigma"] < 0.012 and sample["wick_sigmas"] == pytest.approx(0.30 / sample["sigma"])
    assert sample["others_median_sigmas"] < 1.0
    bars = report.bars
    assert bars is not None and bars.height == raw.height  # flagged, never dropped
    assert bars.filter("is_wick_outlier").select("symbol", "ts").rows() == [("ETH/USDT", SPIKE)]


def test_market_wide_move_on_every_symbol_is_not_an_outlier() -> None:
    raw = three_walks()
    for symbol in ("BTC/USDT", "ETH/USDT", "SOL/USDT"):
        raw = with_wick(raw, symbol, SPIKE, 0.30)
    report = validate_bars(raw, "1h", rules())
    wick = report.result("wick_outliers")
    assert wick.passed and wick.failures == 0
    assert "3 wick(s) > 12σ, all shared by other symbols" in wick.message
    assert report.bars is not None and not report.bars["is_wick_outlier"].any()


def test_single_symbol_suspicious_wick_is_an_outlier_and_thresholds_apply() -> None:
    raw = with_wick(walk("BTC/USDT", T0, 300, seed=7), "BTC/USDT", SPIKE, 0.05)  # ≈ 5σ
    assert validate_bars(raw, "1h", rules()).result("wick_outliers").passed  # 5σ < wick_k = 12
    lowered = validate_bars(raw, "1h", rules(wick_k=3.0)).result("wick_outliers")
    assert lowered.failures == 1 and lowered.samples["others_median_sigmas"].to_list() == [None]


def test_wick_sigma_needs_warm_up_which_history_provides() -> None:
    hist = walk("BTC/USDT", T0, 200, seed=3)
    later = walk("BTC/USDT", T0 + 200 * H, 30, seed=4)
    raw = with_wick(later, "BTC/USDT", T0 + 205 * H, 0.30)
    # alone, bar 5 has only 4 trailing returns: no σ, nothing judged
    assert validate_bars(raw, "1h", rules()).result("wick_outliers").passed
    with_history = validate_bars(raw, "1h", rules(), history=hist)
    assert with_history.result("wick_outliers").samples.select("symbol", "ts").rows() == [("BTC/USDT", T0 + 205 * H)]


def test_wick_flags_are_causal_and_match_across_a_partition_split() -> None:
    raw = with_wick(with_wick(three_walks(400), "SOL/USDT", SPIKE, 0.3), "BTC/USDT", T0 + 330 * H, 0.25)
    whole = validate_bars(raw, "1h", rules()).bars
    split = T0 + 250 * H
    part = validate_bars(
        raw.filter(pl.col("ts") >= split),
        "1h",
        rules(),
        history=validate_bars(raw.filter(pl.col("ts") < split), "1h", rules()).bars,
    ).bars
    assert whole is not None and part is not None
    assert part.select("symbol", "ts", "is_wick_outlier").equals(
        whole.filter(pl.col("ts") >= split).select("symbol", "ts", "is_wick_outlier")
    )
    assert part["is_wick_outlier"].sum() == 1
    # a crash appended after t changes nothing at or before t (no look-ahead)
    truncated = validate_bars(raw.filter(pl.col("ts") <= SPIKE), "1h", rules()).bars
    assert truncated is not None
    assert truncated["is_wick_outlier"].equals(whole.filter(pl.col("ts") <= SPIKE)["is_wick_outlier"])


# ------------------------------------------------------------------------------------------- liquidity


def test_thin_day_is_flagged_on_all_its_bars_with_its_figures() -> None:
    day1 = frame("BTC/USDT", T0, [100.0] * 24, volume=1e5)
    day2 = frame("BTC/USDT", T0 + 24 * H, [100.0] * 24, volume=10.0)  # 24 × 100 × 10 = 24,000 $ < 1e6
    other = frame("ETH/USDT", T0 + 24 * H, [10.0] * 24, volume=1e6)
    report = validate_bars(pl.concat([day1, day2, other]), "1h", rules())
    liq = report.result("liquidity")
    assert not liq.passed and liq.severity == "warn" and liq.failures == 1 and report.ok
    assert liq.samples.rows() == [("BTC/USDT", T0 + 24 * H, 24, 24_000.0, 0.0)]
    assert "1 of 3 symbol-day(s) illiquid: 1 with dollar volume < 1e+06, 0 with Amihud > 1e-07" in liq.message
    bars = report.bars
    assert bars is not None
    flagged = bars.filter("is_illiquid")
    assert flagged.height == 24 and set(flagged["symbol"]) == {"BTC/USDT"} and flagged["ts"].min() == T0 + 24 * H


def test_amihud_is_mean_abs_return_per_dollar_over_traded_bars() -> None:
    raw = pl.DataFrame(
        [
            ("SOL/USDT", T0 + i * H, c, c, c, c, v)
            for i, (c, v) in enumerate([(100.0, 10.0), (110.0, 20.0), (99.0, 0.0)])
        ],
        schema=RAW_SCHEMA,
        orient="row",
    )
    expected = abs(110 / 100 - 1) / (110 * 20)  # bar 0 has no return, bar 2 has no volume
    flagged = validate_bars(raw, "1h", rules(min_daily_dollar_volume=0.0, max_amihud=1e-5)).result("liquidity")
    assert flagged.failures == 1
    row = flagged.samples.row(0, named=True)
    assert row["dollar_volume"] == pytest.approx(100 * 10 + 110 * 20)
    assert row["amihud"] == pytest.approx(expected)
    assert validate_bars(raw, "1h", rules(min_daily_dollar_volume=0.0, max_amihud=1e-4)).result("liquidity").passed


def test_forward_filled_bars_inherit_their_days_illiquid_flag() -> None:
    raw = frame("BTC/USDT", T0, [100.0] * 24, volume=1.0, skip=(5,))
    bars = validate_bars(raw, "1h", rules(gap_policy="ffill")).bars
    assert bars is not None and bars.height == 24 and bars["is_illiquid"].all()


# ------------------------------------------------------------------------------------------- real data

README_1H_GAPS = [  # /work/shared/data/ohlcv/README.md: last bar before the gap, next bar, missing
    ("2020-02-09 01:00", "2020-02-09 03:00", 1),
    ("2020-02-19 11:00", "2020-02-19 17:00", 5),
    ("2020-03-04 09:00", "2020-03-04 11:00", 1),
    ("2020-04-25 01:00", "2020-04-25 04:00", 2),
    ("2020-06-28 01:00", "2020-06-28 05:00", 3),
    ("2020-11-30 05:00", "2020-11-30 07:00", 1),
    ("2020-12-21 13:00", "2020-12-21 18:00", 4),
    ("2020-12-25 01:00", "2020-12-25 03:00", 1),
    ("2021-02-11 03:00", "2021-02-11 05:00", 1),
    ("2021-03-06 01:00", "2021-03-06 03:00", 1),
    ("2021-04-20 01:00", "2021-04-20 04:00", 2),
    ("2021-04-25 04:00", "2021-04-25 08:00", 3),
    ("2021-08-13 01:00", "2021-08-13 06:00", 4),
    ("2021-09-29 06:00", "2021-09-29 09:00", 2),
    ("2023-03-24 12:00", "2023-03-24 14:00", 1),
]
README_15M_GAPS = [
    ("2021-02-11 03:30", "2021-02-11 05:00", 5),
    ("2021-03-06 01:45", "2021-03-06 03:30", 6),
    ("2021-04-20 01:45", "2021-04-20 04:30", 10),
    ("2021-04-25 04:00", "2021-04-25 08:45", 18),
]


def expected_gaps(
    symbol: str, table: list[tuple[str, str, int]], step: dt.timedelta
) -> list[tuple[str, dt.datetime, dt.datetime, int]]:
    return [(symbol, utc(last) + step, utc(nxt) - step, n) for last, nxt, n in table]


def read_fixture(symbol: str, name: str) -> pl.DataFrame:
    raw = pl.read_csv(
        FIXTURES / name,
        columns=["timestamp", "open", "high", "low", "close", "volume"],
        schema_overrides={"timestamp": pl.Int64},
    )
    return raw.select(
        pl.lit(symbol).alias("symbol"),
        pl.from_epoch("timestamp", time_unit="ms").dt.replace_time_zone("UTC").alias("ts"),
        *(pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")),
    )


@pytest.fixture(scope="module")
def real_1h() -> pl.DataFrame:
    return pl.concat([read_fixture(f"{b}/USDT", f"{b}USDT_1h.csv") for b in ("BTC", "ETH", "SOL")])


def test_real_1h_gaps_are_exactly_the_readme_list(real_1h: pl.DataFrame) -> None:
    gaps = find_gaps(real_1h, "1h")
    for symbol, table in (("BTC/USDT", README_1H_GAPS), ("ETH/USDT", README_1H_GAPS), ("SOL/USDT", README_1H_GAPS[5:])):
        assert gaps.filter(pl.col("symbol") == symbol).rows() == expected_gaps(symbol, table, H)
    for symbol in ("BTC/USDT", "ETH/USDT", "SOL/USDT"):  # the rule itself, one symbol at a time (≤ 20 samples)
        report = validate_bars(real_1h.filter(pl.col("symbol") == symbol), "1h", rules(gap_policy="flag"))
        table = README_1H_GAPS if symbol != "SOL/USDT" else README_1H_GAPS[5:]
        assert gaps_of(report) == expected_gaps(symbol, table, H)
        assert report.result("continuity").failures == (32 if symbol != "SOL/USDT" else 20)


def test_real_1h_ffill_gives_a_complete_grid_and_no_hard_errors(real_1h: pl.DataFrame) -> None:
    report = validate_bars(real_1h, "1h", rules(gap_policy="ffill"))
    assert report.errors == [] and report.bars is not None
    cont = report.result("continuity")
    assert cont.failures == 32 + 32 + 20 and "40 gap(s) across 3 symbol(s)" in cont.message
    per_symbol = (
        report.bars.group_by("symbol")
        .agg(
            pl.col("ts").min().alias("first"),
            pl.col("ts").max().alias("last"),
            pl.len().alias("n"),
            pl.col("is_filled").sum().alias("filled"),
            (pl.col("ts").diff().drop_nulls() == H).all().alias("regular"),
        )
        .sort("symbol")
    )
    assert per_symbol.rows() == [
        ("BTC/USDT", utc("2020-01-01 00:00"), utc("2025-10-31 23:00"), 51_112 + 32, 32, True),
        ("ETH/USDT", utc("2020-01-01 00:00"), utc("2025-10-31 23:00"), 51_112 + 32, 32, True),
        ("SOL/USDT", utc("2020-08-11 06:00"), utc("2025-10-31 23:00"), 45_766 + 20, 20, True),
    ]
    assert report.bars.select(BARS_COLUMNS).equals(report.bars) and report.bars.schema == pl.Schema(BARS_SCHEMA)


def test_real_sol_listing_mid_month_is_no_gap_and_a_short_month_shows_its_tail(real_1h: pl.DataFrame) -> None:
    jul, aug, sep = utc("2020-07-01 00:00"), utc("2020-08-01 00:00"), utc("2020-09-01 00:00")
    month = real_1h.filter(pl.col("ts").is_between(aug, sep, closed="left"))
    history = real_1h.filter(pl.col("ts").is_between(jul, aug, closed="left"))  # BTC and ETH only: SOL not listed
    strict = rules(gap_policy="fail")
    report = validate_bars(month, "1h", strict, history=history, span_start=aug, span_end=sep)
    assert report.ok and report.bars is not None
    assert report.bars.filter(pl.col("symbol") == "SOL/USDT")["ts"].min() == utc("2020-08-11 06:00")
    # the same month answered short for BTC (its last day missing) fails up to the end of the span
    short = month.filter(~((pl.col("symbol") == "BTC/USDT") & (pl.col("ts") >= utc("2020-08-31 00:00"))))
    failed = validate_bars(short, "1h", strict, history=history, span_start=aug, span_end=sep)
    assert failed.bars is None
    assert gaps_of(failed) == [("BTC/USDT", utc("2020-08-31 00:00"), utc("2020-08-31 23:00"), 24)]


def test_real_15m_gaps_are_exactly_the_readme_list() -> None:
    raw = pl.concat([read_fixture(f"{b}/USDT", f"{b}USDT_15m_2021H1.csv") for b in ("BTC", "ETH", "SOL")])
    q = dt.timedelta(minutes=15)
    report = validate_bars(raw, "15m", rules(gap_policy="ffill"))
    assert report.errors == []
    assert gaps_of(report) == [g for b in ("BTC", "ETH", "SOL") for g in expected_gaps(f"{b}/USDT", README_15M_GAPS, q)]
    assert report.result("continuity").failures == 3 * 39
    assert report.bars is not None and report.bars.height == 3 * (13_843 + 39)


def test_real_month_with_history_equals_the_same_month_validated_in_one_piece(real_1h: pl.DataFrame) -> None:
    # 2021-08 holds a 4-bar maintenance gap; July is its history
    jul, aug, sep = utc("2021-07-01 00:00"), utc("2021-08-01 00:00"), utc("2021-09-01 00:00")
    in_span = lambda a, b: real_1h.filter(pl.col("ts").is_between(a, b, closed="left"))
    history = validate_bars(in_span(jul, aug), "1h", rules()).bars
    month = validate_bars(in_span(aug, sep), "1h", rules(), history=history, span_start=aug).bars
    whole = validate_bars(in_span(jul, sep), "1h", rules()).bars
    assert month is not None and whole is not None
    assert month.equals(whole.filter(pl.col("ts") >= aug))
    assert month["is_filled"].sum() == 3 * 4
    assert not math.isnan(month["close"].sum())
