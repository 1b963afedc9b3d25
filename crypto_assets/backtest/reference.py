"""A slow, deliberately plain re-implementation of the backtest semantics, used by the tests to check the engine.

One bar and one symbol at a time, with dicts and floats; it shares nothing with the engine except
`CostModel`. It follows the same documented rules (see `crypto_assets.backtest.engine`'s module docstring):
decide at the close of t, fill at the open of t+1, participation cap on the execution bar's dollar volume
(volume × open), cost = |filled| × (fee + half_spread × spread_mult + vol_k σ + impact_k σ √(|filled| / ADV) ×
impact_mult) with ADV the mean volume × close of the symbol's bars among the last adv_window bars up to t and
the multipliers of the execution bar (1 by default), funding accrued pro rata at every close on short notional
plus borrowed long notional, round trips per DESIGN §3.4.
Too slow for real use (pure Python); fine for a few thousand bars.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from typing import Any

import polars as pl

from crypto_assets.backtest.costs import DEFAULT_CAPITAL, CostModel
from crypto_assets.timeframes import timeframe_delta


def _utc(ts: dt.datetime) -> dt.datetime:
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def reference_backtest(
    bars: pl.DataFrame,
    weights: pl.DataFrame,
    costs: CostModel,
    *,
    initial_value: float = DEFAULT_CAPITAL,
    timeframe: str = "1h",
    multipliers: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """Same inputs as `run_backtest`; returns a dict of polars frames with the engine's column names
    (`equity`, `costs`, `trades`, `weights`, `round_trips`, `turnover`) plus `total_turnover`.
    multipliers (`symbol, ts, spread_mult, impact_mult`, ts = execution bar) scale the half-spread and the
    impact of fills at that bar; no validation here."""
    step = timeframe_delta(timeframe)
    mult: dict[tuple[str, dt.datetime], tuple[float, float]] = {}
    for row in (multipliers if multipliers is not None else pl.DataFrame()).iter_rows(named=True):
        mult[(row["symbol"], _utc(row["ts"]))] = (row.get("spread_mult", 1.0), row.get("impact_mult", 1.0))
    bar: dict[tuple[str, dt.datetime], tuple[float, float, float]] = {}
    for row in bars.iter_rows(named=True):
        bar[(row["symbol"], _utc(row["ts"]))] = (float(row["open"]), float(row["close"]), float(row["volume"]))
    symbols = sorted({s for s, _ in bar})
    first_ts = {s: min(t for (s2, t) in bar if s2 == s) for s in symbols}
    start, end = min(t for _, t in bar), max(t for _, t in bar)
    grid: list[dt.datetime] = []
    t = start
    while t <= end:
        grid.append(t)
        t += step

    # orders by decision bar, with the strict checks and the leverage cap
    orders: dict[dt.datetime, dict[str, float]] = {}
    for row in weights.iter_rows(named=True):
        sym, ts, w = row["symbol"], _utc(row["ts"]), float(row["weight"])
        if ts < first_ts[sym] and w != 0:
            raise ValueError(f"nonzero weight before listing for {sym} at {ts}")
        if w < 0 and not costs.allow_short:
            raise ValueError(f"short weight for {sym} at {ts}")
        orders.setdefault(ts, {})[sym] = w
    targets: dict[dt.datetime, dict[str, float]] = {}
    for ts, row_w in orders.items():
        gross = sum(abs(w) for w in row_w.values())
        factor = costs.max_leverage / gross if gross > costs.max_leverage else 1.0
        targets[ts] = {s: w * factor for s, w in row_w.items()}

    def sigma(sym: str, k: int) -> float:
        rets = []
        for j in range(max(1, k - costs.vol_window + 1), k + 1):
            now, before = bar.get((sym, grid[j])), bar.get((sym, grid[j - 1]))
            if now is not None and before is not None:
                rets.append(now[1] / before[1] - 1.0)
        return statistics.stdev(rets) if len(rets) >= 2 else 0.0

    def adv(sym: str, k: int) -> float:
        """Mean volume × close of the symbol's bars among grid[k − adv_window + 1 .. k]; 0 if it has none."""
        dvs = [b[2] * b[1] for j in range(max(0, k - costs.adv_window + 1), k + 1) if (b := bar.get((sym, grid[j])))]
        return sum(dvs) / len(dvs) if dvs else 0.0

    fee_rate = costs.maker_fee if costs.fee_side == "maker" else costs.taker_fee
    k_fund = costs.funding_rate_8h * step.total_seconds() / (8 * 3600)
    cash = initial_value
    units = {s: 0.0 for s in symbols}
    last_close = {s: 0.0 for s in symbols}
    equity, cost_rows, trades, order_rows, turnover = [], [], [], [], []
    # open round trip per symbol: dict with its running numbers
    current: dict[str, dict[str, Any]] = {}
    round_trips: list[dict[str, Any]] = []

    def open_trip(sym: str, ts: dt.datetime, units_after: float, notional: float, pnl: float, cost: float) -> None:
        current[sym] = {
            "symbol": sym,
            "side": "long" if units_after > 0 else "short",
            "entry_ts": ts,
            "exit_ts": None,
            "closed": False,
            "entry_notional": notional,
            "pnl": pnl,
            "costs": cost,
        }

    def book(sym: str, ts: dt.datetime, du: float, flow: float, cost: float, notional: float) -> None:
        """Attribute a fill (units du, cash flow, cost) to the symbol's round trips."""
        u0 = units[sym] - du  # position before this fill (units already updated)
        u1 = units[sym]
        if u0 != 0 and u1 != 0 and (u0 > 0) != (u1 > 0):  # flip: split by units
            share = abs(u0) / abs(du)
            tr = current.pop(sym)
            tr["pnl"] += flow * share
            tr["costs"] += cost * share
            tr["exit_ts"], tr["closed"] = ts, True
            round_trips.append(tr)
            open_trip(sym, ts, u1, abs(notional) * (1 - share), flow * (1 - share), cost * (1 - share))
            return
        if u0 == 0:
            open_trip(sym, ts, u1, abs(notional), 0.0, 0.0)
        tr = current[sym]
        tr["pnl"] += flow
        tr["costs"] += cost
        if u1 == 0:
            tr["exit_ts"], tr["closed"] = ts, True
            round_trips.append(current.pop(sym))

    for k, ts in enumerate(grid):
        fees = slips = imps = 0.0
        traded_total = 0.0
        n_fills = n_capped = 0
        v_open = math.nan
        if k >= 1 and grid[k - 1] in targets:
            v_open = cash
            for s in symbols:
                b = bar.get((s, ts))
                v_open += units[s] * (b[0] if b is not None else last_close[s])
            for s in symbols:
                if s not in targets[grid[k - 1]]:
                    continue
                target = targets[grid[k - 1]][s]
                b = bar.get((s, ts))
                dollar_vol = b[2] * b[0] if b is not None else 0.0  # the execution bar's: the cap
                avg_dv = adv(s, k - 1)  # the decision bar's trailing mean: impact
                blocked = (
                    b is None
                    or (dollar_vol == 0 and (costs.max_participation is not None or costs.impact_k > 0))
                    or (avg_dv == 0 and costs.impact_k > 0)
                )
                if not blocked:
                    price = b[0]  # type: ignore[index]
                    desired = target * v_open
                    wanted = desired - units[s] * price
                    filled = wanted
                    if costs.max_participation is not None:
                        limit = costs.max_participation * dollar_vol
                        filled = max(-limit, min(limit, wanted))
                    if filled != 0:
                        sig = sigma(s, k - 1)
                        size = abs(filled)
                        fee = size * fee_rate
                        spread_m, impact_m = mult.get((s, ts), (1.0, 1.0))
                        slip = size * (costs.half_spread * spread_m + costs.vol_k * sig)
                        imp = size * costs.impact_k * sig * math.sqrt(size / avg_dv) if costs.impact_k > 0 else 0.0
                        imp *= impact_m
                        before = units[s]
                        units[s] = desired / price if filled == wanted else units[s] + filled / price
                        cash -= filled + fee + slip + imp
                        fees, slips, imps = fees + fee, slips + slip, imps + imp
                        traded_total += size
                        n_fills += 1
                        n_capped += filled != wanted
                        trades.append(
                            {
                                "symbol": s,
                                "ts": ts,
                                "side": "buy" if filled > 0 else "sell",
                                "units": units[s] - before,
                                "price": price,
                                "notional": filled,
                                "requested_notional": wanted,
                                "fee": fee,
                                "slippage": slip,
                                "impact": imp,
                                "cost": fee + slip + imp,
                            }
                        )
                        book(s, ts, units[s] - before, -filled - (fee + slip + imp), fee + slip + imp, filled)
                mark = b[0] if b is not None else last_close[s]
                order_rows.append(
                    {
                        "symbol": s,
                        "ts": grid[k - 1],
                        "exec_ts": ts,
                        "requested": orders[grid[k - 1]][s],
                        "target": target,
                        "filled": units[s] * mark / v_open,
                    }
                )
        for s in symbols:
            b = bar.get((s, ts))
            if b is not None:
                last_close[s] = b[1]
        funding = 0.0
        if k_fund > 0:
            long_n = sum(max(units[s], 0.0) * last_close[s] for s in symbols)
            short_n = sum(max(-units[s], 0.0) * last_close[s] for s in symbols)
            v_pre = cash + long_n - short_n
            borrowed = max(long_n - v_pre, 0.0)
            funding = k_fund * (short_n + borrowed)
            cash -= funding
            for s in symbols:
                if units[s] != 0:
                    notional = abs(units[s]) * last_close[s]
                    part = k_fund * (notional if units[s] < 0 else borrowed * notional / long_n)
                    current[s]["pnl"] -= part
                    current[s]["costs"] += part
        value = cash + sum(units[s] * last_close[s] for s in symbols)
        equity.append({"ts": ts, "value": value, "cash": cash})
        cost_rows.append(
            {
                "ts": ts,
                "fees": fees,
                "slippage": slips,
                "impact": imps,
                "funding": funding,
                "total": fees + slips + imps + funding,
            }
        )
        turnover.append(
            {
                "ts": ts,
                "traded_notional": traded_total,
                "turnover": traded_total / v_open if traded_total > 0 else 0.0,
                "fills": n_fills,
                "capped_fills": n_capped,
            }
        )
    # orders decided at the last bar never execute
    if grid[-1] in targets:
        for s, target in targets[grid[-1]].items():
            order_rows.append(
                {
                    "symbol": s,
                    "ts": grid[-1],
                    "exec_ts": None,
                    "requested": orders[grid[-1]][s],
                    "target": target,
                    "filled": None,
                }
            )
    for s, tr in current.items():
        tr["pnl"] += units[s] * last_close[s]
        round_trips.append(tr)

    ts_type = pl.Datetime("us", "UTC")
    return {
        "equity": pl.DataFrame(equity, schema={"ts": ts_type, "value": pl.Float64, "cash": pl.Float64}),
        "costs": pl.DataFrame(
            cost_rows,
            schema={"ts": ts_type, **{c: pl.Float64 for c in ("fees", "slippage", "impact", "funding", "total")}},
        ),
        "turnover": pl.DataFrame(
            turnover,
            schema={
                "ts": ts_type,
                "traded_notional": pl.Float64,
                "turnover": pl.Float64,
                "fills": pl.Int64,
                "capped_fills": pl.Int64,
            },
        ),
        "total_turnover": sum(r["turnover"] for r in turnover),
        "trades": pl.DataFrame(
            trades,
            schema={
                "symbol": pl.String,
                "ts": ts_type,
                "side": pl.String,
                **{
                    c: pl.Float64
                    for c in ("units", "price", "notional", "requested_notional", "fee", "slippage", "impact", "cost")
                },
            },
        ),
        "weights": pl.DataFrame(
            order_rows,
            schema={
                "symbol": pl.String,
                "ts": ts_type,
                "exec_ts": ts_type,
                "requested": pl.Float64,
                "target": pl.Float64,
                "filled": pl.Float64,
            },
        ),
        "round_trips": pl.DataFrame(
            round_trips,
            schema={
                "symbol": pl.String,
                "side": pl.String,
                "entry_ts": ts_type,
                "exit_ts": ts_type,
                "closed": pl.Boolean,
                "entry_notional": pl.Float64,
                "costs": pl.Float64,
                "pnl": pl.Float64,
            },
        ),
    }
