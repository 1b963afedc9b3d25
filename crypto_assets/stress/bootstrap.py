"""Scenario (a) of `stress` (DESIGN.md §6.3): stationary block bootstrap of historical crash windows, spliced
after a calm bullish stretch, so every path switches from bull to bear.

How a path is made
------------------
1. **Per-bar relative quantities.** From the experiment's bars (each symbol on its own, sorted by ts, forward-
   filled `is_filled` bars dropped: they are not market bars, and dropping them leaves the next real bar's
   return spanning the gap), every bar becomes

   - `r = log(close / prev_close)`, the close-to-close log return;
   - `o = log(open / prev_close)`, the open's gap from the previous close (≈ 0 on Binance);
   - `h = log(high / max(open, close)) ≥ 0` and `l = log(min(open, close) / low) ≥ 0`, the wicks beyond the body
     (cut to the body on bars validation flagged `is_wick_outlier`: a data error is not a crash);
   - `dv = volume · close`, the dollar volume.

   None of these depends on the price level, so rows from 2021 and 2023 splice together.
2. **Source windows.** The configured crash windows (`stress.crash_bootstrap.windows`, whole UTC days) that
   overlap the bars. A symbol takes part in a window when it has bars on at least `min_coverage` of the window's
   grid; the window's rows are the timestamps where every taking-part symbol has a bar (one row = all symbols at
   once). A symbol that does not take part gets NO rows on that window's paths (SOL/USDT did not trade before
   2020-08-11), and the path's note says so. Windows entirely outside the bars are skipped; when none is inside
   (the synthetic demo, 2023-2024), the `fallback_windows` worst drawdown windows of the experiment's own
   equal-weight index (mean of the symbols' log returns per bar), each as long as the longest configured window
   and not overlapping each other, stand in, and the note names them.
3. **Calm window.** For the symbol set of each crash window, among the `calm_length` stretches of consecutive
   common rows (covering at least `min_coverage` of their grid, overlapping no crash window): the calm quarter
   (standard deviation of the equal-weight per-bar return at most its 25th percentile), and in it the steadiest
   equal-weight rise (highest return / standard deviation): a calm bull market, not merely a flat one (if no
   calm stretch rose, the calmest stretch, and the note says so). On the 2020-2025 fixtures at 1h: 7 days from
   2023-06-15, +19%, 2.3% daily volatility.
4. **Resampling.** `arch.bootstrap.StationaryBootstrap` (Politis & Romano 1994) draws row indices of the crash
   window (and, with `calm_resample`, of the calm window); ONE index per bar is applied to every symbol, so the
   cross-asset dependence of each bar survives. A path longer than its window concatenates further draws.
   The mean block length is the largest Politis-White (2004, with Patton-Politis-White 2009's correction)
   stationary estimate, `arch.bootstrap.optimal_block_length`, over the symbols' returns AND squared returns
   (returns are nearly uncorrelated, estimate ≈ 1-8 bars; squared returns carry the volatility clustering of
   a crash, ≈ 7-31 bars at 1h in May 2021 / Nov 2022), floored at `min_block` (6h) and capped at a quarter of
   the window (so a path is not a near copy of its window).
5. **Rebuilding prices.** From each symbol's last close in the bars: `close_t = close_{t-1} · e^{r_t}`,
   `open_t = close_{t-1} · e^{o_t}`, `high = max(open, close) · e^{h}`, `low = min(open, close) · e^{-l}`,
   `volume = dv / close` (the source window's dollar liquidity, so the engine's participation cap and impact
   see the liquidity of the crash, not one distorted by the price level). OHLC is valid and prices are > 0 by
   construction (e^h ≥ 1, e^{-l} ≤ 1).

Timestamps: a regular grid of the timeframe starting one bar after the last bar of `bars`, and prices start at
each symbol's last close: a path is a seamless continuation of the experiment's own bars, so a replay can
prepend the real history for its features' warm-up. `high_vol_bear` is True on the crash part, False on the
calm part.

Randomness: path `i` draws from `default_rng(SeedSequence([seed, TAG], spawn_key=(i,)))`, so the same seed gives
bit-identical paths, and path `i` is the same whatever `n_paths` is. Paths take the source windows in turn
(path `i` uses window `i mod n_windows`).
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl
from arch.bootstrap import StationaryBootstrap, optimal_block_length

from crypto_assets.config.schema import CrashBootstrapSection
from crypto_assets.sources.base import TS_DTYPE
from crypto_assets.stress.paths import StressPath
from crypto_assets.timeframes import duration_bars, parse_duration, timeframe_delta, timeframe_us

SCENARIO = "crash_bootstrap"
KEY = "stress.crash_bootstrap"
# Stable stream tag: this scenario's random numbers never coincide with another scenario's for the same seed.
TAG = zlib.crc32(b"crypto_assets.stress.crash_bootstrap")
# Order of the per-bar relative quantities in the last axis of the resampled arrays.
R, O, H, L, DV = range(5)
_REL = ("r", "o", "h", "l", "dv")
_DAY_US = 86_400_000_000
# The calm stretch is drawn from the stretches whose volatility is in this lowest quantile.
CALM_QUANTILE = 0.25

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SourceWindow:
    """One resolved source window: its rows as an array `(rows, symbols, 5)` of the relative quantities."""

    label: str
    span_us: tuple[int, int]  # [start, end) in epoch microseconds
    symbols: tuple[str, ...]
    rel: FloatArray
    block: int
    dropped: tuple[str, ...] = ()
    fall: float | None = None  # the equal-weight index's peak-to-trough log fall (fallback windows)


def crash_bootstrap(
    bars: pl.DataFrame, timeframe: str, params: CrashBootstrapSection, *, seed: int, n_paths: int
) -> list[StressPath]:
    """`n_paths` paths of `calm_length` calm bull market then `crash_length` resampled crash (module docstring).

    bars: the experiment's validated bars, long `symbol, ts, open, high, low, close, volume` (+ optional flag
        columns `is_filled`, `is_wick_outlier`), on the `timeframe` grid, gaps allowed.
    Returns StressPath(scenario="crash_bootstrap", seed, path_id=i, ...) for i in range(n_paths); bars in
    RAW_SCHEMA sorted by (symbol, ts); `high_vol_bear` per ts; no multipliers (the crash's own dollar volume
    already makes liquidity dry up through the engine's impact and participation cap).
    Raises ValueError naming the key for a window inside the bars with too few bars, lengths that are not whole
    bars, or bars too short for the calm stretch.
    """
    if n_paths < 0:
        raise ValueError(f"n_paths must be ≥ 0, got {n_paths}")
    if seed < 0:
        raise ValueError(f"seed must be ≥ 0 (a SeedSequence entropy), got {seed}")
    if bars.is_empty():
        raise ValueError(f"{KEY}: no bars to resample")
    bar_us = timeframe_us(timeframe)
    calm_n = duration_bars(params.calm_length, timeframe, f"{KEY}.calm_length")
    crash_n = duration_bars(params.crash_length, timeframe, f"{KEY}.crash_length")
    min_block = max(1, math.ceil(parse_duration(params.min_block, f"{KEY}.min_block") / timeframe_delta(timeframe)))

    rel = relative_bars(bars)
    if rel.is_empty():
        raise ValueError(f"{KEY}: every symbol has a single bar, no return to resample")
    span = (_us(bars["ts"].min()), _us(bars["ts"].max()))
    windows, how = _crash_windows(rel, span, bar_us, params, min_block)
    calms: dict[tuple[str, ...], tuple[SourceWindow, str]] = {}
    for window in windows:
        if window.symbols not in calms:
            calms[window.symbols] = _calm_window(rel, window.symbols, windows, calm_n, bar_us, params, min_block)

    last = bars.group_by("symbol").agg(pl.col("close").sort_by("ts").last(), pl.col("ts").max())
    last_close = dict(zip(last["symbol"].to_list(), last["close"].to_list(), strict=True))
    start_us = _us(last["ts"].max()) + bar_us
    ts = pl.Series("ts", start_us + bar_us * np.arange(calm_n + crash_n, dtype=np.int64)).cast(pl.Datetime("us"))
    ts = ts.dt.replace_time_zone("UTC").cast(TS_DTYPE)
    high_vol_bear = pl.DataFrame({"ts": ts, "high_vol_bear": np.arange(calm_n + crash_n) >= calm_n})

    keys = {window.symbols: _keys(window.symbols, ts) for window in windows}
    paths: list[StressPath] = []
    for path_id in range(n_paths):
        window = windows[path_id % len(windows)]
        calm, calm_how = calms[window.symbols]
        rng = np.random.default_rng(np.random.SeedSequence([seed, TAG], spawn_key=(path_id,)))
        calm_idx = _indices(calm, calm_n, rng) if params.calm_resample else np.arange(calm_n)
        crash_idx = _indices(window, crash_n, rng)
        rows = np.concatenate([calm.rel[calm_idx], window.rel[crash_idx]], axis=0)
        start = np.log(np.array([last_close[s] for s in window.symbols], dtype=np.float64))
        note = (
            f"{how}; this path: {params.calm_length} calm ({calm_how}, "
            f"{'stationary bootstrap, mean block ' + str(calm.block) + ' bars' if params.calm_resample else 'copied'})"
            f" then {params.crash_length} crash (stationary bootstrap of {window.label}, mean block "
            f"{window.block} bars), whole rows of {', '.join(window.symbols)} together"
            + (f"; {', '.join(window.dropped)}: no rows (not trading through the window)" if window.dropped else "")
        )
        paths.append(
            StressPath(
                scenario=SCENARIO,
                seed=seed,
                path_id=path_id,
                bars=_rebuild(rows, start, keys[window.symbols]),
                high_vol_bear=high_vol_bear,
                note=note,
            )
        )
    return paths


def relative_bars(bars: pl.DataFrame) -> pl.DataFrame:
    """`symbol, ts, r, o, h, l, dv` per bar that has a previous bar of its symbol (module docstring, step 1)."""
    frame = bars
    if "is_filled" in frame.columns:
        frame = frame.filter(~pl.col("is_filled"))
    wick_ok = ~pl.col("is_wick_outlier") if "is_wick_outlier" in frame.columns else pl.lit(True)
    body_hi = pl.max_horizontal("open", "close")
    body_lo = pl.min_horizontal("open", "close")
    prev = pl.col("close").shift(1).over("symbol")
    return (
        frame.sort("symbol", "ts")
        .select(
            "symbol",
            "ts",
            (pl.col("close") / prev).log().alias("r"),
            (pl.col("open") / prev).log().alias("o"),
            # clip: a wick exactly at the body must give 0, never a rounding -1e-17 that would break low ≤ body
            pl.when(wick_ok).then((pl.col("high") / body_hi).log().clip(lower_bound=0.0)).otherwise(0.0).alias("h"),
            pl.when(wick_ok).then((body_lo / pl.col("low")).log().clip(lower_bound=0.0)).otherwise(0.0).alias("l"),
            (pl.col("volume") * pl.col("close")).alias("dv"),
        )
        .drop_nulls("r")
    )


def _us(value: object) -> int:
    assert isinstance(value, dt.datetime)
    return (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def _fmt(us: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)).strftime("%Y-%m-%d %H:%M")


def _ts_us(frame: pl.DataFrame) -> IntArray:
    return frame["ts"].dt.epoch("us").to_numpy().astype(np.int64)


def _window_rows(
    rel: pl.DataFrame, start_us: int, end_us: int, bar_us: int, min_coverage: float
) -> tuple[tuple[str, ...], tuple[str, ...], pl.DataFrame, float]:
    """The symbols taking part in [start, end), those that do not, the common rows (wide: ts, then
    `<quantity>_<i>` for symbol i) and the best symbol coverage."""
    grid = (end_us - start_us) // bar_us
    inside = rel.filter(pl.col("ts").dt.epoch("us").is_between(start_us, end_us, closed="left"))
    counts = inside.group_by("symbol").len()
    coverage = dict(zip(counts["symbol"].to_list(), (counts["len"] / grid).to_list(), strict=True))
    all_symbols = sorted(rel["symbol"].unique().to_list())
    symbols = tuple(s for s in all_symbols if coverage.get(s, 0.0) >= min_coverage)
    dropped = tuple(s for s in all_symbols if s not in symbols)
    wide = _wide(inside, symbols)
    return symbols, dropped, wide, max(coverage.values(), default=0.0)


def _wide(frame: pl.DataFrame, symbols: Sequence[str]) -> pl.DataFrame:
    """Rows where every one of `symbols` has a bar: ts, then r_0, o_0, ..., dv_0, r_1, ... (inner join on ts)."""
    wide = pl.DataFrame({"ts": []}, schema={"ts": TS_DTYPE})
    for i, symbol in enumerate(symbols):
        part = frame.filter(pl.col("symbol") == symbol).select("ts", *(pl.col(q).alias(f"{q}_{i}") for q in _REL))
        wide = part if i == 0 else wide.join(part, on="ts", how="inner")
    return wide.sort("ts")


def _as_array(wide: pl.DataFrame, n_symbols: int) -> FloatArray:
    """Wide rows → array (rows, symbols, 5) in the order R, O, H, L, DV."""
    columns = [f"{q}_{i}" for i in range(n_symbols) for q in _REL]
    return np.ascontiguousarray(wide.select(columns).to_numpy().astype(np.float64).reshape(wide.height, n_symbols, 5))


def _block(rel: FloatArray, min_block: int) -> int:
    """Mean block length: max Politis-White stationary estimate over the symbols' returns and squared returns,
    floored at `min_block`, capped at a quarter of the window (module docstring, step 4)."""
    returns = rel[:, :, R]
    estimates = optimal_block_length(np.concatenate([returns, returns**2], axis=1))["stationary"].to_numpy()
    estimate = float(np.nanmax(estimates)) if np.isfinite(estimates).any() else 1.0
    return int(max(min_block, min(math.ceil(estimate), len(rel) // 4)))


def _source(
    label: str,
    span_us: tuple[int, int],
    symbols: tuple[str, ...],
    dropped: tuple[str, ...],
    wide: pl.DataFrame,
    min_block: int,
    fall: float | None = None,
) -> SourceWindow:
    rel = _as_array(wide, len(symbols))
    return SourceWindow(label, span_us, symbols, rel, _block(rel, min_block), dropped, fall)


def _crash_windows(
    rel: pl.DataFrame, span: tuple[int, int], bar_us: int, params: CrashBootstrapSection, min_block: int
) -> tuple[list[SourceWindow], str]:
    """The source windows and a sentence saying where they came from (`span`: the bars' first and last ts)."""
    first_us, last_us = span
    windows: list[SourceWindow] = []
    outside: list[str] = []
    for i, window in enumerate(params.windows):
        start_us = _us(dt.datetime.combine(window.start, dt.time(), dt.UTC))
        end_us = start_us + ((window.end - window.start).days + 1) * _DAY_US
        if end_us <= first_us or start_us > last_us:
            outside.append(window.label)
            continue
        symbols, dropped, wide, best = _window_rows(rel, start_us, end_us, bar_us, params.min_coverage)
        grid = (end_us - start_us) // bar_us
        if not symbols or wide.height < params.min_coverage * grid or wide.height < 8:
            raise ValueError(
                f"{KEY}.windows[{i}] ({window.label}) has too few bars: "
                + (
                    f"no symbol has bars on {params.min_coverage:.0%} ({KEY}.min_coverage) of its {grid} bars "
                    f"(best {best:.0%})"
                    if not symbols
                    else f"{wide.height} of its {grid} bars are common to {', '.join(symbols)}, "
                    f"fewer than {KEY}.min_coverage = {params.min_coverage:.0%}"
                )
                + f"; the bars run {_fmt(first_us)}..{_fmt(last_us)}: move the window inside them or remove it"
            )
        windows.append(_source(window.label, (start_us, end_us), symbols, dropped, wide, min_block))
    if windows:
        how = f"crash windows {', '.join(w.label for w in windows)} of the experiment's bars"
        if outside:
            how += f" ({', '.join(outside)} outside the bars {_fmt(first_us)}..{_fmt(last_us)}, skipped)"
        return windows, how

    length = max(((w.end - w.start).days + 1) * _DAY_US // bar_us for w in params.windows)
    windows = _worst_drawdowns(rel, length, bar_us, params, min_block)
    how = (
        f"configured crash windows {', '.join(outside)} lie outside the bars ({_fmt(first_us)}..{_fmt(last_us)}); "
        f"the {len(windows)} worst drawdown windows of the experiment's own equal-weight index stood in: "
        + ", ".join(f"{w.label} ({math.expm1(w.fall or 0.0):+.1%} peak to trough)" for w in windows)
    )
    return windows, how


def _index(rel: pl.DataFrame) -> tuple[IntArray, FloatArray]:
    """The equal-weight index: ts and cumulative mean log return of the symbols trading at each ts."""
    ew = rel.group_by("ts").agg(pl.col("r").mean()).sort("ts")
    return _ts_us(ew), np.cumsum(ew["r"].to_numpy())


def _worst_drawdowns(
    rel: pl.DataFrame, length: int, bar_us: int, params: CrashBootstrapSection, min_block: int
) -> list[SourceWindow]:
    """The k deepest peak-to-trough falls of the equal-weight index within `length` bars, each placed in the
    middle of a window of `length` bars (clipped to the data), the windows not overlapping each other."""
    ts, level = _index(rel)
    first_us, last_us = int(ts[0]), int(ts[-1])
    if (last_us - first_us) // bar_us + 1 < length:
        raise ValueError(
            f"{KEY}: no configured window lies inside the bars ({_fmt(first_us)}..{_fmt(last_us)}), and the bars are "
            f"shorter than the longest window ({length} bars) the worst drawdown windows would need"
        )
    # Drawdown ending at each bar from the highest level of the `length` bars before it (rolling max, O(n)).
    peak = pl.Series(level).rolling_max(window_size=length, min_samples=1).to_numpy()
    drawdown = level - peak
    chosen: list[tuple[int, int, float]] = []
    for trough in np.argsort(drawdown, kind="stable"):
        if len(chosen) == params.fallback_windows or drawdown[trough] >= 0:
            break
        lo = int(np.searchsorted(ts, ts[trough] - (length - 1) * bar_us))
        top = lo + int(np.argmax(level[lo : trough + 1]))
        middle = (int(ts[top]) + int(ts[trough])) // 2
        start = min(max(first_us, middle - (length // 2) * bar_us), last_us + bar_us - length * bar_us)
        start = first_us + (start - first_us) // bar_us * bar_us  # on the bars' grid
        end = start + length * bar_us
        if any(start < e and s < end for s, e, _ in chosen):
            continue
        symbols, dropped, wide, _ = _window_rows(rel, start, end, bar_us, params.min_coverage)
        if not symbols or wide.height < params.min_coverage * length:
            continue  # a stretch with gaps or listings: the next deepest fall will do
        chosen.append((start, end, float(drawdown[trough])))
    if not chosen:
        raise ValueError(f"{KEY}: the experiment's bars have no drawdown window with enough bars to resample")
    windows = []
    for start, end, fall in chosen:
        symbols, dropped, wide, _ = _window_rows(rel, start, end, bar_us, params.min_coverage)
        label = f"{_fmt(start)}..{_fmt(end - bar_us)}"
        windows.append(_source(label, (start, end), symbols, dropped, wide, min_block, fall))
    return windows


def _calm_window(
    rel: pl.DataFrame,
    symbols: tuple[str, ...],
    crashes: list[SourceWindow],
    n: int,
    bar_us: int,
    params: CrashBootstrapSection,
    min_block: int,
) -> tuple[SourceWindow, str]:
    """The calmest bullish stretch of `n` common rows of `symbols` (module docstring, step 3) and its description."""
    wide = _wide(rel.filter(pl.col("symbol").is_in(symbols)), symbols)
    if wide.height < n:
        raise ValueError(
            f"{KEY}.calm_length = {params.calm_length!r} needs {n} bars where {', '.join(symbols)} all trade; "
            f"the experiment's bars have {wide.height}"
        )
    ts = _ts_us(wide)
    ew = _as_array(wide, len(symbols))[:, :, R].mean(axis=1)
    # Rows of a crash window may not be calm ones.
    in_crash = np.zeros(len(ts), dtype=bool)
    for crash in crashes:
        in_crash |= (ts >= crash.span_us[0]) & (ts < crash.span_us[1])
    csum = np.concatenate([[0.0], np.cumsum(ew)])
    csq = np.concatenate([[0.0], np.cumsum(ew**2)])
    cbad = np.concatenate([[0], np.cumsum(in_crash)])
    total = csum[n:] - csum[:-n]
    var = (csq[n:] - csq[:-n] - total**2 / n) / max(n - 1, 1)
    span = (ts[n - 1 :] - ts[: len(ts) - n + 1]) // bar_us + 1
    ok = (cbad[n:] - cbad[:-n] == 0) & (n >= params.min_coverage * span)
    if not ok.any():
        raise ValueError(
            f"{KEY}.calm_length = {params.calm_length!r}: no stretch of {n} bars where {', '.join(symbols)} all trade "
            f"(covering {KEY}.min_coverage of its span) lies outside the crash windows"
        )
    calm = ok & (var <= np.quantile(var[ok], CALM_QUANTILE))
    bullish = calm & (total > 0) & (var > 0)
    if bullish.any():  # the steadiest rise (return / volatility) among the calm: a bull market, not a flat one
        first = int(np.flatnonzero(bullish)[np.argmax(total[bullish] / np.sqrt(var[bullish]))])
    else:
        first = int(np.flatnonzero(ok)[np.argmin(var[ok])])
    label = f"{_fmt(int(ts[first]))}..{_fmt(int(ts[first + n - 1]))}"
    what = f"{'calm bull' if bullish.any() else 'calmest stretch (none rose)'} {label}, {math.expm1(total[first]):+.1%}"
    calm_span = (int(ts[first]), int(ts[first + n - 1]) + bar_us)
    return _source(label, calm_span, symbols, (), wide.slice(first, n), min_block), what


def _indices(window: SourceWindow, n: int, rng: np.random.Generator) -> IntArray:
    """`n` stationary-bootstrap row indices of `window`, drawn with `rng` (arch's sampler, one draw per window
    length; a longer path concatenates draws)."""
    sampler = StationaryBootstrap(window.block, np.arange(len(window.rel)), seed=rng)
    draws = [sampler.update_indices() for _ in range(-(-n // len(window.rel)))]
    return np.concatenate(draws)[:n]


def _keys(symbols: Sequence[str], ts: pl.Series) -> pl.DataFrame:
    """The `symbol, ts` columns of a path (symbol by symbol), the same for every path of a symbol set."""
    n_bars = len(ts)
    return pl.DataFrame(
        [
            pl.Series("symbol", list(symbols), dtype=pl.String).gather(np.repeat(np.arange(len(symbols)), n_bars)),
            pl.concat([ts] * len(symbols)).alias("ts").cast(TS_DTYPE),
        ]
    )


def _rebuild(rows: FloatArray, start_log_close: FloatArray, keys: pl.DataFrame) -> pl.DataFrame:
    """Prices from the resampled relative rows `(bars, symbols, 5)` (module docstring, step 5), RAW_SCHEMA;
    `keys` from `_keys`."""
    log_close = start_log_close + np.cumsum(rows[:, :, R], axis=0)
    prev = np.vstack([start_log_close[None, :], log_close[:-1]])
    close = np.exp(log_close)
    open_ = np.exp(prev + rows[:, :, O])
    high = np.maximum(open_, close) * np.exp(rows[:, :, H])
    low = np.minimum(open_, close) * np.exp(-rows[:, :, L])
    volume = rows[:, :, DV] / close
    # column-major (symbol by symbol): the frame comes out sorted by (symbol, ts), in RAW_SCHEMA's dtypes
    prices = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    return keys.with_columns(pl.Series(name, values.ravel(order="F")) for name, values in prices.items())
