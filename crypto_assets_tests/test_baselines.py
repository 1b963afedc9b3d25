"""Rule-based baselines: causality (truncation / perturbation), mid-sample listings, vol-target cap, crossovers."""

from __future__ import annotations

import datetime as dt
import zlib
from typing import Any

import numpy as np
import polars as pl
import pytest

from crypto_assets.baselines import (
    BASELINES,
    WEIGHT_SCHEMA,
    buy_and_hold,
    equal_weight,
    lookback_bars,
    trend_following,
    vol_targeted,
)
from crypto_assets_tests.local_exchange import FIXTURE_DIR, load_fixture

UTC = dt.UTC
TS = pl.Datetime("us", "UTC")
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
HOUR = dt.timedelta(hours=1)
LISTING = T0 + dt.timedelta(days=20, hours=7)  # SOL lists mid-sample, off the daily schedule
START = T0 + dt.timedelta(days=10)
END = T0 + dt.timedelta(days=60)

# Small windows so that warm-ups end early in a 60-day hourly sample.
PARAMS: dict[str, dict[str, Any]] = {
    "buy_and_hold_btc": {},
    "equal_weight": {"rebalance_every": 24},
    "trend_following": {"fast": 12, "slow": 48, "vol_window": 72},
    "vol_targeted_trend": {"fast": 12, "slow": 48, "vol_window": 72, "target_vol": 0.3},
}


def make_bars(seed: int = 7, days: int = 60) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for k, (symbol, first) in enumerate([("BTC/USDT", T0), ("ETH/USDT", T0), ("SOL/USDT", LISTING)]):
        ts = pl.datetime_range(first, T0 + dt.timedelta(days=days), HOUR, closed="left", time_zone="UTC", eager=True)
        # Slow regime drift so MA crossovers happen in both directions.
        drift = 0.002 * np.sin(np.arange(ts.len()) / (60 + 20 * k))
        close = 100.0 * (k + 1) * np.exp(np.cumsum(drift + rng.normal(0, 0.006 * (k + 1), ts.len())))
        frames.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "ts": ts,
                    "open": close,
                    "high": close * 1.001,
                    "low": close * 0.999,
                    "close": close,
                    "volume": 1000.0,
                    "is_filled": False,
                }
            )
        )
    return pl.concat(frames).with_columns(pl.col("ts").cast(TS)).sort("symbol", "ts")


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return make_bars()


