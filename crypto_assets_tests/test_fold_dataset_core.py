"""The fold frame's column rule and its construction (crypto_assets.folds.dataset), without Dagster."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from crypto_assets.folds import FoldWindow
from crypto_assets.folds.dataset import build_fold_dataset, code_columns, input_columns, scaled_columns
from crypto_assets.models import default_feature_columns

HOUR = dt.timedelta(hours=1)


def _utc(month: int) -> dt.datetime:
    return dt.datetime(2024, month, 1, tzinfo=dt.UTC)


def test_one_rule_says_which_fold_columns_are_keys_labels_codes_and_scaled_features() -> None:
    frame = pl.DataFrame(
        {
            "symbol": ["BTC/USDT"],
            "ts": [_utc(1)],
            "feat_ret_1": [0.1],
            "vol_regime_code": pl.Series([1], dtype=pl.Int8),
            "label_fwd_ret_12": [0.2],
            "label_dir_12": pl.Series([1], dtype=pl.Int8),
            "rsi_14": [55.0],
            "split": ["train"],
            "fold": ["2024-01-01"],
            "note": ["text"],  # not numeric: never an input
        }
    )
    assert input_columns(frame) == ["feat_ret_1", "vol_regime_code", "rsi_14"]
    assert scaled_columns(frame) == ["feat_ret_1", "rsi_14"]
    assert code_columns(frame) == ["vol_regime_code"]
    # The forecasters' default inputs are the same rule (they read the codes unscaled).
    assert default_feature_columns(frame) == input_columns(frame)


def test_build_fold_dataset_scales_features_on_train_only_and_leaves_codes_and_labels() -> None:
    rng = np.random.default_rng(0)
    ts = [_utc(1) + i * HOUR for i in range(24 * (31 + 29))]  # Jan (train) and Feb (test) 2024
    n = len(ts)
    features = pl.DataFrame(
        {
            "symbol": "BTC/USDT",
            "ts": ts,
            # the test month is shifted by +10: scaled with train statistics it stays far from 0
            "feat_x": np.r_[rng.normal(0, 1, 24 * 31), rng.normal(10, 1, 24 * 29)],
            "trend_regime_code": pl.Series(rng.integers(-1, 2, n), dtype=pl.Int8),
        }
    )
    bars = pl.DataFrame({"symbol": "BTC/USDT", "ts": ts, "close": 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))})
    window = FoldWindow(key="2024-02-01", train_start=_utc(1), train_end=_utc(2), test_start=_utc(2), test_end=_utc(3))
    fold = build_fold_dataset(features, bars, window, purge_bars=12, label_horizon=12, timeframe="1h")
    train = fold.frame.filter(pl.col("split") == "train")
    test = fold.frame.filter(pl.col("split") == "test")
    assert (fold.train_rows, fold.test_rows) == (train.height, test.height) == (24 * 31 - 12, 24 * 29)
    assert fold.scaler.columns == ["feat_x"]  # the code is not scaled, labels never
    assert abs(float(train["feat_x"].median())) < 0.05  # type: ignore[arg-type]
    assert float(test["feat_x"].min()) > 2.0  # type: ignore[arg-type]  # clipped at 3, far from 0
    assert (
        fold.frame["trend_regime_code"].to_list()
        == features.filter(pl.col("ts").is_in(fold.frame["ts"].implode()))["trend_regime_code"].to_list()
    )
    assert {"label_fwd_ret_12", "label_dir_12"} <= set(fold.frame.columns)
    stats = fold.scaler_stats()
    assert stats.columns == ["column", "median", "scale", "n_train"]
    assert stats["column"].to_list() == ["feat_x"] and stats["n_train"].to_list() == [fold.train_rows]
    assert stats["median"][0] == fold.scaler.stats["feat_x"].median
