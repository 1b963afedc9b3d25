"""Performance KPIs of a strategy's net bar returns (DESIGN §3.4).

Units and conventions, once:

- `returns` are simple (not log) per-bar returns net of costs, r_t = V_t / V_{t-1} - 1, in bar order.
- `periods_per_year` (P) is bars per 365-day year: 8760 for 1h, 35040 for 15m, 105120 for 5m, 365 for 1d
  (`crypto_assets.timeframes.periods_per_year`). Crypto trades 24/7, so never 252.
- Equity starts at V_0 = 1 and V_t = Π_{s≤t} (1 + r_s); T = number of bars.
- Standard deviations use ddof=1 (sample), except the downside deviation of the Sortino ratio, which is a
  root mean square over *all* observations, as DESIGN §3.4 specifies.
- Undefined ratios (zero denominators, too few bars, no closed trades) are NaN, never ±inf, so KPI tables
  stay aggregatable.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import polars as pl

KPI_NAMES: Final[tuple[str, ...]] = (
    "sharpe",
    "sharpe_daily",
    "sortino",
    "max_drawdown",
    "cagr",
    "calmar",
    "romad",
    "total_return",
    "volatility",
    "win_rate",
    "profit_factor",
    "n_bars",
)
"""Keys of `compute_kpis`'s result, in order."""

DAYS_PER_YEAR: Final[int] = 365
NAN: Final[float] = float("nan")


def as_returns(returns: np.ndarray | pl.Series) -> np.ndarray:
    """1-D float64 copy of `returns`; nulls/NaN/inf are rejected because they would silently break the
    compounding of the equity curve (a missing bar is a 0.0 return, and the backtest should say so)."""
    arr = (
        returns.cast(pl.Float64).to_numpy() if isinstance(returns, pl.Series) else np.asarray(returns, dtype=np.float64)
    )
    if arr.ndim != 1:
        raise ValueError(f"returns must be 1-D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"returns must be finite; element {bad} is {arr[bad]!r}")
    return arr


def sharpe_ratio(returns: np.ndarray | pl.Series, periods_per_year: float) -> float:
    """mean(r) / std(r, ddof=1) × √P (risk-free rate 0). NaN for < 2 bars or zero volatility."""
    returns = as_returns(returns)
    # A constant series has zero volatility, but np.std can return ~1e-18 from rounding: test exactly.
    if returns.size < 2 or np.all(returns == returns[0]):
        return NAN
    sd = float(np.std(returns, ddof=1))
    return float(np.mean(returns)) / sd * math.sqrt(periods_per_year)


def sortino_ratio(returns: np.ndarray | pl.Series, periods_per_year: float) -> float:
    """mean(r) × P / (√(mean(min(r, 0)²)) × √P): the downside deviation averages over *all* bars, not
    only the losing ones (Sortino & Price 1994; same as empyrical's `sortino_ratio` with required
    return 0). NaN when there are no losing bars (downside deviation 0)."""
    returns = as_returns(returns)
    if returns.size == 0:
        return NAN
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    if downside == 0.0:
        return NAN
    return float(np.mean(returns)) * periods_per_year / (downside * math.sqrt(periods_per_year))


def equity_curve(returns: np.ndarray | pl.Series) -> np.ndarray:
    """[V_0, V_1, ..., V_T] with V_0 = 1: the starting capital is part of the curve, so a loss on the
    very first bar is a drawdown from V_0."""
    returns = as_returns(returns)
    return np.concatenate(([1.0], np.cumprod(1.0 + returns)))


def max_drawdown(returns: np.ndarray | pl.Series) -> float:
    """max_t (1 − V_t / max_{s≤t} V_s) on bar-level equity including V_0 = 1, as a positive fraction
    (0.25 = a 25% peak-to-trough loss). 0.0 for an empty or never-falling curve."""
    returns = as_returns(returns)
    equity = equity_curve(returns)
    peak = np.maximum.accumulate(equity)
    # A peak of 0 only happens after a −100% bar, when everything after is also 0: a full loss.
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0.0, 1.0 - equity / peak, 1.0)
    return float(np.max(dd))


