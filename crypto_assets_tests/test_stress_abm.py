"""The panic market (crypto_assets.stress.abm): determinism, valid OHLCV, Franke-Westerhoff's stylised facts with
the published estimates, the stop cascade, and the liquidity multipliers."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from crypto_assets.config.schema import PanicSection
from crypto_assets.sources.base import RAW_SCHEMA
from crypto_assets.stress.abm import calibrate, panic_market
from crypto_assets_tests.builders import ohlcv_frame

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
DAILY_VOL = (0.03, 0.05)
RHO = 0.7


def source_bars(timeframe: str = "1h", days: int = 120) -> pl.DataFrame:
    """Two symbols of correlated lognormal bars (daily vols DAILY_VOL, correlation RHO): what the ABM calibrates on."""
    per_day = {"1h": 24, "1d": 1}[timeframe]
    n = days * per_day
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, 2)) @ np.linalg.cholesky(np.array([[1.0, RHO], [RHO, 1.0]])).T
    r = z * np.array(DAILY_VOL) / np.sqrt(per_day)
    ts = pl.datetime_range(START, START + dt.timedelta(days=days), dt.timedelta(days=1) / per_day, eager=True)[:n]
    frames = []
    for i, (symbol, price) in enumerate((("BTC/USDT", 40_000.0), ("ETH/USDT", 2_000.0))):
        close = price * np.exp(np.cumsum(r[:, i]))
        open_ = np.concatenate([[price], close[:-1]])
        frames.append(ohlcv_frame(symbol, ts, open_, close, 1000.0 / price * 40_000.0 * np.ones(n), wick=0.001))
    return pl.concat(frames).cast(RAW_SCHEMA)  # type: ignore[arg-type]


def daily_returns(path_bars: pl.DataFrame, symbol: str, per_day: int) -> np.ndarray:
    close = path_bars.filter(pl.col("symbol") == symbol)["close"].to_numpy()
    return np.diff(np.log(close[per_day - 1 :: per_day]))


def acf(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float((x[:-lag] * x[lag:]).sum() / (x * x).sum())


def test_calibration_reads_the_bars() -> None:
    symbols, start, volume, vol, corr = calibrate(source_bars())
    assert symbols == ["BTC/USDT", "ETH/USDT"]
    assert start[0] > 0 and volume[0] == pytest.approx(24_000.0)
    assert vol == pytest.approx(DAILY_VOL, rel=0.2)
    assert corr[0, 1] == pytest.approx(RHO, abs=0.15)


def test_same_seed_same_paths_and_valid_ohlcv() -> None:
    bars = source_bars()
    params = PanicSection(horizon="10d")
    first = panic_market(bars, "1h", params, seed=7, n_paths=2)
    again = panic_market(bars, "1h", params, seed=7, n_paths=3)
    other = panic_market(bars, "1h", params, seed=8, n_paths=1)
    for one, same in zip(first, again[:2], strict=True):  # a path does not depend on how many are drawn
        assert one.bars.equals(same.bars) and one.high_vol_bear.equals(same.high_vol_bear)
        assert one.multipliers is not None and same.multipliers is not None
        assert one.multipliers.equals(same.multipliers)
    assert not first[0].bars.equals(other[0].bars)
    assert not first[0].bars.equals(first[1].bars)

    path = first[0]
    assert path.scenario == "panic" and path.seed == 7 and path.path_id == 0
    assert path.bars.schema == pl.Schema(RAW_SCHEMA)
    b = path.bars
    assert b.height == 2 * 240
    last = bars["ts"].max()
    assert isinstance(last, dt.datetime)
    assert b["ts"].min() == last + dt.timedelta(hours=1)  # the path starts after the data
    assert b.group_by("symbol").agg(pl.col("ts").diff().drop_nulls().n_unique())["ts"].to_list() == [1, 1]
    assert (b["low"] > 0).all() and (b["volume"] > 0).all()
    valid = b.select(
        (pl.col("low") <= pl.min_horizontal("open", "close")) & (pl.col("high") >= pl.max_horizontal("open", "close"))
    )
    assert valid.to_series().all()
    # bars join up: each open is the previous close
    for _, g in b.group_by("symbol"):
        assert np.allclose(g["open"].to_numpy()[1:], g["close"].to_numpy()[:-1])
    assert path.high_vol_bear["ts"].equals(b["ts"].unique(maintain_order=True))


def test_published_parameters_give_fat_tails_and_volatility_clustering() -> None:
    """FW's DCA-HPM estimates, no stops, 4000 daily steps: excess kurtosis clearly positive and |returns|
    autocorrelated at lags 1, 5 and 10 well beyond the noise band and beyond the raw returns' autocorrelation."""
    params = PanicSection(horizon="4000d", stop_book_fraction=0.0)
    (path,) = panic_market(source_bars("1d", 200), "1d", params, seed=3, n_paths=1)
    r = daily_returns(path.bars, "BTC/USDT", 1)
    z = (r - r.mean()) / r.std()
    assert (z**4).mean() - 3.0 > 1.0
    band = 2.0 / np.sqrt(len(r))
    for lag in (1, 5, 10):
        assert acf(np.abs(r), lag) > 3 * band
        assert acf(np.abs(r), lag) > abs(acf(r, lag)) + band
    # the scale maps the model onto the symbol's realised daily volatility
    assert r.std() == pytest.approx(DAILY_VOL[0], rel=0.35)


