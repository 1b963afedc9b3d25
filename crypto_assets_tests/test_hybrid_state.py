"""Hybrid state: forecasters' outputs as agent features, out of sample inside the train window (purged inner
cross-fitting, crypto_assets.models.cross_fit)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from crypto_assets.config.schema import SyntheticSection
from crypto_assets.families import build_fold, compute_inputs
from crypto_assets.folds import fold_window_for_key
from crypto_assets.models import default_feature_columns
from crypto_assets.models.cross_fit import cross_fitted_forecasts, purged_blocks
from crypto_assets.models.forecasters import ForecasterParams
from crypto_assets.sources.synthetic import SyntheticSource
from crypto_assets_tests.test_families import END, SPEC, START

HORIZON = SPEC.label_horizon
FORECASTER = ForecasterParams.model_validate(
    {"type": "LSTM_Attn", "window": 8, "hidden": 4, "max_epochs": 1, "max_train_samples": 400}
)


@pytest.fixture(scope="module")
def fold_frame() -> pl.DataFrame:
    bars = SyntheticSource(SyntheticSection(), seed=5, anchor=START).fetch(["BTC/USDT", "ETH/USDT"], "1h", START, END)
    window = fold_window_for_key("2024-03-01", SPEC)
    in_window = pl.col("ts") < window.test_end
    frame, _ = build_fold(
        compute_inputs(bars, "1h").filter(in_window),
        bars.filter(in_window),
        window,
        SPEC.purge_bars,
        HORIZON,
        "1h",
    )
    return frame


def test_blocks_cover_the_window_and_purge_the_label_horizon_around_each() -> None:
    ts = np.arange(100, dtype=np.int64) * 10
    blocks = purged_blocks(np.repeat(ts, 2), k=4, gap=3)  # two symbols: every timestamp twice
    assert np.array_equal(np.concatenate([b.held for b in blocks]), ts)
    for block in blocks:
        first, last = int(np.searchsorted(ts, block.held[0])), int(np.searchsorted(ts, block.held[-1]))
        kept = set(block.fit.tolist())
        assert not kept & set(ts[max(0, first - 3) : last + 4].tolist())  # the block and 3 bars either side
        assert kept | set(ts[max(0, first - 3) : last + 4].tolist()) == set(ts.tolist())  # nothing else left out


def test_in_train_features_never_saw_their_own_labels(fold_frame: pl.DataFrame) -> None:
    """Poison the labels of one held-out block: its cross-fitted forecasts do not move (its model never read
    them), while the other blocks' forecasts do (their models did)."""
    columns = default_feature_columns(fold_frame)
    train_ts = fold_frame.filter(pl.col("split") == "train")["ts"].dt.epoch("us").to_numpy()
    held = pl.Series(purged_blocks(train_ts, 3, HORIZON)[1].held)
    in_block = pl.col("ts").dt.epoch("us").is_in(held)
    labels = [c for c in fold_frame.columns if c.startswith("label_")]
    rng = np.random.default_rng(0)
    poisoned = fold_frame.with_columns(
        [
            pl.when(in_block).then(pl.Series(rng.permutation(fold_frame[c].to_numpy()))).otherwise(pl.col(c)).alias(c)
            for c in labels
        ]
    )

    def forecasts(frame: pl.DataFrame) -> pl.DataFrame:
        return cross_fitted_forecasts(frame, columns, HORIZON, FORECASTER, seed=7, k=3)

    clean, dirty = forecasts(fold_frame), forecasts(poisoned)
    assert clean.select("symbol", "ts").equals(dirty.select("symbol", "ts"))
    block = pl.col("ts").dt.epoch("us").is_in(held)
    assert clean.filter(block).height > 0
    assert clean.filter(block).equals(dirty.filter(block))  # the poisoned block's own features: unchanged
    assert not clean.filter(~block).equals(dirty.filter(~block))  # the others' models fitted those labels
    # every train row with a full input window has exactly one out-of-sample forecast
    train = fold_frame.filter(pl.col("split") == "train")
    assert clean.height == train.height - train["symbol"].n_unique() * (FORECASTER.window - 1)
    assert clean.select("symbol", "ts").is_unique().all()
