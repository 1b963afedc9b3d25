"""What a fold frame (`fold_dataset`) is made of, and how it is built: one rule for every reader.

A fold frame is long `symbol, ts, <features>, <regime codes>, label_*, split`:

- keys: `symbol`, `ts`, `split` (`train` / `test`) and, where folds are concatenated, `fold`;
- `label_*`: look-ahead training targets (`folds.split.add_labels`), never inputs and never scaled;
- regime codes (`*_code`, e.g. `vol_regime_code`): small categorical integers, inputs but not scaled (a
  z-score of a category is meaningless, and the RL environment reads them as they are);
- every other numeric column: a feature, robust-z-scored with statistics fitted on the train rows only.

The forecasters, the RL environment and the scaler all choose their columns with these functions, so a new
feature or code column is picked up (or left alone) the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import polars as pl

from crypto_assets.folds.scaling import RobustZScore
from crypto_assets.folds.split import LABEL_PREFIX, add_labels, split_fold
from crypto_assets.folds.windows import FoldWindow

KEY_COLUMNS: Final[tuple[str, ...]] = ("symbol", "ts", "split", "fold")
CODE_SUFFIX: Final[str] = "_code"


def input_columns(frame: pl.DataFrame) -> list[str]:
    """Model inputs in frame order: numeric columns except the keys and the `label_*` targets (scaled
    features and regime codes)."""
    return [
        name
        for name, dtype in frame.schema.items()
        if name not in KEY_COLUMNS and not name.startswith(LABEL_PREFIX) and dtype.is_numeric()
    ]


def scaled_columns(frame: pl.DataFrame) -> list[str]:
    """The inputs that are robust-z-scored: every input except the regime codes."""
    return [name for name in input_columns(frame) if not name.endswith(CODE_SUFFIX)]


def code_columns(frame: pl.DataFrame) -> list[str]:
    """The categorical regime-code inputs, left unscaled."""
    return [name for name in input_columns(frame) if name.endswith(CODE_SUFFIX)]


@dataclass(frozen=True)
class FoldDataset:
    frame: pl.DataFrame
    """Scaled train rows then test rows, with `split`."""
    scaler: RobustZScore
    """Fitted on the purged train rows only; replays the scaling on any later bars."""
    train_rows: int
    test_rows: int

    def scaler_stats(self) -> pl.DataFrame:
        """`column, median, scale, n_train` per scaled column: what the train window's robust z-scores used
        (scale 0 = constant in train, null = no finite train value)."""
        return pl.DataFrame(
            [
                {"column": name, "median": s.median, "scale": s.scale, "n_train": s.n}
                for name, s in self.scaler.stats.items()
            ],
            schema={"column": pl.String, "median": pl.Float64, "scale": pl.Float64, "n_train": pl.Int64},
        )


def build_fold_dataset(
    features: pl.DataFrame,
    bars: pl.DataFrame,
    window: FoldWindow,
    *,
    purge_bars: int,
    label_horizon: int,
    timeframe: str,
) -> FoldDataset:
    """One fold's rows: labels from `bars`' closes over the whole window, the purged train / test split
    (`split_fold`, which asserts a complete window), and robust z-scores of `scaled_columns` fitted on the
    train rows and applied to both splits."""
    frame = features.join(bars.select("symbol", "ts", "close"), on=["symbol", "ts"], how="left")
    labelled = add_labels(frame, label_horizon, timeframe=timeframe).drop("close")
    train, test = split_fold(labelled, window, purge_bars, timeframe)
    scaler = RobustZScore().fit(train, scaled_columns(train))
    out = pl.concat(
        [
            scaler.transform(train).with_columns(split=pl.lit("train")),
            scaler.transform(test).with_columns(split=pl.lit("test")),
        ]
    )
    return FoldDataset(frame=out, scaler=scaler, train_rows=train.height, test_rows=test.height)
