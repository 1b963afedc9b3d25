"""The outputs of a backtest: `BacktestResult` (per-bar frames built eagerly, long-format frames on first
access) from the dense arrays of one simulation (`Simulation`). Column meanings are on `BacktestResult`;
the rules that produced the numbers are documented in `crypto_assets.backtest.engine`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl

from crypto_assets.backtest.costs import CostModel, CostParams
from crypto_assets.backtest.kernels import Trace, fill_costs
from crypto_assets.backtest.market import Market, ts_series
from crypto_assets.sources.base import TS_DTYPE


@dataclass(frozen=True)
class Simulation:
    """The dense (T × N) inputs and results of one run, kept for building the long-format outputs on demand."""

    market: Market
    costs: CostModel
    params: CostParams  # `costs` on the market's timeframe, as the kernels charged them
    initial_value: float
    requested: np.ndarray  # weights as given at decision bars, NaN = no order
    scale: np.ndarray  # (T,) leverage-cap factor of each decision bar: target = requested × scale
    trace: Trace  # units, cash, value, funding at each close; fills at each open (rows = bars)

    @property
    def units(self) -> np.ndarray:
        return self.trace.units

    @property
    def value(self) -> np.ndarray:
        return self.trace.value

    @property
    def filled(self) -> np.ndarray:
        return self.trace.filled

    @property
    def requested_notional(self) -> np.ndarray:
        """Traded notional before the participation cap (without a cap, what was asked for is what filled)."""
        return self.trace.requested if self.costs.max_participation is not None else self.trace.filled

    def fill_costs(self, t_idx: np.ndarray, s_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fee, slippage, impact) of the fills at cells (t, s), by the function the kernel charged them with."""
        size = np.ascontiguousarray(np.abs(self.filled[t_idx, s_idx]))
        return fill_costs(size, self.market.panel, t_idx.astype(np.int64), s_idx.astype(np.int64), self.params)


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
    _sim: Simulation = field(repr=False)

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


def backtest_result(sim: Simulation) -> BacktestResult:
    """The per-bar frames of `sim` (the long-format ones are built on first access)."""
    tr, p = sim.trace, sim.market
    fees_b, slip_b, imp_b, traded = tr.parts[:, 0], tr.parts[:, 1], tr.parts[:, 2], tr.parts[:, 3]
    turn = np.where(traded > 0, traded / np.where(np.isnan(tr.v_open), 1.0, tr.v_open), 0.0)
    ts = ts_series("ts", p.ts_us)
    prev_value = np.concatenate([[sim.initial_value], tr.value[:-1]])
    req = sim.requested_notional
    return BacktestResult(
        equity=pl.DataFrame([ts, pl.Series("value", tr.value), pl.Series("cash", tr.cash)]),
        returns=pl.DataFrame([ts, pl.Series("return", tr.value / prev_value - 1.0)]),
        costs=pl.DataFrame(
            [
                ts,
                pl.Series("fees", fees_b),
                pl.Series("slippage", slip_b),
                pl.Series("impact", imp_b),
                pl.Series("funding", tr.funding),
                pl.Series("total", fees_b + slip_b + imp_b + tr.funding),
            ]
        ),
        turnover=pl.DataFrame(
            [
                ts,
                pl.Series("traded_notional", traded),
                pl.Series("turnover", turn),
                pl.Series("fills", np.count_nonzero(tr.filled, axis=1).astype(np.int64)),
                # a capped fill stopped at the cap: less than asked for (an uncapped one is exactly what was asked)
                pl.Series(
                    "capped_fills", np.count_nonzero((tr.filled != 0) & (np.abs(tr.filled) < np.abs(req)), axis=1)
                ),
            ]
        ),
        total_turnover=float(turn.sum()),
        n_scaled=int(np.count_nonzero(sim.scale < 1.0)),
        _sim=sim,
    )


def _symbols(p: Market, s_idx: np.ndarray) -> pl.Series:
    return pl.Series("symbol", p.symbols, dtype=pl.String).gather(s_idx)


