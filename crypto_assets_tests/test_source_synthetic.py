"""SyntheticSource: the raw contract, determinism (one path, any slicing) and the stylized facts."""

from __future__ import annotations

import datetime as dt
import io
import itertools
from typing import Any

import numpy as np
import polars as pl
import pytest

from crypto_assets.config.schema import DefectsSection, SyntheticSection
from crypto_assets.sources.base import RAW_SCHEMA
from crypto_assets.sources.synthetic import SyntheticSource, symbol_beta
from crypto_assets.timeframes import periods_per_year, timeframe_delta
from crypto_assets.validation.row_rules import ohlc_violations, order_violations

UTC = dt.UTC
ANCHOR = dt.datetime(2021, 1, 1, tzinfo=UTC)
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


def day(days: float) -> dt.datetime:
    return ANCHOR + dt.timedelta(days=days)


def source(seed: int = 11, **params: Any) -> SyntheticSource:
    return SyntheticSource(SyntheticSection(**params), seed=seed, anchor=ANCHOR)


def as_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_ipc(buffer)
    return buffer.getvalue()


def log_returns(frame: pl.DataFrame) -> np.ndarray:
    """(symbols, bars - 1) close-to-close log returns of a frame holding equally long symbols."""
    n = frame["symbol"].n_unique()
    closes = frame.sort("symbol", "ts")["close"].to_numpy().reshape(n, -1)
    return np.diff(np.log(closes), axis=1)


