"""Stress replay core (crypto_assets.stress.replay): strategies on stress paths through the engine, no Dagster."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl
import pytest

from crypto_assets.backtest import CostModel, run_backtest
from crypto_assets.config.schema import StressSection
from crypto_assets.stress.paths import StressPath
from crypto_assets.stress.replay import (
    Strategy,
    aggregate,
    baseline_strategy,
    breaches,
    generate_paths,
    path_result,
    paths_from_table,
    paths_table,
    replay_paths,
    splice,
    stress_chart_png,
)
from crypto_assets_tests.builders import ohlcv_frame

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
UTC = dt.UTC


def history_bars(n: int = 24 * 20, seed: int = 0) -> pl.DataFrame:
    """A calm random walk per symbol on the 1h grid (the 'experiment's own bars')."""
    rng = np.random.default_rng(seed)
    ts = pl.datetime_range(
        dt.datetime(2024, 1, 1, tzinfo=UTC),
        dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(hours=n - 1),
        "1h",
        eager=True,
        time_zone="UTC",
    )
    frames = []
    for i, symbol in enumerate(SYMBOLS):
        close = (30000.0 / (i + 1)) * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
        open_ = np.concatenate([[close[0]], close[:-1]])
        frames.append(ohlcv_frame(symbol, ts, open_, close, np.full(n, 500.0 * (i + 1)), wick=0.001))
    return pl.concat(frames)


def crash_path(bars: pl.DataFrame, timeframe: str, params: Any, *, seed: int, n_paths: int) -> list[StressPath]:
    """Stand-in generator: 48 calm bars, then a 60-bar crash of about −45 % with 4× spread / 3× impact, seeded noise."""
    out = []
    for k in range(n_paths):
        rng = np.random.default_rng([seed, k])
        n_calm, n_crash = 48, 60
        step = np.concatenate([np.full(n_calm, 0.0005), np.full(n_crash, -0.01)]) + rng.normal(
            0, 0.002, n_calm + n_crash
        )
        ts = pl.datetime_range(
            dt.datetime(2022, 5, 1, tzinfo=UTC),
            dt.datetime(2022, 5, 1, tzinfo=UTC) + dt.timedelta(hours=n_calm + n_crash - 1),
            "1h",
            eager=True,
            time_zone="UTC",
        )
        frames, mults = [], []
        for i, symbol in enumerate(SYMBOLS):
            close = 1000.0 * (i + 1) * np.exp(np.cumsum(step * (1 + 0.2 * i)))
            open_ = np.concatenate([[1000.0 * (i + 1)], close[:-1]])
            frames.append(ohlcv_frame(symbol, ts, open_, close, np.full(ts.len(), 20000.0)))
            crash = np.arange(ts.len()) >= n_calm
            mults.append(
                pl.DataFrame(
                    {
                        "symbol": symbol,
                        "ts": ts,
                        "spread_mult": np.where(crash, 4.0, 1.0),
                        "impact_mult": np.where(crash, 3.0, 1.0),
                    }
                )
            )
        flags = pl.DataFrame({"ts": ts, "high_vol_bear": np.arange(ts.len()) >= n_calm})
        out.append(
            StressPath("crash_bootstrap", seed, k, pl.concat(frames), flags, pl.concat(mults), note="stand-in crash")
        )
    return out


GENERATORS = {"crash_bootstrap": crash_path, "panic": crash_path}
STRESS = StressSection.model_validate(
    {"enabled": True, "seeds": [0, 1], "paths_per_seed": 2, "panic": {"enabled": False}}
)
COSTS = CostModel(max_leverage=3.0)


def constant(name: str, weight: float, symbol: str = "BTC/USDT") -> Strategy:
    """Target `weight` in `symbol` at every bar of the path."""

    def decide(s: Any) -> pl.DataFrame:
        ts = s.bars.filter((pl.col("symbol") == symbol) & (pl.col("ts") >= s.start) & (pl.col("ts") < s.end))["ts"]
        return pl.DataFrame({"symbol": symbol, "ts": ts, "weight": weight})

    return Strategy(name=name, decide=decide)


def test_same_seed_same_paths_and_results() -> None:
    history = history_bars()
    runs = []
    for _ in range(2):
        paths = generate_paths(history, "1h", STRESS, 7, generators=GENERATORS)
        run = replay_paths(
            [constant("long", 1.0)], paths, COSTS, capital=100_000.0, timeframe="1h", history=history, history_bars=240
        )
        runs.append((paths_table(paths), run.results))
    assert runs[0][0].equals(runs[1][0])
    assert runs[0][1].equals(runs[1][1])
    assert runs[0][1].height == 4  # 1 scenario × 2 seeds × 2 paths
    other = generate_paths(history, "1h", STRESS, 8, generators=GENERATORS)
    assert not paths_table(other).equals(runs[0][0])  # another experiment seed, other paths


def test_cash_survives_and_leveraged_long_fails() -> None:
    history = history_bars()
    paths = generate_paths(history, "1h", STRESS, 7, generators=GENERATORS)
    cash = Strategy(
        name="cash",
        decide=lambda s: pl.DataFrame(
            schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC"), "weight": pl.Float64}
        ),
    )
    zero = constant("zeros", 0.0)
    run = replay_paths(
        [cash, zero, constant("long_3x", 3.0)],
        paths,
        COSTS,
        capital=100_000.0,
        timeframe="1h",
        history=history,
        history_bars=240,
    )
    kpis = aggregate(run.results, max_drawdown_limit=0.2, tolerance=0.05).sort("strategy")
    by = {row["strategy"]: row for row in kpis.iter_rows(named=True)}
    for name in ("cash", "zeros"):
        assert by[name]["max_drawdown_p95"] == 0.0 and by[name]["total_return_mean"] == 0.0
        assert by[name]["p_breach"] == 0.0 and by[name]["passes"]
        assert by[name]["exposure_high_vol_bear"] == 0.0
        assert by[name]["time_under_water"] == 0.0
    assert by["long_3x"]["p_breach"] == 1.0 and not by["long_3x"]["passes"]
    assert by["long_3x"]["exposure_high_vol_bear"] > 1.5
    assert breaches(kpis)["strategy"].to_list() == ["long_3x"]
    assert by["long_3x"]["paths"] == 4
    assert stress_chart_png(run.results, 0.2, "test").startswith(b"\x89PNG")


def test_replay_equals_direct_run_backtest() -> None:
    history = history_bars()
    path = crash_path(history, "1h", None, seed=3, n_paths=1)[0]
    strategy = constant("long", 1.0, "ETH/USDT")
    for hist, n in ((None, 0), (history, 240)):
        run = replay_paths([strategy], [path], COSTS, capital=50_000.0, timeframe="1h", history=hist, history_bars=n)
        spliced = splice(path, hist, "1h", n)
        weights = strategy.decide(spliced)  # type: ignore[misc]
        direct = run_backtest(
            spliced.bars, weights, COSTS, timeframe="1h", initial_value=50_000.0, multipliers=spliced.multipliers
        )
        expected = path_result(direct, spliced, 50_000.0)
        row = run.results.row(0, named=True)
        for key, value in expected.items():
            assert row[key] == value, key
        on_path = direct.equity.filter(pl.col("ts") >= spliced.start)["value"]
        assert row["total_return"] == on_path[-1] / 50_000.0 - 1.0
    # without history the engine sees exactly the generated path
    bare = splice(path, None, "1h", 0)
    assert bare.bars.equals(path.bars.sort("symbol", "ts"))


def test_splice_continues_history_without_jump() -> None:
    history = history_bars()
    path = crash_path(history, "1h", None, seed=1, n_paths=1)[0]
    spliced = splice(path, history, "1h", 100)
    last = history["ts"].max()
    assert spliced.start == last + dt.timedelta(hours=1)  # type: ignore[operator]
    assert spliced.bars["ts"].min() == last - dt.timedelta(hours=99)  # type: ignore[operator]
    for symbol in SYMBOLS:
        hist_close = history.filter(pl.col("symbol") == symbol)["close"][-1]
        first_open = spliced.bars.filter((pl.col("symbol") == symbol) & (pl.col("ts") == spliced.start))["open"][0]
        assert first_open == pytest.approx(hist_close, rel=1e-12)
        # returns and dollar volume of the path are unchanged by the rescaling
        orig = path.bars.filter(pl.col("symbol") == symbol).sort("ts")
        new = spliced.bars.filter((pl.col("symbol") == symbol) & (pl.col("ts") >= spliced.start)).sort("ts")
        np.testing.assert_allclose(new["close"].pct_change()[1:], orig["close"].pct_change()[1:], rtol=1e-9)
        np.testing.assert_allclose(new["close"] * new["volume"], orig["close"] * orig["volume"], rtol=1e-12)
    assert spliced.multipliers is not None and spliced.multipliers["ts"].min() == spliced.start
    assert spliced.high_vol_bear["ts"].min() == spliced.start


def test_paths_table_round_trip_and_baselines_and_votes() -> None:
    history = history_bars(24 * 60)
    paths = generate_paths(history, "1h", STRESS, 7, generators=GENERATORS)
    back = paths_from_table(paths_table(paths))
    assert [(p.scenario, p.seed, p.path_id) for p in back] == [(p.scenario, p.seed, p.path_id) for p in paths]
    assert back[0].bars.equals(paths[0].bars.sort("symbol", "ts").select(back[0].bars.columns))
    assert back[0].note == "stand-in crash"
    strategies = [
        baseline_strategy("trend_following", {"fast": "2d", "slow": "10d", "vol_window": "5d"}, "1h"),
        baseline_strategy("buy_and_hold_btc", {}, "1h"),
        Strategy(name="half", fold="f1", votes={"trend_following": 0.5, "buy_and_hold_btc": 0.5}),
    ]
    # votes look up members of the same fold: give the members that fold too
    strategies = [Strategy(name=s.name, fold="f1", decide=s.decide, votes=s.votes) for s in strategies]
    run = replay_paths(
        strategies, back[:1], COSTS, capital=100_000.0, timeframe="1h", history=history, history_bars=24 * 15
    )
    got = {r["strategy"]: r for r in run.results.iter_rows(named=True)}
    assert set(got) == {"trend_following", "buy_and_hold_btc", "half"}
    assert got["buy_and_hold_btc"]["max_drawdown"] > 0.3  # rides the crash
    assert 0 <= got["half"]["exposure_high_vol_bear"] <= got["buy_and_hold_btc"]["exposure_high_vol_bear"] + 1e-9
    assert run.replays == 3 and run.replays_per_s > 0


def test_registry_resolves_the_real_generators() -> None:
    from crypto_assets.stress.abm import panic_market
    from crypto_assets.stress.bootstrap import crash_bootstrap
    from crypto_assets.stress.replay import SCENARIOS, scenario_generator

    assert scenario_generator("crash_bootstrap") is crash_bootstrap
    assert scenario_generator("panic") is panic_market
    # every scenario section of the config has a generator, and only those
    assert set(SCENARIOS) == {"crash_bootstrap", "panic"} == set(StressSection(enabled=True).enabled_scenarios)
    with pytest.raises(KeyError, match="unknown stress scenario"):
        scenario_generator("meteor")
