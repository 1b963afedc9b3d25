"""The bar validation rules, each a vectorized polars pass returning a `RuleResult`.

The rules after `schema` work on a *series* frame: the raw bars de-duplicated and sorted by
(symbol, ts), preceded per symbol by a tail of `history` (earlier validated bars, `_hist = True`)
so that gaps across a partition boundary and the trailing volatility are seen. Only raw rows are
ever judged or emitted; history rows are context.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import polars as pl

from crypto_assets.config.schema import ValidationSection
from crypto_assets.sources.base import RAW_SCHEMA, TS_DTYPE
from crypto_assets.validation.report import SAMPLE_ROWS, RuleResult
from crypto_assets.validation.row_rules import ohlc_violations, order_violations

GAP_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "gap_start": TS_DTYPE,  # open time of the first missing bar
    "gap_end": TS_DTYPE,  # open time of the last missing bar (inclusive)
    "missing_bars": pl.Int64(),
}
ROW_SAMPLE_SCHEMA: dict[str, pl.DataType] = {
    "row": pl.UInt32(),
    "symbol": pl.String(),
    "ts": TS_DTYPE,
    "column": pl.String(),
    "rule": pl.String(),
    "value": pl.Float64(),
}
WICK_SAMPLE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts": TS_DTYPE,
    "wick": pl.Float64(),  # wick length / previous close
    "sigma": pl.Float64(),  # trailing std of log returns up to the previous bar
    "wick_sigmas": pl.Float64(),  # wick / sigma
    "others_median_sigmas": pl.Float64(),  # median wick_sigmas of the other symbols at ts (null: none)
}
LIQUIDITY_SAMPLE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "day": TS_DTYPE,
    "bars": pl.UInt32(),
    "dollar_volume": pl.Float64(),
    "amihud": pl.Float64(),
}
GapPolicy = Literal["fail", "flag", "ffill"]
MIN_SIGMA_SAMPLES = 24
"""Fewest trailing returns a σ needs before wicks are judged (a day of 1h bars)."""

_SAME_SYMBOL = pl.col("symbol") == pl.col("symbol").shift(1)  # on a frame sorted by (symbol, ts)


def _prev(column: str) -> pl.Expr:
    # shift within symbol without a window function: cheaper than .over() on a sorted frame
    return pl.when(_SAME_SYMBOL).then(pl.col(column).shift(1))


def _row_samples(raw: pl.DataFrame, violations: pl.DataFrame) -> pl.DataFrame:
    """Attach each violation's symbol and ts (violations carry the 0-based `row` of `raw`)."""
    if violations.is_empty():
        return pl.DataFrame(schema=ROW_SAMPLE_SCHEMA)
    head = violations.head(SAMPLE_ROWS)
    where = raw.select("symbol", "ts")[head["row"].cast(pl.Int64).to_list()]
    samples = pl.concat([head.select("row"), where, head.select("column", "rule", "value")], how="horizontal")
    return samples.cast(ROW_SAMPLE_SCHEMA)  # type: ignore[arg-type]


def _summarise(violations: pl.DataFrame) -> str:
    counts = violations.group_by("rule", maintain_order=True).len()
    return "; ".join(f"{rule} ×{n}" for rule, n in counts.iter_rows())


def ohlc_consistency(raw: pl.DataFrame) -> RuleResult:
    """Rule `ohlc_consistency` (error): prices finite and > 0, volume finite and ≥ 0,
    low ≤ min(open, close), max(open, close) ≤ high (`row_rules.ohlc_violations`).
    `failures` counts violations (a row breaking two checks counts twice)."""
    violations = ohlc_violations(raw)
    if violations.is_empty():
        return RuleResult(
            "ohlc_consistency", True, "error", f"{raw.height} rows consistent", 0, _row_samples(raw, violations)
        )
    rows = violations["row"].n_unique()
    return RuleResult(
        "ohlc_consistency",
        False,
        "error",
        f"{violations.height} violation(s) in {rows} row(s): {_summarise(violations)}",
        violations.height,
        _row_samples(raw, violations),
    )


