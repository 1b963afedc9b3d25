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
    slippage_i = half_spread × spread_mult_i + vol_k × σ_i            ("slippage" column: spread + volatility)
               + impact_k × σ_i × √(|filled_i| / ADV_i) × impact_mult_i ("impact" column: square-root law, on
                                                                         the filled size)
    ADV_i      = mean of volume × close over the bars of symbol i among the last `adv_window` bars up to and
                 including the decision bar t          (trailing, causal mean dollar volume per bar)
    spread_mult_i, impact_mult_i = the cost multipliers of symbol i at the execution bar e (`run_backtest(...,
                 multipliers=...)`, default 1: the cost model as configured)

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

Cost multipliers (stress scenarios)
-----------------------------------
`multipliers` (long `symbol, ts, spread_mult, impact_mult`, either factor column optional) scales two parts of
the cost of each fill by the conditions of its EXECUTION bar `ts` (a fill at the open of `ts`): spread_mult the
half-spread, impact_mult the square-root impact term; finite factors ≥ 0, 1 wherever no row is given. A panic
replay widens both (e.g. ×5 spread, ×3 impact over a crash week). Fees, the volatility part (σ already rises
in a panic) and the participation cap are not scaled, and neither is whether an order can fill: a factor of 0
zeroes a cost, it does not turn ADV = 0 into a fillable bar. All ones is bit-identical to no multipliers.

Implementation
--------------
Modules: `costs` (`CostModel`, and `CostParams`, the record the kernels read), `market` (long bars validated
into dense (bars × symbols) panels: `Market`, its kernel record `MarketPanel`, σ and ADV as compiled passes over
each window, bit-for-bit causal), `kernels` (the numba per-bar functions and the loop), `results`
(`BacktestResult` and the long-format outputs, built on first access); this module validates the weights and
runs them. The recursion (each fill depends on the value left by the previous bar) is a numba loop over three
per-bar functions that the RL trading environment (`crypto_assets.agents.env`) calls too, so the environment's
costs and equity ARE the engine's (one code path, not a copy):

    execute_bar(units, cash, market, e, target, costs, filled, requested) -> BarFill
        the fills at the open of execution bar e (target NaN = no order) → new units (in place), cash, costs
    accrue_funding(units, cash, market, t, costs)     the holding cost charged at close t
    mark_to_market(units, cash, market, t)            portfolio value at close t

`market` is a `MarketPanel` (named (T × N) arrays, rows = execution bars) and `costs` a `CostParams` (the
`CostModel` on the run's timeframe): typed NamedTuple records rather than a dozen positional arrays. Kernels are
compiled on first use and cached on disk (numba `cache=True`). Long-format outputs are built on first access.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from crypto_assets.backtest.costs import DEFAULT_CAPITAL, CostModel
from crypto_assets.backtest.kernels import simulate
from crypto_assets.backtest.market import Market, first_duplicate, fmt_ts, grid_cells, require_columns, shift_down
from crypto_assets.backtest.results import BacktestResult, Simulation, backtest_result


def _weight_panel(weights: pl.DataFrame, p: Market, costs: CostModel) -> tuple[np.ndarray, np.ndarray]:
    """The requested weights as a T × N panel (NaN = no order) and the leverage-cap scale of each decision
    bar (T,); validates the strict rules."""
    require_columns(weights, ["symbol", "ts", "weight"], "weights")
    n_t, n_s = p.open.shape
    requested = np.full(n_t * n_s, np.nan)
    if weights.height == 0:
        return requested.reshape(n_t, n_s), np.ones(n_t)
    t_idx, sym, ts_us = grid_cells(weights, p.symbols, p.ts_us, p.step_us, "weights", "weight")
    w = weights["weight"].cast(pl.Float64).to_numpy()

    def where(k: int) -> str:
        return f"{p.symbols[sym[k]]} at {fmt_ts(int(ts_us[k]))}"

    if not np.isfinite(w).all():
        raise ValueError(f"weight must be finite: {where(int(np.nonzero(~np.isfinite(w))[0][0]))}")
    dup = first_duplicate(t_idx * n_s + sym, n_t * n_s)
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


def run_backtest(
    bars: pl.DataFrame,
    weights: pl.DataFrame,
    costs: CostModel = CostModel(),  # noqa: B008 (a frozen dataclass: immutable)
    *,
    initial_value: float = DEFAULT_CAPITAL,
    timeframe: str = "1h",
    multipliers: pl.DataFrame | None = None,
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
    multipliers: optional long `symbol, ts, spread_mult, impact_mult` (either factor column may be left out):
    factors on the half-spread and on the impact term of fills at the open of bar `ts` (the execution bar),
    finite and ≥ 0, 1 where no row is given (module docstring, "Cost multipliers"). Validated like the weights:
    known symbols, on the bars' grid, one row per (symbol, ts).

    Raises ValueError for malformed inputs, a nonzero weight where the symbol has not listed yet, or a short
    when `costs.allow_short` is False.
    """
    if not (math.isfinite(initial_value) and initial_value > 0):
        raise ValueError(f"initial_value must be > 0, got {initial_value!r}")
    market = Market.from_bars(bars, costs, timeframe, multipliers=multipliers)
    requested, scale = _weight_panel(weights, market, costs)
    # rows indexed by execution bar e (decision bar e − 1); NaN = no order
    targets = np.ascontiguousarray(shift_down(requested * scale[:, None], fill=np.nan))
    params = costs.kernel_params(market.step_us)
    trace = simulate(targets, market.panel, params, float(initial_value), costs.max_participation is not None)
    return backtest_result(
        Simulation(
            market=market,
            costs=costs,
            params=params,
            initial_value=float(initial_value),
            requested=requested,
            scale=scale,
            trace=trace,
        )
    )
