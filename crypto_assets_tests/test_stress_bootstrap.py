"""The crash bootstrap (crypto_assets.stress.bootstrap, DESIGN.md §6.3 scenario a) on the real 1h fixtures
(May 2021 and FTX windows are in them) and on the synthetic source (where the worst drawdowns stand in)."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError
from scipy import stats

from crypto_assets.config.schema import CrashBootstrapSection, CrashWindow, SyntheticSection
from crypto_assets.sources.base import RAW_SCHEMA
from crypto_assets.sources.synthetic import SyntheticSource
from crypto_assets.stress.bootstrap import SCENARIO, crash_bootstrap
from crypto_assets.stress.paths import StressPath
from crypto_assets_tests.local_exchange import load_fixture

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
UTC = dt.UTC
MAY_2021 = CrashWindow(start=dt.date(2021, 5, 5), end=dt.date(2021, 5, 25))


@pytest.fixture(scope="module")
def real_bars() -> pl.DataFrame:
    """2020-2023 of the real Binance 1h bars (SOL lists 2020-08-11: a partial universe before that)."""
    bars = pl.concat([load_fixture(s) for s in SYMBOLS])
    return bars.filter(pl.col("ts") < dt.datetime(2024, 1, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def synthetic_bars() -> pl.DataFrame:
    anchor = dt.datetime(2023, 1, 1, tzinfo=UTC)
    source = SyntheticSource(SyntheticSection(), seed=7, anchor=anchor)
    return source.fetch(SYMBOLS, "1h", anchor, dt.datetime(2024, 7, 1, tzinfo=UTC))


def _wide_close(path: StressPath) -> pl.DataFrame:
    return path.bars.pivot(on="symbol", index="ts", values="close").sort("ts")


def test_same_seed_same_paths_other_seed_other_paths(real_bars: pl.DataFrame) -> None:
    params = CrashBootstrapSection()
    first = crash_bootstrap(real_bars, "1h", params, seed=11, n_paths=4)
    again = crash_bootstrap(real_bars, "1h", params, seed=11, n_paths=4)
    other = crash_bootstrap(real_bars, "1h", params, seed=12, n_paths=4)
    fewer = crash_bootstrap(real_bars, "1h", params, seed=11, n_paths=2)
    for a, b in zip(first, again, strict=True):
        assert a.bars.equals(b.bars) and a.high_vol_bear.equals(b.high_vol_bear) and a.note == b.note
    for a, b in zip(first, other, strict=True):
        assert not np.array_equal(a.bars["close"].to_numpy(), b.bars["close"].to_numpy())
    # path i is the same whatever n_paths is
    assert all(a.bars.equals(b.bars) for a, b in zip(first, fewer, strict=False))
    # paths of one seed differ from each other too
    assert not first[0].bars.equals(first[2].bars)
    assert [p.path_id for p in first] == [0, 1, 2, 3] and {p.scenario for p in first} == {SCENARIO}
    assert {p.seed for p in first} == {11} and all(p.multipliers is None for p in first)


@pytest.mark.parametrize("source", ["real", "synthetic"])
def test_paths_are_valid_ohlcv_on_a_grid_after_the_bars(
    source: str, real_bars: pl.DataFrame, synthetic_bars: pl.DataFrame
) -> None:
    bars = real_bars if source == "real" else synthetic_bars
    params = CrashBootstrapSection(calm_length="3d", crash_length="30d")  # longer than any window: draws concatenate
    paths = crash_bootstrap(bars, "1h", params, seed=5, n_paths=6)
    last_ts = bars["ts"].max()
    assert isinstance(last_ts, dt.datetime)
    n_bars = (3 + 30) * 24
    grid = pl.datetime_range(last_ts + dt.timedelta(hours=1), last_ts + dt.timedelta(hours=n_bars), "1h", eager=True)
    for path in paths:
        frame = path.bars
        assert frame.schema == pl.Schema(RAW_SCHEMA)
        assert frame.equals(frame.sort("symbol", "ts"))
        assert frame["symbol"].unique().sort().to_list() == SYMBOLS
        for _, part in frame.group_by("symbol"):
            assert part["ts"].equals(grid.alias("ts"))
        bad = frame.filter(
            (pl.col("low") > pl.min_horizontal("open", "close"))
            | (pl.col("high") < pl.max_horizontal("open", "close"))
            | (pl.col("low") <= 0)
            | (pl.col("volume") < 0)
            | pl.any_horizontal(pl.col("open", "high", "low", "close", "volume").is_nan())
        )
        assert bad.is_empty(), bad
        assert path.high_vol_bear["ts"].equals(grid.alias("ts"))
        assert path.high_vol_bear["high_vol_bear"].to_list() == [False] * 72 + [True] * 30 * 24
    # Prices continue from each symbol's last close: the first open is within the source's open gaps of it.
    last = bars.sort("ts").group_by("symbol").agg(pl.col("close").last())
    first = paths[0].bars.group_by("symbol").agg(pl.col("open").first()).join(last, on="symbol")
    assert ((first["open"] / first["close"] - 1).abs() < 0.01).all()


def test_marginal_and_cross_asset_statistics_match_the_source_window(real_bars: pl.DataFrame) -> None:
    """Pooled over many paths, the crash part's close-to-close returns have the source window's mean, std,
    kurtosis per symbol and its cross-asset correlations (whole rows are resampled)."""
    params = CrashBootstrapSection(windows=[MAY_2021], calm_length="1d", crash_length="21d")
    paths = crash_bootstrap(real_bars, "1h", params, seed=2, n_paths=300)

    def returns(frame: pl.DataFrame) -> np.ndarray:
        wide = frame.pivot(on="symbol", index="ts", values="close").sort("ts").select(SYMBOLS).to_numpy()
        return np.asarray(wide[1:] / wide[:-1] - 1)

    # Source: the window's bars and the close before it (every symbol trades all 504 hours of it).
    start, end = dt.datetime(2021, 5, 4, 23, tzinfo=UTC), dt.datetime(2021, 5, 26, tzinfo=UTC)
    source = returns(real_bars.filter(pl.col("ts").is_between(start, end, closed="left")))
    assert source.shape == (504, 3)
    # Each path's crash part, with the calm part's last close in front of it.
    calm_last = paths[0].high_vol_bear.filter(~pl.col("high_vol_bear"))["ts"][-1]  # the 24th calm bar
    pooled = np.vstack([returns(p.bars.filter(pl.col("ts") >= calm_last)) for p in paths])
    assert pooled.shape == (300 * 504, 3)

    for i, symbol in enumerate(SYMBOLS):
        s, b = source[:, i], pooled[:, i]
        assert abs(b.mean() - s.mean()) < 0.1 * s.std(), symbol  # the window's fall survives (mean ≈ -0.1%/h)
        assert b.std() == pytest.approx(s.std(), rel=0.03), symbol
        assert stats.kurtosis(b) == pytest.approx(stats.kurtosis(s), rel=0.1), symbol
        assert stats.kurtosis(b) > 3  # fat tails of a crash, far from Gaussian
    source_corr, pooled_corr = np.corrcoef(source.T), np.corrcoef(pooled.T)
    assert np.abs(pooled_corr - source_corr).max() < 0.03
    assert pooled_corr[np.triu_indices(3, 1)].min() > 0.6  # crashes move every coin together (independent draws: ≈ 0)


def test_calm_part_is_calmer_and_rises_crash_part_falls(real_bars: pl.DataFrame) -> None:
    params = CrashBootstrapSection()
    paths = crash_bootstrap(real_bars, "1h", params, seed=3, n_paths=40)
    calm_sd, crash_sd, calm_ret, crash_ret = [], [], [], []
    for path in paths:
        log_index = np.log(_wide_close(path).select(SYMBOLS).to_numpy()).mean(axis=1)
        r = np.diff(log_index)
        calm, crash = r[: 7 * 24 - 1], r[7 * 24 :]
        calm_sd.append(calm.std())
        crash_sd.append(crash.std())
        calm_ret.append(calm.sum())
        crash_ret.append(crash.sum())
    assert np.all(np.array(calm_sd) < np.array(crash_sd))
    assert np.median(crash_sd) > 3 * np.median(calm_sd)
    assert np.mean(calm_ret) > 0.05 and np.mean(crash_ret) < -0.1  # bull, then bear
    assert "calm bull" in paths[0].note and "2021-05-05..2021-05-25" in paths[0].note
    assert "2022-11-05..2022-11-22" in paths[1].note  # paths take the windows in turn


def test_falls_back_to_the_worst_drawdowns_when_the_windows_are_outside_the_bars(synthetic_bars: pl.DataFrame) -> None:
    params = CrashBootstrapSection(fallback_windows=3)
    paths = crash_bootstrap(synthetic_bars, "1h", params, seed=1, n_paths=6)
    note = paths[0].note
    assert "2021-05-05..2021-05-25, 2022-11-05..2022-11-22 lie outside the bars" in note
    assert "the 3 worst drawdown windows of the experiment's own equal-weight index stood in" in note
    found = re.findall(
        r"(\d{4}-\d\d-\d\d \d\d:\d\d)\.\.(\d{4}-\d\d-\d\d \d\d:\d\d) \((-\d+\.\d)% peak to trough\)", note
    )
    assert len(found) == 3
    falls = [float(f) for *_, f in found]
    assert falls == sorted(falls) and falls[0] < -20  # deepest first
    spans = []
    for start, end, _ in found:
        lo, hi = (dt.datetime.fromisoformat(x).replace(tzinfo=UTC) for x in (start, end))
        assert hi - lo == dt.timedelta(days=21) - dt.timedelta(hours=1)  # as long as the longest window
        spans.append((lo, hi))
        # the equal-weight index really falls that much inside the window
        inside = synthetic_bars.filter(pl.col("ts").is_between(lo, hi))
        log_index = np.log(inside.pivot(on="symbol", index="ts", values="close").sort("ts").select(SYMBOLS).to_numpy())
        level = np.cumsum(np.r_[0, np.diff(log_index, axis=0).mean(axis=1)])
        assert (level - np.maximum.accumulate(level)).min() < -0.15
    assert all(a[1] < b[0] or b[1] < a[0] for i, a in enumerate(spans) for b in spans[i + 1 :])  # no overlap
    crash_windows = [re.search(r"crash \(stationary bootstrap of ([^,]+),", p.note).group(1) for p in paths]  # type: ignore[union-attr]
    assert crash_windows[:3] == [f"{s}..{e}" for s, e, _ in found] and crash_windows[3:] == crash_windows[:3]
    # crashes still crash: the crash part falls on average
    ends = [np.log(_wide_close(p).select(SYMBOLS).to_numpy()[[7 * 24 - 1, -1]]).mean(axis=1) for p in paths]
    assert np.mean([e[1] - e[0] for e in ends]) < -0.05


def test_a_symbol_not_trading_through_a_window_gets_no_rows(real_bars: pl.DataFrame) -> None:
    early = CrashWindow(start=dt.date(2020, 3, 8), end=dt.date(2020, 3, 20))  # COVID crash, before SOL listed
    params = CrashBootstrapSection(windows=[early, MAY_2021])
    paths = crash_bootstrap(real_bars, "1h", params, seed=0, n_paths=2)
    assert paths[0].bars["symbol"].unique().sort().to_list() == ["BTC/USDT", "ETH/USDT"]
    assert "SOL/USDT: no rows" in paths[0].note
    assert paths[1].bars["symbol"].unique().sort().to_list() == SYMBOLS


def test_bad_windows_and_lengths_are_clear_errors(real_bars: pl.DataFrame) -> None:
    late = real_bars.filter(pl.col("ts") >= dt.datetime(2021, 5, 15, tzinfo=UTC))  # half of May 2021
    with pytest.raises(
        ValueError, match=r"stress\.crash_bootstrap\.windows\[0\] \(2021-05-05\.\.2021-05-25\) has too few bars"
    ):
        crash_bootstrap(late, "1h", CrashBootstrapSection(), seed=0, n_paths=1)
    holed = real_bars.filter(
        ~pl.col("ts").is_between(dt.datetime(2021, 5, 10, tzinfo=UTC), dt.datetime(2021, 5, 13, tzinfo=UTC))
    )
    with pytest.raises(
        ValueError, match=r"windows\[0\] .*no symbol has bars on 90% \(stress\.crash_bootstrap\.min_coverage\)"
    ):
        crash_bootstrap(holed, "1h", CrashBootstrapSection(windows=[MAY_2021]), seed=0, n_paths=1)
    with pytest.raises(
        ValueError, match=r"stress\.crash_bootstrap\.crash_length = '90m' is not a whole number of 1h bars"
    ):
        crash_bootstrap(real_bars, "1h", CrashBootstrapSection(crash_length="90m"), seed=0, n_paths=1)
    with pytest.raises(ValidationError, match=r"end \(2021-05-01\) must not be before start \(2021-05-05\)"):
        CrashBootstrapSection.model_validate({"windows": [{"start": "2021-05-05", "end": "2021-05-01"}]})
    # windows entirely outside the bars are skipped while another one is inside
    inside = crash_bootstrap(
        late,
        "1h",
        CrashBootstrapSection(
            windows=[
                MAY_2021.model_copy(update={"start": dt.date(2019, 1, 1), "end": dt.date(2019, 1, 20)}),
                CrashWindow(start=dt.date(2022, 11, 5), end=dt.date(2022, 11, 22)),
            ]
        ),
        seed=0,
        n_paths=1,
    )
    assert "2019-01-01..2019-01-20 outside the bars" in inside[0].note