def unique_sorted_timestamps(raw: pl.DataFrame, timeframe: dt.timedelta) -> RuleResult:
    """Rule `unique_sorted_timestamps` (error): within each symbol, `ts` strictly increases in the
    frame's own order (no duplicates, nothing unsorted: `row_rules.order_violations`), and every `ts`
    lies on the timeframe's grid (a multiple of the bar length since the epoch, i.e. 1h bars on the
    hour, 4h bars at 00/04/08… UTC, as exchanges publish them) — an off-grid bar would make the
    regular grid, and so every gap count, meaningless."""
    tf_us = _us(timeframe)
    off_grid = (
        raw.with_row_index("row")
        .filter(pl.col("ts").dt.epoch("us") % tf_us != 0)
        .select(
            "row",
            pl.lit("ts").alias("column"),
            pl.lit(f"timestamp not on the {_fmt_td(timeframe)} grid").alias("rule"),
            pl.col("ts").dt.epoch("ms").cast(pl.Float64).alias("value"),
        )
    )
    violations = pl.concat([order_violations(raw), off_grid]).sort("row", maintain_order=True)
    if violations.is_empty():
        return RuleResult(
            "unique_sorted_timestamps",
            True,
            "error",
            "timestamps unique, sorted and on the grid per symbol",
            0,
            _row_samples(raw, violations),
        )
    return RuleResult(
        "unique_sorted_timestamps",
        False,
        "error",
        f"{violations.height} bad timestamp(s): {_summarise(violations)}",
        violations.height,
        _row_samples(raw, violations),
    )


