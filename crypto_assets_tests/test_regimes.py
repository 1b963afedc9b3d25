"""Regimes: causal labels never change with the future; ex-post labels (reporting only) on constructed
bull-then-bear paths."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from crypto_assets.features import FEATURE_COLUMNS, compute_features
from crypto_assets.regimes import (
    CAUSAL_REGIME_COLUMNS,
    XP_REGIME_COLUMNS,
    RegimeSpec,
    causal_regimes,
    ex_post_regimes,
    ex_post_trend_codes,
    regime_warmup_bars,
    regime_warmups,
    turning_points,
)

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
SMALL = RegimeSpec(vol_window=12, vol_median_window=60, trend_fast=10, trend_slow=40, chop_band=0.01)


def bars_from_closes(closes: dict[str, np.ndarray], firsts: dict[str, int] | None = None) -> pl.DataFrame:
    """Long hourly bars (close only matters here) from per-symbol close paths."""
    frames = []
    for symbol, close in closes.items():
        first = (firsts or {}).get(symbol, 0)
        ts = [START + dt.timedelta(hours=first + j) for j in range(close.size)]
        frames.append(
            pl.DataFrame(
                {"symbol": symbol, "ts": ts, "open": close, "high": close, "low": close, "close": close, "volume": 1.0},
                schema_overrides={"ts": pl.Datetime("us", "UTC")},
            )
        )
    return pl.concat(frames)


def regime_path(n: int = 1400, seed: int = 0) -> np.ndarray:
    """Quiet up-trend, loud down-trend, quiet chop, loud up-trend: every label occurs."""
    rng = np.random.default_rng(seed)
    q = n // 4
    drift = np.concatenate([np.full(q, 2e-3), np.full(q, -2e-3), np.zeros(q), np.full(n - 3 * q, 2e-3)])
    vol = np.concatenate([np.full(q, 3e-3), np.full(q, 2e-2), np.full(q, 3e-3), np.full(n - 3 * q, 2e-2)])
    return 100.0 * np.exp(np.cumsum(drift + vol * rng.standard_normal(n)))


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return bars_from_closes(
        {"BTC/USDT": regime_path(seed=1), "ETH/USDT": regime_path(seed=2), "SOL/USDT": regime_path(900, seed=3)},
        firsts={"SOL/USDT": 500},
    )


# --- causal ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [SMALL, RegimeSpec()], ids=["small", "default"])
def test_causal_labels_do_not_change_when_history_is_truncated(bars: pl.DataFrame, spec: RegimeSpec) -> None:
    full = causal_regimes(bars, "1h", spec=spec)
    assert full.columns == ["symbol", "ts", *CAUSAL_REGIME_COLUMNS]
    rng = np.random.default_rng(9)
    cuts = sorted({*rng.integers(0, 1400, 6).tolist(), 39, 40, 502, 503, 504, 500, 1003})
    for k in cuts:
        cut = START + dt.timedelta(hours=k)
        truncated = causal_regimes(bars.filter(pl.col("ts") <= cut), "1h", spec=spec)
        assert_frame_equal(truncated, full.filter(pl.col("ts") <= cut), check_exact=True)


def test_causal_labels_do_not_change_when_the_future_changes(bars: pl.DataFrame) -> None:
    cut = START + dt.timedelta(hours=800)
    future = pl.col("ts") > cut
    shocked = bars.with_columns(close=pl.when(future).then(pl.col("close") * 3.0).otherwise(pl.col("close")))
    before = causal_regimes(bars, "1h", spec=SMALL)
    after = causal_regimes(shocked, "1h", spec=SMALL)
    assert_frame_equal(after.filter(~future), before.filter(~future), check_exact=True)
    assert not after.filter(future).equals(before.filter(future))


def test_warmup_is_null_then_always_labelled(bars: pl.DataFrame) -> None:
    warm = regime_warmups(SMALL)
    assert warm["vol_regime"] == 12 + 60 - 1 and warm["trend_regime"] == 39
    assert regime_warmup_bars(SMALL) == 71 and regime_warmup_bars() == 503
    out = causal_regimes(bars, "1h", spec=SMALL)
    for symbol in ("BTC/USDT", "SOL/USDT"):
        part = out.filter(pl.col("symbol") == symbol).sort("ts")
        for column, w in warm.items():
            assert part[column].head(w).null_count() == w, (symbol, column)
            assert part[column].slice(w).null_count() == 0, (symbol, column)
    sol = out.filter(pl.col("symbol") == "SOL/USDT")
    assert sol["ts"].min() == START + dt.timedelta(hours=500)  # no rows before its listing


def test_labels_and_codes_agree(bars: pl.DataFrame) -> None:
    out = causal_regimes(bars, "1h", spec=SMALL).drop_nulls()
    assert out.schema["vol_regime_code"] == pl.Int8 and out.schema["trend_regime_code"] == pl.Int8
    pairs = set(out.select("trend_regime", "trend_regime_code").unique().iter_rows())
    assert pairs == {("bull", 1), ("bear", -1), ("chop", 0)}
    assert set(out.select("vol_regime", "vol_regime_code").unique().iter_rows()) == {("high", 1), ("low", 0)}


def test_trend_and_vol_follow_a_constructed_path() -> None:
    # 300 bars up 0.5%/bar, 300 bars down, 300 flat; volatility quiet except for bars 300–450.
    rng = np.random.default_rng(4)
    drift = np.concatenate([np.full(300, 5e-3), np.full(300, -5e-3), np.zeros(300)])
    vol = np.full(900, 1e-3)
    vol[300:450] = 1e-2
    close = 100.0 * np.exp(np.cumsum(drift + vol * rng.standard_normal(900)))
    spec = RegimeSpec(vol_window=12, vol_median_window=120, trend_fast=20, trend_slow=60, chop_band=0.02)
    out = causal_regimes(bars_from_closes({"BTC/USDT": close}), "1h", spec=spec)
    trend, vol_code = out["trend_regime"].to_list(), out["vol_regime"].to_list()
    assert set(trend[100:300]) == {"bull"}
    assert set(trend[400:600]) == {"bear"}  # after the slow average has turned
    assert set(trend[800:]) == {"chop"}  # flat: inside the ±2% band around the slow average
    assert set(vol_code[312:360]) == {"high"}  # loud bars against a quiet trailing median
    assert set(vol_code[462:500]) == {"low"}  # quiet again, while the median still remembers the noise


def test_a_feature_frame_gives_the_same_labels_as_its_bars(bars: pl.DataFrame) -> None:
    from_bars = causal_regimes(bars, "1h", spec=SMALL)
    from_features = causal_regimes(compute_features(bars, "1h"), "1h", spec=SMALL)
    assert_frame_equal(from_features, from_bars)
    with pytest.raises(ValueError, match="logret_1"):
        causal_regimes(bars.drop("close"), "1h")


def test_causal_regimes_reject_gaps(bars: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="grid"):
        causal_regimes(bars.filter(pl.col("ts") != START + dt.timedelta(hours=10)), "1h")


# --- ex post (reporting only) ------------------------------------------------------------------------


def bull_then_bear() -> np.ndarray:
    """30 bars of sideways noise within ±3%, then 100 → 200 in 100 bars, then 200 → 100 in 100 bars."""
    side = 100.0 * (1.0 + 0.03 * np.sin(np.arange(30)))
    up = np.linspace(100.0, 200.0, 101)
    down = np.linspace(200.0, 100.0, 101)[1:]
    return np.concatenate([side, up, down])


def test_turning_points_on_bull_then_bear() -> None:
    x = bull_then_bear()
    points = turning_points(x, threshold=0.2)
    lowest_side = int(np.argmin(x[:31]))
    assert points == [lowest_side, 130, 230]  # trough in the sideways stretch, the 200 peak, the end


def test_ex_post_labels_on_bull_then_bear() -> None:
    x = bull_then_bear()
    codes = ex_post_trend_codes(x, threshold=0.2, chop_band=0.05)
    trough = int(np.argmin(x[:31]))
    expected = np.zeros(x.size, dtype=np.int8)
    for t in range(trough, 130):  # bull swing: bull while the peak is still > 5% above
        expected[t] = 1 if 200.0 / x[t] - 1.0 > 0.05 else 0
    for t in range(130, 230):  # bear swing: bear while the trough is still > 5% below
        expected[t] = -1 if 1.0 - 100.0 / x[t] > 0.05 else 0
    np.testing.assert_array_equal(codes, expected)
    assert set(codes[:trough]) <= {0}  # sideways start: chop
    assert codes[60] == 1 and codes[128] == 0 and codes[140] == -1 and codes[228] == 0 and codes[-1] == 0
    # No chop band: every bar of a swing but its end takes the swing's direction.
    no_band = ex_post_trend_codes(x, threshold=0.2, chop_band=0.0)
    assert set(no_band[trough:130]) == {1} and set(no_band[130:230]) == {-1}
    # A path that never moves 20% has no bull or bear at all.
    assert not ex_post_trend_codes(x[:30], threshold=0.2).any()


def test_ex_post_frame_is_prefixed_and_per_symbol() -> None:
    rng = np.random.default_rng(0)
    quiet_then_loud = 100.0 * np.exp(np.cumsum(np.concatenate([rng.normal(0, 1e-3, 200), rng.normal(0, 2e-2, 200)])))
    frame = bars_from_closes({"BTC/USDT": bull_then_bear(), "ETH/USDT": quiet_then_loud}, firsts={"ETH/USDT": 50})
    out = ex_post_regimes(frame)
    assert out.columns == ["symbol", "ts", *XP_REGIME_COLUMNS]
    assert all(c.startswith("xp_") for c in XP_REGIME_COLUMNS)
    # The prefix keeps them apart from anything a model may see.
    assert not any(c.startswith("xp_") for c in (*FEATURE_COLUMNS, *CAUSAL_REGIME_COLUMNS))
    btc = out.filter(pl.col("symbol") == "BTC/USDT")
    np.testing.assert_array_equal(btc["xp_trend_regime_code"].to_numpy(), ex_post_trend_codes(bull_then_bear()))
    assert btc["xp_trend_regime"][60] == "bull" and btc["xp_trend_regime"][140] == "bear"
    eth = out.filter(pl.col("symbol") == "ETH/USDT")
    alone = ex_post_regimes(frame.filter(pl.col("symbol") == "ETH/USDT"))
    assert_frame_equal(eth, alone, check_exact=True)
    vol = eth["xp_vol_regime"].to_list()
    assert set(vol[20:180]) == {"low"} and set(vol[220:380]) == {"high"}


def test_ex_post_labels_do_look_ahead() -> None:
    # The reason they are reporting-only: the same bar's label changes with what happens afterwards.
    x = bull_then_bear()
    full = ex_post_trend_codes(x)
    truncated = ex_post_trend_codes(x[:120])  # cut before the 200 peak: the bull swing is not over
    assert not np.array_equal(full[:120], truncated)
