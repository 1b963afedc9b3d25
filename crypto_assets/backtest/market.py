"""The market a backtest executes in: long bars validated into dense (bars × symbols) panels over the regular
grid (`Market`): marks, σ, ADV, dollar volume and the per-bar cost multipliers, and `MarketPanel`, the typed
record of those arrays that the compiled kernels (`crypto_assets.backtest.kernels`) read.

The rules (what σ and ADV are, which bar each row holds, when an order cannot fill) are documented in
`crypto_assets.backtest.engine`. σ and ADV are compiled passes over each window, bit-for-bit causal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import polars as pl
from numba import njit

from crypto_assets.backtest.costs import CostModel
from crypto_assets.sources.base import TS_DTYPE
from crypto_assets.timeframes import timeframe_us

MULTIPLIER_COLUMNS: tuple[str, str] = ("spread_mult", "impact_mult")
"""Columns of a `multipliers` frame (either or both): factors on the half-spread and on the impact term."""


class MarketPanel(NamedTuple):
    """The (T × N) float64 arrays the kernels read; rows = EXECUTION bars (see `Market` for each field).

    A NamedTuple of C-contiguous arrays: numba passes it as one typed argument whose fields are read by name,
    compiles it into cached kernels (`cache=True`), and a change of its fields changes the compiled signature.
    """

    open: np.ndarray
    mark_open: np.ndarray
    mark_close: np.ndarray
    sigma: np.ndarray
    dollar_vol: np.ndarray
    adv: np.ndarray
    spread_mult: np.ndarray
    impact_mult: np.ndarray

    def rows(self, rows: slice) -> MarketPanel:
        """The rows `rows` of every array, as contiguous copies (the RL env's split of a longer history)."""
        return MarketPanel(*(np.ascontiguousarray(a[rows]) for a in self))


@dataclass(frozen=True)
class Market:
    """The per-bar inputs of execution, dense (T × N) float64 arrays over the regular grid (rows = bars).

    open / close: NaN where a symbol has no bar (before listing, exchange gaps). mark_open / mark_close: the
    prices positions are valued at: the open (close), or the last close where a symbol has no bar (0 before
    listing, where nothing is held). sigma: σ of the DECISION bar t − 1 stored on row t (the execution bar;
    all 0 when the cost model uses no σ). dollar_vol: volume × open of the bar itself (the participation
    cap's base), 0 where there is no bar. adv: the trailing mean dollar volume (volume × close over
    `adv_window` bars) of the DECISION bar t − 1 stored on row t (impact's base; 0 on row 0).
    spread_mult / impact_mult: cost multipliers of the EXECUTION bar t itself (a fill at the open of t pays
    half_spread × spread_mult[t, i] and impact × impact_mult[t, i]); 1 wherever none was given.
    first_bar: (N,) row of each symbol's first bar (a weight at an earlier decision bar must be 0).
    """

    symbols: list[str]
    ts_us: np.ndarray  # (T,) int64 bar open times in µs
    step_us: int
    open: np.ndarray
    close: np.ndarray
    mark_open: np.ndarray
    mark_close: np.ndarray
    sigma: np.ndarray
    dollar_vol: np.ndarray
    adv: np.ndarray
    spread_mult: np.ndarray
    impact_mult: np.ndarray
    has_bar: np.ndarray
    first_bar: np.ndarray

    @classmethod
    def from_bars(
        cls,
        bars: pl.DataFrame,
        costs: CostModel,
        timeframe: str = "1h",
        *,
        multipliers: pl.DataFrame | None = None,
    ) -> Market:
        """Validate long bars (`symbol, ts, open, close, volume`) as `run_backtest` does and build the panels.

        multipliers: optional long `symbol, ts, spread_mult, impact_mult` (either factor column may be left
        out; ts = the EXECUTION bar, the bar at whose open the fill happens): finite factors ≥ 0 on the
        half-spread and on the square-root impact term, for stress scenarios where spreads and impact widen
        in a panic. A (symbol, bar) without a row, or a column left out, means 1 (the cost model as is).
        """
        p = _build_panel(bars, timeframe)
        return _market(p, costs, _multiplier_panels(multipliers, p))

    @property
    def panel(self) -> MarketPanel:
        """The arrays the kernels read (no copy)."""
        return MarketPanel(
            open=self.open,
            mark_open=self.mark_open,
            mark_close=self.mark_close,
            sigma=self.sigma,
            dollar_vol=self.dollar_vol,
            adv=self.adv,
            spread_mult=self.spread_mult,
            impact_mult=self.impact_mult,
        )


# ---- validation helpers, shared with the weights (crypto_assets.backtest.engine) -------------------------------


def ts_series(name: str, ts_us: np.ndarray, valid: np.ndarray | None = None) -> pl.Series:
    """µs epoch integers → Datetime(us, UTC); null where `valid` is False."""
    s = pl.Series(name, ts_us.astype(np.int64)).cast(TS_DTYPE)
    if valid is not None and not valid.all():
        s = s.to_frame().select(pl.when(pl.Series(valid)).then(pl.col(name))).to_series()
    return s


def fmt_ts(ts_us: int) -> str:
    return str(ts_series("ts", np.array([ts_us]))[0])


def ts_epoch_us(frame: pl.DataFrame, what: str) -> np.ndarray:
    """`frame.ts` as int64 epoch microseconds; `what` names the frame in the error for a non-Datetime column."""
    dtype = frame.schema["ts"]
    if not isinstance(dtype, pl.Datetime):
        # ValueError like every other bad input, so callers have one exception to handle
        raise ValueError(f"{what}.ts must be a Datetime column (bar open time, UTC), got {dtype}")
    # Naive timestamps are read as UTC; aware ones are converted.
    ts = frame["ts"] if dtype.time_zone is None else frame["ts"].dt.convert_time_zone("UTC")
    return ts.dt.replace_time_zone(None).dt.epoch("us").to_numpy().astype(np.int64)


def require_columns(frame: pl.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; it has {frame.columns}")
    for c in columns:
        n = frame[c].null_count()
        if n:
            raise ValueError(f"{what}.{c} has {n} null values")


def first_duplicate(cell: np.ndarray, n_cells: int) -> int | None:
    """Row index of the first repeat of a (bar, symbol) cell id, or None."""
    counts = np.bincount(cell, minlength=n_cells)
    if counts.max(initial=0) <= 1:
        return None
    return int(np.nonzero(counts[cell] > 1)[0][0])


def grid_cells(
    frame: pl.DataFrame, symbols: list[str], grid_us: np.ndarray, step_us: int, what: str, noun: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bar row, symbol column, ts in µs) of each row of a long `symbol, ts, ...` frame on the bars' grid
    `grid_us`; a ValueError naming `what` (the frame) or the `noun` of its first row off the grid."""
    unknown = sorted(set(frame["symbol"].unique().to_list()) - set(symbols))
    if unknown:
        raise ValueError(f"{what} name symbols without bars: {unknown}")
    ts_us = ts_epoch_us(frame, what)
    sym = frame["symbol"].cast(pl.Enum(symbols)).to_physical().to_numpy().astype(np.int64)
    off = ts_us - grid_us[0]
    bad = np.nonzero((off % step_us != 0) | (off < 0) | (off > grid_us[-1] - grid_us[0]))[0]
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"{noun} for {symbols[sym[k]]} at {fmt_ts(int(ts_us[k]))} is not on the bars' grid")
    return off // step_us, sym, ts_us


def shift_down(a: np.ndarray, fill: float | bool = 0.0) -> np.ndarray:
    """Row t of the result is row t − 1 of `a` (decision bar → execution bar); row 0 is `fill`."""
    out = np.empty_like(a)
    out[0] = fill
    out[1:] = a[:-1]
    return out


def _ffill(a: np.ndarray) -> np.ndarray:
    """Forward-fill NaN down each column (leading NaN stay)."""
    idx = np.where(~np.isnan(a), np.arange(a.shape[0])[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    return np.take_along_axis(a, idx, axis=0)


# ---- bars → panels ------------------------------------------------------------------------------------------


@dataclass
class _Panel:
    """Dense (T × N) arrays over the regular grid; NaN where a symbol has no bar."""

    symbols: list[str]
    ts_us: np.ndarray  # (T,) int64 bar open times in µs
    step_us: int
    open: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    has_bar: np.ndarray  # bool
    first_bar: np.ndarray  # (N,) index of each symbol's first bar


def _build_panel(bars: pl.DataFrame, timeframe: str) -> _Panel:
    require_columns(bars, ["symbol", "ts", "open", "close", "volume"], "bars")
    if bars.height == 0:
        raise ValueError("bars is empty")
    step_us = timeframe_us(timeframe)
    ts_us = ts_epoch_us(bars, "bars")
    symbols = sorted(bars["symbol"].unique().to_list())
    sym_idx = bars["symbol"].cast(pl.Enum(symbols)).to_physical().to_numpy().astype(np.int64)
    t0, t1 = int(ts_us.min()), int(ts_us.max())
    off = ts_us - t0
    bad = np.nonzero(off % step_us)[0]
    if bad.size:
        raise ValueError(
            f"bars off the {timeframe} grid: {bars['symbol'][int(bad[0])]} at {fmt_ts(int(ts_us[bad[0]]))}"
        )
    n_t, n_s = (t1 - t0) // step_us + 1, len(symbols)
    t_idx = off // step_us
    dup = first_duplicate(t_idx * n_s + sym_idx, n_t * n_s)
    if dup is not None:
        raise ValueError(f"duplicate bar for {symbols[sym_idx[dup]]} at {fmt_ts(int(ts_us[dup]))}")
    cell = t_idx * n_s + sym_idx
    values = {}
    for col in ("open", "close", "volume"):
        arr = bars[col].cast(pl.Float64).to_numpy()
        ok = np.isfinite(arr) & ((arr >= 0) if col == "volume" else (arr > 0))
        if not ok.all():
            k = int(np.nonzero(~ok)[0][0])
            raise ValueError(
                f"bars.{col} must be finite and {'>= 0' if col == 'volume' else '> 0'}: "
                f"{bars['symbol'][k]} at {fmt_ts(int(ts_us[k]))} has {arr[k]}"
            )
        panel = np.full(n_t * n_s, np.nan)
        panel[cell] = arr
        values[col] = panel.reshape(n_t, n_s)
    has_bar = ~np.isnan(values["close"])
    first_bar = np.argmax(has_bar, axis=0)
    return _Panel(
        symbols=symbols,
        ts_us=t0 + np.arange(n_t, dtype=np.int64) * step_us,
        step_us=step_us,
        open=values["open"],
        close=values["close"],
        volume=values["volume"],
        has_bar=has_bar,
        first_bar=first_bar,
    )


def _multiplier_panels(multipliers: pl.DataFrame | None, p: _Panel) -> tuple[np.ndarray, np.ndarray]:
    """(spread_mult, impact_mult) as (T × N) panels on the execution bars' rows, 1 where none is given."""
    n_t, n_s = p.open.shape
    panels = {name: np.ones((n_t, n_s)) for name in MULTIPLIER_COLUMNS}
    if multipliers is None:
        return panels["spread_mult"], panels["impact_mult"]
    given = [c for c in MULTIPLIER_COLUMNS if c in multipliers.columns]
    if not given:
        raise ValueError(f"multipliers needs a column spread_mult and/or impact_mult; it has {multipliers.columns}")
    require_columns(multipliers, ["symbol", "ts", *given], "multipliers")
    if multipliers.height:
        t_idx, sym, ts_us = grid_cells(multipliers, p.symbols, p.ts_us, p.step_us, "multipliers", "multiplier")
        dup = first_duplicate(t_idx * n_s + sym, n_t * n_s)
        if dup is not None:
            raise ValueError(f"duplicate multiplier rows for {p.symbols[sym[dup]]} at {fmt_ts(int(ts_us[dup]))}")
        for name in given:
            factor = multipliers[name].cast(pl.Float64).to_numpy()
            bad = np.nonzero(~(np.isfinite(factor) & (factor >= 0)))[0]
            if bad.size:
                k = int(bad[0])
                raise ValueError(
                    f"multipliers.{name} must be finite and >= 0: {p.symbols[sym[k]]} at "
                    f"{fmt_ts(int(ts_us[k]))} has {factor[k]}"
                )
            panels[name][t_idx, sym] = factor
    return panels["spread_mult"], panels["impact_mult"]


@njit(cache=True)
def _rolling_sigma(close: np.ndarray, has_bar: np.ndarray, window: int) -> np.ndarray:
    """σ[t, i]: std (ddof=1) of the valid close-to-close returns in bars t−window+1 .. t (0 if fewer than 2).

    Two passes over each window (mean, then squared deviations) rather than running sums: O(T·N·window), but
    σ[t] depends on the closes of bars t − window .. t only, bit for bit, however long the history before or
    after is (running sums would carry rounding from earlier bars, and centring them would leak later ones).
    """
    n_t, n_s = close.shape
    out = np.zeros((n_t, n_s))
    ret = np.zeros((n_t, n_s))
    ok = np.zeros((n_t, n_s), dtype=np.bool_)
    for t in range(1, n_t):
        for i in range(n_s):
            if has_bar[t, i] and has_bar[t - 1, i]:  # a return needs both its bars
                ok[t, i] = True
                ret[t, i] = close[t, i] / close[t - 1, i] - 1.0
    count = np.zeros(n_s, dtype=np.int64)
    mean = np.zeros(n_s)
    ss = np.zeros(n_s)
    for t in range(1, n_t):  # rows outer, symbols inner: contiguous memory access
        lo = max(1, t - window + 1)
        count[:] = 0
        mean[:] = 0.0
        ss[:] = 0.0
        for j in range(lo, t + 1):
            for i in range(n_s):
                if ok[j, i]:
                    count[i] += 1
                    mean[i] += ret[j, i]
        for i in range(n_s):
            if count[i] >= 2:
                mean[i] /= count[i]
        for j in range(lo, t + 1):
            for i in range(n_s):
                if ok[j, i]:
                    d = ret[j, i] - mean[i]
                    ss[i] += d * d
        for i in range(n_s):
            if count[i] >= 2:
                out[t, i] = math.sqrt(ss[i] / (count[i] - 1))
    return out


@njit(cache=True)
def _rolling_adv(dollar_vol: np.ndarray, has_bar: np.ndarray, window: int, origin: int) -> np.ndarray:
    """ADV[t, i]: mean of dollar_vol over the bars of symbol i among rows t−window+1 .. t (0 if none).

    O(T·N) yet bit-for-bit causal and independent of where the history starts: rows are cut into blocks of
    `window` bars aligned to the epoch (`origin` = absolute bar number of row 0), and a window sum is the
    suffix sum of one block plus the prefix sum of the next, each added in a fixed order within its block.
    A running sum minus the leaving bar would carry rounding from the whole history before t.
    """
    n_t, n_s = dollar_vol.shape
    dv = np.where(has_bar, dollar_vol, 0.0)
    cnt = has_bar.astype(np.float64)
    pre, pre_n = np.zeros((n_t, n_s)), np.zeros((n_t, n_s))
    suf, suf_n = np.zeros((n_t, n_s)), np.zeros((n_t, n_s))
    for t in range(n_t):
        start = t == 0 or (origin + t) % window == 0
        for i in range(n_s):
            pre[t, i] = dv[t, i] if start else pre[t - 1, i] + dv[t, i]
            pre_n[t, i] = cnt[t, i] if start else pre_n[t - 1, i] + cnt[t, i]
    for t in range(n_t - 1, -1, -1):
        end = t == n_t - 1 or (origin + t + 1) % window == 0
        for i in range(n_s):
            suf[t, i] = dv[t, i] if end else suf[t + 1, i] + dv[t, i]
            suf_n[t, i] = cnt[t, i] if end else suf_n[t + 1, i] + cnt[t, i]
    out = np.zeros((n_t, n_s))
    for t in range(n_t):
        lo = max(t - window + 1, 0)
        # lo in the previous block: its suffix from lo plus this block's prefix; else the prefix is the window
        split = (origin + lo) // window != (origin + t) // window
        for i in range(n_s):
            total = suf[lo, i] + pre[t, i] if split else pre[t, i]
            n = suf_n[lo, i] + pre_n[t, i] if split else pre_n[t, i]
            if n > 0:
                out[t, i] = total / n
    return out


def _market(p: _Panel, costs: CostModel, multipliers: tuple[np.ndarray, np.ndarray]) -> Market:
    n_t, n_s = p.open.shape
    gaps = not p.has_bar.all()
    # Marks: last known close (0 before listing, where units are 0); at an open, the open or the last close.
    mark_close = np.nan_to_num(_ffill(p.close), nan=0.0) if gaps else p.close
    mark_open = np.where(p.has_bar, p.open, shift_down(mark_close)) if gaps else p.open
    dollar_vol = p.volume * p.open
    if gaps:
        dollar_vol[~p.has_bar] = 0.0
    sigma = np.zeros((n_t, n_s))  # σ of the decision bar, on the execution bar's row
    if costs.vol_k > 0 or costs.impact_k > 0:
        sigma = shift_down(_rolling_sigma(np.ascontiguousarray(p.close), p.has_bar, costs.vol_window))
    adv = np.zeros((n_t, n_s))  # ADV of the decision bar, on the execution bar's row
    if costs.impact_k > 0:
        origin = int(p.ts_us[0] // p.step_us)  # blocks aligned to the epoch: ADV does not depend on the history start
        dv_close = np.ascontiguousarray(np.nan_to_num(p.volume * p.close, nan=0.0))
        adv = shift_down(_rolling_adv(dv_close, p.has_bar, costs.adv_window, origin))
    c = np.ascontiguousarray
    return Market(
        symbols=p.symbols,
        ts_us=p.ts_us,
        step_us=p.step_us,
        open=c(p.open),
        close=c(p.close),
        mark_open=c(mark_open),
        mark_close=c(mark_close),
        sigma=c(sigma),
        dollar_vol=c(dollar_vol),
        adv=c(adv),
        spread_mult=c(multipliers[0]),
        impact_mult=c(multipliers[1]),
        has_bar=p.has_bar,
        first_bar=p.first_bar,
    )
