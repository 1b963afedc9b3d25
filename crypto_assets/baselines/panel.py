"""Wide numpy panel of long bars and causal rolling statistics for the rule-based baselines.

Every statistic at row t is a function of rows ≤ t only (trailing windows, cumulative sums read up to t),
so truncating the bars after t never changes it (DESIGN §3.5).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from crypto_assets.sources.base import TS_DTYPE
from crypto_assets.timeframes import epoch_us, timeframe_us

YEAR_US = 365 * 24 * 3600 * 1_000_000
WEIGHT_SCHEMA: dict[str, pl.DataType] = {"symbol": pl.String(), "ts": TS_DTYPE, "weight": pl.Float64()}


@dataclass(frozen=True)
class Panel:
    """Closes on the union time grid of all symbols: `close[t, i]` is NaN where symbol i has no bar at ts[t]
    (before it lists, or in an unfilled data gap)."""

    symbols: list[str]
    ts_us: np.ndarray
    """int64 epoch microseconds of bar open times, sorted, unique."""
    close: np.ndarray
    """float64, shape (T, N)."""
    bar_us: int
    """Length of one bar in microseconds."""

    @property
    def has_bar(self) -> np.ndarray:
        return np.isfinite(self.close)

    def periods_per_year(self) -> float:
        return YEAR_US / self.bar_us

    def returns(self) -> np.ndarray:
        """Close-to-close simple returns, NaN where either bar is missing (row 0 is NaN)."""
        out = np.full_like(self.close, np.nan)
        out[1:] = self.close[1:] / self.close[:-1] - 1.0
        return out

    def window_mask(self, start: dt.datetime, end: dt.datetime) -> np.ndarray:
        lo, hi = epoch_us(start, "start"), epoch_us(end, "end")
        return (self.ts_us >= lo) & (self.ts_us < hi)


def build_panel(bars: pl.DataFrame, timeframe: str | None = None) -> Panel:
    """Pivot long bars (`symbol, ts, close, ...`; extra columns such as quality flags are ignored).

    `timeframe` fixes the bar length; without it, the smallest spacing between grid timestamps is used
    (exact on the regular grid the bars stage produces).
    """
    missing = [c for c in ("symbol", "ts", "close") if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack columns {missing}; got {bars.columns}")
    ts_dtype = bars.schema["ts"]
    if not isinstance(ts_dtype, pl.Datetime) or ts_dtype.time_zone != "UTC":
        raise ValueError(f"bars `ts` must be a UTC Datetime, got {ts_dtype}")
    frame = bars.select("symbol", pl.col("ts").dt.epoch("us").alias("us"), pl.col("close").cast(pl.Float64))
    if frame.select(pl.struct("symbol", "us").is_duplicated().any()).item():
        raise ValueError("bars hold duplicate (symbol, ts) rows")
    symbols = sorted(frame.get_column("symbol").unique().to_list())
    ts_us = np.unique(frame.get_column("us").to_numpy())
    close = np.full((ts_us.size, len(symbols)), np.nan)
    if frame.height:
        rows = np.searchsorted(ts_us, frame.get_column("us").to_numpy())
        col_of = {s: i for i, s in enumerate(symbols)}
        cols = np.array([col_of[s] for s in frame.get_column("symbol").to_list()], dtype=np.int64)
        close[rows, cols] = frame.get_column("close").to_numpy()
    close[~(close > 0)] = np.nan  # a non-positive or null close is not a tradable price
    if timeframe is not None:
        bar_us = timeframe_us(timeframe)
    elif ts_us.size >= 2:
        bar_us = int(np.diff(ts_us).min())
    else:
        bar_us = 3_600_000_000  # a single bar: the length never matters
    return Panel(symbols=symbols, ts_us=ts_us, close=close, bar_us=bar_us)


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean of the last `window` values of a 1-D series (row t included); NaN until the window is
    full or while it holds a NaN. Each mean is summed from its own window only, oldest value first, with
    element-wise adds (no running sum, no SIMD-order-dependent reduction), so equal windows give bit-identical
    means wherever the series starts or ends — which the truncation (look-ahead) tests rely on."""
    if window < 1:
        raise ValueError(f"window must be ≥ 1, got {window}")
    out = np.full(x.shape, np.nan)
    count = x.size - window + 1
    if count > 0:
        acc = np.zeros(count)
        for k in range(window):
            acc += x[k : k + count]
        out[window - 1 :] = acc / window
    return out


def _trailing_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Sum over the last `window` rows (axis 0), row t included; fewer rows at the start."""
    c = np.cumsum(np.concatenate([np.zeros((1,) + x.shape[1:]), x]), axis=0)
    out = c[1:].copy()
    out[window:] -= c[1 : c.shape[0] - window]
    return out


@dataclass(frozen=True)
class RollingMoments:
    """Trailing count, mean and variance (ddof=1) of each column's finite values over `window` rows."""

    n: np.ndarray
    mean: np.ndarray
    var: np.ndarray


