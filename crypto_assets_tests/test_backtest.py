"""Backtest engine (DESIGN §3.3): hand-worked cases per cost component, the strict rules, invariants, and
agreement with the slow reference loop on random inputs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import statistics
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from crypto_assets.backtest import BacktestResult, CostModel, run_backtest
from crypto_assets.backtest.kernels import execute_bar, fill_cost
from crypto_assets.backtest.market import MarketPanel
from crypto_assets.backtest.reference import reference_backtest
from crypto_assets.timeframes import timeframe_us
from crypto_assets_tests.builders import ALL_ON

T0 = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
TS = pl.Datetime("us", "UTC")
# Only the component under test is switched on.
NO_COSTS = CostModel(taker_fee=0.0, maker_fee=0.0, half_spread=0.0, vol_k=0.0, impact_k=0.0, max_participation=None)


def with_(costs: CostModel, **changes: object) -> CostModel:
    return dataclasses.replace(costs, **changes)  # type: ignore[arg-type]


def ts(k: int, step: dt.timedelta = HOUR) -> dt.datetime:
    return T0 + k * step


def make_bars(
    spec: dict[str, list[tuple[float, float, float]]], start: dict[str, int] | None = None, step: dt.timedelta = HOUR
) -> pl.DataFrame:
    """spec: symbol → [(open, close, volume), ...] for consecutive bars from bar index start[symbol]."""
    rows = []
    for sym, bars in spec.items():
        k0 = (start or {}).get(sym, 0)
        for j, (o, c, v) in enumerate(bars):
            rows.append((sym, ts(k0 + j, step), o, max(o, c), min(o, c), c, v))
    return pl.DataFrame(
        rows,
        schema={
            "symbol": pl.String,
            "ts": TS,
            "open": pl.Float64,
            "high": pl.Float64,
            "low": pl.Float64,
            "close": pl.Float64,
            "volume": pl.Float64,
        },
        orient="row",
    )


def make_weights(rows: list[tuple[str, int, float]], step: dt.timedelta = HOUR) -> pl.DataFrame:
    return pl.DataFrame(
        [(s, ts(k, step), w) for s, k, w in rows],
        schema={"symbol": pl.String, "ts": TS, "weight": pl.Float64},
        orient="row",
    )


def make_multipliers(rows: list[tuple[str, int, float, float]]) -> pl.DataFrame:
    """rows: (symbol, execution bar index, spread_mult, impact_mult)."""
    return pl.DataFrame(
        [(s, ts(k), sm, im) for s, k, sm, im in rows],
        schema={"symbol": pl.String, "ts": TS, "spread_mult": pl.Float64, "impact_mult": pl.Float64},
        orient="row",
    )


HOUR_US = timeframe_us("1h")


def one_bar_market(
    mark_open: np.ndarray,
    open_px: np.ndarray,
    sigma: np.ndarray,
    dollar_vol: np.ndarray,
    adv: np.ndarray,
    spread_mult: np.ndarray | None = None,
    impact_mult: np.ndarray | None = None,
) -> MarketPanel:
    """A one-row `MarketPanel` (execution bar 0) from (N,) arrays; the cost multipliers default to 1."""

    def row(a: np.ndarray | None) -> np.ndarray:
        return np.ascontiguousarray((np.ones_like(mark_open) if a is None else a)[None, :], dtype=np.float64)

    return MarketPanel(
        open=row(open_px),
        mark_open=row(mark_open),
        mark_close=row(mark_open),
        sigma=row(sigma),
        dollar_vol=row(dollar_vol),
        adv=row(adv),
        spread_mult=row(spread_mult),
        impact_mult=row(impact_mult),
    )


def values(result: BacktestResult) -> list[float]:
    return result.equity["value"].to_list()


FLAT = (100.0, 100.0, 1e9)


# ---------------------------------------------------------------- timing and each cost component, by hand


def test_fee_round_trip_by_hand() -> None:
    bars = make_bars({"BTC/USDT": [FLAT, (100.0, 110.0, 1e9), (110.0, 110.0, 1e9)]})
    weights = make_weights([("BTC/USDT", 0, 1.0), ("BTC/USDT", 1, 0.0)])
    r = run_backtest(bars, weights, with_(NO_COSTS, taker_fee=0.001), initial_value=1000.0)
    # bar 1 open: buy 1000 notional = 10 units, fee 1 → cash −1; close 110: V = −1 + 1100 = 1099
    # bar 2 open: sell 10 × 110 = 1100, fee 1.1 → cash 1097.9, flat
    assert values(r) == pytest.approx([1000.0, 1099.0, 1097.9], rel=1e-14)
    assert r.trades["fee"].to_list() == pytest.approx([1.0, 1.1], rel=1e-14)
    assert r.trades["side"].to_list() == ["buy", "sell"]
    assert r.trades["units"].to_list() == pytest.approx([10.0, -10.0], rel=1e-14)
    assert r.trades["price"].to_list() == [100.0, 110.0]
    assert r.trades["ts"].to_list() == [ts(1), ts(2)]  # executed at the next bar's open
    assert r.costs["fees"].to_list() == pytest.approx([0.0, 1.0, 1.1], rel=1e-14)
    assert r.returns["return"].to_list() == pytest.approx([0.0, 0.099, 1097.9 / 1099.0 - 1], rel=1e-12)
    assert r.equity["cash"][-1] == pytest.approx(1097.9, rel=1e-14)
    rt = r.round_trips.row(0, named=True)
    assert (rt["side"], rt["entry_ts"], rt["exit_ts"], rt["closed"]) == ("long", ts(1), ts(2), True)
    assert rt["pnl"] == pytest.approx(97.9, rel=1e-12)
    assert rt["costs"] == pytest.approx(2.1, rel=1e-12)
    assert r.turnover["turnover"].to_list() == pytest.approx([0.0, 1.0, 1100 / 1099], rel=1e-12)
    assert r.total_turnover == pytest.approx(1.0 + 1100 / 1099, rel=1e-12)


def test_maker_fee_side() -> None:
    bars = make_bars({"BTC/USDT": [FLAT, FLAT]})
    costs = CostModel(
        taker_fee=0.001,
        maker_fee=0.0002,
        fee_side="maker",
        half_spread=0.0,
        vol_k=0.0,
        impact_k=0.0,
        max_participation=None,
    )
    r = run_backtest(bars, make_weights([("BTC/USDT", 0, 0.5)]), costs, initial_value=1000.0)
    assert r.trades["fee"].to_list() == pytest.approx([0.1], rel=1e-14)  # 500 × 0.02 %
    assert values(r)[-1] == pytest.approx(999.9, rel=1e-14)


def test_half_spread_by_hand() -> None:
    bars = make_bars({"BTC/USDT": [FLAT, (100.0, 110.0, 1e9)]})
    costs = CostModel(taker_fee=0.0, half_spread=0.0005, vol_k=0.0, impact_k=0.0, max_participation=None)
    r = run_backtest(bars, make_weights([("BTC/USDT", 0, 1.0)]), costs, initial_value=1000.0)
    assert r.trades["slippage"].to_list() == pytest.approx([0.5], rel=1e-14)
    assert r.trades["fee"].to_list() == [0.0]
    assert values(r) == pytest.approx([1000.0, 1099.5], rel=1e-14)
    assert r.costs["slippage"].to_list() == pytest.approx([0.0, 0.5], rel=1e-14)


CLOSES = [100.0, 102.0, 100.0, 103.0, 103.0]


def _vol_bars(volume: float = 1e9) -> pl.DataFrame:
    return make_bars({"BTC/USDT": [(c, c, volume) for c in CLOSES]})


def test_vol_term_uses_returns_up_to_the_decision_bar() -> None:
    costs = CostModel(taker_fee=0.0, half_spread=0.0, vol_k=0.5, vol_window=3, impact_k=0.0, max_participation=None)
    # decided at the close of bar 3 → σ of the returns of bars 1..3; filled at the open of bar 4 (103)
    r = run_backtest(_vol_bars(), make_weights([("BTC/USDT", 3, 1.0)]), costs, initial_value=1000.0)
    sigma = statistics.stdev([102 / 100 - 1, 100 / 102 - 1, 103 / 100 - 1])
    assert r.trades["slippage"].to_list() == pytest.approx([1000.0 * 0.5 * sigma], rel=1e-12)
    assert values(r)[-1] == pytest.approx(1000.0 - 500.0 * sigma, rel=1e-12)
    # a window of 2 bars uses only the returns of bars 2 and 3
    r2 = run_backtest(
        _vol_bars(), make_weights([("BTC/USDT", 3, 1.0)]), with_(costs, vol_window=2), initial_value=1000.0
    )
    sigma2 = statistics.stdev([100 / 102 - 1, 103 / 100 - 1])
    assert r2.trades["slippage"].to_list() == pytest.approx([500.0 * sigma2], rel=1e-12)


def test_vol_term_is_zero_with_fewer_than_two_returns() -> None:
    costs = CostModel(taker_fee=0.0, half_spread=0.0, vol_k=0.5, vol_window=3, impact_k=0.0, max_participation=None)
    r = run_backtest(_vol_bars(), make_weights([("BTC/USDT", 1, 1.0)]), costs, initial_value=1000.0)  # one return
    assert r.trades.height == 1 and r.trades["slippage"].to_list() == [0.0]
    r = run_backtest(_vol_bars(), make_weights([("BTC/USDT", 2, 1.0)]), costs, initial_value=1000.0)  # two
    assert r.trades["slippage"][0] == pytest.approx(1000.0 * 0.5 * statistics.stdev([0.02, 100 / 102 - 1]))


def test_impact_term_by_hand() -> None:
    # ADV over 1 bar = the decision bar's 40 × 103 = 4120; order 1030 notional → √(1030 / 4120) = 0.5
    costs = CostModel(
        taker_fee=0.0, half_spread=0.0, vol_k=0.0, vol_window=3, adv_window=1, impact_k=1.0, max_participation=None
    )
    r = run_backtest(_vol_bars(volume=40.0), make_weights([("BTC/USDT", 3, 1.0)]), costs, initial_value=1030.0)
    sigma = statistics.stdev([102 / 100 - 1, 100 / 102 - 1, 103 / 100 - 1])
    assert r.trades["impact"].to_list() == pytest.approx([1030.0 * sigma * 0.5], rel=1e-12)
    assert r.trades["slippage"].to_list() == [0.0]
    assert r.costs["impact"].sum() == pytest.approx(1030.0 * sigma * 0.5, rel=1e-12)
    # the square-root law: a quarter of the size pays half the rate
    r4 = run_backtest(_vol_bars(volume=40.0), make_weights([("BTC/USDT", 3, 0.25)]), costs, initial_value=1030.0)
    assert r4.trades["impact"][0] / 257.5 == pytest.approx(0.5 * r.trades["impact"][0] / 1030.0, rel=1e-12)


def test_all_components_add_up() -> None:
    costs = CostModel(
        taker_fee=0.001, half_spread=0.0002, vol_k=0.5, vol_window=3, adv_window=1, impact_k=1.0, max_participation=None
    )
    r = run_backtest(_vol_bars(volume=40.0), make_weights([("BTC/USDT", 3, 1.0)]), costs, initial_value=1030.0)
    sigma = statistics.stdev([102 / 100 - 1, 100 / 102 - 1, 103 / 100 - 1])
    expected = 1030.0 * (0.001 + 0.0002 + 0.5 * sigma + sigma * 0.5)
    assert r.trades["cost"][0] == pytest.approx(expected, rel=1e-12)
    assert values(r)[-1] == pytest.approx(1030.0 - expected, rel=1e-12)  # bought at 103, closed at 103


# ---------------------------------------------------------------- per-bar cost multipliers (stress scenarios)

MULT_COSTS = CostModel(
    taker_fee=0.001, half_spread=0.0002, vol_k=0.5, vol_window=3, adv_window=1, impact_k=1.0, max_participation=None
)


def test_cost_multipliers_scale_half_spread_and_impact_by_hand() -> None:
    """The multipliers of the EXECUTION bar scale the half-spread and the square-root impact term; the fee and
    the vol part are not scaled, and a row at the decision bar does nothing to this fill."""
    weights = make_weights([("BTC/USDT", 3, 1.0)])  # decided at the close of 3, filled at the open of 4 (103)
    mult = make_multipliers([("BTC/USDT", 4, 3.0, 2.5), ("BTC/USDT", 3, 100.0, 100.0)])
    r = run_backtest(_vol_bars(volume=40.0), weights, MULT_COSTS, initial_value=1030.0, multipliers=mult)
    sigma = statistics.stdev([102 / 100 - 1, 100 / 102 - 1, 103 / 100 - 1])
    # 1030 filled; ADV over 1 bar = 40 × 103 = 4120 → √(1030 / 4120) = 0.5
    fee = 1030.0 * 0.001
    slip = 1030.0 * (0.0002 * 3.0 + 0.5 * sigma)
    imp = 1030.0 * 1.0 * sigma * 0.5 * 2.5
    assert r.trades.select("fee", "slippage", "impact").row(0) == pytest.approx((fee, slip, imp), rel=1e-12)
    bar4 = r.costs.filter(pl.col("ts") == ts(4))
    assert bar4.select("fees", "slippage", "impact").row(0) == pytest.approx((fee, slip, imp), rel=1e-12)
    assert values(r)[-1] == pytest.approx(1030.0 - fee - slip - imp, rel=1e-12)  # bought at 103, closed at 103
    # one factor given, the other 1: a zero spread factor leaves only the vol part in "slippage"
    only_spread = make_multipliers([("BTC/USDT", 4, 0.0, 0.0)]).drop("impact_mult")
    r0 = run_backtest(_vol_bars(volume=40.0), weights, MULT_COSTS, initial_value=1030.0, multipliers=only_spread)
    assert r0.trades.select("fee", "slippage", "impact").row(0) == pytest.approx(
        (fee, 1030.0 * 0.5 * sigma, 1030.0 * sigma * 0.5), rel=1e-12
    )


def test_execute_bar_applies_the_multipliers_of_its_row_by_hand() -> None:
    costs = CostModel(taker_fee=0.0, half_spread=0.001, vol_k=0.1, impact_k=0.5, max_participation=None)
    px, sigma, adv = np.array([100.0, 50.0]), np.array([0.01, 0.02]), np.array([1e6, 4e6])
    spread_mult, impact_mult = np.array([5.0, 1.0]), np.array([1.0, 3.0])
    market = one_bar_market(px, px, sigma, np.full(2, 1e9), adv, spread_mult=spread_mult, impact_mult=impact_mult)
    filled, requested = np.zeros(2), np.zeros(2)
    params = costs.kernel_params(HOUR_US)
    bar = execute_bar(np.zeros(2), 1000.0, market, 0, np.array([0.4, 0.1]), params, filled, requested)
    assert filled.tolist() == [400.0, 100.0]
    want_slip = 400.0 * (0.001 * 5.0 + 0.1 * 0.01) + 100.0 * (0.001 + 0.1 * 0.02)
    want_imp = 400.0 * 0.5 * 0.01 * math.sqrt(400.0 / 1e6) + 3.0 * 100.0 * 0.5 * 0.02 * math.sqrt(100.0 / 4e6)
    assert (bar.slippage, bar.impact) == pytest.approx((want_slip, want_imp), rel=1e-14)
    assert bar.cash == pytest.approx(1000.0 - 500.0 - want_slip - want_imp, rel=1e-15)


def test_multipliers_of_one_are_bit_identical_to_none() -> None:
    bars, weights = random_case(0, n_bars=300)
    base = run_backtest(bars, weights, ALL_ON, initial_value=1e5)
    every_bar = bars.select("symbol", "ts").with_columns(spread_mult=pl.lit(1.0), impact_mult=pl.lit(1.0))
    for mult in (every_bar, every_bar.drop("impact_mult"), every_bar.head(0)):
        r = run_backtest(bars, weights, ALL_ON, initial_value=1e5, multipliers=mult)
        for name in ("equity", "returns", "costs", "turnover", "positions", "weights", "trades", "round_trips"):
            assert getattr(r, name).equals(getattr(base, name)), name
    assert base.trades.height > 100 and base.costs["impact"].sum() > 0  # there were costs to scale


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.with_columns(symbol=pl.lit("ETH/USDT")), "multipliers name symbols without bars"),
        (lambda m: m.with_columns(pl.col("ts") + dt.timedelta(minutes=5)), "multiplier for BTC/USDT .* grid"),
        (lambda m: m.with_columns(pl.col("ts") + 10 * HOUR), "not on the bars' grid"),
        (lambda m: m.with_columns(spread_mult=pl.lit(-1.0)), "spread_mult must be finite and >= 0"),
        (lambda m: m.with_columns(impact_mult=pl.lit(float("inf"))), "impact_mult must be finite and >= 0"),
        (lambda m: pl.concat([m, m]), "duplicate multiplier rows for BTC/USDT"),
        (lambda m: m.drop("spread_mult", "impact_mult"), "spread_mult and/or impact_mult"),
        (lambda m: m.with_columns(impact_mult=pl.lit(None, pl.Float64)), "impact_mult has 1 null"),
    ],
)
def test_malformed_multipliers_are_errors(edit, message) -> None:  # type: ignore[no-untyped-def]
    bars = make_bars({"BTC/USDT": [FLAT] * 3})
    with pytest.raises(ValueError, match=message):
        run_backtest(bars, make_weights([]), NO_COSTS, multipliers=edit(make_multipliers([("BTC/USDT", 1, 2.0, 2.0)])))


# ---------------------------------------------------------------- participation cap, zero volume, gaps


def test_participation_cap_partial_fill_and_cancelled_rest() -> None:
    # DV = 10 × 100 = 1000 at every bar; cap 10 % → at most 100 notional per bar
    bars = make_bars({"BTC/USDT": [(100.0, 100.0, 10.0)] * 4})
    costs = with_(NO_COSTS, max_participation=0.1, taker_fee=0.001)
    r = run_backtest(bars, make_weights([("BTC/USDT", 0, 1.0)]), costs, initial_value=1000.0)
    assert r.trades.height == 1  # the rest is cancelled, not carried to later bars
    fill = r.trades.row(0, named=True)
    assert fill["notional"] == pytest.approx(100.0) and fill["requested_notional"] == pytest.approx(1000.0)
    assert fill["units"] == pytest.approx(1.0) and fill["fee"] == pytest.approx(0.1)
    order = r.weights.row(0, named=True)
    assert order["target"] == 1.0 and order["filled"] == pytest.approx(0.1)
    assert r.positions.filter(pl.col("ts") == ts(3))["weight"][0] == pytest.approx(100.0 / 999.9)
    # a sell is capped the same way
    r = run_backtest(
        bars,
        make_weights([("BTC/USDT", 0, 0.05), ("BTC/USDT", 1, 0.05), ("BTC/USDT", 2, -0.0)]),
        costs,
        initial_value=1000.0,
    )
    assert r.trades["notional"].to_list() == pytest.approx([50.0, 0.05 * 999.95 - 50.0, -0.05 * 999.95], abs=1e-9)


def test_partial_sell_leaves_position() -> None:
    bars = make_bars({"BTC/USDT": [(100.0, 100.0, 1e9), (100.0, 100.0, 1e9), (100.0, 100.0, 3.0)]})
    costs = with_(NO_COSTS, max_participation=0.5)
    r = run_backtest(bars, make_weights([("BTC/USDT", 0, 1.0), ("BTC/USDT", 1, 0.0)]), costs, initial_value=1000.0)
    # bar 2: DV = 300, cap 150 → sells 1.5 of 10 units
    assert r.trades["notional"].to_list() == pytest.approx([1000.0, -150.0])
    assert r.positions.filter(pl.col("ts") == ts(2))["units"][0] == pytest.approx(8.5)
    assert r.weights["filled"].to_list() == pytest.approx([1.0, 0.85])
    assert r.round_trips["closed"].to_list() == [False]


def test_zero_volume_bar_fills_nothing_with_a_cap() -> None:
    bars = make_bars({"BTC/USDT": [(100.0, 100.0, 5.0), (100.0, 100.0, 0.0), (100.0, 100.0, 5.0)]})
    capped = with_(NO_COSTS, max_participation=1.0)
    r = run_backtest(bars, make_weights([("BTC/USDT", 0, 0.1)]), capped, initial_value=10.0)
    assert r.trades.height == 0 and r.weights["filled"].to_list() == [0.0]
    assert values(r) == [10.0, 10.0, 10.0]
    # impact_k > 0 also blocks (√(n / 0) is infinite) ...
    impact = with_(NO_COSTS, impact_k=0.1)
    assert run_backtest(bars, make_weights([("BTC/USDT", 0, 0.1)]), impact, initial_value=10.0).trades.height == 0
    # ... while without a cap and without impact the order fills
    r = run_backtest(bars, make_weights([("BTC/USDT", 0, 0.1)]), NO_COSTS, initial_value=10.0)
    assert r.trades["notional"].to_list() == pytest.approx([1.0])


def test_gap_bar_cancels_order_and_marks_at_last_close() -> None:
    bars = make_bars({"A/USDT": [FLAT] * 5, "B/USDT": [(50.0, 50.0, 1e9), (50.0, 60.0, 1e9)]})
    bars = pl.concat([bars, make_bars({"B/USDT": [(70.0, 80.0, 1e9), (80.0, 80.0, 1e9)]}, start={"B/USDT": 3})])
    weights = make_weights([("B/USDT", 0, 0.5), ("B/USDT", 1, 0.0)])
    r = run_backtest(bars, weights, NO_COSTS, initial_value=100.0)
    # bar 1: buy 1 unit of B at 50; the sell decided at bar 1 hits the gap at bar 2 and is cancelled
    assert r.trades.height == 1
    assert r.weights["filled"][1] == pytest.approx(60.0 / 110.0)  # unchanged, marked at the last close
    assert values(r) == pytest.approx([100.0, 110.0, 110.0, 130.0, 130.0])


# ---------------------------------------------------------------- funding / borrow


def test_short_pays_funding_pro_rata() -> None:
    bars = make_bars({"BTC/USDT": [FLAT] * 4})
    costs = with_(NO_COSTS, allow_short=True, funding_rate_8h=0.0008)
    r = run_backtest(bars, make_weights([("BTC/USDT", 0, -1.0)]), costs, initial_value=1000.0)
    # 1h bars: 1/8 of 0.08 % = 0.01 % of 1000 short notional per close
    assert r.costs["funding"].to_list() == pytest.approx([0.0, 0.1, 0.1, 0.1], rel=1e-12)
    assert values(r) == pytest.approx([1000.0, 999.9, 999.8, 999.7], rel=1e-14)
    assert r.equity["cash"].to_list() == pytest.approx([1000.0, 1999.9, 1999.8, 1999.7], rel=1e-14)
    assert r.round_trips["costs"].to_list() == pytest.approx([0.3], rel=1e-12)
    assert r.round_trips["pnl"].to_list() == pytest.approx([-0.3], rel=1e-12)
    # 4h bars accrue 4/8 of the rate per close
    bars4 = make_bars({"BTC/USDT": [FLAT] * 3}, step=dt.timedelta(hours=4))
    r4 = run_backtest(
        bars4,
        make_weights([("BTC/USDT", 0, -1.0)], step=dt.timedelta(hours=4)),
        costs,
        initial_value=1000.0,
        timeframe="4h",
    )
    assert r4.costs["funding"].to_list() == pytest.approx([0.0, 0.4, 0.4], rel=1e-12)


def test_leverage_pays_funding_on_borrowed_notional_only() -> None:
    bars = make_bars({"A/USDT": [FLAT] * 3, "B/USDT": [FLAT] * 3})
    costs = with_(NO_COSTS, allow_short=True, max_leverage=2.0, funding_rate_8h=0.0008)
    r = run_backtest(bars, make_weights([("A/USDT", 0, 2.0)]), costs, initial_value=1000.0)
    assert r.costs["funding"][1] == pytest.approx(0.1, rel=1e-12)  # 2000 long on 1000 equity: 1000 borrowed
    # long 100 % + short 50 %: the long is covered by equity, only the short pays (not gross − 1 on top)
    r = run_backtest(bars, make_weights([("A/USDT", 0, 1.0), ("B/USDT", 0, -0.5)]), costs, initial_value=1000.0)
    assert r.costs["funding"][1] == pytest.approx(0.05, rel=1e-12)
    # long-only within equity pays nothing
    r = run_backtest(bars, make_weights([("A/USDT", 0, 0.9)]), costs, initial_value=1000.0)
    assert r.costs["funding"].to_list() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------- strict rules, shorts, leverage, listing


def test_short_refused_unless_allowed() -> None:
    bars = make_bars({"BTC/USDT": [FLAT] * 3})
    with pytest.raises(ValueError, match="allow_short"):
        run_backtest(bars, make_weights([("BTC/USDT", 1, -0.5)]), NO_COSTS)
    costs = with_(NO_COSTS, allow_short=True)
    r = run_backtest(bars, make_weights([("BTC/USDT", 0, -0.5)]), costs, initial_value=100.0)
    assert r.trades["side"].to_list() == ["sell"] and r.trades["units"][0] == pytest.approx(-0.5)
    assert r.equity["cash"][-1] == pytest.approx(150.0) and values(r)[-1] == pytest.approx(100.0)
    assert r.round_trips["side"].to_list() == ["short"]


def test_short_error_names_symbol_and_ts() -> None:
    bars = make_bars({"BTC/USDT": [FLAT] * 3})
    with pytest.raises(ValueError) as err:
        run_backtest(bars, make_weights([("BTC/USDT", 1, -0.5)]), NO_COSTS)
    assert "BTC/USDT" in str(err.value) and "2021-01-01 01:00:00" in str(err.value) and "allow_short" in str(err.value)


def test_leverage_cap_scales_targets_proportionally() -> None:
    bars = make_bars({"A/USDT": [FLAT] * 3, "B/USDT": [FLAT] * 3})
    weights = make_weights([("A/USDT", 0, 0.8), ("B/USDT", 0, 0.7), ("A/USDT", 1, 0.5), ("B/USDT", 1, 0.5)])
    r = run_backtest(bars, weights, NO_COSTS, initial_value=1.0)
    assert r.n_scaled == 1
    first = r.weights.filter(pl.col("ts") == ts(0)).sort("symbol")
    assert first["requested"].to_list() == [0.8, 0.7]
    assert first["target"].to_list() == pytest.approx([0.8 / 1.5, 0.7 / 1.5], rel=1e-15)
    assert first["filled"].to_list() == pytest.approx([0.8 / 1.5, 0.7 / 1.5], rel=1e-12)
    second = r.weights.filter(pl.col("ts") == ts(1))
    assert second["target"].to_list() == [0.5, 0.5]
    # shorts count towards gross exposure
    costs = with_(NO_COSTS, allow_short=True, max_leverage=1.5)
    r = run_backtest(bars, make_weights([("A/USDT", 0, 1.5), ("B/USDT", 0, -1.5)]), costs)
    assert r.weights["target"].to_list() == pytest.approx([0.75, -0.75])


def test_symbol_listing_mid_sample() -> None:
    bars = make_bars(
        {"BTC/USDT": [FLAT] * 6, "SOL/USDT": [(2.0, 2.0, 1e9), (2.0, 3.0, 1e9), (3.0, 3.0, 1e9)]}, start={"SOL/USDT": 3}
    )
    with pytest.raises(ValueError) as err:  # decided at a bar where SOL has no price yet
        run_backtest(bars, make_weights([("SOL/USDT", 2, 0.5)]), NO_COSTS)
    assert "SOL/USDT" in str(err.value) and "2021-01-01 02:00:00" in str(err.value) and "listing" in str(err.value)
    # zero weights before listing are fine; the first order goes in at the close of the first bar
    weights = make_weights([("SOL/USDT", 0, 0.0), ("SOL/USDT", 2, 0.0), ("SOL/USDT", 3, 0.5), ("BTC/USDT", 0, 0.5)])
    r = run_backtest(bars, weights, NO_COSTS, initial_value=100.0)
    assert values(r) == pytest.approx([100.0, 100.0, 100.0, 100.0, 125.0, 125.0])
    sol = r.positions.filter(pl.col("symbol") == "SOL/USDT")
    assert sol["ts"].to_list() == [ts(3), ts(4), ts(5)]  # no position rows before listing
    assert sol["units"].to_list() == pytest.approx([0.0, 25.0, 25.0])
    assert r.trades.filter(pl.col("symbol") == "SOL/USDT")["ts"].to_list() == [ts(4)]


def test_missing_weight_row_holds_position_and_weight_drifts() -> None:
    bars = make_bars({"A/USDT": [FLAT, (100.0, 150.0, 1e9), (150.0, 200.0, 1e9)], "B/USDT": [FLAT] * 3})
    weights = make_weights([("A/USDT", 0, 0.5), ("B/USDT", 0, 0.5), ("B/USDT", 1, 0.5)])
    r = run_backtest(bars, weights, NO_COSTS, initial_value=100.0)
    a = r.positions.filter(pl.col("symbol") == "A/USDT")
    assert a["units"].to_list() == pytest.approx([0.0, 0.5, 0.5])  # held: no order for A at bar 1
    assert a["weight"].to_list() == pytest.approx([0.0, 75.0 / 125.0, 100.0 / 150.0])
    # B is rebalanced to 50 % of 125 at the open of bar 2 (A is still worth 75 at that open)
    b = r.trades.filter((pl.col("symbol") == "B/USDT") & (pl.col("ts") == ts(2)))
    assert b["notional"][0] == pytest.approx(0.5 * 125.0 - 50.0)


def test_order_on_last_bar_never_executes() -> None:
    bars = make_bars({"BTC/USDT": [FLAT] * 2})
    r = run_backtest(bars, make_weights([("BTC/USDT", 1, 0.5)]), NO_COSTS)
    assert r.trades.height == 0
    row = r.weights.row(0, named=True)
    assert row["exec_ts"] is None and row["filled"] is None and row["target"] == 0.5


def test_decision_at_t_does_not_change_anything_up_to_close_t() -> None:
    rng = np.random.default_rng(7)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 30)))
    bars = make_bars({"BTC/USDT": [(c, c, 1e6) for c in closes]})
    costs = CostModel(allow_short=True, funding_rate_8h=0.001)
    base = [("BTC/USDT", k, 0.5) for k in range(20)]
    r1 = run_backtest(bars, make_weights(base), costs, initial_value=1000.0)
    r2 = run_backtest(bars, make_weights(base + [("BTC/USDT", 20, -1.0)]), costs, initial_value=1000.0)
    assert values(r1)[:21] == values(r2)[:21]
    assert values(r1)[21] != values(r2)[21]


def test_truncating_later_bars_changes_nothing_up_to_t_bit_for_bit() -> None:
    """σ, fills, funding and marks at t use bars ≤ t only (σ is computed per window, not from running sums
    or a full-sample centre), so cutting the history after t leaves every number up to t identical."""
    bars, weights = random_case(5, n_bars=300)
    full = run_backtest(bars, weights, ALL_ON, initial_value=1000.0)
    for cut in (150, 251):
        short = run_backtest(
            bars.filter(pl.col("ts") <= ts(cut)), weights.filter(pl.col("ts") <= ts(cut)), ALL_ON, initial_value=1000.0
        )
        assert short.equity.equals(full.equity.head(cut + 1))
        assert short.costs.equals(full.costs.head(cut + 1))


def test_execute_bar_by_hand() -> None:
    """The per-bar step the engine and the RL environment share: no order (NaN), a gap (NaN open: marked at
    the last close, unfillable), a zero-volume bar under a cap, a full fill and a capped partial fill."""
    costs = CostModel(taker_fee=0.001, half_spread=0.0001, vol_k=0.1, impact_k=0.5, max_participation=0.05)
    units = np.array([10.0, 2.0, 1.0, 0.0, 0.0])
    mark_open = np.array([100.0, 50.0, 20.0, 10.0, 10.0])
    open_px = np.array([100.0, 50.0, np.nan, 10.0, 10.0])
    sigma = np.full(5, 0.01)
    dollar_vol = np.array([1e6, 1e6, 0.0, 0.0, 1000.0])  # the execution bar's: the cap
    adv = np.array([4e6, 1e6, 1e6, 1e6, 2000.0])  # the decision bar's trailing mean: impact
    target = np.array([0.5, np.nan, 0.3, 0.2, 0.1])
    filled, requested = np.full(5, np.nan), np.full(5, np.nan)
    market = one_bar_market(mark_open, open_px, sigma, dollar_vol, adv)
    params = costs.kernel_params(HOUR_US)
    cash, v_open, fees, slip, imp, traded = execute_bar(units, 1000.0, market, 0, target, params, filled, requested)
    assert v_open == 1000.0 + 1000.0 + 100.0 + 20.0
    # symbol 0: 50 % of 2120 = 1060, holds 1000 → buys 60 (cap 5 % × 1e6); symbol 4: wants 212, cap 50
    assert filled.tolist() == [60.0, 0.0, 0.0, 0.0, 50.0]
    assert requested.tolist() == pytest.approx([60.0, 0.0, 0.0, 0.0, 212.0], rel=1e-15)
    assert units.tolist() == pytest.approx([10.6, 2.0, 1.0, 0.0, 5.0], rel=1e-15)
    want_fee, want_slip = 110 * 0.001, 110 * (0.0001 + 0.1 * 0.01)
    want_imp = 0.5 * 0.01 * (60 * math.sqrt(60 / 4e6) + 50 * math.sqrt(50 / 2000))
    assert (fees, slip, imp, traded) == pytest.approx((want_fee, want_slip, want_imp, 110.0), rel=1e-14)
    assert cash == pytest.approx(1000.0 - 110.0 - want_fee - want_slip - want_imp, rel=1e-15)
    assert fill_cost(60.0, 0.01, 1e6, 1.0, 1.0, params)[2] == pytest.approx(0.5 * 0.01 * 60 * math.sqrt(6e-5))


@pytest.mark.parametrize(
    ("bars_edit", "weights_rows", "message"),
    [
        (lambda b: pl.concat([b, b.head(1)]), [], "duplicate bar"),
        (
            lambda b: b.with_columns(
                pl.when(pl.int_range(pl.len()) == 1)
                .then(pl.col("ts") + dt.timedelta(minutes=5))
                .otherwise(pl.col("ts"))
                .alias("ts")
            ),
            [],
            "grid",
        ),
        (lambda b: b, [("ETH/USDT", 0, 0.5)], "without bars"),
        (lambda b: b, [("BTC/USDT", 0, float("nan"))], "finite"),
        (lambda b: b, [("BTC/USDT", 0, 0.5), ("BTC/USDT", 0, 0.2)], "duplicate weight"),
        (lambda b: b.with_columns(pl.lit(-1.0).alias("close")), [], "close"),
    ],
)
def test_malformed_inputs_are_errors(bars_edit, weights_rows, message) -> None:  # type: ignore[no-untyped-def]
    bars = bars_edit(make_bars({"BTC/USDT": [FLAT] * 3}))
    with pytest.raises(ValueError, match=message):
        run_backtest(bars, make_weights(weights_rows), NO_COSTS)


def test_cost_model_validation() -> None:
    with pytest.raises(ValueError, match="taker_fee"):
        CostModel(taker_fee=-0.001)
    with pytest.raises(ValueError, match="max_leverage"):
        CostModel(max_leverage=0.0)
    with pytest.raises(ValueError, match="vol_window"):
        CostModel(vol_window=1)
    with pytest.raises(ValueError, match="adv_window"):
        CostModel(adv_window=0)
    with pytest.raises(ValueError, match="adv_window"):
        CostModel(adv_window="7d")  # type: ignore[arg-type]  # the engine counts bars; the config converts
    assert CostModel().fee == 0.001 and CostModel(fee_side="maker", maker_fee=0.0002).fee == 0.0002


# ---------------------------------------------------------------- capital is real: ADV impact and capacity


def _capacity_bars() -> pl.DataFrame:
    """Decide at bar 2, fill at bar 3. Dollar volumes by close: 100 k, 102 k, 98 k → ADV over 3 bars = 100,000;
    the execution bar trades 2000 × 101 = 202,000, so 5 % of it is 10,100."""
    return make_bars(
        {
            "BTC/USDT": [
                (100.0, 100.0, 1000.0),
                (100.0, 102.0, 1000.0),
                (102.0, 100.0, 980.0),
                (101.0, 101.0, 2000.0),
            ]
        }
    )


CAPACITY_COSTS = with_(NO_COSTS, taker_fee=0.001, impact_k=0.5, vol_window=3, adv_window=3, max_participation=0.05)
CAPACITY_SIGMA = statistics.stdev([102 / 100 - 1, 100 / 102 - 1])  # the returns of bars 1 and 2


def test_impact_and_cap_bind_at_large_capital_by_hand() -> None:
    # 10 M wants 10 M of BTC at the open of bar 3: capped at 10,100, the rest cancelled
    r = run_backtest(_capacity_bars(), make_weights([("BTC/USDT", 2, 1.0)]), CAPACITY_COSTS, initial_value=1e7)
    fill = r.trades.row(0, named=True)
    assert r.trades.height == 1
    assert fill["notional"] == pytest.approx(10_100.0, rel=1e-15) and fill["requested_notional"] == 1e7
    assert fill["units"] == pytest.approx(100.0, rel=1e-15)
    impact = 0.5 * CAPACITY_SIGMA * math.sqrt(10_100.0 / 100_000.0) * 10_100.0  # on the filled notional, vs ADV
    assert fill["impact"] == pytest.approx(impact, abs=1e-9) and fill["fee"] == pytest.approx(10.1, abs=1e-9)
    order = r.weights.row(0, named=True)
    assert order["target"] == 1.0 and order["filled"] == pytest.approx(10_100.0 / 1e7, rel=1e-12)
    assert r.turnover["fills"].to_list() == [0, 0, 0, 1] and r.turnover["capped_fills"].to_list() == [0, 0, 0, 1]
    assert values(r)[-1] == pytest.approx(1e7 - 10.1 - impact, rel=1e-15)  # bought at 101, marked at 101
    ref = reference_backtest(_capacity_bars(), make_weights([("BTC/USDT", 2, 1.0)]), CAPACITY_COSTS, initial_value=1e7)
    _assert_frames_close(r.trades, ref["trades"], ["symbol", "ts"], 1e7)
    # 10,000 fits under the cap: filled in full, impact √(10,000 / 100,000) of the notional × 0.5 σ
    small = run_backtest(_capacity_bars(), make_weights([("BTC/USDT", 2, 1.0)]), CAPACITY_COSTS, initial_value=1e4)
    assert small.trades["notional"].to_list() == [1e4] and small.turnover["capped_fills"].sum() == 0
    assert small.trades["impact"][0] == pytest.approx(0.5 * CAPACITY_SIGMA * math.sqrt(0.1) * 1e4, abs=1e-9)
    assert small.weights["filled"][0] == pytest.approx(1.0, rel=1e-12)
    # the same weights cost a larger share of the book at 10 M than at 10 k: impact grows with √size
    assert fill["impact"] / 10_100.0 > small.trades["impact"][0] / 1e4


def test_adv_is_causal_and_independent_of_where_the_history_starts() -> None:
    from crypto_assets.backtest.market import Market

    bars, _ = random_case(5, n_bars=400)
    costs = with_(ALL_ON, adv_window=50)
    full = Market.from_bars(bars, costs)
    # row e holds the ADV of decision bar e − 1: a new volume at bar k changes rows k + 1 .. only
    k = 250
    louder = bars.with_columns(
        pl.when(pl.col("ts") == ts(k)).then(pl.col("volume") * 100 + 1).otherwise(pl.col("volume")).alias("volume")
    )
    changed = Market.from_bars(louder, costs)
    assert np.array_equal(full.adv[: k + 1], changed.adv[: k + 1])
    assert (changed.adv[k + 1] > full.adv[k + 1]).all()
    # 120 bars less history: bit-identical once a whole window lies inside it (row 50 on)
    late = Market.from_bars(bars.filter(pl.col("ts") >= ts(120)), costs)
    assert np.array_equal(late.adv[50:], full.adv[170:])
    # the mean over the symbol's own bars: B/USDT misses bars 200..204, C/USDT lists at bar 100
    dv = bars.with_columns(dv=pl.col("volume") * pl.col("close"))
    for sym, decision in (("B/USDT", 210), ("C/USDT", 120), ("A/USDT", 398)):
        window = dv.filter((pl.col("symbol") == sym) & pl.col("ts").is_between(ts(decision - 49), ts(decision)))
        want = window["dv"].mean()
        assert full.adv[decision + 1, full.symbols.index(sym)] == pytest.approx(want, rel=1e-12), sym


def test_rolling_adv_matches_a_plain_mean_for_any_block_alignment() -> None:
    from crypto_assets.backtest.market import _rolling_adv

    rng = np.random.default_rng(0)
    dv = rng.uniform(0, 10, (60, 2))
    has = rng.random((60, 2)) > 0.2
    for window in (1, 4, 7):
        for origin in (0, 3, 1_000_003):
            got = _rolling_adv(dv, has, window, origin)
            for t in range(60):
                for i in range(2):
                    rows = [j for j in range(max(0, t - window + 1), t + 1) if has[j, i]]
                    want = sum(dv[j, i] for j in rows) / len(rows) if rows else 0.0
                    assert got[t, i] == pytest.approx(want, rel=1e-12, abs=1e-300), (window, origin, t, i)


# ---------------------------------------------------------------- invariants


def random_case(seed: int, n_bars: int = 500) -> tuple[pl.DataFrame, pl.DataFrame]:
    """3 symbols, the third listing a quarter into the sample, a 5-bar gap in the second, some zero-volume bars,
    ~20 % of weight rows missing, weights spread over shorts and leverage."""
    rng = np.random.default_rng(seed)
    spec, start, rows = {}, {"C/USDT": n_bars // 4}, []
    for i, sym in enumerate(["A/USDT", "B/USDT", "C/USDT"]):
        k0 = start.get(sym, 0)
        n = n_bars - k0
        close = 100.0 * (i + 1) * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        open_ = np.concatenate([[close[0]], close[:-1]]) * np.exp(rng.normal(0, 0.002, n))
        volume = rng.uniform(0, 50, n)
        volume[rng.random(n) < 0.03] = 0.0
        spec[sym] = list(zip(open_, close, volume))
        for k in range(n_bars):
            if rng.random() < 0.2:
                continue
            rows.append((sym, k, float(rng.normal(0.2, 0.6)) if k >= k0 else 0.0))
    bars = make_bars(spec, start=start).filter(
        ~((pl.col("symbol") == "B/USDT") & pl.col("ts").is_between(ts(200), ts(204)))
    )
    return bars, make_weights(rows)


def test_no_weights_no_trades_no_costs() -> None:
    bars, _ = random_case(0, n_bars=100)
    for weights in (make_weights([]), make_weights([("A/USDT", 5, 0.0), ("C/USDT", 3, 0.0)])):
        r = run_backtest(bars, weights, ALL_ON, initial_value=1000.0)
        assert r.trades.height == 0 and r.round_trips.height == 0
        assert r.costs.select(pl.exclude("ts")).to_numpy().sum() == 0.0
        assert set(values(r)) == {1000.0} and set(r.equity["cash"].to_list()) == {1000.0}
        assert set(r.returns["return"].to_list()) == {0.0}
        assert r.total_turnover == 0.0


def test_flat_again_means_value_equals_cash() -> None:
    bars, _ = random_case(1, n_bars=60)
    weights = make_weights([("A/USDT", 3, 0.6), ("B/USDT", 3, -0.4), ("A/USDT", 10, 0.0), ("B/USDT", 10, 0.0)])
    r = run_backtest(bars, weights, with_(ALL_ON, max_participation=None), initial_value=1000.0)
    after = r.equity.filter(pl.col("ts") >= ts(11))
    assert (after["value"] == after["cash"]).all()
    assert after["value"].n_unique() == 1  # flat: nothing moves it, funding stops
    assert r.round_trips["closed"].all() and r.round_trips.height == 2


@pytest.mark.parametrize("seed", [0, 1])
def test_equity_identity_and_costs_non_negative(seed: int) -> None:
    bars, weights = random_case(seed)
    r = run_backtest(bars, weights, ALL_ON, initial_value=1000.0)
    held = r.positions.group_by("ts").agg(pl.col("value").sum().alias("held"))
    marked = r.equity.join(held, on="ts", how="left")
    np.testing.assert_allclose(marked["cash"] + marked["held"], marked["value"], rtol=1e-12)
    # units × last close reproduces each position's value
    closes = bars.select("symbol", "ts", "close")
    pos = (
        r.positions.join(closes, on=["symbol", "ts"], how="left")
        .sort("symbol", "ts")
        .with_columns(pl.col("close").forward_fill().over("symbol"))
    )
    np.testing.assert_allclose(pos["units"] * pos["close"], pos["value"], rtol=1e-12, atol=1e-12)
    for col in ("fees", "slippage", "impact", "funding", "total"):
        assert (r.costs[col] >= 0).all(), col
    for col in ("fee", "slippage", "impact", "cost"):
        assert (r.trades[col] >= 0).all(), col
    assert r.trades.height > 100 and r.costs["impact"].sum() > 0 and r.costs["funding"].sum() > 0
    assert (r.trades["notional"].abs() <= r.trades["requested_notional"].abs() + 1e-12).all()
    assert (r.trades["notional"].abs() < r.trades["requested_notional"].abs()).any()  # the cap binds
    # all trading and holding costs and cash flows are attributed to some round trip
    assert r.round_trips["pnl"].sum() == pytest.approx(values(r)[-1] - 1000.0, rel=1e-9, abs=1e-9)
    assert r.round_trips["costs"].sum() == pytest.approx(r.costs["total"].sum(), rel=1e-12)
    # costs per bar equal the fills' costs plus funding
    per_bar = r.trades.group_by("ts").agg(pl.col("cost").sum())
    merged = r.costs.join(per_bar, on="ts", how="left").with_columns(pl.col("cost").fill_null(0.0))
    np.testing.assert_allclose(merged["total"] - merged["funding"], merged["cost"], rtol=1e-12, atol=1e-15)


def test_flip_splits_round_trips() -> None:
    bars = make_bars({"BTC/USDT": [FLAT, FLAT, (100.0, 90.0, 1e9), (90.0, 90.0, 1e9)]})
    costs = with_(NO_COSTS, taker_fee=0.001, allow_short=True)
    r = run_backtest(bars, make_weights([("BTC/USDT", 0, 0.5), ("BTC/USDT", 1, -0.5)]), costs, initial_value=1000.0)
    rts = r.round_trips.sort("entry_ts")
    assert rts["side"].to_list() == ["long", "short"]
    assert rts["closed"].to_list() == [True, False]
    assert rts["exit_ts"][0] == ts(2) and rts["entry_ts"][1] == ts(2)
    # long: bought 500 (fee 0.5), sold 5 units at 100 (its half of the flip's fee on ~999.5 notional)
    v_open = 1000.0 - 0.5
    flip_notional = 500.0 + 0.5 * v_open
    assert rts["pnl"][0] == pytest.approx(-0.5 - 0.001 * flip_notional * 500.0 / flip_notional, rel=1e-12)
    assert rts["pnl"].sum() == pytest.approx(values(r)[-1] - 1000.0, rel=1e-12)
    assert rts["entry_notional"].to_list() == pytest.approx([500.0, 0.5 * v_open], rel=1e-12)


def test_exact_zero_target_closes_the_trade() -> None:
    rng = np.random.default_rng(3)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 12)))
    bars = make_bars({"BTC/USDT": [(c * 1.001, c, 1e9) for c in closes]})
    weights = make_weights([("BTC/USDT", 0, 0.37), ("BTC/USDT", 4, 0.0), ("BTC/USDT", 6, 0.21), ("BTC/USDT", 8, 0.0)])
    r = run_backtest(bars, weights, CostModel(), initial_value=12345.678)
    assert r.positions.filter(pl.col("ts") >= ts(9))["units"].to_list() == [0.0] * 3
    assert r.round_trips["closed"].to_list() == [True, True]


# ---------------------------------------------------------------- engine vs the independent reference loop


def _assert_frames_close(got: pl.DataFrame, want: pl.DataFrame, keys: list[str], scale: float) -> None:
    assert got.columns == want.columns
    assert got.height == want.height
    got, want = got.sort(keys), want.sort(keys)
    for col in got.columns:
        if got[col].dtype == pl.Float64:
            a, b = got[col].to_numpy(), want[col].to_numpy()
            assert np.array_equal(np.isnan(a), np.isnan(b)), col
            ok = ~np.isnan(a)
            np.testing.assert_allclose(a[ok], b[ok], rtol=1e-12, atol=1e-12 * scale, err_msg=col)
        else:
            assert got[col].to_list() == want[col].to_list(), col


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_engine_matches_reference(seed: int) -> None:
    bars, weights = random_case(seed)
    costs = (
        ALL_ON
        if seed % 2 == 0
        else with_(ALL_ON, fee_side="maker", maker_fee=0.0002, max_participation=None, max_leverage=3.0, adv_window=37)
    )
    # a 1-unit book (cap never binds) and a 100k one (DV ≈ 25 × 100..300 per bar: the cap binds on most fills)
    capital = 1.0 if seed < 2 else 1e5
    r = run_backtest(bars, weights, costs, initial_value=capital)
    ref = reference_backtest(bars, weights, costs, initial_value=capital)
    v, v_ref = r.equity["value"].to_numpy(), ref["equity"]["value"].to_numpy()
    np.testing.assert_allclose(v, v_ref, rtol=1e-12, atol=0)
    _assert_frames_close(r.equity, ref["equity"], ["ts"], capital)
    _assert_frames_close(r.costs, ref["costs"], ["ts"], capital)
    _assert_frames_close(r.turnover, ref["turnover"], ["ts"], capital)
    _assert_frames_close(r.trades, ref["trades"], ["symbol", "ts"], capital)
    _assert_frames_close(r.weights, ref["weights"], ["symbol", "ts"], capital)
    _assert_frames_close(r.round_trips, ref["round_trips"], ["symbol", "entry_ts"], capital)
    assert r.total_turnover == pytest.approx(ref["total_turnover"], rel=1e-12)
    assert r.trades.height > 300 and r.n_scaled > 0 and r.round_trips["side"].n_unique() == 2
    assert not math.isclose(v[-1], capital)
    if costs.max_participation is not None:
        capped_share = r.turnover["capped_fills"].sum() / r.trades.height
        assert (capped_share > 0.5) == (capital > 1.0), capped_share


@pytest.mark.parametrize("seed", [0, 1])
def test_engine_matches_reference_with_cost_multipliers(seed: int) -> None:
    """Random factors in [0, 5] on half the cells of the grid (cells without a bar included)."""
    bars, weights = random_case(seed)
    rng = np.random.default_rng(seed + 100)
    grid = bars.select("ts").unique().join(bars.select("symbol").unique(), how="cross")
    cells = grid.filter(pl.Series(rng.random(grid.height) < 0.5))
    mult = cells.with_columns(
        spread_mult=pl.Series(rng.uniform(0, 5, cells.height)), impact_mult=pl.Series(rng.uniform(0, 5, cells.height))
    )
    capital = 1e5
    r = run_backtest(bars, weights, ALL_ON, initial_value=capital, multipliers=mult)
    ref = reference_backtest(bars, weights, ALL_ON, initial_value=capital, multipliers=mult)
    np.testing.assert_allclose(r.equity["value"], ref["equity"]["value"], rtol=1e-12, atol=0)
    _assert_frames_close(r.costs, ref["costs"], ["ts"], capital)
    _assert_frames_close(r.trades, ref["trades"], ["symbol", "ts"], capital)
    _assert_frames_close(r.round_trips, ref["round_trips"], ["symbol", "entry_ts"], capital)
    plain = run_backtest(bars, weights, ALL_ON, initial_value=capital)
    for col in ("slippage", "impact"):  # the factors mattered
        assert not np.allclose(r.costs[col], plain.costs[col]), col


# ---------------------------------------------------------------- output contract


def assert_schema(frame: pl.DataFrame, expected: dict[str, pl.DataType]) -> None:
    assert list(frame.schema.items()) == list(expected.items())  # names, order and dtypes


def test_output_schemas() -> None:
    bars, weights = random_case(2, n_bars=80)
    r = run_backtest(bars, weights, ALL_ON, initial_value=1000.0)
    f64, s = pl.Float64(), pl.String()
    assert_schema(r.equity, {"ts": TS, "value": f64, "cash": f64})
    assert_schema(r.returns, {"ts": TS, "return": f64})
    assert_schema(r.costs, {"ts": TS} | dict.fromkeys(["fees", "slippage", "impact", "funding", "total"], f64))
    assert_schema(
        r.turnover, {"ts": TS, "traded_notional": f64, "turnover": f64, "fills": pl.Int64(), "capped_fills": pl.Int64()}
    )
    assert_schema(r.positions, {"symbol": s, "ts": TS, "units": f64, "value": f64, "weight": f64})
    assert_schema(r.weights, {"symbol": s, "ts": TS, "exec_ts": TS, "requested": f64, "target": f64, "filled": f64})
    fill_cols = ["units", "price", "notional", "requested_notional", "fee", "slippage", "impact", "cost"]
    assert_schema(r.trades, {"symbol": s, "ts": TS, "side": s} | dict.fromkeys(fill_cols, f64))
    trip_cols = {"symbol": s, "side": s, "entry_ts": TS, "exit_ts": TS, "closed": pl.Boolean()}
    assert_schema(r.round_trips, trip_cols | dict.fromkeys(["entry_notional", "costs", "pnl"], f64))
    assert r.equity.height == 80 and r.equity["ts"].is_sorted()
    empty = run_backtest(bars, make_weights([]), ALL_ON)
    assert empty.round_trips.schema == r.round_trips.schema and empty.trades.schema == r.trades.schema
    assert empty.trades.height == 0 and empty.positions.height == r.positions.height


def test_naive_timestamps_read_as_utc_and_timeframe_checked() -> None:
    bars = make_bars({"BTC/USDT": [FLAT, (100.0, 110.0, 1e9)]})
    weights = make_weights([("BTC/USDT", 0, 1.0)])
    naive = run_backtest(
        bars.with_columns(pl.col("ts").dt.replace_time_zone(None)),
        weights.with_columns(pl.col("ts").dt.replace_time_zone(None)),
        NO_COSTS,
    )
    # the default capital is DEFAULT_CAPITAL = 100,000 (quote currency), as the config's experiment.capital
    assert values(naive) == pytest.approx([1e5, 1.1e5]) and naive.equity["ts"].dtype == TS
    with pytest.raises(ValueError, match="unknown timeframe"):
        run_backtest(bars, weights, NO_COSTS, timeframe="2h")
    with pytest.raises(ValueError, match="grid"):  # hourly bars are not on a daily grid
        run_backtest(bars, weights, NO_COSTS, timeframe="1d")


OHLCV_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv"


def test_real_bars_with_listing_and_exchange_gap_match_reference() -> None:
    """Binance 1h bars 2020-07-20 .. 2020-12-01: SOL lists on 2020-08-11 06:00 and every symbol misses the
    2020-11-30 06:00 bar (maintenance). A 24h-momentum strategy rebalanced every 4 bars, 100k USDT."""
    frames = []
    for base in ("BTC", "ETH", "SOL"):
        frames.append(
            pl.read_csv(OHLCV_DIR / f"{base}USDT_1h.csv")
            .with_columns(pl.from_epoch("timestamp", time_unit="ms").dt.replace_time_zone("UTC").alias("ts"))
            .filter(
                pl.col("ts").is_between(
                    dt.datetime(2020, 7, 20, tzinfo=dt.UTC), dt.datetime(2020, 12, 1, tzinfo=dt.UTC)
                )
            )
            .select(pl.lit(f"{base}/USDT").alias("symbol"), "ts", "open", "high", "low", "close", "volume")
        )
    bars = pl.concat(frames)
    weights = (
        bars.sort("symbol", "ts")
        .with_columns((pl.col("close") / pl.col("close").shift(24).over("symbol") - 1).alias("mom"))
        .filter(pl.col("ts").dt.hour() % 4 == 0)
        .select("symbol", "ts", pl.when(pl.col("mom") > 0).then(0.3).otherwise(0.0).alias("weight"))
    )
    costs = CostModel()  # the defaults: fee, spread, vol term, impact, 5 % participation cap
    r = run_backtest(bars, weights, costs, initial_value=100_000.0)
    ref = reference_backtest(bars, weights, costs, initial_value=100_000.0)
    np.testing.assert_allclose(r.equity["value"], ref["equity"]["value"], rtol=1e-12)
    _assert_frames_close(r.trades, ref["trades"], ["symbol", "ts"], 1e5)
    _assert_frames_close(r.round_trips, ref["round_trips"], ["symbol", "entry_ts"], 1e5)
    gap = dt.datetime(2020, 11, 30, 6, tzinfo=dt.UTC)
    assert r.equity.filter(pl.col("ts") == gap).height == 1  # the grid has the bar; nobody traded in it
    assert r.trades.filter(pl.col("ts") == gap).height == 0
    first_sol_fill = r.trades.filter(pl.col("symbol") == "SOL/USDT")["ts"].to_list()[0]
    assert first_sol_fill > dt.datetime(2020, 8, 11, 6, tzinfo=dt.UTC)
    assert r.round_trips.height > 50 and r.costs["impact"].sum() > 0
