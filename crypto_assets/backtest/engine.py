"""Target-weight backtest engine (DESIGN.md §3.3), shared by the walk-forward backtests and the RL environment.

Timing
------
Bars are on a regular grid of `timeframe`; `ts` is the bar's OPEN time. A target weight `w[t, i]` is decided
from data up to and including the CLOSE of bar `t` and executed at the OPEN of bar `t + 1`. Positions are
held in units (base-asset quantity) between fills and marked to market at every close. A bar without a weight
row for a symbol means "no order": the position is held and its weight drifts.

Orders
------
Weights are fractions of portfolio value; 1 − Σw is cash. A nonzero weight at a bar where the symbol has not
listed yet (no bar at or before it) is a ValueError naming symbol and ts, and so is a negative weight unless
`allow_short`. If the gross Σ|w| of the rows given at one decision bar exceeds `max_leverage`, those targets
are scaled down proportionally (reported as `requested` vs `target`); positions held without a row at that
bar do not count towards it (give every symbol a row to cap the whole book).

Execution at the open of bar e = t + 1
--------------------------------------
    V_open     = cash + Σ_i units_i × mark_i           (mark = open, or the last close where i has no bar at e)
    desired_i  = target_i × V_open                      (quote currency)
    traded_i   = desired_i − units_i × open_i           (signed notional; > 0 buys)
    |filled_i| ≤ max_participation × volume_i × open_i of bar e   (the fill's capacity; the rest is cancelled,
                                                                    reported as target vs filled weight)
    cost_i     = |filled_i| × (fee + slippage_i)        (paid from cash)
    fee        = taker_fee, or maker_fee when fee_side == "maker"
    slippage_i = half_spread + vol_k × σ_i              ("slippage" column: spread + volatility part)
               + impact_k × σ_i × √(|filled_i| / ADV_i) ("impact" column: square-root law, on the filled size)
    ADV_i      = mean of volume × close over the bars of symbol i among the last `adv_window` bars up to and
                 including the decision bar t          (trailing, causal mean dollar volume per bar)

σ_i is the sample standard deviation (ddof=1) of the close-to-close simple returns of symbol i in the last
`vol_window` bars up to and including the decision bar t (a return needs both its bars; bars before listing or
in a data gap contribute none). With fewer than 2 such returns σ_i = 0, so only the fee and half-spread apply.
ADV_i, like zipline's ADV, is known when the order is decided: it does not use the execution bar, whose volume
only sets how much can fill (the cap). Bars before listing or in a gap do not count; forward-filled bars (volume
0) do. Impact is timeframe-free: σ per bar ∝ √(bar length) and ADV per bar ∝ bar length, so σ √(Q / ADV) does
not depend on the bar length under random-walk scaling, and windows given as durations (`24h`, `7d`) mean the
same thing at 5m and at 1h.
A fully filled order sets units_i = target_i × V_open / open_i (exactly 0 for a zero target); a partial fill
adds filled_i / open_i. An order cannot fill on a bar where the symbol has no bar (a gap), nor on a zero-volume
execution bar when a participation cap is set or impact_k > 0 (nobody traded there: no capacity, and a fill
there would be fictional), nor when ADV_i = 0 and impact_k > 0 (the square-root term would be infinite).

Holding costs (funding / borrow), accrued pro rata at every close
-----------------------------------------------------------------
    funding_t = funding_rate_8h × (bar length / 8 h) × (short notional + borrowed notional)
    short notional    = Σ_i max(−units_i, 0) × close_i
    borrowed notional = max(long notional − V_pre, 0),  V_pre = cash + long − short before the charge
i.e. shorts pay on their notional and longs beyond equity pay on the borrowed part. Long exposure financed by
short proceeds counts as borrowed; a short is not charged twice (charging gross − 1 would do that). Pro-rata
accrual (not a charge at 00/08/16 UTC) gives the same amount per 8 h on any timeframe without making results
depend on where a backtest window starts relative to the funding clock.

Defaults (`CostModel()`): taker 0.10 % (Binance spot VIP 0), maker 0.10 %, half-spread 1 bp, vol_k 0.02,
impact_k 0.5 (square-root law coefficient of order 1/2), vol_window 24 bars, adv_window 168 bars, participation
cap 5 % of the execution bar's dollar volume, long-only, gross leverage ≤ 1, no funding. The experiment config
writes the windows as durations (`costs.vol_window: 24h`, `costs.adv_window: 7d`) and converts them to bars of
its timeframe; the 1h defaults above are those durations. 7 days for ADV: a whole week, so the weekend lull and
the intraday cycle are averaged in their right proportions, and short enough to follow crypto's volume regimes
(which move by multiples within a month; a 30-day mean lags them); it also needs only a week of history before
a window's first decision.

Capital is real (DESIGN.md §3.3): impact and the participation cap depend on absolute notional, so
`initial_value` is in quote currency and defaults to DEFAULT_CAPITAL (100,000 USDT, the config's
`experiment.capital` default); a 1-unit portfolio would make both vanish and flatter every strategy.

Not modelled: margin calls / liquidation (equity may go negative), exchange minimum order sizes, lot sizes.
A symbol whose bars stop (delisting, end of data) keeps its position, marked at its last close.

Implementation: inputs become dense (bars × symbols) numpy panels (`Market`): marks and dollar volume
vectorised, σ and ADV compiled passes over each window (bit-for-bit causal). The recursion (each fill depends on the
value left by the previous bar) is a numba kernel built from three per-bar functions that the RL trading
environment (`crypto_assets.agents.env`) calls too, so the environment's costs and equity ARE the engine's
(one code path, not a copy):

    execute_bar(units, cash, mark_open, open_px, sigma, dollar_vol, adv, target, cost_vec, filled, requested)
        the fills of one execution bar (target NaN = no order) → new units (in place), cash, costs
    accrue_funding(units, cash, mark_close, k_fund)   the holding cost charged at one close
    mark_to_market(units, cash, mark_close)           portfolio value at one close

`cost_vector(costs)` packs a `CostModel` into the float array these take. Kernels are compiled on first use
and cached on disk (numba `cache=True`). Long-format outputs are built on first access.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import polars as pl
from numba import njit

from crypto_assets.sources.base import TS_DTYPE
from crypto_assets.timeframes import timeframe_us

FUNDING_PERIOD_S = 8 * 3600.0
DEFAULT_CAPITAL = 100_000.0
"""Starting value of a backtest in quote currency when none is given (the config's `experiment.capital`)."""


@dataclass(frozen=True)
class CostModel:
    """Trading and holding costs. Rates are fractions (0.001 = 0.1 % = 10 bp)."""

    taker_fee: float = 0.001
    """Fee rate on traded notional for market orders (Binance spot VIP 0: 0.1 %)."""
    maker_fee: float = 0.001
    """Fee rate when `fee_side == "maker"` (Binance spot VIP 0 charges 0.1 % for makers too)."""
    fee_side: Literal["taker", "maker"] = "taker"
    half_spread: float = 0.0001
    """Half the bid-ask spread, a fraction of price, paid on every fill."""
    vol_k: float = 0.02
    """Slippage per unit of bar volatility σ (≈ drift of the price over a few seconds of latency at 1h)."""
    vol_window: int = 24
    """Bars of close-to-close returns (up to the decision bar) in σ (24 = the config's `24h` at 1h)."""
    adv_window: int = 168
    """Bars of dollar volume (up to the decision bar) in the ADV that impact divides by (168 = `7d` at 1h)."""
    impact_k: float = 0.5
    """Square-root impact coefficient: impact = impact_k × σ × √(|filled notional| / ADV)."""
    max_participation: float | None = 0.05
    """Fills are capped at this fraction of the execution bar's dollar volume (volume × open); None = no cap."""
    allow_short: bool = False
    max_leverage: float = 1.0
    """Cap on gross exposure Σ|w| of the targets given at one decision bar (scaled down proportionally)."""
    funding_rate_8h: float = 0.0
    """Funding / borrow rate per 8 hours on short notional and on borrowed long notional (perp-style)."""

    def __post_init__(self) -> None:
        for name in ("taker_fee", "maker_fee", "half_spread", "vol_k", "impact_k", "funding_rate_8h"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"CostModel.{name} must be a finite number >= 0, got {value!r}")
        if self.fee_side not in ("taker", "maker"):
            raise ValueError(f"CostModel.fee_side must be 'taker' or 'maker', got {self.fee_side!r}")
        if not (isinstance(self.vol_window, int) and self.vol_window >= 2):
            raise ValueError(f"CostModel.vol_window must be an int >= 2, got {self.vol_window!r}")
        if not (isinstance(self.adv_window, int) and self.adv_window >= 1):
            raise ValueError(f"CostModel.adv_window must be an int >= 1, got {self.adv_window!r}")
        if self.max_participation is not None and not (0 < self.max_participation < math.inf):
            raise ValueError(f"CostModel.max_participation must be > 0 or None, got {self.max_participation!r}")
        if not (0 < self.max_leverage < math.inf):
            raise ValueError(f"CostModel.max_leverage must be > 0, got {self.max_leverage!r}")

    @property
    def fee(self) -> float:
        """The fee rate that applies (taker or maker)."""
        return self.maker_fee if self.fee_side == "maker" else self.taker_fee

    @property
    def zero_volume_blocks(self) -> bool:
        """Whether an order on a zero-volume execution bar is unfillable (a cap leaves no capacity there; with
        impact modelled a fill where nobody traded would be fictional)."""
        return self.max_participation is not None or self.impact_k > 0


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


def _ts_series(name: str, ts_us: np.ndarray, valid: np.ndarray | None = None) -> pl.Series:
    """µs epoch integers → Datetime(us, UTC); null where `valid` is False."""
    s = pl.Series(name, ts_us.astype(np.int64)).cast(TS_DTYPE)
    if valid is not None and not valid.all():
        s = s.to_frame().select(pl.when(pl.Series(valid)).then(pl.col(name))).to_series()
    return s


def _fmt_ts(ts_us: int) -> str:
    return str(_ts_series("ts", np.array([ts_us]))[0])


def ts_epoch_us(frame: pl.DataFrame, what: str) -> np.ndarray:
    """`frame.ts` as int64 epoch microseconds; `what` names the frame in the error for a non-Datetime column."""
    dtype = frame.schema["ts"]
    if not isinstance(dtype, pl.Datetime):
        # ValueError like every other bad input, so callers have one exception to handle
        raise ValueError(f"{what}.ts must be a Datetime column (bar open time, UTC), got {dtype}")  # noqa: TRY004
    # Naive timestamps are read as UTC; aware ones are converted.
    ts = frame["ts"] if dtype.time_zone is None else frame["ts"].dt.convert_time_zone("UTC")
    return ts.dt.replace_time_zone(None).dt.epoch("us").to_numpy().astype(np.int64)


def _require(frame: pl.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; it has {frame.columns}")
    for c in columns:
        n = frame[c].null_count()
        if n:
            raise ValueError(f"{what}.{c} has {n} null values")


def _first_duplicate(cell: np.ndarray, n_cells: int) -> int | None:
    """Row index of the first repeat of a (bar, symbol) cell id, or None."""
    counts = np.bincount(cell, minlength=n_cells)
    if counts.max(initial=0) <= 1:
        return None
    return int(np.nonzero(counts[cell] > 1)[0][0])


def _build_panel(bars: pl.DataFrame, timeframe: str) -> _Panel:
    _require(bars, ["symbol", "ts", "open", "close", "volume"], "bars")
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
            f"bars off the {timeframe} grid: {bars['symbol'][int(bad[0])]} at {_fmt_ts(int(ts_us[bad[0]]))}"
        )
    n_t, n_s = (t1 - t0) // step_us + 1, len(symbols)
    t_idx = off // step_us
    dup = _first_duplicate(t_idx * n_s + sym_idx, n_t * n_s)
    if dup is not None:
        raise ValueError(f"duplicate bar for {symbols[sym_idx[dup]]} at {_fmt_ts(int(ts_us[dup]))}")
    cell = t_idx * n_s + sym_idx
    values = {}
    for col in ("open", "close", "volume"):
        arr = bars[col].cast(pl.Float64).to_numpy()
        ok = np.isfinite(arr) & ((arr >= 0) if col == "volume" else (arr > 0))
        if not ok.all():
            k = int(np.nonzero(~ok)[0][0])
            raise ValueError(
                f"bars.{col} must be finite and {'>= 0' if col == 'volume' else '> 0'}: "
                f"{bars['symbol'][k]} at {_fmt_ts(int(ts_us[k]))} has {arr[k]}"
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


def _weight_panel(weights: pl.DataFrame, p: _Panel, costs: CostModel) -> tuple[np.ndarray, np.ndarray]:
    """The requested weights as a T × N panel (NaN = no order) and the leverage-cap scale of each decision
    bar (T,); validates the strict rules."""
    _require(weights, ["symbol", "ts", "weight"], "weights")
    n_t, n_s = p.open.shape
    requested = np.full(n_t * n_s, np.nan)
    if weights.height == 0:
        return requested.reshape(n_t, n_s), np.ones(n_t)
    unknown = sorted(set(weights["symbol"].unique().to_list()) - set(p.symbols))
    if unknown:
        raise ValueError(f"weights name symbols without bars: {unknown}")
    ts_us = ts_epoch_us(weights, "weights")
    sym = weights["symbol"].cast(pl.Enum(p.symbols)).to_physical().to_numpy().astype(np.int64)
    w = weights["weight"].cast(pl.Float64).to_numpy()
    off = ts_us - p.ts_us[0]
    bad = np.nonzero((off % p.step_us != 0) | (off < 0) | (off > p.ts_us[-1] - p.ts_us[0]))[0]
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"weight for {p.symbols[sym[k]]} at {_fmt_ts(int(ts_us[k]))} is not on the bars' grid")
    t_idx = off // p.step_us

    def where(k: int) -> str:
        return f"{p.symbols[sym[k]]} at {_fmt_ts(int(ts_us[k]))}"

    if not np.isfinite(w).all():
        raise ValueError(f"weight must be finite: {where(int(np.nonzero(~np.isfinite(w))[0][0]))}")
    dup = _first_duplicate(t_idx * n_s + sym, n_t * n_s)
    if dup is not None:
        raise ValueError(f"duplicate weight rows for {where(dup)}")
    pre = np.nonzero((t_idx < p.first_bar[sym]) & (w != 0))[0]
    if pre.size:
        raise ValueError(f"nonzero weight {w[pre[0]]} before listing (no bar yet) for {where(int(pre[0]))}")
    if not costs.allow_short:
        neg = np.nonzero(w < 0)[0]
        if neg.size:
            raise ValueError(
                f"negative weight {w[neg[0]]} (short) but costs.allow_short is False: {where(int(neg[0]))}"
            )
    requested[t_idx * n_s + sym] = w
    gross = np.bincount(t_idx, weights=np.abs(w), minlength=n_t)
    # Proportional scaling keeps the strategy's relative bets when it asks for more than the leverage cap.
    scale = np.where(gross > costs.max_leverage, costs.max_leverage / np.where(gross > 0, gross, 1.0), 1.0)
    return requested.reshape(n_t, n_s), scale


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


# ---- per-bar kernels (numba), shared with the RL environment (crypto_assets.agents.env) ------------------------

# Layout of `cost_vector`: one float array carries the whole cost model into the kernels.
COST_FEE, COST_HALF_SPREAD, COST_VOL_K, COST_IMPACT_K, COST_CAP, COST_BLOCKS = range(6)


def cost_vector(costs: CostModel) -> np.ndarray:
    """`costs` as the float64 array the kernels take: [fee, half_spread, vol_k, impact_k, max_participation
    (+inf = no cap), zero_volume_blocks (1.0 or 0.0)]."""
    cap = math.inf if costs.max_participation is None else costs.max_participation
    return np.array(
        [costs.fee, costs.half_spread, costs.vol_k, costs.impact_k, cap, float(costs.zero_volume_blocks)],
        dtype=np.float64,
    )


def funding_per_bar(costs: CostModel, step_us: int) -> float:
    """Funding fraction charged at each close: funding_rate_8h × bar length / 8 h (pro-rata accrual)."""
    return costs.funding_rate_8h * (step_us / 1e6) / FUNDING_PERIOD_S


@njit(cache=True)
def fill_cost(size: float, sigma: float, adv: float, cost_vec: np.ndarray) -> tuple[float, float, float]:
    """(fee, slippage, impact) of one fill of |filled notional| `size`; σ and ADV of the decision bar."""
    fee = size * cost_vec[COST_FEE]
    slippage = size * (cost_vec[COST_HALF_SPREAD] + cost_vec[COST_VOL_K] * sigma)
    impact = 0.0
    if cost_vec[COST_IMPACT_K] > 0.0 and size > 0.0:  # ADV > 0 here: ADV = 0 blocks the order
        impact = size * cost_vec[COST_IMPACT_K] * sigma * math.sqrt(size / adv)
    return fee, slippage, impact


@njit(cache=True)
def execute_bar(
    units: np.ndarray,
    cash: float,
    mark_open: np.ndarray,
    open_px: np.ndarray,
    sigma: np.ndarray,
    dollar_vol: np.ndarray,
    adv: np.ndarray,
    target: np.ndarray,
    cost_vec: np.ndarray,
    filled: np.ndarray,
    requested: np.ndarray,
) -> tuple[float, float, float, float, float, float]:
    """The fills at the open of one execution bar (module docstring, "Execution"); all arrays are (N,).

    units: held before the bar, updated IN PLACE. mark_open: marks at this open (the open, or the last close
    where a symbol has no bar). open_px: the bar's open, NaN where the symbol has no bar (cannot fill).
    sigma: σ of the decision bar. dollar_vol: volume × open of this bar (the participation cap's base).
    adv: trailing mean dollar volume up to the decision bar (impact's base). target: weights decided at the
    previous close, NaN = no order. filled / requested: outputs, signed notional filled and asked for (before
    the participation cap); 0 where nothing was ordered or fillable.
    Returns (cash after fills and costs, portfolio value at the open, fees, slippage, impact, Σ|filled|).
    """
    n = units.shape[0]
    v_open = cash
    for i in range(n):
        v_open += units[i] * mark_open[i]
    cap = cost_vec[COST_CAP]
    blocks = cost_vec[COST_BLOCKS] > 0.0
    has_impact = cost_vec[COST_IMPACT_K] > 0.0
    flow = 0.0
    fees = 0.0
    slippage = 0.0
    impact = 0.0
    traded_total = 0.0
    for i in range(n):
        filled[i] = 0.0
        requested[i] = 0.0
        w = target[i]
        px = open_px[i]
        dv = dollar_vol[i]
        # no order; no bar (gap, not listed: NaN fails the test); zero volume where it blocks the fill; no ADV
        # to divide by under impact
        if math.isnan(w) or not px > 0.0 or (blocks and not dv > 0.0) or (has_impact and not adv[i] > 0.0):
            continue
        desired = w * v_open
        traded = desired - units[i] * px
        requested[i] = traded
        fill = traded
        if cap < math.inf:  # (inf × 0 would be NaN: test rather than multiply)
            limit = cap * dv
            fill = min(max(traded, -limit), limit)
        if fill == traded:  # a full fill lands exactly on the target (exactly 0 units for a zero target)
            units[i] = desired / px
        else:  # a partial one adds what was filled; the rest is cancelled
            units[i] += fill / px
        size = abs(fill)
        fee, slip, imp = fill_cost(size, sigma[i], adv[i], cost_vec)
        filled[i] = fill
        flow += fill
        fees += fee
        slippage += slip
        impact += imp
        traded_total += size
    cash -= flow + (fees + slippage + impact)
    return cash, v_open, fees, slippage, impact, traded_total


@njit(cache=True)
def accrue_funding(units: np.ndarray, cash: float, mark_close: np.ndarray, k_fund: float) -> tuple[float, float]:
    """Charge one close's holding cost (module docstring, "Holding costs"): (cash after, funding charged)."""
    if k_fund == 0.0:
        return cash, 0.0
    long_n = 0.0
    short_n = 0.0
    for i in range(units.shape[0]):
        x = units[i] * mark_close[i]
        if x > 0.0:
            long_n += x
        else:
            short_n -= x
    funding = k_fund * (short_n + max(long_n - (cash + long_n - short_n), 0.0))  # borrowed = long − V_pre
    return cash - funding, funding


@njit(cache=True)
def mark_to_market(units: np.ndarray, cash: float, mark_close: np.ndarray) -> float:
    """Portfolio value at a close: cash + Σ units × mark."""
    value = cash
    for i in range(units.shape[0]):
        value += units[i] * mark_close[i]
    return value


@njit(cache=True)
def _fill_costs(
    size: np.ndarray, sigma: np.ndarray, adv: np.ndarray, cost_vec: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`fill_cost` over arrays of fills (for the trades table: the same numbers the kernel charged)."""
    n = size.shape[0]
    fee, slip, imp = np.empty(n), np.empty(n), np.empty(n)
    for k in range(n):
        fee[k], slip[k], imp[k] = fill_cost(size[k], sigma[k], adv[k], cost_vec)
    return fee, slip, imp


@njit(cache=True)
def _simulate(
    tgt: np.ndarray,
    mark_open: np.ndarray,
    open_px: np.ndarray,
    mark_close: np.ndarray,
    sigma: np.ndarray,
    dollar_vol: np.ndarray,
    adv: np.ndarray,
    cost_vec: np.ndarray,
    k_fund: float,
    initial_value: float,
    keep_requested: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The bar-by-bar recursion; all (T × N) inputs have rows = execution bars (see `run_backtest`).

    At each bar: the orders decided at the previous close fill at the open (`execute_bar`, where the row of
    `tgt` has any non-NaN), funding accrues at the close (`accrue_funding`), the book is marked
    (`mark_to_market`). Returns (units, cash, value and funding at each close, filled notional, requested
    notional ((0, N) unless keep_requested), value at the open of bars with orders (NaN elsewhere), and a
    (T × 4) array of fees, slippage, impact and Σ|filled| per bar).
    """
    n_t, n_s = tgt.shape
    units = np.zeros(n_s)
    cash = initial_value
    U = np.empty((n_t, n_s))
    CASH = np.empty(n_t)
    VALUE = np.empty(n_t)
    FUND = np.zeros(n_t)
    TR = np.zeros((n_t, n_s))
    REQ = np.zeros((n_t if keep_requested else 0, n_s))
    VOPEN = np.full(n_t, np.nan)
    PARTS = np.zeros((n_t, 4))
    filled = np.zeros(n_s)
    requested = np.zeros(n_s)
    for t in range(n_t):
        has_order = False
        for i in range(n_s):
            if not math.isnan(tgt[t, i]):
                has_order = True
                break
        if has_order:  # visit even unfillable orders: their `filled` weight needs the value at that open
            cash, v_open, fees, slippage, impact, traded = execute_bar(
                units,
                cash,
                mark_open[t],
                open_px[t],
                sigma[t],
                dollar_vol[t],
                adv[t],
                tgt[t],
                cost_vec,
                filled,
                requested,
            )
            TR[t] = filled
            if keep_requested:
                REQ[t] = requested
            VOPEN[t] = v_open
            PARTS[t, 0] = fees
            PARTS[t, 1] = slippage
            PARTS[t, 2] = impact
            PARTS[t, 3] = traded
        if k_fund > 0.0:
            cash, funding = accrue_funding(units, cash, mark_close[t], k_fund)
            FUND[t] = funding
        U[t] = units
        CASH[t] = cash
        VALUE[t] = mark_to_market(units, cash, mark_close[t])
    return U, CASH, VALUE, FUND, TR, REQ, VOPEN, PARTS


@dataclass(frozen=True)
class Market:
    """The per-bar inputs of execution, dense (T × N) float64 arrays over the regular grid (rows = bars).

    open / close: NaN where a symbol has no bar (before listing, exchange gaps). mark_open / mark_close: the
    prices positions are valued at: the open (close), or the last close where a symbol has no bar (0 before
    listing, where nothing is held). sigma: σ of the DECISION bar t − 1 stored on row t (the execution bar;
    all 0 when the cost model uses no σ). dollar_vol: volume × open of the bar itself (the participation
    cap's base), 0 where there is no bar. adv: the trailing mean dollar volume (volume × close over
    `adv_window` bars) of the DECISION bar t − 1 stored on row t (impact's base; 0 on row 0).
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
    has_bar: np.ndarray
    first_bar: np.ndarray

    @classmethod
    def from_bars(cls, bars: pl.DataFrame, costs: CostModel, timeframe: str = "1h") -> Market:
        """Validate long bars (`symbol, ts, open, close, volume`) as `run_backtest` does and build the panels."""
        return _market(_build_panel(bars, timeframe), costs)


def _market(p: _Panel, costs: CostModel) -> Market:
    n_t, n_s = p.open.shape
    gaps = not p.has_bar.all()
    # Marks: last known close (0 before listing, where units are 0); at an open, the open or the last close.
    mark_close = np.nan_to_num(_ffill(p.close), nan=0.0) if gaps else p.close
    mark_open = np.where(p.has_bar, p.open, _shift_down(mark_close)) if gaps else p.open
    dollar_vol = p.volume * p.open
    if gaps:
        dollar_vol[~p.has_bar] = 0.0
    sigma = np.zeros((n_t, n_s))  # σ of the decision bar, on the execution bar's row
    if costs.vol_k > 0 or costs.impact_k > 0:
        sigma = _shift_down(_rolling_sigma(np.ascontiguousarray(p.close), p.has_bar, costs.vol_window))
    adv = np.zeros((n_t, n_s))  # ADV of the decision bar, on the execution bar's row
    if costs.impact_k > 0:
        origin = int(p.ts_us[0] // p.step_us)  # blocks aligned to the epoch: ADV does not depend on the history start
        dv_close = np.ascontiguousarray(np.nan_to_num(p.volume * p.close, nan=0.0))
        adv = _shift_down(_rolling_adv(dv_close, p.has_bar, costs.adv_window, origin))
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
        has_bar=p.has_bar,
        first_bar=p.first_bar,
    )


@dataclass(frozen=True)
class _Sim:
    """Dense (T × N) results of the simulation, kept for building the long-format outputs on demand."""

    p: _Panel
    costs: CostModel
    initial_value: float
    requested: np.ndarray  # weights as given at decision bars, NaN = no order
    scale: np.ndarray  # (T,) leverage-cap factor of each decision bar: target = requested × scale
    units: np.ndarray  # units held at each close
    cash: np.ndarray  # cash at each close (after fills and funding)
    value: np.ndarray  # portfolio value at each close
    funding: np.ndarray  # funding charged at each close
    filled: np.ndarray  # filled notional at each open (signed)
    requested_notional: np.ndarray  # traded notional before the participation cap
    v_open: np.ndarray  # portfolio value at the open of execution bars (NaN elsewhere)
    mark_open: np.ndarray
    mark_close: np.ndarray
    sigma: np.ndarray  # σ of the decision bar on each execution bar's row
    adv: np.ndarray  # ADV of the decision bar on each execution bar's row
    cost_vec: np.ndarray
    k_fund: float  # funding fraction per bar

    def fill_costs(self, t_idx: np.ndarray, s_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fee, slippage, impact) of the fills at cells (t, s), by the function the kernel charged them with."""
        size = np.ascontiguousarray(np.abs(self.filled[t_idx, s_idx]))
        sigma = np.ascontiguousarray(self.sigma[t_idx, s_idx])
        return _fill_costs(size, sigma, np.ascontiguousarray(self.adv[t_idx, s_idx]), self.cost_vec)


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """Outputs of `run_backtest`. `ts` is always a bar's open time (Datetime us UTC); money is in quote currency.

    Per-bar frames (one row per bar of the grid), built eagerly:
    - equity: `ts, value, cash` at each bar's close (value = cash + Σ units × close, after that bar's fills
      and funding).
    - returns: `ts, return`, the net simple return of each bar, value_t / value_{t−1} − 1 (value_{−1} =
      initial_value, so the first bar's return is 0: nothing executes before the first close).
    - costs: `ts, fees, slippage, impact, funding, total` paid in each bar.
    - turnover: `ts, traded_notional` (Σ|filled notional| at the open) and `turnover` (traded_notional /
      portfolio value at that open; 0 without fills), `fills` (fills at that open) and `capped_fills` (those
      the participation cap cut short); `total_turnover` is the sum of `turnover`.
    - n_scaled: decision bars whose targets were scaled down by the leverage cap.

    Long-format frames, built on first access (they can hold T × N rows):
    - positions: `symbol, ts, units, value, weight` at each close, from the symbol's first bar on.
    - weights: one row per order: `symbol, ts` (decision bar), `exec_ts` (next bar; null for an order on the
      last bar, which never executes), `requested` (as given), `target` (after the leverage cap), `filled`
      (position after execution / portfolio value at the execution open: equals `target` when fully filled,
      the pre-trade weight when cancelled; null when never executed).
    - trades: fills, `symbol, ts` (execution bar), `side` (buy/sell), `units` (signed), `price` (the open),
      `notional` (signed, > 0 buys), `requested_notional` (before the participation cap), `fee`,
      `slippage` (half-spread + vol part), `impact` (square-root part), `cost` (their sum).
    - round_trips: DESIGN §3.4 trades: one opens when a position leaves zero and closes when it returns to zero
      or flips sign. `symbol, side` (long/short), `entry_ts, exit_ts` (execution bars; exit null while open),
      `closed`, `entry_notional` (|notional| of the opening fill), `costs` (fees + slippage + impact + funding
      attributed to it) and `pnl` (after those costs; open trades are marked at the last close). A flip fill
      is split between the closing and the opening trade in proportion to units. Funding is attributed to
      the positions that caused it (shorts on their notional, borrowing pro rata to long notional), so
      Σ pnl = final value − initial value.
    """

    equity: pl.DataFrame
    returns: pl.DataFrame
    costs: pl.DataFrame
    turnover: pl.DataFrame
    total_turnover: float
    n_scaled: int
    _sim: _Sim = field(repr=False)

    @cached_property
    def positions(self) -> pl.DataFrame:
        return _positions(self._sim)

    @cached_property
    def weights(self) -> pl.DataFrame:
        return _orders(self._sim)

    @cached_property
    def trades(self) -> pl.DataFrame:
        return _fills(self._sim)

    @cached_property
    def round_trips(self) -> pl.DataFrame:
        return _round_trips(self._sim)


def run_backtest(
    bars: pl.DataFrame,
    weights: pl.DataFrame,
    costs: CostModel = CostModel(),
    *,
    initial_value: float = DEFAULT_CAPITAL,
    timeframe: str = "1h",
) -> BacktestResult:
    """Simulate target-weight trading of `bars` under `weights`.

    bars: long format `symbol, ts, open, close, volume` (+ any other columns, ignored); `ts` = bar open time
    (UTC; naive timestamps are read as UTC) on the `timeframe` grid; prices in quote currency, volume in base
    units. Symbols may start (list) mid-sample; missing bars after listing are gaps (no fills there, positions
    marked at the last close).
    weights: long format `symbol, ts, weight`: the target fraction of portfolio value decided at the close of
    bar `ts` and executed at the open of the next bar (a symbol without a row at `ts` gets no order).
    costs: see `CostModel` and the module docstring (windows in bars of `timeframe`). initial_value: starting
    cash in quote currency (the experiment's `capital`; impact and the participation cap depend on it).

    Raises ValueError for malformed inputs, a nonzero weight where the symbol has not listed yet, or a short
    when `costs.allow_short` is False.
    """
    if not (math.isfinite(initial_value) and initial_value > 0):
        raise ValueError(f"initial_value must be > 0, got {initial_value!r}")
    p = _build_panel(bars, timeframe)
    requested, scale = _weight_panel(weights, p, costs)
    m = _market(p, costs)
    # rows indexed by execution bar e (decision bar e − 1); NaN = no order
    tgt = np.ascontiguousarray(_shift_down(requested * scale[:, None], fill=np.nan))
    k_fund = funding_per_bar(costs, p.step_us)
    cost_vec = cost_vector(costs)
    keep_req = costs.max_participation is not None
    U, CASH, VALUE, FUND, TR, REQ, VOPEN, PARTS = _simulate(
        tgt,
        m.mark_open,
        m.open,
        m.mark_close,
        m.sigma,
        m.dollar_vol,
        m.adv,
        cost_vec,
        k_fund,
        float(initial_value),
        keep_req,
    )
    if not keep_req:
        REQ = TR  # without a cap, what was asked for is what was filled

    sim = _Sim(
        p=p,
        costs=costs,
        initial_value=float(initial_value),
        requested=requested,
        scale=scale,
        units=U,
        cash=CASH,
        value=VALUE,
        funding=FUND,
        filled=TR,
        requested_notional=REQ,
        v_open=VOPEN,
        mark_open=m.mark_open,
        mark_close=m.mark_close,
        sigma=m.sigma,
        adv=m.adv,
        cost_vec=cost_vec,
        k_fund=k_fund,
    )
    fees_b, slip_b, imp_b, traded = PARTS[:, 0], PARTS[:, 1], PARTS[:, 2], PARTS[:, 3]
    turn = np.where(traded > 0, traded / np.where(np.isnan(VOPEN), 1.0, VOPEN), 0.0)
    ts = _ts_series("ts", p.ts_us)
    prev_value = np.concatenate([[initial_value], VALUE[:-1]])
    return BacktestResult(
        equity=pl.DataFrame([ts, pl.Series("value", VALUE), pl.Series("cash", CASH)]),
        returns=pl.DataFrame([ts, pl.Series("return", VALUE / prev_value - 1.0)]),
        costs=pl.DataFrame(
            [
                ts,
                pl.Series("fees", fees_b),
                pl.Series("slippage", slip_b),
                pl.Series("impact", imp_b),
                pl.Series("funding", FUND),
                pl.Series("total", fees_b + slip_b + imp_b + FUND),
            ]
        ),
        turnover=pl.DataFrame(
            [
                ts,
                pl.Series("traded_notional", traded),
                pl.Series("turnover", turn),
                pl.Series("fills", np.count_nonzero(TR, axis=1).astype(np.int64)),
                # a capped fill stopped at the cap: less than asked for (an uncapped one is exactly what was asked)
                pl.Series("capped_fills", np.count_nonzero((TR != 0) & (np.abs(TR) < np.abs(REQ)), axis=1)),
            ]
        ),
        total_turnover=float(turn.sum()),
        n_scaled=int(np.count_nonzero(scale < 1.0)),
        _sim=sim,
    )


def _shift_down(a: np.ndarray, fill: float | bool = 0.0) -> np.ndarray:
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


def _symbols(p: _Panel, s_idx: np.ndarray) -> pl.Series:
    return pl.Series("symbol", p.symbols, dtype=pl.String).gather(s_idx)


def _cells(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t, s) indices of the True cells of a (T × N) mask, ordered by symbol then bar."""
    flat = np.flatnonzero(mask.T)
    n_t = mask.shape[0]
    return flat % n_t, flat // n_t


def _positions(sim: _Sim) -> pl.DataFrame:
    p = sim.p
    t_idx, s_idx = _cells(np.arange(p.open.shape[0])[:, None] >= p.first_bar[None, :])
    units = sim.units[t_idx, s_idx]
    value = units * sim.mark_close[t_idx, s_idx]
    return pl.DataFrame(
        [
            _symbols(p, s_idx),
            _ts_series("ts", p.ts_us[t_idx]),
            pl.Series("units", units),
            pl.Series("value", value),
            pl.Series("weight", value / sim.value[t_idx]),
        ]
    )


def _orders(sim: _Sim) -> pl.DataFrame:
    p = sim.p
    n_t = p.open.shape[0]
    t_idx, s_idx = _cells(~np.isnan(sim.requested))
    has_next = t_idx + 1 < n_t
    e = np.minimum(t_idx + 1, n_t - 1)
    filled = sim.units[e, s_idx] * sim.mark_open[e, s_idx] / sim.v_open[e]
    return pl.DataFrame(
        [
            _symbols(p, s_idx),
            _ts_series("ts", p.ts_us[t_idx]),
            _ts_series("exec_ts", p.ts_us[e], valid=has_next),
            pl.Series("requested", sim.requested[t_idx, s_idx]),
            pl.Series("target", sim.requested[t_idx, s_idx] * sim.scale[t_idx]),
            pl.Series("filled", np.where(has_next, filled, np.nan)).fill_nan(None),
        ]
    )


def _fills(sim: _Sim) -> pl.DataFrame:
    p = sim.p
    t_idx, s_idx = _cells(sim.filled != 0)
    notional = sim.filled[t_idx, s_idx]
    fee, slip, imp = sim.fill_costs(t_idx, s_idx)
    return pl.DataFrame(
        [
            _symbols(p, s_idx),
            _ts_series("ts", p.ts_us[t_idx]),
            pl.Series("side", ["sell", "buy"], dtype=pl.String).gather((notional > 0).astype(np.int64)),
            pl.Series("units", sim.units[t_idx, s_idx] - sim.units[t_idx - 1, s_idx]),  # t >= 1 for any fill
            pl.Series("price", sim.mark_open[t_idx, s_idx]),
            pl.Series("notional", notional),
            pl.Series("requested_notional", sim.requested_notional[t_idx, s_idx]),
            pl.Series("fee", fee),
            pl.Series("slippage", slip),
            pl.Series("impact", imp),
            pl.Series("cost", fee + slip + imp),
        ]
    )


ROUND_TRIP_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "side": pl.String(),
    "entry_ts": TS_DTYPE,
    "exit_ts": TS_DTYPE,
    "closed": pl.Boolean(),
    "entry_notional": pl.Float64(),
    "costs": pl.Float64(),
    "pnl": pl.Float64(),
}


def _round_trips(sim: _Sim) -> pl.DataFrame:
    """Segment each symbol's fills (ordered by symbol, then bar) into DESIGN §3.4 round trips."""
    p = sim.p
    n_t, n_s = sim.units.shape
    t_idx, s_idx = _cells(sim.filled != 0)
    if t_idx.size == 0:
        return pl.DataFrame(schema=ROUND_TRIP_SCHEMA)
    u0, u1 = sim.units[t_idx - 1, s_idx], sim.units[t_idx, s_idx]
    flip = (u0 * u1) < 0
    opens = ((u0 == 0) & (u1 != 0)) | flip
    closes = (u0 != 0) & ((u1 == 0) | flip)
    # A symbol's first fill starts from 0 units and so opens a trade: ids never straddle two symbols.
    trade = np.cumsum(opens) - 1
    n_tr = int(trade[-1]) + 1
    # Share of a flip fill (by units) that closes the old trade; the rest opens the new one.
    part_close = np.where(flip, np.abs(u0) / np.where(flip, np.abs(u1 - u0), 1.0), 0.0)
    fee, slip, imp = sim.fill_costs(t_idx, s_idx)
    cost = fee + slip + imp
    flow = -sim.filled[t_idx, s_idx] - cost  # cash received (sells) or paid (buys), less costs
    pnl = np.bincount(trade, weights=flow * (1 - part_close), minlength=n_tr)
    tcost = np.bincount(trade, weights=cost * (1 - part_close), minlength=n_tr)
    prev_trade = trade[flip] - 1
    pnl += np.bincount(prev_trade, weights=flow[flip] * part_close[flip], minlength=n_tr)
    tcost += np.bincount(prev_trade, weights=cost[flip] * part_close[flip], minlength=n_tr)

    # Funding over the closes a fill's position is held (its bar .. the symbol's next fill − 1).
    same_next = np.append(s_idx[1:] == s_idx[:-1], False)
    t_next = np.where(same_next, np.append(t_idx[1:], n_t), n_t)
    if sim.k_fund > 0:
        fund_p = _funding_by_symbol(sim)
        cum = np.vstack([np.zeros((1, n_s)), np.cumsum(fund_p, axis=0)])
        fund = cum[t_next, s_idx] - cum[t_idx, s_idx]
        held = u1 != 0
        fund_tr = np.bincount(trade[held], weights=fund[held], minlength=n_tr)
        pnl -= fund_tr
        tcost += fund_tr
    # Trades still open at the end are marked at the last close.
    last = ~same_next & (u1 != 0)
    pnl[trade[last]] += u1[last] * sim.mark_close[-1, s_idx[last]]

    open_rows = np.nonzero(opens)[0]
    close_rows = np.nonzero(closes)[0]
    exit_t = np.full(n_tr, -1, dtype=np.int64)
    exit_t[trade[close_rows] - flip[close_rows]] = t_idx[close_rows]
    closed = exit_t >= 0
    return pl.DataFrame(
        [
            _symbols(p, s_idx[open_rows]),
            pl.Series("side", ["short", "long"], dtype=pl.String).gather((u1[open_rows] > 0).astype(np.int64)),
            _ts_series("entry_ts", p.ts_us[t_idx[open_rows]]),
            _ts_series("exit_ts", p.ts_us[np.maximum(exit_t, 0)], valid=closed),
            pl.Series("closed", closed),
            pl.Series(
                "entry_notional", np.abs(sim.filled[t_idx[open_rows], s_idx[open_rows]]) * (1 - part_close[open_rows])
            ),
            pl.Series("costs", tcost),
            pl.Series("pnl", pnl),
        ]
    )


def _funding_by_symbol(sim: _Sim) -> np.ndarray:
    """(T × N) funding attributed to each symbol: shorts on their notional, borrowing pro rata to longs."""
    long_p = np.maximum(sim.units, 0.0) * sim.mark_close
    short_p = np.maximum(-sim.units, 0.0) * sim.mark_close
    long_tot = long_p.sum(axis=1)
    borrow = np.maximum(long_tot - (sim.value + sim.funding), 0.0)  # value before the charge
    share = np.where(long_tot > 0, borrow / np.where(long_tot > 0, long_tot, 1.0), 0.0)
    return sim.k_fund * (short_p + long_p * share[:, None])
