"""Walk-forward folds: calendar boundaries, purge, labels, train-only scaling (no look-ahead), stitching."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest

from crypto_assets.folds import (
    FoldSpec,
    RobustZScore,
    add_labels,
    fold_window_for_key,
    fold_windows,
    is_fold_key,
    split_fold,
    stitch_months,
)
from crypto_assets.folds.windows import add_months
from crypto_assets_tests.local_exchange import FIXTURE_DIR, load_fixture

UTC = dt.UTC
TS = pl.Datetime("us", "UTC")


def d(y: int, m: int, day: int = 1) -> dt.datetime:
    return dt.datetime(y, m, day, tzinfo=UTC)


def hourly_bars(
    symbols: dict[str, tuple[dt.datetime, dt.datetime]], seed: int = 0, timeframe_hours: int = 1
) -> pl.DataFrame:
    """Random-walk long bars per symbol over [start, end) on an hourly grid."""
    rng = np.random.default_rng(seed)
    frames = []
    for symbol, (start, end) in symbols.items():
        ts = pl.datetime_range(
            start, end, dt.timedelta(hours=timeframe_hours), closed="left", time_unit="us", time_zone="UTC", eager=True
        )
        close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, ts.len())))
        frames.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "ts": ts,
                    "close": close,
                    "feat_a": rng.normal(0, 1, ts.len()),
                    "feat_b": rng.normal(5, 2, ts.len()),
                }
            )
        )
    return pl.concat(frames).with_columns(pl.col("ts").cast(TS)).sort("symbol", "ts")


# ---------------------------------------------------------------- calendar


def test_windows_train24_test3_step1() -> None:
    spec = FoldSpec(train_months=24, test_months=3, step_months=1)
    folds = fold_windows(dt.date(2020, 1, 1), dt.date(2025, 1, 1), spec)
    assert folds[0].key == "2022-01-01"
    assert folds[0].train_start == d(2020, 1) and folds[0].train_end == d(2022, 1)
    assert folds[0].test_start == d(2022, 1) and folds[0].test_end == d(2022, 4)
    # Newest fold: its test window closes exactly at the data end.
    assert folds[-1].key == "2024-10-01"
    assert folds[-1].test_end == d(2025, 1)
    assert folds[-1].train_start == d(2022, 10)
    assert len(folds) == 34  # 2022-01 .. 2024-10
    keys = [f.key for f in folds]
    assert keys == sorted(set(keys))
    for f in folds:
        assert f.train_end == f.test_start
        assert add_months(f.train_start.date(), 24) == f.train_end.date()
        assert f.test_start.tzinfo is not None and f.test_start.utcoffset() == dt.timedelta(0)


def test_windows_demo_like_and_partial_last_month() -> None:
    spec = FoldSpec(train_months=6, test_months=2, step_months=1)
    # Data start mid-month: its month still is the first train month (as the data partitions).
    folds = fold_windows(dt.date(2023, 1, 15), dt.date(2023, 12, 1), spec)
    assert [f.key for f in folds] == ["2023-07-01", "2023-08-01", "2023-09-01", "2023-10-01"]
    assert folds[0].train_start == d(2023, 1) and folds[-1].test_end == d(2023, 12)
    # A data end inside November (inclusive end 2023-11-20): November has not closed, so no test window ends
    # after 2023-11-01.
    partial = fold_windows(dt.date(2023, 1, 1), dt.date(2023, 11, 21), spec)
    assert partial[-1].key == "2023-09-01" and partial[-1].test_end == d(2023, 11)
    # Same with a datetime end: midnight of 2023-12-01 closes November, 05:00 does not close December.
    assert fold_windows(dt.date(2023, 1, 1), d(2023, 12), spec)[-1].test_end == d(2023, 12)
    assert fold_windows(dt.date(2023, 1, 1), d(2023, 12, 1) + dt.timedelta(hours=5), spec)[-1].test_end == d(2023, 12)
    # Too little data: no fold.
    assert fold_windows(dt.date(2023, 1, 1), dt.date(2023, 8, 1), spec) == []
    assert len(fold_windows(dt.date(2023, 1, 1), dt.date(2023, 9, 1), spec)) == 1


def test_windows_step2_keeps_every_second_key_from_the_first() -> None:
    spec = FoldSpec(train_months=6, test_months=2, step_months=2)
    folds = fold_windows(dt.date(2023, 1, 1), dt.date(2024, 3, 1), spec)
    assert [f.key for f in folds] == ["2023-07-01", "2023-09-01", "2023-11-01", "2024-01-01"]
    assert folds[-1].test_end == d(2024, 3)
    # Adding data appends folds without renaming old ones (anchored at the first key, not the end).
    more = fold_windows(dt.date(2023, 1, 1), dt.date(2024, 6, 1), spec)
    assert [f.key for f in more][: len(folds)] == [f.key for f in folds]
    assert is_fold_key("2023-09-01", dt.date(2023, 1, 1), spec)
    assert not is_fold_key("2023-08-01", dt.date(2023, 1, 1), spec)
    assert not is_fold_key("2023-05-01", dt.date(2023, 1, 1), spec)
    assert fold_window_for_key("2023-09-01", spec) == folds[1]


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="step_months"):
        FoldSpec(train_months=6, test_months=1, step_months=2)
    with pytest.raises(ValueError, match="purge_bars"):
        FoldSpec(purge_bars=12, label_horizon=24)
    with pytest.raises(ValueError, match="train_months"):
        FoldSpec(train_months=0)
    with pytest.raises(ValueError, match="YYYY-MM-01"):
        fold_window_for_key("2023-09-15", FoldSpec())


@pytest.mark.parametrize(("train", "test", "step"), [(24, 3, 1), (6, 2, 1), (6, 2, 2), (6, 3, 3), (12, 3, 2)])
def test_stitching_trades_every_month_exactly_once(train: int, test: int, step: int) -> None:
    spec = FoldSpec(train_months=train, test_months=test, step_months=step)
    folds = fold_windows(dt.date(2020, 1, 1), dt.date(2025, 1, 1), spec)
    spans = stitch_months(folds, step)
    assert list(spans) == [f.key for f in folds]
    counts: dict[dt.date, int] = {}
    for key, (start, end) in spans.items():
        window = next(f for f in folds if f.key == key)
        assert window.test_start <= start < end <= window.test_end  # only out-of-sample months
        month = start.date()
        while month < end.date():
            counts[month] = counts.get(month, 0) + 1
            month = add_months(month, 1)
    first, last = folds[0].test_start.date(), folds[-1].test_end.date()
    expected = []
    month = first
    while month < last:
        expected.append(month)
        month = add_months(month, 1)
    assert sorted(counts) == expected
    assert set(counts.values()) == {1}
    # Every fold but the newest contributes exactly its first step_months.
    for f in folds[:-1]:
        assert spans[f.key] == (
            f.test_start,
            dt.datetime.combine(add_months(f.test_start.date(), step), dt.time(), tzinfo=UTC),
        )


def test_stitching_rejects_overlap() -> None:
    spec = FoldSpec(train_months=6, test_months=2, step_months=1)
    folds = fold_windows(dt.date(2023, 1, 1), dt.date(2024, 1, 1), spec)
    with pytest.raises(ValueError, match="overlap"):
        stitch_months(folds, 2)  # keys one month apart, two months each


# ---------------------------------------------------------------- labels


def test_labels_on_hand_series() -> None:
    ts = pl.datetime_range(d(2024, 1), d(2024, 1, 1) + dt.timedelta(hours=5), "1h", time_zone="UTC", eager=True)
    frame = pl.DataFrame(
        {
            "symbol": ["A"] * 6 + ["B"] * 3,
            "ts": list(ts) + list(ts[:3]),
            "close": [100.0, 110.0, 99.0, 99.0, 120.0, 60.0, 10.0, 5.0, 20.0],
        }
    ).with_columns(pl.col("ts").cast(TS))
    out = add_labels(frame.reverse(), 2)  # input order does not matter
    a = out.filter(pl.col("symbol") == "A")
    expected = [math.log(99 / 100), math.log(99 / 110), math.log(120 / 99), math.log(60 / 99), None, None]
    got = a["label_fwd_ret_2"].to_list()
    for g, e in zip(got, expected, strict=True):
        assert (g is None and e is None) or g == pytest.approx(e, abs=1e-15)
    assert a["label_dir_2"].to_list() == [0, 0, 1, 0, None, None]
    b = out.filter(pl.col("symbol") == "B")  # per symbol: never reads A's prices
    assert b["label_fwd_ret_2"].to_list()[0] == pytest.approx(math.log(2.0))
    assert b["label_fwd_ret_2"].to_list()[1:] == [None, None]
    assert b["label_dir_2"].to_list() == [1, None, None]
    assert out.schema["label_dir_2"] == pl.Int8


def test_labels_null_across_a_grid_hole_with_timeframe() -> None:
    hours = [0, 1, 2, 4, 5]  # bar 03:00 missing
    frame = pl.DataFrame(
        {
            "symbol": ["A"] * 5,
            "ts": [d(2024, 1) + dt.timedelta(hours=h) for h in hours],
            "close": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    ).with_columns(pl.col("ts").cast(TS))
    out = add_labels(frame, 1, timeframe="1h")
    assert out["label_fwd_ret_1"].is_null().to_list() == [False, False, True, False, True]


# ---------------------------------------------------------------- split / purge


@pytest.fixture(scope="module")
def demo_frame() -> pl.DataFrame:
    # SOL lists mid-sample (inside the train window of the first fold).
    bars = hourly_bars(
        {
            "BTC/USDT": (d(2023, 1), d(2023, 12)),
            "ETH/USDT": (d(2023, 1), d(2023, 12)),
            "SOL/USDT": (d(2023, 3, 11), d(2023, 12)),
        }
    )
    return add_labels(bars, 24, timeframe="1h")


def test_purge_removes_exactly_the_last_bars_per_symbol(demo_frame: pl.DataFrame) -> None:
    window = fold_window_for_key("2023-07-01", FoldSpec(train_months=6, test_months=2))
    for purge in (0, 24, 37):
        train, test = split_fold(demo_frame, window, purge, "1h")
        for symbol in ("BTC/USDT", "ETH/USDT", "SOL/USDT"):
            in_train_window = demo_frame.filter(
                (pl.col("symbol") == symbol) & (pl.col("ts") >= window.train_start) & (pl.col("ts") < window.train_end)
            )
            got = train.filter(pl.col("symbol") == symbol)
            assert got.height == in_train_window.height - purge
            assert got["ts"].to_list() == in_train_window["ts"].to_list()[: in_train_window.height - purge]
        assert test["ts"].min() == window.test_start
        assert test["ts"].max() == window.test_end - dt.timedelta(hours=1)
        assert (
            test.height
            == demo_frame.filter((pl.col("ts") >= window.test_start) & (pl.col("ts") < window.test_end)).height
        )
    # With purge = horizon, no kept train label reaches the test window: the last kept row's label ends at the
    # close of the last train bar.
    train, _ = split_fold(demo_frame, window, 24, "1h")
    last = train.filter(pl.col("symbol") == "BTC/USDT")["ts"].max()
    assert last + dt.timedelta(hours=24) == window.train_end - dt.timedelta(hours=1)
    assert train["label_fwd_ret_24"].null_count() == 0


def test_partial_universe_symbol_listing_in_train_window(demo_frame: pl.DataFrame) -> None:
    window = fold_window_for_key("2023-07-01", FoldSpec(train_months=6, test_months=2))
    train, _ = split_fold(demo_frame, window, 24, "1h")
    sol = train.filter(pl.col("symbol") == "SOL/USDT")
    assert sol["ts"].min() == d(2023, 3, 11)


def test_incomplete_window_names_fold_and_months(demo_frame: pl.DataFrame) -> None:
    spec = FoldSpec(train_months=6, test_months=2)
    window = fold_window_for_key("2023-07-01", spec)
    holed = demo_frame.filter(pl.col("ts").dt.month() != 3)
    with pytest.raises(ValueError, match=r"fold 2023-07-01.*missing months: 2023-03-01"):
        split_fold(holed, window, 24, "1h")
    # A window reaching beyond the data (as Dagster's clamped mapping would give) fails too.
    late = fold_window_for_key("2023-11-01", spec)
    with pytest.raises(ValueError, match=r"fold 2023-11-01.*missing months: 2023-12-01"):
        split_fold(demo_frame, late, 24, "1h")
    early = fold_window_for_key("2023-05-01", spec)
    with pytest.raises(ValueError, match=r"fold 2023-05-01.*2022-11-01, 2022-12-01"):
        split_fold(demo_frame, early, 24, "1h")


# ---------------------------------------------------------------- scaling


def test_scaler_statistics_and_transform() -> None:
    train = pl.DataFrame(
        {
            "symbol": ["A"] * 7,
            "ts": [d(2024, 1) + dt.timedelta(hours=h) for h in range(7)],
            "x": [1.0, 2.0, 3.0, 4.0, 100.0, None, float("nan")],
            "const": [5.0] * 7,
            "sparse": [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0],
            "label_fwd_ret_24": [0.1] * 7,
        }
    ).with_columns(pl.col("ts").cast(TS))
    scaler = RobustZScore().fit(train)
    assert scaler.columns == ["x", "const", "sparse"]  # keys and labels are not scaled
    sx = scaler.stats["x"]
    assert sx.median == 3.0 and sx.n == 5
    assert sx.scale == pytest.approx(1.0 * 1.4826)  # |x − 3| = 2,1,0,1,97 → MAD 1
    out = scaler.transform(train)
    x = out["x"].to_list()
    assert x[0] == pytest.approx(-2 / 1.4826) and x[2] == 0.0
    assert x[4] == 3.0  # clipped
    assert x[5] is None and x[6] is None  # null and NaN → null
    assert out["const"].to_list() == [0.0] * 7
    # MAD 0 but not constant: std fallback, not ±clip for every non-zero value.
    vals = np.array([0, 0, 0, 0, 0, 1, 2.0])
    assert scaler.stats["sparse"].scale == pytest.approx(vals.std())
    assert out["sparse"][5] == pytest.approx(1 / vals.std())
    assert out["label_fwd_ret_24"].to_list() == [0.1] * 7
    # Round trip through JSON.
    restored = RobustZScore.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert restored.transform(train).equals(out)
    test = train.with_columns(pl.lit(float("inf")).alias("x"), pl.lit(9.0).alias("const"))
    t = restored.transform(test)
    assert t["x"].to_list() == [3.0] * 7 and t["const"].to_list() == [0.0] * 7


def test_scaler_fits_train_window_only(demo_frame: pl.DataFrame) -> None:
    spec = FoldSpec(train_months=6, test_months=2)
    window = fold_window_for_key("2023-07-01", spec)
    train, test = split_fold(demo_frame, window, 24, "1h")
    scaler = RobustZScore().fit(train, ["feat_a", "feat_b"])
    for col in ("feat_a", "feat_b"):
        values = train[col].to_numpy()
        med = np.median(values)
        assert scaler.stats[col].median == med
        assert scaler.stats[col].scale == pytest.approx(np.median(np.abs(values - med)) * 1.4826)
    # Look-ahead test: wreck every value from the purged zone on (purged rows + test window + later) and the
    # scaler, and the transformed train rows, do not move.
    purge_from = window.train_end - dt.timedelta(hours=24)
    shocked = demo_frame.with_columns(
        pl.when(pl.col("ts") >= purge_from).then(pl.col(c) * 1000 + 50).otherwise(pl.col(c)).alias(c)
        for c in ("feat_a", "feat_b", "close")
    )
    train2, test2 = split_fold(shocked, window, 24, "1h")
    scaler2 = RobustZScore().fit(train2, ["feat_a", "feat_b"])
    assert scaler2.to_dict() == scaler.to_dict()
    assert scaler2.transform(train2).equals(scaler.transform(train))
    assert not test2["feat_a"].equals(test["feat_a"])


def test_purged_train_labels_do_not_see_the_test_window() -> None:
    bars = hourly_bars({"BTC/USDT": (d(2023, 1), d(2023, 10)), "ETH/USDT": (d(2023, 1), d(2023, 10))}, seed=3)
    window = fold_window_for_key("2023-07-01", FoldSpec(train_months=6, test_months=2))
    shocked = bars.with_columns(
        pl.when(pl.col("ts") >= window.test_start).then(pl.col("close") * 3).otherwise(pl.col("close")).alias("close")
    )
    base_train, _ = split_fold(add_labels(bars, 24, timeframe="1h"), window, 24, "1h")
    shock_train, _ = split_fold(add_labels(shocked, 24, timeframe="1h"), window, 24, "1h")
    assert shock_train.equals(base_train)
    # Without the purge the last train labels would have read the test window.
    leaky_base, _ = split_fold(add_labels(bars, 24, timeframe="1h"), window, 0, "1h")
    leaky_shock, _ = split_fold(add_labels(shocked, 24, timeframe="1h"), window, 0, "1h")
    assert not leaky_shock.equals(leaky_base)


# ---------------------------------------------------------------- real Binance fixtures (../shared/data/ohlcv)


@pytest.mark.skipif(not FIXTURE_DIR.is_dir(), reason="real fixtures not present")
def test_real_bars_folds_with_gaps_and_sol_listing() -> None:
    closes = [load_fixture(symbol).select("symbol", "ts", "close") for symbol in ("BTC/USDT", "ETH/USDT", "SOL/USDT")]
    frames = [frame.filter(pl.col("ts") < d(2022, 1)) for frame in closes]
    # Maintenance gaps stay unfilled: labels across a gap are null rather than a wrong-horizon return.
    labelled = add_labels(pl.concat(frames), 24, timeframe="1h")
    assert labelled["label_fwd_ret_24"].null_count() > 3 * 24  # more than each symbol's last 24 bars
    assert add_labels(pl.concat(frames), 24)["label_fwd_ret_24"].null_count() == 3 * 24  # row-based: no gap check
    spec = FoldSpec(train_months=6, test_months=3)
    folds = fold_windows(dt.date(2020, 1, 1), dt.date(2022, 1, 1), spec)
    assert folds[0].key == "2020-07-01" and folds[-1].key == "2021-10-01"
    for window in (folds[0], folds[-1]):
        train, test = split_fold(labelled, window, 24, "1h")
        assert train["ts"].max() < window.train_end - dt.timedelta(hours=24)
        assert test["ts"].min() >= window.test_start and test["ts"].max() < window.test_end
    # SOL lists inside the first fold's test window (2020-08-11): a partial universe is fine.
    _, test0 = split_fold(labelled, folds[0], 24, "1h")
    assert test0.filter(pl.col("symbol") == "SOL/USDT")["ts"].min() == dt.datetime(2020, 8, 11, 6, tzinfo=UTC)
    with pytest.raises(ValueError, match="fold 2020-04-01.*2019-10-01"):
        split_fold(labelled, fold_window_for_key("2020-04-01", spec), 24, "1h")