def gaps_in_series(series: pl.DataFrame, timeframe: dt.timedelta, span_end: dt.datetime | None = None) -> pl.DataFrame:
    """Every gap whose next present bar is a raw row, with the close to forward-fill from; with
    `span_end`, also each symbol's *tail gap*: the bars from its last bar up to `span_end` (exclusive).

    A symbol's grid runs from its first bar in `series` (its last history bar, if any, else its
    first raw bar: symbols list mid-sample, so nothing before that is missing) to `span_end`, or to
    its last raw bar when `span_end` is None. A symbol absent from `series` has not listed: no gap.
    """
    tf_us = _us(timeframe)
    step = pl.col("ts").dt.epoch("us") - pl.col("prev_ts").dt.epoch("us")
    inner = (
        series.select("symbol", "ts", "close", "_hist", prev_ts=_prev("ts"), prev_close=_prev("close"))
        .filter(~pl.col("_hist") & (step > tf_us))
        .select(
            "symbol",
            (pl.col("prev_ts") + timeframe).alias("gap_start"),
            (pl.col("ts") - timeframe).alias("gap_end"),
            ((step - 1) // tf_us).alias("missing_bars"),  # floor: an off-grid bar is caught elsewhere
            "prev_close",
        )
    )
    if span_end is None or series.is_empty():
        return inner
    last_open = _ceil_to_grid(span_end, timeframe) - timeframe  # open time of the span's last bar
    tail = (
        series.group_by("symbol", maintain_order=True)
        .agg(pl.col("ts").last(), pl.col("close").last().alias("prev_close"))
        .filter(pl.col("ts") < last_open)
        .select(
            "symbol",
            (pl.col("ts") + timeframe).alias("gap_start"),
            pl.lit(last_open, dtype=TS_DTYPE).alias("gap_end"),
            ((pl.lit(last_open, dtype=TS_DTYPE).dt.epoch("us") - pl.col("ts").dt.epoch("us")) // tf_us).alias(
                "missing_bars"
            ),
            "prev_close",
        )
    )
    return pl.concat([inner, tail.cast(inner.schema)]).sort("symbol", "gap_start")


def continuity(
    gaps: pl.DataFrame, timeframe: dt.timedelta, policy: GapPolicy, span_start: dt.datetime | None
) -> tuple[RuleResult, pl.DataFrame]:
    """Rule `continuity`: every missing bar on each symbol's regular grid.

    `passed` always means "the input had no missing bars", whatever the policy; the policy sets
    what a failure does: `fail` → severity error (nothing written); `flag` → warn, gaps listed, bars
    not filled; `ffill` → warn, missing bars at or after `span_start` are inserted as
    open = high = low = close = previous close, volume 0, `is_filled = true` (a gap reaching back
    into history's span is reported in full, but its earlier bars belong to the earlier partition).
    Returns the result and the filled rows (empty unless `ffill`).
    Samples: (symbol, gap_start, gap_end, missing_bars), first and last missing bar inclusive.
    """
    samples = gaps.select(list(GAP_SCHEMA))
    missing = int(samples["missing_bars"].sum()) if samples.height else 0
    filled = _fill(gaps, timeframe, span_start) if policy == "ffill" and missing else _empty_filled()
    if not missing:
        return RuleResult(
            "continuity", True, "error" if policy == "fail" else "warn", "no missing bars", 0, samples
        ), filled
    symbols = samples["symbol"].n_unique()
    what = {
        "fail": "gap_policy fail: nothing written",
        "flag": "gap_policy flag: listed, not filled",
        "ffill": f"gap_policy ffill: {filled.height} bar(s) forward-filled",
    }[policy]
    if policy == "ffill" and filled.height < missing:
        what += f", {missing - filled.height} before this frame's span left to the earlier partition"
    message = f"{missing} missing bar(s) in {samples.height} gap(s) across {symbols} symbol(s) ({what})"
    result = RuleResult(
        "continuity", False, "error" if policy == "fail" else "warn", message, missing, samples.head(SAMPLE_ROWS)
    )
    return result, filled


def _fill(gaps: pl.DataFrame, timeframe: dt.timedelta, span_start: dt.datetime | None) -> pl.DataFrame:
    fillable = gaps
    if span_start is not None:
        fillable = gaps.filter(pl.col("gap_end") >= span_start).with_columns(
            pl.max_horizontal("gap_start", _ceil_to_grid(span_start, timeframe)).alias("gap_start")
        )
    return (
        fillable.select(
            "symbol",
            pl.datetime_ranges("gap_start", "gap_end", timeframe).alias("ts"),
            pl.col("prev_close").alias("close"),
        )
        .explode("ts")
        .select(
            "symbol",
            pl.col("ts").cast(TS_DTYPE),
            *(pl.col("close").alias(c) for c in ("open", "high", "low", "close")),
            pl.lit(0.0).alias("volume"),
            pl.lit(True).alias("is_filled"),
        )
    )


def _empty_filled() -> pl.DataFrame:
    return pl.DataFrame(schema={**RAW_SCHEMA, "is_filled": pl.Boolean()})


def wick_outliers(series: pl.DataFrame, rules: ValidationSection) -> tuple[RuleResult, pl.DataFrame]:
    """Rule `wick_outliers` (warn; bars are flagged `is_wick_outlier`, never dropped).

    Separates flash-crash artifacts (one exchange's book swept for a moment on one pair) from real
    moves (which the whole market shares), causally — nothing after bar t is used:

    - wick_t = max(high − max(open, close), min(open, close) − low) / close_{t−1}
    - σ_t = std (ddof 1) of the trailing `wick_vol_window` close-to-close log returns up to and
      including bar t−1 (history warms it up when given); judged only once ≥ min(24, window)
      returns exist and σ_t > 0
    - suspicious: wick_t > `wick_k` × σ_t
    - outlier: suspicious AND wick_t/σ_t > `wick_cross_k` × the median wick_t/σ_t of the OTHER
      symbols with a judged bar at the same ts. With no other symbol there (one symbol, or the others
      not listed yet), a suspicious wick is an outlier.

    Returns the result and (symbol, ts, is_wick_outlier) for the raw rows of `series`.
    """
    window = rules.wick_vol_window
    ret = (pl.col("close") / pl.col("prev_close")).log()
    scored = series.with_columns(prev_close=_prev("close")).with_columns(
        ret.rolling_std(window, min_samples=min(MIN_SIGMA_SAMPLES, window)).over("symbol").alias("_rs"),
        (
            pl.max_horizontal(
                pl.col("high") - pl.max_horizontal("open", "close"),
                pl.min_horizontal("open", "close") - pl.col("low"),
            )
            / pl.col("prev_close")
        ).alias("wick"),
    )
    scored = scored.with_columns(_prev("_rs").alias("sigma")).with_columns(
        (pl.col("wick") / pl.when(pl.col("sigma") > 0).then(pl.col("sigma"))).alias("wick_sigmas")
    )
    suspicious = (
        scored.with_row_index("_row")
        .filter(~pl.col("_hist") & (pl.col("wick_sigmas") > rules.wick_k))
        .select("_row", "symbol", "ts", "wick", "sigma", "wick_sigmas")
    )
    # Cross-section only for the (rare) suspicious bars: every other judged bar at those ts.
    peers = scored.filter(pl.col("ts").is_in(suspicious["ts"].implode()) & pl.col("wick_sigmas").is_not_null())
    others = (
        suspicious.select("symbol", "ts")
        .join(peers.select("ts", pl.col("symbol").alias("_other"), pl.col("wick_sigmas").alias("_z")), on="ts")
        .filter(pl.col("symbol") != pl.col("_other"))
        .group_by("symbol", "ts")
        .agg(pl.col("_z").median().alias("others_median_sigmas"))
    )
    outliers = (
        suspicious.join(others, on=["symbol", "ts"], how="left")
        .filter(
            pl.col("others_median_sigmas").is_null()
            | (pl.col("wick_sigmas") > rules.wick_cross_k * pl.col("others_median_sigmas"))
        )
        .sort("symbol", "ts")
    )
    # Flags by row position: a scatter of the few outliers beats a 100k-row join.
    is_outlier = pl.repeat(False, scored.height, eager=True).alias("is_wick_outlier")
    if outliers.height:
        is_outlier = is_outlier.scatter(outliers["_row"], True)
    flags = scored.select("symbol", "ts", "_hist").with_columns(is_outlier).filter(~pl.col("_hist")).drop("_hist")
    outliers = outliers.select(list(WICK_SAMPLE_SCHEMA)).cast(WICK_SAMPLE_SCHEMA)  # type: ignore[arg-type]
    n = outliers.height
    if n == 0:
        msg = (
            f"no wick outliers ({suspicious.height} wick(s) > {rules.wick_k:g}σ, all shared by other symbols)"
            if suspicious.height
            else "no wick outliers"
        )
        return RuleResult("wick_outliers", True, "warn", msg, 0, outliers), flags
    message = (
        f"{n} wick outlier(s) flagged (wick > {rules.wick_k:g}σ and > {rules.wick_cross_k:g}× the other symbols' median); "
        f"{suspicious.height - n} other suspicious wick(s) shared by the market kept unflagged"
    )
    return RuleResult("wick_outliers", False, "warn", message, n, outliers.head(SAMPLE_ROWS)), flags


def liquidity(series: pl.DataFrame, rules: ValidationSection) -> tuple[RuleResult, pl.DataFrame]:
    """Rule `liquidity` (warn; every bar of a flagged symbol-day gets `is_illiquid`).

    Per symbol and UTC day, over the raw bars of that day:
    - dollar volume = Σ close × volume (quote currency);
    - Amihud illiquidity = mean over bars with volume > 0 of |close_t / close_{t−1} − 1| / (close_t × volume_t)
      (price impact per dollar traded; the first bar of a symbol without history has no return);
    - flagged when dollar volume < `min_daily_dollar_volume` or Amihud > `max_amihud`.
    A day only partly inside the frame (a listing day, the current day) is judged on the bars present.
    Returns the result and the flagged (symbol, day) pairs.
    """
    dollar = pl.col("close") * pl.col("volume")
    term = pl.when(pl.col("volume") > 0).then((pl.col("close") / pl.col("prev_close") - 1).abs() / dollar)
    days = (
        series.with_columns(prev_close=_prev("close"))
        .filter(~pl.col("_hist"))
        .group_by("symbol", pl.col("ts").dt.truncate("1d").alias("day"))
        .agg(pl.len().alias("bars"), dollar.sum().alias("dollar_volume"), term.mean().alias("amihud"))
    )
    flagged = (
        days.filter((pl.col("dollar_volume") < rules.min_daily_dollar_volume) | (pl.col("amihud") > rules.max_amihud))
        .sort("symbol", "day")
        .cast(LIQUIDITY_SAMPLE_SCHEMA)  # type: ignore[arg-type]
    )
    if flagged.is_empty():
        return RuleResult("liquidity", True, "warn", f"{days.height} symbol-day(s), none illiquid", 0, flagged), flagged
    low_dv = int((flagged["dollar_volume"] < rules.min_daily_dollar_volume).sum())
    high_amihud = int((flagged["amihud"] > rules.max_amihud).fill_null(False).sum())
    message = (
        f"{flagged.height} of {days.height} symbol-day(s) illiquid: {low_dv} with dollar volume < "
        f"{rules.min_daily_dollar_volume:g}, {high_amihud} with Amihud > {rules.max_amihud:g}"
    )
    return RuleResult("liquidity", False, "warn", message, flagged.height, flagged.head(SAMPLE_ROWS)), flagged


def _us(delta: dt.timedelta) -> int:
    return delta // dt.timedelta(microseconds=1)


def _ceil_to_grid(when: dt.datetime, timeframe: dt.timedelta) -> dt.datetime:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    steps = -((epoch - when) // timeframe)  # ceil division
    return epoch + steps * timeframe


def _fmt_td(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


__all__ = [
    "GAP_SCHEMA",
    "continuity",
    "gaps_in_series",
    "liquidity",
    "ohlc_consistency",
    "unique_sorted_timestamps",
    "wick_outliers",
]
