"""Rule-based baseline strategies: target weights any ML / RL model must beat (DESIGN §1, §3.3, §3.5).

Contract shared by every baseline
---------------------------------
Input `bars`: long `symbol, ts, open, high, low, close, volume` (+ optional quality flags, ignored), `ts` =
bar open time (UTC). Pass history before `start` as warm-up (see `lookback_bars`); only rows with
ts in [start, end) are emitted. Symbols may list mid-sample: a symbol has no rows before its first bar and
never gets a weight row there.

Output: long `symbol, ts, weight` (Float64, fractions of portfolio value, long-only, 1 − Σw = cash), sorted
by (symbol, ts). A row at ts is decided from bars up to and including the CLOSE of ts and executed by the
backtest engine at the OPEN of the next bar. Rows are emitted only on rebalance bars (then for every symbol
that has a bar there, 0 = flat); between them there is no row, which the engine reads as "no order": the
position is held and its weight drifts (§3.3). Fewer orders = less turnover from re-trimming drift.

Lookbacks and schedules (`fast`, `slow`, `vol_window`, `rebalance_every`) are durations such as `"10d"`, converted
to bars of the panel's bar length (so a 15m and a 1h run mean the same 10 days), or plain ints counted in bars.
The defaults are the config's `baseline_settings` defaults: rebalance daily, trend SMAs of 10 and 50 days, a
30-day volatility window.

Causality: the weight at t is a function of closes ≤ t only; truncating the bars after t leaves every
emitted row at or before t bit-identical (tested). Rebalance schedules count bars from `start`, so they do
not depend on where the data ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import polars as pl

from crypto_assets.baselines.panel import (
    WEIGHT_SCHEMA,
    Panel,
    build_panel,
    rolling_mean,
    rolling_moments,
    rolling_portfolio_var,
    schedule_mask,
    to_weights,
)
from crypto_assets.timeframes import parse_duration, timeframe_us

BaselineFn = Callable[..., pl.DataFrame]
BTC = "BTC/USDT"
Span = int | str
"""A lookback or schedule: a duration string (`"10d"`, `"24h"`) or a whole number of bars."""
FAST, SLOW, VOL_WINDOW, REBALANCE = "10d", "50d", "30d", "1d"


def span_bars(value: Span, bar_us: int, key: str) -> int:
    """Bars in `value`: a duration string converted with the bar length (refused naming `key` when not a whole
    number of bars), or an int taken as bars."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{key} must be a duration string like '10d' or a number of bars, got {value!r}")
    if isinstance(value, int):
        return value
    span = parse_duration(value, key)
    bar = dt.timedelta(microseconds=bar_us)
    if span % bar:
        raise ValueError(f"{key} = {value!r} is not a whole number of {bar} bars")
    return span // bar


def _state_changed(state: np.ndarray) -> np.ndarray:
    """True at rows where any symbol's discrete state differs from the row before (row 0: True)."""
    changed = np.ones(state.shape[0], dtype=bool)
    if state.shape[0] > 1:
        changed[1:] = (state[1:] != state[:-1]).any(axis=1)
    return changed


def _emit_mask(panel: Panel, state: np.ndarray, start: dt.datetime, end: dt.datetime, every: int) -> np.ndarray:
    """Bars that get order rows: the rebalance schedule, plus in-window bars where the state vector changes."""
    return schedule_mask(panel, start, end, every) | (_state_changed(state) & panel.window_mask(start, end))


# ---------------------------------------------------------------------------------------------- buy & hold


def buy_and_hold(
    bars: pl.DataFrame, start: dt.datetime, end: dt.datetime, symbol: str = BTC, timeframe: str | None = None
) -> pl.DataFrame:
    """100 % in `symbol` from its first bar in [start, end), then never trade again.

    Emits ONE row (weight 1 at that first bar) and nothing later: with the engine's "no row = hold" rule the
    position simply rides the price. Re-emitting weight 1 every bar would be the same portfolio but would
    re-trim the cost-induced cash residue each bar. Raises ValueError if `symbol` is not in the bars at all;
    returns no rows if it has no bar in the window. `timeframe` is accepted (and unused) so every baseline
    takes the same keyword arguments.
    """
    if bars.filter(pl.col("symbol") == symbol).height == 0:
        raise ValueError(f"buy_and_hold: symbol {symbol!r} not in bars (have {sorted(bars['symbol'].unique())})")
    first = (
        bars.filter(
            (pl.col("symbol") == symbol) & (pl.col("ts") >= start) & (pl.col("ts") < end) & (pl.col("close") > 0)
        )
        .select(pl.col("ts").min())
        .item()
    )
    if first is None:
        return pl.DataFrame(schema=WEIGHT_SCHEMA)
    return pl.DataFrame({"symbol": [symbol], "ts": [first], "weight": [1.0]}, schema=WEIGHT_SCHEMA)