def cagr(returns: np.ndarray | pl.Series, periods_per_year: float) -> float:
    """(V_T / V_0)^(P/T) − 1. −1 when the equity ends at or below zero (ruin; a fractional power of a
    negative number is undefined). NaN for an empty series."""
    returns = as_returns(returns)
    if returns.size == 0:
        return NAN
    final = float(np.prod(1.0 + returns))
    if final <= 0.0:
        return -1.0
    return float(final ** (periods_per_year / returns.size)) - 1.0


def daily_returns(returns: np.ndarray | pl.Series, timestamps: pl.Series) -> np.ndarray:
    """Compound bar returns into UTC calendar days: R_d = Π_{bars opening on day d} (1 + r) − 1.

    A bar belongs to the UTC day of its open time `ts` (the 23:00–24:00 bar counts for the day it
    opens in). Days with no bars are absent, not zero."""
    returns = as_returns(returns)
    if timestamps.len() != returns.size:
        raise ValueError(f"timestamps has {timestamps.len()} rows but returns has {returns.size}")
    ts = timestamps
    if isinstance(ts.dtype, pl.Datetime) and ts.dtype.time_zone is not None:
        ts = ts.dt.convert_time_zone("UTC")  # a naive datetime is taken to be UTC already
    elif not isinstance(ts.dtype, pl.Datetime):
        raise TypeError(f"timestamps must be a Datetime series, got {ts.dtype}")
    frame = pl.DataFrame({"day": ts.dt.truncate("1d"), "g": 1.0 + returns})
    daily = frame.group_by("day").agg(pl.col("g").product()).sort("day")
    return daily["g"].to_numpy() - 1.0


def trade_stats(trades: pl.DataFrame | None) -> tuple[float, float]:
    """(win rate, profit factor) over closed round-trip trades, pnl after costs.

    `trades` is one row per round trip (the backtest's `round_trips` frame) with a `pnl` column. Open
    trades are excluded when the frame says which are open: a boolean `closed` column, or else a nullable
    `exit_ts` column (null = still open); without either, every row counts as closed. Null pnl rows
    are ignored. Win rate = #(pnl > 0) / #closed; a trade at exactly 0 counts as closed but not winning.
    Profit factor = Σ pnl⁺ / |Σ pnl⁻|, NaN when there is no losing trade (undefined, not infinite).
    Both NaN when there is no closed trade."""
    if trades is None or trades.height == 0:
        return NAN, NAN
    if "pnl" not in trades.columns:
        raise ValueError(
            f"trades needs a 'pnl' column (round trips, e.g. the backtest's `round_trips`, not its fills); "
            f"it has {trades.columns}"
        )
    closed = trades
    if "closed" in trades.columns:
        closed = closed.filter(pl.col("closed"))
    elif "exit_ts" in trades.columns:
        closed = closed.filter(pl.col("exit_ts").is_not_null())
    pnl = closed["pnl"].drop_nulls().cast(pl.Float64).to_numpy()
    if pnl.size == 0:
        return NAN, NAN
    win_rate = float(np.count_nonzero(pnl > 0.0)) / pnl.size
    gross_profit = float(pnl[pnl > 0.0].sum())
    gross_loss = float(-pnl[pnl < 0.0].sum())
    profit_factor = gross_profit / gross_loss if gross_loss > 0.0 else NAN
    return win_rate, profit_factor