def test_stop_cascade_deepens_the_worst_bar() -> None:
    bars = source_bars()
    with_stops = panic_market(bars, "1h", PanicSection(horizon="30d"), seed=11, n_paths=4)
    without = panic_market(bars, "1h", PanicSection(horizon="30d", stop_book_fraction=0.0), seed=11, n_paths=4)

    def worst(path_bars: pl.DataFrame) -> float:
        return float(np.log(path_bars["close"] / path_bars["open"]).min())

    worst_with = [worst(p.bars) for p in with_stops]
    worst_without = [worst(p.bars) for p in without]
    assert min(worst_with) < min(worst_without)
    assert np.mean(worst_with) < np.mean(worst_without)
    # fired stops add volume and widen impact; without stops impact_mult stays 1
    assert without[0].multipliers is not None and (without[0].multipliers["impact_mult"] == 1.0).all()
    for path in with_stops:  # the worst bar trades far more than a normal one (its stops and its volatility)
        b = path.bars.with_columns((pl.col("close") / pl.col("open")).log().alias("r"))
        assert b.sort("r")["volume"][0] > 2 * b["volume"].median()  # type: ignore[operator]


def test_multipliers_widen_in_high_vol_bear() -> None:
    paths = panic_market(source_bars(), "1h", PanicSection(horizon="60d"), seed=5, n_paths=4)
    inside, outside = [], []
    for path in paths:
        assert path.multipliers is not None
        mult = path.multipliers.join(path.high_vol_bear, on="ts")
        assert (mult["spread_mult"] >= 1.0).all() and (mult["impact_mult"] >= 1.0).all()
        inside.append(mult.filter("high_vol_bear").select("spread_mult", "impact_mult"))
        outside.append(mult.filter(~pl.col("high_vol_bear")).select("spread_mult", "impact_mult"))
    hvb, calm = pl.concat(inside), pl.concat(outside)
    assert hvb.height > 0
    assert hvb["spread_mult"].mean() > calm["spread_mult"].mean()  # type: ignore[operator]
    assert hvb["impact_mult"].mean() > calm["impact_mult"].mean()  # type: ignore[operator]


def test_generated_cross_correlation_follows_the_data() -> None:
    params = PanicSection(horizon="1000d", stop_book_fraction=0.0)
    (path,) = panic_market(source_bars("1d", 200), "1d", params, seed=2, n_paths=1)
    a, b = (daily_returns(path.bars, s, 1) for s in ("BTC/USDT", "ETH/USDT"))
    _, _, _, _, corr = calibrate(source_bars("1d", 200))
    assert np.corrcoef(a, b)[0, 1] == pytest.approx(corr[0, 1], abs=0.1)
