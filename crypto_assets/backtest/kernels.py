"""The compiled per-bar functions of the backtest (numba, cached on disk) and the bar-by-bar loop.

The recursion (each fill depends on the value left by the previous bar) is built from three per-bar functions
that the RL trading environment (`crypto_assets.agents.env`) calls too, so the environment's costs and equity
ARE the engine's (one code path, not a copy). They take typed records rather than positional arrays: the
market as a `MarketPanel` (rows = execution bars) with a row index, the cost model as `CostParams`:

    execute_bar(units, cash, market, e, target, costs, filled, requested) -> BarFill
        the fills at the open of execution bar e (target NaN = no order): new units (in place), cash, costs
    accrue_funding(units, cash, market, t, costs) -> (cash, funding)   the holding cost charged at close t
    mark_to_market(units, cash, market, t) -> value                     portfolio value at close t

`fill_cost` prices one fill; `simulate` is the engine's loop over all bars. The rules are documented in
`crypto_assets.backtest.engine`. Every cached kernel that calls another lives in this one file: numba's disk
cache checks only the calling function's own source file, so a callee elsewhere could change unnoticed.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from crypto_assets.backtest.costs import CostParams
from crypto_assets.backtest.market import MarketPanel


class BarFill(NamedTuple):
    """What `execute_bar` returns: cash after the fills and their costs, the portfolio value at the open, the
    bar's fees, slippage (half-spread + vol part) and impact, and Σ|filled notional|; money in quote currency."""

    cash: float
    v_open: float
    fees: float
    slippage: float
    impact: float
    traded: float


class Trace(NamedTuple):
    """What `simulate` returns, rows = bars: units, cash, value and funding at each close; filled notional
    (signed) and the notional asked for before the participation cap ((0, N) unless kept) at each open; the
    value at the open of bars with orders (NaN elsewhere); (T × 4) fees, slippage, impact and Σ|filled|."""

    units: np.ndarray
    cash: np.ndarray
    value: np.ndarray
    funding: np.ndarray
    filled: np.ndarray
    requested: np.ndarray
    v_open: np.ndarray
    parts: np.ndarray


@njit(cache=True)
def fill_cost(
    size: float, sigma: float, adv: float, spread_mult: float, impact_mult: float, costs: CostParams
) -> tuple[float, float, float]:
    """(fee, slippage, impact) of one fill of |filled notional| `size`: σ and ADV of the decision bar, the cost
    multipliers of the execution bar. Scalars, not the market record: this runs once per fill, and passing a
    record of arrays costs a reference count per array per call (measured: ~5× slower trades table)."""
    fee = size * costs.fee
    slippage = size * (costs.half_spread * spread_mult + costs.vol_k * sigma)
    impact = 0.0
    if costs.impact_k > 0.0 and size > 0.0:  # ADV > 0 here: ADV = 0 blocks the order
        impact = size * costs.impact_k * sigma * math.sqrt(size / adv) * impact_mult
    return fee, slippage, impact


@njit(cache=True)
def execute_bar(
    units: np.ndarray,
    cash: float,
    market: MarketPanel,
    e: int,
    target: np.ndarray,
    costs: CostParams,
    filled: np.ndarray,
    requested: np.ndarray,
) -> BarFill:
    """The fills at the open of execution bar e of `market` (engine docstring, "Execution"); arrays are (N,).

    units: held before the bar, updated IN PLACE. Read from row e of `market`: mark_open (the open, or the
    last close where a symbol has no bar), open (NaN where the symbol has no bar: cannot fill), sigma and adv
    (of the decision bar), dollar_vol (volume × open of this bar: the participation cap's base) and the cost
    multipliers. target: weights decided at the previous close, NaN = no order. filled / requested: outputs,
    signed notional filled and asked for (before the participation cap); 0 where nothing was ordered or
    fillable.
    """
    n = units.shape[0]
    v_open = cash
    for i in range(n):
        v_open += units[i] * market.mark_open[e, i]
    cap = costs.max_participation
    blocks = costs.zero_volume_blocks
    has_impact = costs.impact_k > 0.0
    flow = 0.0
    fees = 0.0
    slippage = 0.0
    impact = 0.0
    traded_total = 0.0
    for i in range(n):
        filled[i] = 0.0
        requested[i] = 0.0
        w = target[i]
        px = market.open[e, i]
        dv = market.dollar_vol[e, i]
        # no order; no bar (gap, not listed: NaN fails the test); zero volume where it blocks the fill; no ADV
        # to divide by under impact
        if math.isnan(w) or not px > 0.0 or (blocks and not dv > 0.0) or (has_impact and not market.adv[e, i] > 0.0):
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
        fee, slip, imp = fill_cost(
            size, market.sigma[e, i], market.adv[e, i], market.spread_mult[e, i], market.impact_mult[e, i], costs
        )
        filled[i] = fill
        flow += fill
        fees += fee
        slippage += slip
        impact += imp
        traded_total += size
    cash -= flow + (fees + slippage + impact)
    return BarFill(cash, v_open, fees, slippage, impact, traded_total)