def rolling_moments(x: np.ndarray, window: int, min_periods: int) -> RollingMoments:
    """Per column, over the last `window` rows: NaNs (missing returns) are skipped; var is NaN where fewer
    than max(min_periods, 2) finite values are available."""
    valid = np.isfinite(x)
    v = np.where(valid, x, 0.0)
    n = _trailing_sum(valid.astype(np.float64), window)
    s1 = _trailing_sum(v, window)
    s2 = _trailing_sum(v * v, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        var = np.maximum(s2 - s1 * mean, 0.0) / (n - 1)  # clamp: cancellation can give −1e-20
    enough = n >= max(min_periods, 2)
    return RollingMoments(n=n, mean=np.where(enough, mean, np.nan), var=np.where(enough, var, np.nan))


def rolling_portfolio_var(weights: np.ndarray, returns: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    """Ex-ante variance per bar of the portfolio `weights[t]` under the trailing covariance of `returns`.

    σ_p²[t] = Σ_i Σ_j w_i w_j ρ_ij σ_i σ_j with σ_i from symbol i's own finite returns in the window and ρ_ij
    from the returns both symbols have (pairwise-complete: a symbol that listed recently still gets a full
    estimate of its own volatility). A pair with fewer than `min_periods` joint returns gets ρ = 1
    (conservative: no diversification assumed). Only symbols with a non-zero weight enter, so their
    missing statistics never poison the sum. NaN where a weighted symbol has no σ.
    """
    own = rolling_moments(returns, window, min_periods)
    sigma = np.sqrt(own.var)
    active = weights != 0
    total = np.zeros(weights.shape[0])
    n_sym = weights.shape[1]
    for i in range(n_sym):
        total += np.where(active[:, i], weights[:, i] ** 2 * own.var[:, i], 0.0)
    for i in range(n_sym):
        for j in range(i + 1, n_sym):
            both = active[:, i] & active[:, j]
            if not both.any():
                continue
            pair = np.isfinite(returns[:, i]) & np.isfinite(returns[:, j])
            xi = np.where(pair, returns[:, i], np.nan)
            xj = np.where(pair, returns[:, j], np.nan)
            m = rolling_moments(np.stack([xi, xj, xi * xj], axis=1), window, min_periods)
            with np.errstate(invalid="ignore", divide="ignore"):
                # Joint-sample covariance → correlation, then applied to the full-sample σ's.
                cov = (m.mean[:, 2] - m.mean[:, 0] * m.mean[:, 1]) * m.n[:, 2] / (m.n[:, 2] - 1)
                rho = np.clip(cov / np.sqrt(m.var[:, 0] * m.var[:, 1]), -1.0, 1.0)
            rho = np.where(np.isfinite(rho), rho, 1.0)
            total += np.where(both, 2.0 * weights[:, i] * weights[:, j] * rho * sigma[:, i] * sigma[:, j], 0.0)
    return np.maximum(total, 0.0)


def schedule_mask(panel: Panel, start: dt.datetime, end: dt.datetime, every: int) -> np.ndarray:
    """Rebalance bars inside [start, end): every `every` bars counted from `start` (by time, so a missing grid
    row does not shift the schedule), plus the window's first bar so a strategy always enters at once."""
    if every < 1:
        raise ValueError(f"rebalance_every must be ≥ 1 bar, got {every}")
    inside = panel.window_mask(start, end)
    steps = (panel.ts_us - epoch_us(start, "start")) // panel.bar_us
    mask = inside & (steps % every == 0)
    first = np.flatnonzero(inside)
    if first.size:
        mask[first[0]] = True
    return mask


def to_weights(panel: Panel, weights: np.ndarray, emit: np.ndarray) -> pl.DataFrame:
    """Long `symbol, ts, weight` rows for the emitted bars: every symbol with a bar there gets a row (0 = flat);
    symbols without a bar (not listed yet, or a gap) get none — the engine cannot trade them anyway."""
    rows, cols = np.nonzero(emit[:, None] & panel.has_bar)
    if rows.size == 0:
        return pl.DataFrame(schema=WEIGHT_SCHEMA)
    values = weights[rows, cols]
    if not np.all(np.isfinite(values)):
        raise AssertionError("baseline produced a non-finite weight on a bar it emits")  # a bug, not bad input
    frame = pl.DataFrame(
        {
            "symbol": np.array(panel.symbols, dtype=object)[cols].tolist(),
            "ts": pl.Series(panel.ts_us[rows]).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
            "weight": values.astype(np.float64),
        }
    )
    return frame.cast(WEIGHT_SCHEMA).sort("symbol", "ts")  # type: ignore[arg-type]