@pytest.fixture(scope="module")
def full_runs(bars: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return {name: fn(bars, START, END, **PARAMS[name]) for name, fn in BASELINES.items()}


def test_registry_and_schema(full_runs: dict[str, pl.DataFrame]) -> None:
    assert set(BASELINES) == {"buy_and_hold_btc", "equal_weight", "trend_following", "vol_targeted_trend"}
    for name, w in full_runs.items():
        assert w.schema == pl.Schema(WEIGHT_SCHEMA), name
        assert w.height > 0, name
        assert w["ts"].min() >= START and w["ts"].max() < END, name
        assert (w["weight"] >= 0).all(), name
        assert w.group_by("ts").agg(pl.col("weight").sum())["weight"].max() <= 1 + 1e-12, name
        assert not w.select(pl.struct("symbol", "ts").is_duplicated().any()).item(), name
    assert lookback_bars("trend_following", slow=48, vol_window=72) == 72
    assert lookback_bars("equal_weight") == 0
    with pytest.raises(ValueError, match="unknown baseline"):
        lookback_bars("nope")


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_no_look_ahead_truncation_and_perturbation(name: str, bars: pl.DataFrame) -> None:
    # Rebalance every bar so that a leak of even one bar shows up in an emitted row at the cut.
    params = {**PARAMS[name], **({} if name == "buy_and_hold_btc" else {"rebalance_every": 1})}
    fn = BASELINES[name]
    full = fn(bars, START, END, **params)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    grid = bars.filter((pl.col("ts") >= START) & (pl.col("ts") < END))["ts"].unique().sort()
    cuts = [grid[int(i)] for i in rng.integers(0, grid.len(), 8)] + [START, LISTING, LISTING - HOUR]
    for cut in cuts:
        expected = full.filter(pl.col("ts") <= cut)
        truncated = fn(bars.filter(pl.col("ts") <= cut), START, END, **params)
        assert truncated.equals(expected), f"{name}: weights up to {cut} changed when later bars were removed"
        # Rewriting the future (a crash after the cut) must not move anything at or before the cut either.
        shocked = bars.with_columns(
            pl.when(pl.col("ts") > cut).then(pl.col("close") * 0.3).otherwise(pl.col("close")).alias("close")
        )
        perturbed = fn(shocked, START, END, **params).filter(pl.col("ts") <= cut)
        assert perturbed.equals(expected), f"{name}: weights up to {cut} changed when later prices changed"


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_no_weight_before_listing(name: str, full_runs: dict[str, pl.DataFrame]) -> None:
    sol = full_runs[name].filter(pl.col("symbol") == "SOL/USDT")
    if sol.height:
        assert sol["ts"].min() >= LISTING


def test_equal_weight_universe_and_schedule(full_runs: dict[str, pl.DataFrame]) -> None:
    w = full_runs["equal_weight"]
    per_ts = (
        w.group_by("ts")
        .agg(pl.len().alias("n"), pl.col("weight").min().alias("lo"), pl.col("weight").max().alias("hi"))
        .sort("ts")
    )
    before = per_ts.filter(pl.col("ts") < LISTING)
    after = per_ts.filter(pl.col("ts") >= LISTING)
    assert (before["n"] == 2).all() and (before["lo"] == 0.5).all() and (before["hi"] == 0.5).all()
    assert (after["n"] == 3).all() and np.allclose(after["lo"].to_numpy(), 1 / 3) and np.allclose(after["hi"], 1 / 3)
    # Rows only on the schedule: every 24 bars from START (SOL joins at the first rebalance after listing).
    steps = ((per_ts["ts"] - START).dt.total_hours()).to_numpy()
    assert np.all(steps % 24 == 0) and per_ts.height == 50
    assert after["ts"].min() == START + dt.timedelta(days=11)


def test_buy_and_hold_single_order(bars: pl.DataFrame, full_runs: dict[str, pl.DataFrame]) -> None:
    w = full_runs["buy_and_hold_btc"]
    assert w.rows() == [("BTC/USDT", START, 1.0)]
    sol = buy_and_hold(bars, START, END, symbol="SOL/USDT")
    assert sol.rows() == [("SOL/USDT", LISTING, 1.0)]
    assert buy_and_hold(bars, END, END + dt.timedelta(days=1)).height == 0
    with pytest.raises(ValueError, match="DOGE"):
        buy_and_hold(bars, START, END, symbol="DOGE/USDT")


def _hand_bars(series: dict[str, list[float]]) -> pl.DataFrame:
    rows = []
    for symbol, closes in series.items():
        for i, c in enumerate(closes):
            rows.append({"symbol": symbol, "ts": T0 + i * HOUR, "close": c})
    return pl.DataFrame(rows).with_columns(pl.col("ts").cast(TS))


def test_crossover_hand_case() -> None:
    #        t:  0   1   2   3   4   5   6   7   8   9  10  11
    up = [10, 10, 10, 10, 10, 11, 12, 13, 12, 8, 7, 7]
    # SMA2 > SMA4 first at t=5 (10.5 > 10.25), last at t=8 (12.5 > 12); at t=9 SMA2 = 10 < 11.25.
    bars = _hand_bars({"A/USDT": up})
    w = trend_following(bars, T0, T0 + 12 * HOUR, fast=2, slow=4, risk_budget="equal", rebalance_every=1000)
    got = [(int((ts - T0) / HOUR), weight) for ts, weight in w.select("ts", "weight").rows()]
    # Emitted: first bar (warm-up, flat), t=3 (both SMAs full, flat: equal SMAs are not a crossover),
    # t=5 entry, t=9 exit.
    assert got == [(0, 0.0), (3, 0.0), (5, 1.0), (9, 0.0)]
    # With a second, always-flat symbol the long one keeps its own half of the budget (no reallocation).
    down = [20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9]
    w2 = trend_following(
        _hand_bars({"A/USDT": up, "B/USDT": down}),
        T0,
        T0 + 12 * HOUR,
        fast=2,
        slow=4,
        risk_budget="equal",
        rebalance_every=1000,
    )
    at5 = dict(w2.filter(pl.col("ts") == T0 + 5 * HOUR).select("symbol", "weight").rows())
    assert at5 == {"A/USDT": 0.5, "B/USDT": 0.0}


def test_trend_inverse_vol_sleeves() -> None:
    rng = np.random.default_rng(1)
    n = 400
    steps_a = 0.004 + rng.choice([-1.0, 1.0], n) * 0.002  # σ ≈ 0.002
    steps_b = 0.004 + rng.choice([-1.0, 1.0], n) * 0.006  # σ ≈ 0.006
    bars = _hand_bars({"A/USDT": list(100 * np.cumprod(1 + steps_a)), "B/USDT": list(100 * np.cumprod(1 + steps_b))})
    t = 300
    w = trend_following(bars, T0 + t * HOUR, T0 + (t + 1) * HOUR, fast=5, slow=20, vol_window=50)
    got = dict(w.select("symbol", "weight").rows())
    closes = bars.sort("symbol", "ts")
    sig = {}
    for s in ("A/USDT", "B/USDT"):
        c = closes.filter(pl.col("symbol") == s)["close"].to_numpy()
        r = c[1:] / c[:-1] - 1
        sig[s] = np.std(r[t - 50 : t], ddof=1)  # returns ending at bar t
    inv = {s: 1 / v for s, v in sig.items()}
    total = sum(inv.values())
    # Both trend up (positive drift) at t, so each holds its whole sleeve ∝ 1/σ.
    assert got["A/USDT"] == pytest.approx(inv["A/USDT"] / total, rel=1e-9)
    assert got["B/USDT"] == pytest.approx(inv["B/USDT"] / total, rel=1e-9)
    assert got["A/USDT"] > 2 * got["B/USDT"]


def test_vol_target_matches_formula_and_caps_gross(bars: pl.DataFrame) -> None:
    ppy = 8760
    both = bars.filter(pl.col("symbol") != "SOL/USDT")
    t_at = START + dt.timedelta(days=5)
    # Low target: the scale binds below the cap. Check against a direct covariance computation.
    w = vol_targeted(both, t_at, t_at + HOUR, base="equal", target_vol=0.05, vol_window=72, periods_per_year=ppy)
    wide = both.pivot(on="symbol", index="ts", values="close").sort("ts")
    closes = wide.select("BTC/USDT", "ETH/USDT").to_numpy()
    idx = wide["ts"].to_list().index(t_at)
    r = closes[1:] / closes[:-1] - 1
    window = r[idx - 72 : idx]  # the 72 returns ending at bar idx
    base = np.array([0.5, 0.5])
    sigma_p = np.sqrt(base @ np.cov(window, rowvar=False, ddof=1) @ base * ppy)
    expected = base * min(0.05 / sigma_p, 1.0)
    got = dict(w.select("symbol", "weight").rows())
    assert [got["BTC/USDT"], got["ETH/USDT"]] == pytest.approx(list(expected), rel=1e-9)
    assert sum(got.values()) < 1.0
    # High target: leverage would exceed the cap; gross is pinned at max_leverage, never above.
    for lev in (1.0, 0.5, 2.0):
        hi = vol_targeted(bars, START, END, base="equal", target_vol=50.0, vol_window=72, max_leverage=lev)
        gross = hi.group_by("ts").agg(pl.col("weight").abs().sum())["weight"]
        assert gross.max() <= lev * (1 + 1e-12)
        assert gross.min() == pytest.approx(lev, rel=1e-12)  # full history here: every bar has an estimate
    trend = vol_targeted(bars, START, END, base="trend", target_vol=50.0, fast=12, slow=48, vol_window=72)
    assert trend.group_by("ts").agg(pl.col("weight").sum())["weight"].max() <= 1 + 1e-12


def test_vol_target_fresh_listing_needs_history(bars: pl.DataFrame) -> None:
    w = vol_targeted(bars, START, END, base="equal", vol_window=72, vol_min_periods=48)
    sol = w.filter(pl.col("symbol") == "SOL/USDT").sort("ts")
    # No risk estimate, no position: SOL is 0 until it has 48 returns (49 bars) after listing.
    first_live = sol.filter(pl.col("weight") > 0)["ts"].min()
    assert first_live >= LISTING + 48 * HOUR
    assert (sol.filter(pl.col("ts") < LISTING + 48 * HOUR)["weight"] == 0).all()


def test_bad_inputs(bars: pl.DataFrame) -> None:
    naive = dt.datetime(2024, 1, 15)
    with pytest.raises(ValueError, match="timezone-aware"):
        equal_weight(bars, naive, END)
    with pytest.raises(ValueError, match="fast < slow"):
        trend_following(bars, START, END, fast=48, slow=12)
    with pytest.raises(ValueError, match="duplicate"):
        equal_weight(pl.concat([bars, bars.head(1)]), START, END)
    with pytest.raises(ValueError, match="unknown trend parameters"):
        vol_targeted(bars, START, END, base="trend", rebalance=3)


# --- real Binance fixtures (../shared/data/ohlcv; never copied into the project) --------------------------------------

SOL_FIRST_BAR = dt.datetime(2020, 8, 11, 6, tzinfo=UTC)


def _real_bars(start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
    """Raw 1h bars as published: exchange maintenance gaps are NOT filled (the harder case for the panel)."""
    bars = pl.concat([load_fixture(symbol) for symbol in ("BTC/USDT", "ETH/USDT", "SOL/USDT")])
    return bars.filter(pl.col("ts").is_between(start, end, closed="left"))


@pytest.mark.skipif(not FIXTURE_DIR.is_dir(), reason="real fixtures not present")
def test_real_bars_sol_listing_gaps_and_causality() -> None:
    real = _real_bars(dt.datetime(2020, 1, 1, tzinfo=UTC), dt.datetime(2021, 7, 1, tzinfo=UTC))
    start, end = dt.datetime(2020, 6, 1, tzinfo=UTC), dt.datetime(2021, 7, 1, tzinfo=UTC)
    cuts = [
        dt.datetime(2020, 8, 11, 6, tzinfo=UTC),
        dt.datetime(2020, 12, 21, 17, tzinfo=UTC),
        dt.datetime(2021, 4, 25, 5, tzinfo=UTC),
    ]
    for name, fn in BASELINES.items():
        w = fn(real, start, end, timeframe="1h")
        sol = w.filter(pl.col("symbol") == "SOL/USDT")
        assert sol.height == 0 or sol["ts"].min() >= SOL_FIRST_BAR, name
        assert w.group_by("ts").agg(pl.col("weight").sum())["weight"].max() <= 1 + 1e-12, name
        for cut in cuts:
            again = fn(real.filter(pl.col("ts") <= cut), start, end, timeframe="1h")
            assert again.equals(w.filter(pl.col("ts") <= cut)), f"{name} @ {cut}"
    trend = trend_following(real, start, end, timeframe="1h")
    sol_live = trend.filter((pl.col("symbol") == "SOL/USDT") & (pl.col("weight") > 0))["ts"].min()
    assert sol_live >= SOL_FIRST_BAR + dt.timedelta(hours=24 * 50 - 1)  # the slow SMA needs 1200 of SOL's own bars


def test_lookbacks_are_durations_converted_per_timeframe(bars: pl.DataFrame) -> None:
    """The defaults mean days, whatever the bar length: 10 / 50-day SMAs and a 30-day vol window are
    240 / 1200 / 720 bars at 1h and 4× that at 15m; ints are still bars; a non-whole duration names its key."""
    from crypto_assets.baselines import baseline_params
    from crypto_assets.baselines.rules import span_bars

    assert lookback_bars("trend_following") == lookback_bars("trend_following", "1h") == 1200 - 1
    assert lookback_bars("vol_targeted_trend", "15m") == 4 * 1200 - 1
    assert lookback_bars("trend_following", "15m", slow="2d", vol_window="3d") == 288
    hour = 3_600_000_000
    assert [span_bars(v, hour, "k") for v in ("10d", "3h", 7)] == [240, 3, 7]
    with pytest.raises(ValueError, match=r"fast = '90m' is not a whole number of 1:00:00 bars"):
        trend_following(bars, START, END, fast="90m", slow=48, vol_window=72)
    with pytest.raises(ValueError, match="vol_window must be a duration string"):
        vol_targeted(bars, START, END, base="equal", vol_window=True)
    # string durations and the same spans in bars give identical weights at 1h
    by_days = trend_following(bars, START, END, fast="12h", slow="2d", vol_window="3d", rebalance_every="1d")
    assert by_days.equals(trend_following(bars, START, END, **PARAMS["trend_following"], rebalance_every=24))
    settings = {"rebalance_every": "1d", "trend_fast": "10d", "trend_slow": "50d", "vol_window": "30d"}
    settings["target_vol"] = 0.4
    assert baseline_params("buy_and_hold_btc", settings) == {}
    assert baseline_params("equal_weight", settings) == {"rebalance_every": "1d"}
    assert baseline_params("vol_targeted_trend", settings) == {
        "rebalance_every": "1d",
        "fast": "10d",
        "slow": "50d",
        "vol_window": "30d",
        "target_vol": 0.4,
    }