def _cells(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t, s) indices of the True cells of a (T × N) mask, ordered by symbol then bar."""
    flat = np.flatnonzero(mask.T)
    n_t = mask.shape[0]
    return flat % n_t, flat // n_t


def _positions(sim: Simulation) -> pl.DataFrame:
    p = sim.market
    t_idx, s_idx = _cells(np.arange(p.open.shape[0])[:, None] >= p.first_bar[None, :])
    units = sim.units[t_idx, s_idx]
    value = units * sim.market.mark_close[t_idx, s_idx]
    return pl.DataFrame(
        [
            _symbols(p, s_idx),
            ts_series("ts", p.ts_us[t_idx]),
            pl.Series("units", units),
            pl.Series("value", value),
            pl.Series("weight", value / sim.value[t_idx]),
        ]
    )


def _orders(sim: Simulation) -> pl.DataFrame:
    p = sim.market
    n_t = p.open.shape[0]
    t_idx, s_idx = _cells(~np.isnan(sim.requested))
    has_next = t_idx + 1 < n_t
    e = np.minimum(t_idx + 1, n_t - 1)
    filled = sim.units[e, s_idx] * sim.market.mark_open[e, s_idx] / sim.trace.v_open[e]
    return pl.DataFrame(
        [
            _symbols(p, s_idx),
            ts_series("ts", p.ts_us[t_idx]),
            ts_series("exec_ts", p.ts_us[e], valid=has_next),
            pl.Series("requested", sim.requested[t_idx, s_idx]),
            pl.Series("target", sim.requested[t_idx, s_idx] * sim.scale[t_idx]),
            pl.Series("filled", np.where(has_next, filled, np.nan)).fill_nan(None),
        ]
    )


def _fills(sim: Simulation) -> pl.DataFrame:
    p = sim.market
    t_idx, s_idx = _cells(sim.filled != 0)
    notional = sim.filled[t_idx, s_idx]
    fee, slip, imp = sim.fill_costs(t_idx, s_idx)
    return pl.DataFrame(
        [
            _symbols(p, s_idx),
            ts_series("ts", p.ts_us[t_idx]),
            pl.Series("side", ["sell", "buy"], dtype=pl.String).gather((notional > 0).astype(np.int64)),
            pl.Series("units", sim.units[t_idx, s_idx] - sim.units[t_idx - 1, s_idx]),  # t >= 1 for any fill
            pl.Series("price", sim.market.mark_open[t_idx, s_idx]),
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


def _round_trips(sim: Simulation) -> pl.DataFrame:
    """Segment each symbol's fills (ordered by symbol, then bar) into DESIGN §3.4 round trips."""
    p = sim.market
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
    if sim.params.funding_per_bar > 0:
        fund_p = _funding_by_symbol(sim)
        cum = np.vstack([np.zeros((1, n_s)), np.cumsum(fund_p, axis=0)])
        fund = cum[t_next, s_idx] - cum[t_idx, s_idx]
        held = u1 != 0
        fund_tr = np.bincount(trade[held], weights=fund[held], minlength=n_tr)
        pnl -= fund_tr
        tcost += fund_tr
    # Trades still open at the end are marked at the last close.
    last = ~same_next & (u1 != 0)
    pnl[trade[last]] += u1[last] * sim.market.mark_close[-1, s_idx[last]]

    open_rows = np.nonzero(opens)[0]
    close_rows = np.nonzero(closes)[0]
    exit_t = np.full(n_tr, -1, dtype=np.int64)
    exit_t[trade[close_rows] - flip[close_rows]] = t_idx[close_rows]
    closed = exit_t >= 0
    return pl.DataFrame(
        [
            _symbols(p, s_idx[open_rows]),
            pl.Series("side", ["short", "long"], dtype=pl.String).gather((u1[open_rows] > 0).astype(np.int64)),
            ts_series("entry_ts", p.ts_us[t_idx[open_rows]]),
            ts_series("exit_ts", p.ts_us[np.maximum(exit_t, 0)], valid=closed),
            pl.Series("closed", closed),
            pl.Series(
                "entry_notional", np.abs(sim.filled[t_idx[open_rows], s_idx[open_rows]]) * (1 - part_close[open_rows])
            ),
            pl.Series("costs", tcost),
            pl.Series("pnl", pnl),
        ]
    )


def _funding_by_symbol(sim: Simulation) -> np.ndarray:
    """(T × N) funding attributed to each symbol: shorts on their notional, borrowing pro rata to longs."""
    long_p = np.maximum(sim.units, 0.0) * sim.market.mark_close
    short_p = np.maximum(-sim.units, 0.0) * sim.market.mark_close
    long_tot = long_p.sum(axis=1)
    borrow = np.maximum(long_tot - (sim.value + sim.trace.funding), 0.0)  # value before the charge
    share = np.where(long_tot > 0, borrow / np.where(long_tot > 0, long_tot, 1.0), 0.0)
    return sim.params.funding_per_bar * (short_p + long_p * share[:, None])