@njit(cache=True)
def accrue_funding(
    units: np.ndarray, cash: float, market: MarketPanel, t: int, costs: CostParams
) -> tuple[float, float]:
    """Charge the holding cost at close t (engine docstring, "Holding costs"): (cash after, funding charged)."""
    k_fund = costs.funding_per_bar
    if k_fund == 0.0:
        return cash, 0.0
    long_n = 0.0
    short_n = 0.0
    for i in range(units.shape[0]):
        x = units[i] * market.mark_close[t, i]
        if x > 0.0:
            long_n += x
        else:
            short_n -= x
    funding = k_fund * (short_n + max(long_n - (cash + long_n - short_n), 0.0))  # borrowed = long − V_pre
    return cash - funding, funding


@njit(cache=True)
def mark_to_market(units: np.ndarray, cash: float, market: MarketPanel, t: int) -> float:
    """Portfolio value at close t: cash + Σ units × mark."""
    value = cash
    for i in range(units.shape[0]):
        value += units[i] * market.mark_close[t, i]
    return value


@njit(cache=True)
def fill_costs(
    size: np.ndarray, market: MarketPanel, t_idx: np.ndarray, s_idx: np.ndarray, costs: CostParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`fill_cost` of fills of |notional| size[k] at cells (t_idx[k], s_idx[k]) (the trades table: the same
    numbers the kernel charged)."""
    n = size.shape[0]
    fee, slip, imp = np.empty(n), np.empty(n), np.empty(n)
    for k in range(n):
        t, i = t_idx[k], s_idx[k]
        fee[k], slip[k], imp[k] = fill_cost(
            size[k], market.sigma[t, i], market.adv[t, i], market.spread_mult[t, i], market.impact_mult[t, i], costs
        )
    return fee, slip, imp


@njit(cache=True)
def simulate(
    targets: np.ndarray, market: MarketPanel, costs: CostParams, initial_value: float, keep_requested: bool
) -> Trace:
    """The bar-by-bar recursion; `targets` (T × N) has rows = execution bars, NaN = no order.

    At each bar: the orders decided at the previous close fill at the open (`execute_bar`, where the row of
    `targets` has any non-NaN), funding accrues at the close (`accrue_funding`), the book is marked
    (`mark_to_market`).
    """
    n_t, n_s = targets.shape
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
            if not math.isnan(targets[t, i]):
                has_order = True
                break
        if has_order:  # visit even unfillable orders: their `filled` weight needs the value at that open
            bar = execute_bar(units, cash, market, t, targets[t], costs, filled, requested)
            cash = bar.cash
            TR[t] = filled
            if keep_requested:
                REQ[t] = requested
            VOPEN[t] = bar.v_open
            PARTS[t, 0] = bar.fees
            PARTS[t, 1] = bar.slippage
            PARTS[t, 2] = bar.impact
            PARTS[t, 3] = bar.traded
        if costs.funding_per_bar > 0.0:
            cash, funding = accrue_funding(units, cash, market, t, costs)
            FUND[t] = funding
        U[t] = units
        CASH[t] = cash
        VALUE[t] = mark_to_market(units, cash, market, t)
    return Trace(U, CASH, VALUE, FUND, TR, REQ, VOPEN, PARTS)