def cost_share(total_cost: float, net_profit: float) -> float:
    """The share of the pre-cost profit that trading costs consumed, always in [0, 1].

    Both arguments are fractions of the starting capital over the same span: `total_cost` = Σ costs
    (fees + slippage + impact + funding) ≥ 0, `net_profit` = V_T / V_0 − 1 after costs. The pre-cost
    profit is G = net_profit + total_cost.

    - Net profit ≥ 0: cost_share = total_cost / G (0.25 = costs took a quarter of the edge; 1 − cost_share
      of it was kept).
    - Net profit < 0 with costs paid: 1. Costs consumed the whole pre-cost profit: either they exceeded it
      (G > 0; a ratio above 1 would be "costs were 1.9× the edge", which reads like a share but is not one)
      or there was none to consume (G ≤ 0, where costs / G has no meaning). How large the costs were is
      `total_cost` (a fraction of the starting capital), and whether there was an edge before costs is
      `net_profit + total_cost`; neither is hidden by the clamp.
    - No costs paid: 0, whatever the profit.
    Never NaN for finite inputs. Raises ValueError on negative or non-finite costs.
    """
    if not (math.isfinite(total_cost) and total_cost >= 0.0):
        raise ValueError(f"total_cost must be finite and ≥ 0, got {total_cost!r}")
    if not math.isfinite(net_profit):
        raise ValueError(f"net_profit must be finite, got {net_profit!r}")
    if total_cost == 0.0:
        return 0.0
    if net_profit < 0.0:
        return 1.0
    return total_cost / (net_profit + total_cost)


def compute_kpis(
    returns: np.ndarray | pl.Series,
    periods_per_year: int,
    *,
    timestamps: pl.Series | None = None,
    trades: pl.DataFrame | None = None,
) -> dict[str, float]:
    """The DESIGN §3.4 metrics of one strategy's net simple bar returns, keys in `KPI_NAMES` order.

    - `sharpe`: mean(r) / std(r, ddof=1) × √P on bar returns.
    - `sharpe_daily`: the same on returns compounded to UTC days (`daily_returns`, bar open time decides
      the day) × √365. Needs `timestamps` (bar open times, one per return); without them it equals
      `sharpe` when P = 365 (the bars are days) and is NaN otherwise.
    - `sortino`: mean(r) × P / (√mean(min(r, 0)²) × √P).
    - `max_drawdown`: max_t 1 − V_t / max_{s≤t} V_s, positive fraction, V_0 = 1 included.
    - `cagr`: (V_T / V_0)^(P/T) − 1; `total_return`: V_T / V_0 − 1.
    - `calmar`: CAGR / MaxDD; `romad`: total return / MaxDD; both NaN when MaxDD = 0.
    - `volatility`: std(r, ddof=1) × √P (annualised).
    - `win_rate`, `profit_factor`: closed round-trip trades (see `trade_stats`); NaN without trades.
    - `n_bars`: T, as a float so the dict is homogeneous.
    Undefined values are NaN. Raises ValueError on non-finite returns or P ≤ 0.
    """
    if periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year}")
    r = as_returns(returns)
    mdd = max_drawdown(r)
    growth = cagr(r, periods_per_year)
    total = float(np.prod(1.0 + r)) - 1.0 if r.size else NAN
    if timestamps is not None:
        sharpe_daily = sharpe_ratio(daily_returns(r, timestamps), DAYS_PER_YEAR)
    elif periods_per_year == DAYS_PER_YEAR:
        sharpe_daily = sharpe_ratio(r, DAYS_PER_YEAR)
    else:
        sharpe_daily = NAN
    win_rate, profit_factor = trade_stats(trades)
    kpis = {
        "sharpe": sharpe_ratio(r, periods_per_year),
        "sharpe_daily": sharpe_daily,
        "sortino": sortino_ratio(r, periods_per_year),
        "max_drawdown": mdd,
        "cagr": growth,
        "calmar": growth / mdd if mdd > 0.0 else NAN,
        "romad": total / mdd if mdd > 0.0 else NAN,
        "total_return": total,
        "volatility": float(np.std(r, ddof=1)) * math.sqrt(periods_per_year) if r.size >= 2 else NAN,
        "win_rate": win_rate,
        "profit_factor": profit_factor,
        "n_bars": float(r.size),
    }
    assert tuple(kpis) == KPI_NAMES
    return kpis