# ---------------------------------------------------------------------------------------------- equal weight


def _equal_dense(panel: Panel) -> np.ndarray:
    """1/N over the symbols with a bar at each row (N = how many are listed then); NaN where no bar."""
    has = panel.has_bar
    n = has.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(has, 1.0 / n, np.nan)


def equal_weight(
    bars: pl.DataFrame,
    start: dt.datetime,
    end: dt.datetime,
    rebalance_every: Span = REBALANCE,
    timeframe: str | None = None,
) -> pl.DataFrame:
    """1/N across the symbols listed at the rebalance bar, rebalanced every `rebalance_every` from `start` (and
    at the window's first bar). A symbol that lists between rebalances gets its first weight at the next
    rebalance; before its listing it has no row at all."""
    panel = build_panel(bars, timeframe)
    every = span_bars(rebalance_every, panel.bar_us, "rebalance_every")
    return to_weights(panel, _equal_dense(panel), schedule_mask(panel, start, end, every))


# ---------------------------------------------------------------------------------------------- trend


def _default_min_periods(vol_window: int, vol_min_periods: int | None) -> int:
    # A quarter window (7.5 days at the 30-day default) is enough for a usable σ of a fresh listing.
    return max(2, vol_window // 4) if vol_min_periods is None else vol_min_periods


def _own_bars_sma(close: np.ndarray, window: int) -> np.ndarray:
    """SMA over each symbol's own last `window` bars: rows where it has no bar (before listing, or a data gap
    under gap_policy `flag`) are skipped rather than voiding every window that spans them."""
    out = np.full_like(close, np.nan)
    for i in range(close.shape[1]):
        rows = np.flatnonzero(np.isfinite(close[:, i]))
        out[rows, i] = rolling_mean(close[rows, i], window)
    return out


def _trend_dense(
    panel: Panel,
    fast: int,
    slow: int,
    vol_window: int,
    vol_min_periods: int,
    risk_budget: Literal["inverse_vol", "equal"],
) -> tuple[np.ndarray, np.ndarray]:
    """(weights, state): weights NaN where no bar; state 0 = not tradable yet, 1 = flat, 2 = long."""
    if not 1 <= fast < slow:
        raise ValueError(f"trend needs 1 ≤ fast < slow, got fast={fast}, slow={slow}")
    has = panel.has_bar
    fast_ma = _own_bars_sma(panel.close, fast)
    slow_ma = _own_bars_sma(panel.close, slow)
    sigma = np.sqrt(rolling_moments(panel.returns(), vol_window, vol_min_periods).var)
    eligible = has & np.isfinite(fast_ma) & np.isfinite(slow_ma)
    if risk_budget == "inverse_vol":
        eligible &= np.isfinite(sigma)
        # Equal risk budget: each tradable symbol's sleeve ∝ 1/σ, so each carries the same volatility.
        # σ is floored so a (synthetic) flat price cannot take the whole budget through 1/0.
        inv = np.where(eligible, 1.0 / np.maximum(np.where(eligible, sigma, 1.0), 1e-12), 0.0)
    elif risk_budget == "equal":
        inv = eligible.astype(np.float64)
    else:
        raise ValueError(f"risk_budget must be 'inverse_vol' or 'equal', got {risk_budget!r}")
    total = inv.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        sleeve = np.where(total > 0, inv / total, 0.0)
    long = eligible & (fast_ma > slow_ma)
    # A flat symbol's sleeve stays in cash (not given to the others): the budget is per symbol.
    weights = np.where(has, np.where(long, sleeve, 0.0), np.nan)
    state = eligible.astype(np.int8) + long.astype(np.int8)
    return weights, state


def trend_following(
    bars: pl.DataFrame,
    start: dt.datetime,
    end: dt.datetime,
    fast: Span = FAST,
    slow: Span = SLOW,
    vol_window: Span = VOL_WINDOW,
    vol_min_periods: int | None = None,
    risk_budget: Literal["inverse_vol", "equal"] = "inverse_vol",
    rebalance_every: Span = REBALANCE,
    timeframe: str | None = None,
) -> pl.DataFrame:
    """Moving-average crossover per symbol: long when SMA(close, fast) > SMA(close, slow) at the close of t,
    else flat (long-only). Windows count the symbol's own bars (a data gap is skipped, not averaged over);
    both SMAs include bar t.

    Sizing ("equal risk budget"): each symbol that is tradable — listed, both SMAs full, and (for
    `inverse_vol`) at least `vol_min_periods` returns in the trailing `vol_window` — gets a sleeve ∝ 1/σ_i
    (σ = std of close-to-close simple returns, ddof=1), sleeves summing to 1; `risk_budget="equal"` uses 1/N.
    A long symbol holds its sleeve, a flat one leaves it in cash, so gross ≤ 1.

    Orders: the full target vector is emitted every `rebalance_every` from `start` and, in between,
    at any bar where a symbol's state changes (enters / exits / becomes tradable), so a crossover is acted on
    at the next open rather than up to a day late.
    """
    panel = build_panel(bars, timeframe)
    fast_n, slow_n = span_bars(fast, panel.bar_us, "fast"), span_bars(slow, panel.bar_us, "slow")
    vol_n = span_bars(vol_window, panel.bar_us, "vol_window")
    min_periods = _default_min_periods(vol_n, vol_min_periods)
    weights, state = _trend_dense(panel, fast_n, slow_n, vol_n, min_periods, risk_budget)
    emit = _emit_mask(panel, state, start, end, span_bars(rebalance_every, panel.bar_us, "rebalance_every"))
    return to_weights(panel, weights, emit)


# ---------------------------------------------------------------------------------------------- vol target


def vol_targeted(
    bars: pl.DataFrame,
    start: dt.datetime,
    end: dt.datetime,
    base: Literal["trend", "equal"] = "trend",
    target_vol: float = 0.4,
    vol_window: Span = VOL_WINDOW,
    max_leverage: float = 1.0,
    periods_per_year: float | None = None,
    vol_min_periods: int | None = None,
    rebalance_every: Span = REBALANCE,
    timeframe: str | None = None,
    **base_params: Any,
) -> pl.DataFrame:
    """The `base` portfolio (trend-following or equal-weight) scaled to an annualised volatility target.

        w[t]  = base[t] × min(target_vol / σ_p[t],  max_leverage / Σ_i |base_i[t]|)
        σ_p[t] = √(base[t]ᵀ Σ[t] base[t]) × √P

    Σ[t]: trailing covariance of close-to-close simple returns over the last `vol_window` bars up to and
    including t (per-symbol σ from each symbol's own returns, correlations pairwise-complete; see
    `rolling_portfolio_var`) — the ex-ante risk of today's weights, not of yesterday's realised P&L, so a
    trend strategy re-entering after a flat spell is not levered up. P = `periods_per_year` (default: bars in
    365 days of the bar length; crypto trades 24/7, never 252). Gross exposure never exceeds
    `max_leverage`; when σ_p is 0 the cap alone applies. A symbol with a base weight but fewer than
    `vol_min_periods` returns has no risk estimate and gets weight 0 (no estimate, no position).

    Orders: every `rebalance_every` from `start`, and whenever the base's state changes.
    `base_params` go to the base (`fast`, `slow`, `risk_budget` for trend).
    """
    if target_vol <= 0 or max_leverage <= 0:
        raise ValueError(f"target_vol and max_leverage must be > 0, got {target_vol}, {max_leverage}")
    panel = build_panel(bars, timeframe)
    vol_window = span_bars(vol_window, panel.bar_us, "vol_window")
    min_periods = _default_min_periods(vol_window, vol_min_periods)
    if base == "trend":
        allowed = {"fast", "slow", "risk_budget"}
        unknown = set(base_params) - allowed
        if unknown:
            raise ValueError(f"unknown trend parameters {sorted(unknown)}; allowed: {sorted(allowed)}")
        base_w, state = _trend_dense(
            panel,
            span_bars(base_params.get("fast", FAST), panel.bar_us, "fast"),
            span_bars(base_params.get("slow", SLOW), panel.bar_us, "slow"),
            vol_window,
            min_periods,
            base_params.get("risk_budget", "inverse_vol"),
        )
    elif base == "equal":
        if base_params:
            raise ValueError(f"equal base takes no parameters, got {sorted(base_params)}")
        base_w, state = _equal_dense(panel), panel.has_bar.astype(np.int8)
    else:
        raise ValueError(f"base must be 'trend' or 'equal', got {base!r}")
    returns = panel.returns()
    own = rolling_moments(returns, vol_window, min_periods)
    w = np.where(np.isfinite(base_w) & np.isfinite(own.var), base_w, 0.0)
    ppy = panel.periods_per_year() if periods_per_year is None else float(periods_per_year)
    sigma_p = np.sqrt(rolling_portfolio_var(w, returns, vol_window, min_periods) * ppy)
    gross = np.abs(w).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cap = np.where(gross > 0, max_leverage / gross, 0.0)
        scale = np.where(sigma_p > 0, np.minimum(target_vol / sigma_p, cap), cap)
    weights = np.where(panel.has_bar, w * scale[:, None], np.nan)
    emit = _emit_mask(panel, state, start, end, span_bars(rebalance_every, panel.bar_us, "rebalance_every"))
    return to_weights(panel, weights, emit)


def vol_targeted_trend(bars: pl.DataFrame, start: dt.datetime, end: dt.datetime, **params: Any) -> pl.DataFrame:
    """`vol_targeted` with the trend-following base."""
    return vol_targeted(bars, start, end, base="trend", **params)


# ---------------------------------------------------------------------------------------------- registry

BASELINES: dict[str, BaselineFn] = {
    "buy_and_hold_btc": buy_and_hold,
    "equal_weight": equal_weight,
    "trend_following": trend_following,
    "vol_targeted_trend": vol_targeted_trend,
}
"""Baselines by name; each is called as `fn(bars, start, end, timeframe=..., **params)` → long
`symbol, ts, weight`. Pass the experiment's timeframe: it fixes the bar length for schedules and P."""


def lookback_bars(name: str, timeframe: str = "1h", **params: Any) -> int:
    """Bars of `timeframe` of history the caller should pass before `start` so the first bar of the window is
    fully warmed up (both SMAs full, a full `vol_window` of returns). Less history is allowed: signals then
    start later."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; allowed: {', '.join(BASELINES)}")
    if name in ("buy_and_hold_btc", "equal_weight"):
        return 0
    bar_us = timeframe_us(timeframe)
    slow = span_bars(params.get("slow", SLOW), bar_us, "slow")
    vol_window = span_bars(params.get("vol_window", VOL_WINDOW), bar_us, "vol_window")
    return max(slow - 1, vol_window)  # a full vol_window of returns needs vol_window + 1 closes


# config `baseline_settings` key → keyword of each baseline that takes it
SETTINGS_KEYWORDS: dict[str, dict[str, str]] = {
    "buy_and_hold_btc": {},
    "equal_weight": {"rebalance_every": "rebalance_every"},
    "trend_following": {
        "rebalance_every": "rebalance_every",
        "trend_fast": "fast",
        "trend_slow": "slow",
        "vol_window": "vol_window",
    },
    "vol_targeted_trend": {
        "rebalance_every": "rebalance_every",
        "trend_fast": "fast",
        "trend_slow": "slow",
        "vol_window": "vol_window",
        "target_vol": "target_vol",
    },
}


def baseline_params(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of baseline `name` from the config's `baseline_settings` (as a dict)."""
    if name not in SETTINGS_KEYWORDS:
        raise ValueError(f"unknown baseline {name!r}; allowed: {', '.join(SETTINGS_KEYWORDS)}")
    return {kw: settings[key] for key, kw in SETTINGS_KEYWORDS[name].items() if key in settings}