def autocorr(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float(np.dot(x[:-lag], x[lag:]) / np.dot(x, x))


def max_drawdown(prices: np.ndarray) -> float:
    return float(np.max(1.0 - prices / np.maximum.accumulate(prices)))


@pytest.fixture(scope="module")
def two_years() -> pl.DataFrame:
    """~2 years of 1h bars for three symbols with the default parameters."""
    return source(seed=11).fetch(SYMBOLS, "1h", ANCHOR, day(730))


# --- the raw contract -------------------------------------------------------------------------------


def test_schema_sorting_and_span() -> None:
    frame = source().fetch(["SOL/USDT", "BTC/USDT", "ETH/USDT"], "1h", day(5), day(12))
    assert frame.schema == pl.Schema(RAW_SCHEMA)
    assert frame.height == 3 * 7 * 24
    assert frame.equals(frame.sort("symbol", "ts"))
    assert frame["symbol"].unique().sort().to_list() == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    per_symbol = frame.group_by("symbol").agg(pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last"))
    assert per_symbol["first"].to_list() == [day(5)] * 3
    assert per_symbol["last"].to_list() == [day(12) - dt.timedelta(hours=1)] * 3
    assert frame.null_count().sum_horizontal().item() == 0
    assert order_violations(frame).is_empty()


def test_request_before_anchor_is_empty_and_straddling_starts_at_anchor() -> None:
    src = source()
    before = src.fetch(SYMBOLS, "1h", ANCHOR - dt.timedelta(days=40), ANCHOR)
    assert before.is_empty() and before.schema == pl.Schema(RAW_SCHEMA)
    straddle = src.fetch(["BTC/USDT"], "1h", ANCHOR - dt.timedelta(days=3), day(1))
    assert straddle["ts"].to_list() == [ANCHOR + dt.timedelta(hours=h) for h in range(24)]
    assert straddle["open"][0] == SyntheticSection().start_price


def test_unaligned_span_takes_bars_whose_open_is_inside() -> None:
    frame = source().fetch(
        ["BTC/USDT"], "1h", day(1) + dt.timedelta(minutes=30), day(1) + dt.timedelta(hours=3, minutes=1)
    )
    assert frame["ts"].to_list() == [day(1) + dt.timedelta(hours=h) for h in (1, 2, 3)]


def test_empty_symbol_list_and_empty_span() -> None:
    assert source().fetch([], "1h", ANCHOR, day(3)).is_empty()
    assert source().fetch(SYMBOLS, "1h", day(3), day(3)).is_empty()


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="UTC-aware"):
        source().fetch(SYMBOLS, "1h", dt.datetime(2021, 1, 1), day(1))
    with pytest.raises(ValueError, match="unknown timeframe '2h'"):
        source().fetch(SYMBOLS, "2h", ANCHOR, day(1))
    with pytest.raises(ValueError, match="UTC-aware"):
        SyntheticSource(SyntheticSection(), seed=1, anchor=dt.datetime(2021, 1, 1))


@pytest.mark.parametrize("timeframe", ["1m", "5m", "15m", "30m", "1h", "4h", "1d"])
def test_ohlc_consistent_and_open_is_previous_close(timeframe: str) -> None:
    # A crash-heavy, very volatile market is the hardest case for OHLC consistency.
    frame = source(annual_vol=3.0, t_dof=2.5, crash_rate_per_year=20.0).fetch(
        SYMBOLS, timeframe, ANCHOR, ANCHOR + 3000 * timeframe_delta(timeframe)
    )
    assert frame.height == 3 * 3000
    assert ohlc_violations(frame).is_empty()
    prev_close = frame.select(pl.col("close").shift(1).over("symbol"))["close"]
    assert (frame["open"] == prev_close).fill_null(True).all()


@pytest.mark.parametrize("timeframe", ["5m", "15m"])
def test_intraday_grid_has_no_gaps(timeframe: str) -> None:
    step = timeframe_delta(timeframe)
    frame = source().fetch(["BTC/USDT", "ETH/USDT"], timeframe, day(10), day(40))
    for symbol in ("BTC/USDT", "ETH/USDT"):
        ts = frame.filter(pl.col("symbol") == symbol)["ts"]
        assert ts.len() == dt.timedelta(days=30) // step
        assert ts[0] == day(10) and ts[-1] == day(40) - step
        assert ts.diff().drop_nulls().unique().to_list() == [step]
        step_ms = step // dt.timedelta(milliseconds=1)
        assert (ts.dt.epoch("ms") % step_ms == 0).all()


# --- determinism ------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_bytes() -> None:
    first = source(seed=5).fetch(SYMBOLS, "1h", day(3), day(100))
    second = source(seed=5).fetch(SYMBOLS, "1h", day(3), day(100))
    assert as_bytes(first) == as_bytes(second)


def test_different_seed_or_parameters_give_different_data() -> None:
    base = source(seed=5).fetch(SYMBOLS, "1h", ANCHOR, day(60))
    other_seed = source(seed=6).fetch(SYMBOLS, "1h", ANCHOR, day(60))
    other_vol = source(seed=5, annual_vol=0.9).fetch(SYMBOLS, "1h", ANCHOR, day(60))
    for other in (other_seed, other_vol):
        assert other["ts"].equals(base["ts"])
        assert not np.allclose(other["close"].to_numpy(), base["close"].to_numpy())


def test_monthly_partitions_equal_one_whole_range_fetch_bit_for_bit() -> None:
    months = [dt.datetime(2021, m, 1, tzinfo=UTC) for m in range(1, 9)] + [dt.datetime(2021, 9, 1, tzinfo=UTC)]
    whole = source(seed=3).fetch(SYMBOLS, "1h", ANCHOR, months[-1])
    # A fresh source per partition (separate runs) and one source asked out of order (one run) agree.
    fresh = [source(seed=3).fetch(SYMBOLS, "1h", a, b) for a, b in itertools.pairwise(months)]
    shared = source(seed=3)
    order = [5, 0, 7, 2, 1, 6, 3, 4]
    reused = {i: shared.fetch(SYMBOLS, "1h", months[i], months[i + 1]) for i in order}
    assert as_bytes(pl.concat(fresh).sort("symbol", "ts")) == as_bytes(whole)
    assert as_bytes(pl.concat([reused[i] for i in range(8)]).sort("symbol", "ts")) == as_bytes(whole)
    # A longer request (past the 4096-bar blocks) only appends: the earlier part is unchanged.
    longer = source(seed=3).fetch(SYMBOLS, "1h", ANCHOR, day(900))
    assert as_bytes(longer.filter(pl.col("ts") < months[-1])) == as_bytes(whole)


def test_symbol_i_is_the_same_path_whatever_the_rest_of_the_list() -> None:
    three = source().fetch(SYMBOLS, "15m", ANCHOR, day(20))
    alone = source().fetch(["BTC/USDT"], "15m", ANCHOR, day(20))
    assert alone.equals(three.filter(pl.col("symbol") == "BTC/USDT"))
    # Components are positional: renaming the first symbol keeps its numbers.
    renamed = source().fetch(["XBT/USD"], "15m", ANCHOR, day(20))
    assert renamed.drop("symbol").equals(alone.drop("symbol"))


def test_timeframes_are_separate_streams() -> None:
    hourly = source().fetch(["BTC/USDT"], "1h", ANCHOR, day(30))
    quarter = source().fetch(["BTC/USDT"], "15m", ANCHOR, day(30))
    on_the_hour = quarter.filter(pl.col("ts").dt.minute() == 0)
    assert not np.allclose(on_the_hour["open"].to_numpy()[1:], hourly["open"].to_numpy()[1:])


# --- stylized facts ---------------------------------------------------------------------------------


def test_fat_tails(two_years: pl.DataFrame) -> None:
    for returns in log_returns(two_years):
        assert pl.Series(returns).kurtosis() > 1.0  # excess kurtosis; Gaussian = 0


def test_volatility_clusters_but_returns_are_not_predictable(two_years: pl.DataFrame) -> None:
    for returns in log_returns(two_years):
        abs_acf = [autocorr(np.abs(returns), lag) for lag in range(1, 25)]
        assert min(abs_acf) > 0.05, abs_acf
        assert abs(autocorr(returns, 1)) < 0.1
        assert np.mean(abs_acf) > 3 * abs(autocorr(returns, 1))


def test_symbols_are_positively_correlated(two_years: pl.DataFrame) -> None:
    corr = np.corrcoef(log_returns(two_years))
    assert corr[np.triu_indices(3, 1)].min() > 0.3
    # Higher beta → more volatile alt coins.
    vols = log_returns(two_years).std(axis=1)
    assert vols[0] < vols[1] < vols[2]
    assert [symbol_beta(SyntheticSection(), i) for i in range(3)] == pytest.approx([1.0, 1.2, 1.4])


def test_volume_rises_with_absolute_return(two_years: pl.DataFrame) -> None:
    returns = log_returns(two_years)
    volume = two_years.sort("symbol", "ts")["volume"].to_numpy().reshape(3, -1)[:, 1:]
    for i in range(3):
        assert np.corrcoef(np.abs(returns[i]), volume[i])[0, 1] > 0.2
    assert (volume > 0).all()


def test_crashes_cause_deep_drawdowns() -> None:
    # A calm, drift-free market: deep drawdowns can only come from the crash episodes.
    calm = {"annual_vol": 0.1, "bull_drift": 0.0, "bear_drift": 0.0, "chop_drift": 0.0, "crash_depth": 0.3}
    crashing = source(seed=1, crash_rate_per_year=4.0, **calm).fetch(SYMBOLS, "1h", ANCHOR, day(730))
    quiet = source(seed=1, crash_rate_per_year=0.0, **calm).fetch(SYMBOLS, "1h", ANCHOR, day(730))
    closes = crashing.sort("symbol", "ts")["close"].to_numpy().reshape(3, -1)
    quiet_closes = quiet.sort("symbol", "ts")["close"].to_numpy().reshape(3, -1)
    assert max_drawdown(closes[0]) >= 0.20
    assert max_drawdown(quiet_closes[0]) < 0.20
    # A crash hits every symbol: the worst day of the market is a bad day for all of them.
    daily = np.diff(np.log(closes[:, ::24]), axis=1)
    worst = int(np.argmin(daily[0]))
    assert (daily[:, worst] < -0.05).all()


def test_regime_drifts_move_prices() -> None:
    up = source(bull_drift=3.0, bear_drift=3.0, chop_drift=3.0, crash_rate_per_year=0.0).fetch(
        ["BTC/USDT"], "1d", ANCHOR, day(730)
    )
    down = source(bull_drift=-3.0, bear_drift=-3.0, chop_drift=-3.0, crash_rate_per_year=0.0).fetch(
        ["BTC/USDT"], "1d", ANCHOR, day(730)
    )
    assert up["close"][-1] > 10 * up["open"][0]
    assert down["close"][-1] < 0.1 * down["open"][0]


@pytest.mark.parametrize(("timeframe", "days"), [("5m", 200), ("15m", 365), ("1h", 730), ("4h", 1460), ("1d", 2920)])
def test_volatility_and_volume_scale_with_bar_length(timeframe: str, days: int) -> None:
    # No idiosyncratic part, no crashes, no drifts: the symbol is the GARCH factor itself.
    params = {
        "idio_vol_ratio": 0.0,
        "crash_rate_per_year": 0.0,
        "bull_drift": 0.0,
        "bear_drift": 0.0,
        "chop_drift": 0.0,
        "t_dof": 8.0,
    }
    frame = source(seed=4, **params).fetch(["BTC/USDT"], timeframe, ANCHOR, day(days))
    annualised = log_returns(frame)[0].std() * np.sqrt(periods_per_year(timeframe))
    assert annualised == pytest.approx(0.65, rel=0.25)
    hourly_volume = frame["volume"].median() / (timeframe_delta(timeframe) / dt.timedelta(hours=1))
    assert hourly_volume == pytest.approx(1000.0, rel=0.5)


# --- injected defects (data.synthetic.defects) ------------------------------------------------------

DEFECTS = {"maintenance_gaps_per_year": 8.0, "wick_artifacts_per_year": 12.0, "illiquid_days_per_year": 6.0}
YEAR = (ANCHOR, day(365))


def injected(clean: pl.DataFrame, defective: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Where the defective frame differs from the clean one: the ground truth of what was injected."""
    both = clean.join(defective, on=["symbol", "ts"], how="left", suffix="_d")
    present = both.filter(pl.col("close_d").is_not_null())
    return {
        "missing": both.filter(pl.col("close_d").is_null()).select("symbol", "ts"),
        "wicks": present.filter((pl.col("high") != pl.col("high_d")) | (pl.col("low") != pl.col("low_d"))).select(
            "symbol", "ts"
        ),
        "thin": present.filter(pl.col("volume") != pl.col("volume_d")).select("symbol", "ts"),
        "moved": present.filter((pl.col("open") != pl.col("open_d")) | (pl.col("close") != pl.col("close_d"))),
    }


@pytest.fixture(scope="module")
def defect_year() -> tuple[pl.DataFrame, pl.DataFrame]:
    """One year of 1h bars for three symbols, without and with defects (same seed). Crashes are frequent:
    wicks must stand out when the market's volatility is at its highest too."""
    clean = source(seed=13, crash_rate_per_year=4.0).fetch(SYMBOLS, "1h", *YEAR)
    return clean, source(seed=13, crash_rate_per_year=4.0, defects=DEFECTS).fetch(SYMBOLS, "1h", *YEAR)


def test_defects_change_only_what_they_say(defect_year: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    clean, defective = defect_year
    found = injected(clean, defective)
    assert found["moved"].is_empty()  # prices never move: defects have their own random streams
    # Maintenance gaps: the same bars missing for every symbol, a few bars each.
    missing = found["missing"].group_by("ts").agg(pl.col("symbol").n_unique().alias("symbols")).sort("ts")
    assert missing["symbols"].to_list() == [3] * missing.height
    gaps = missing.with_columns((pl.col("ts").diff() != dt.timedelta(hours=1)).fill_null(True).cum_sum().alias("gap"))
    lengths = gaps.group_by("gap").len()["len"]
    assert 3 <= lengths.len() <= 20 and lengths.max() <= 12  # Poisson(8) gaps of at most 12 h
    # Wick artifacts: one bar of one symbol; the spike is far outside the bar's ordinary wicks.
    assert 15 <= found["wicks"].height <= 60  # Poisson(36)
    assert found["wicks"].join(found["wicks"], on="ts").filter(pl.col("symbol") != pl.col("symbol_right")).is_empty()
    # Illiquid days: whole UTC days of one symbol, volume down to 0.01-0.1% of the clean one.
    thin = found["thin"].group_by("symbol", pl.col("ts").dt.date().alias("day")).len()
    assert 8 <= thin.height <= 35 and set(thin["len"].to_list()) <= {24, 24 - 1, 24 - 2, 24 - 3}  # minus gap bars
    ratio = clean.join(defective, on=["symbol", "ts"]).join(found["thin"], on=["symbol", "ts"])
    ratio = ratio.select(pl.col("volume_right") / pl.col("volume"))["volume_right"]
    assert 1e-4 * 0.999 <= ratio.min() and ratio.max() <= 1e-3 * 1.001
    # Off by default: the default section injects nothing.
    assert source(seed=13, crash_rate_per_year=4.0, defects={}).fetch(SYMBOLS, "1h", *YEAR).equals(clean)


def test_defects_are_seeded_and_the_same_in_any_slicing() -> None:
    months = [dt.datetime(2021, m, 1, tzinfo=UTC) for m in range(1, 8)]
    whole = source(seed=4, defects=DEFECTS).fetch(SYMBOLS, "1h", ANCHOR, months[-1])
    again = source(seed=4, defects=DEFECTS).fetch(SYMBOLS, "1h", ANCHOR, months[-1])
    assert as_bytes(again) == as_bytes(whole)
    spans = itertools.pairwise(months)
    fresh = [source(seed=4, defects=DEFECTS).fetch(SYMBOLS, "1h", a, b) for a, b in spans]
    assert as_bytes(pl.concat(fresh).sort("symbol", "ts")) == as_bytes(whole)
    alone = source(seed=4, defects=DEFECTS).fetch(["BTC/USDT"], "1h", ANCHOR, months[-1])
    assert alone.equals(whole.filter(pl.col("symbol") == "BTC/USDT"))
    clean = source(seed=4).fetch(SYMBOLS, "1h", ANCHOR, months[-1])
    other = source(seed=5, defects=DEFECTS).fetch(SYMBOLS, "1h", ANCHOR, months[-1])
    other_clean = source(seed=5).fetch(SYMBOLS, "1h", ANCHOR, months[-1])
    assert not injected(clean, whole)["wicks"].equals(injected(other_clean, other)["wicks"])
    assert whole.height < clean.height  # gaps were injected in these six months


def test_validation_finds_every_injected_defect_where_it_was_injected(
    defect_year: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    from crypto_assets.config.schema import ValidationSection
    from crypto_assets.validation import validate_bars

    clean, defective = defect_year
    found = injected(clean, defective)
    report = validate_bars(defective, "1h", ValidationSection(), span_start=YEAR[0], span_end=YEAR[1])
    assert report.bars is not None
    results = {r.name: r for r in report.results}
    assert results["continuity"].failures == found["missing"].height
    filled = report.bars.filter(pl.col("is_filled")).select("symbol", "ts")
    assert filled.equals(found["missing"].sort("symbol", "ts"))
    # Wicks: every injected spike is flagged and nothing else (σ needs a day of returns first).
    judged = found["wicks"].filter(pl.col("ts") >= ANCHOR + dt.timedelta(hours=25)).sort("symbol", "ts")
    flagged = report.bars.filter(pl.col("is_wick_outlier")).select("symbol", "ts")
    assert judged.height >= 15 and flagged.equals(judged)
    assert results["wick_outliers"].failures == judged.height
    # Illiquid days: exactly the thinned symbol-days.
    thin_days = found["thin"].select("symbol", pl.col("ts").dt.truncate("1d")).unique().sort("symbol", "ts")
    illiquid = report.bars.filter(pl.col("is_illiquid"))
    illiquid_days = illiquid.select("symbol", pl.col("ts").dt.truncate("1d")).unique().sort("symbol", "ts")
    assert illiquid_days.equals(thin_days)
    assert results["liquidity"].failures == thin_days.height
    # Without defects the same market passes every rule.
    clean_report = validate_bars(clean, "1h", ValidationSection(), span_start=YEAR[0], span_end=YEAR[1])
    assert all(r.passed for r in clean_report.results)


def test_the_demo_config_injects_defects_that_validation_flags_all_of() -> None:
    """configs/demo.yaml turns the defects on so that `bars`' checks show failure samples: each one is
    found there, at the bars where it was injected (in its crash-heavy market too)."""
    from pathlib import Path

    from crypto_assets.config import load_config
    from crypto_assets.sources.factory import data_anchor, make_source
    from crypto_assets.validation import validate_bars

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    assert config.data.synthetic.defects.any
    assert config.data.end is not None
    anchor = data_anchor(config)
    end = dt.datetime.combine(config.data.end, dt.time(), tzinfo=UTC) + dt.timedelta(days=1)
    defective = make_source(config).fetch(config.data.tickers, config.data.timeframe, anchor, end)
    params = config.data.synthetic.model_copy(update={"defects": DefectsSection()})
    clean = SyntheticSource(params, seed=config.experiment.seed, anchor=anchor).fetch(
        config.data.tickers, config.data.timeframe, anchor, end
    )
    found = injected(clean, defective)
    report = validate_bars(defective, config.data.timeframe, config.validation, span_start=anchor, span_end=end)
    assert report.bars is not None
    flagged = report.bars.filter(pl.col("is_wick_outlier")).select("symbol", "ts")
    assert flagged.equals(found["wicks"].filter(pl.col("ts") >= anchor + dt.timedelta(hours=25)).sort("symbol", "ts"))
    assert report.bars.filter(pl.col("is_filled")).select("symbol", "ts").equals(found["missing"].sort("symbol", "ts"))
    thin_days = found["thin"].select("symbol", pl.col("ts").dt.truncate("1d")).unique().sort("symbol", "ts")
    illiquid = report.bars.filter(pl.col("is_illiquid")).select("symbol", pl.col("ts").dt.truncate("1d")).unique()
    assert illiquid.sort("symbol", "ts").equals(thin_days)
    assert min(found["wicks"].height, found["missing"].height, thin_days.height) > 0
    assert not any(r.passed for r in report.results if r.name in ("continuity", "wick_outliers", "liquidity"))
