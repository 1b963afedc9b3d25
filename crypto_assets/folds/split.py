"""Training labels and the train / test split of one fold (DESIGN.md §1, §3.5).

Order of operations: `add_labels` runs on the whole fold window BEFORE `split_fold`, so the last train rows
carry labels that look into the test window; `split_fold` then purges exactly those rows. Labels are
training targets only: they look ahead by construction and must never be used as model inputs or signals.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from crypto_assets.folds.windows import FoldWindow, add_months, utc
from crypto_assets.timeframes import timeframe_delta

LABEL_PREFIX = "label_"


def label_columns(horizon: int) -> tuple[str, str]:
    """(`label_fwd_ret_{h}`, `label_dir_{h}`) for horizon h in bars."""
    return f"{LABEL_PREFIX}fwd_ret_{horizon}", f"{LABEL_PREFIX}dir_{horizon}"


def add_labels(
    frame: pl.DataFrame, horizon: int, *, timeframe: str | None = None, price: str = "close"
) -> pl.DataFrame:
    """Append forward-looking training labels per symbol.

    `label_fwd_ret_{h}` = ln(close[t+h] / close[t]): the log return from the close of bar t (when a weight is
    decided) to the close h bars later. `label_dir_{h}` = 1 if that return is > 0 else 0 (Int8). Both are null
    where the forward bar does not exist (the symbol's last h bars) or a price is null / non-positive.

    `frame`: long, `symbol, ts, <price>, ...` (bars, or features joined with the bars' close). Without
    `timeframe` the forward bar is h rows later within the symbol, which assumes a gap-free grid (what the bars
    stage produces); with `timeframe` it must also be exactly h bar lengths later, else the label is null.
    Output rows are sorted by (symbol, ts); other columns are untouched.
    """
    if horizon < 1:
        raise ValueError(f"label horizon must be ≥ 1 bar, got {horizon}")
    missing = [c for c in ("symbol", "ts", price) if c not in frame.columns]
    if missing:
        raise ValueError(f"add_labels needs columns {missing}; got {frame.columns}")
    ret_col, dir_col = label_columns(horizon)
    out = frame.sort("symbol", "ts")
    px = pl.col(price).cast(pl.Float64)
    px = pl.when(px > 0).then(px)  # ln of a non-positive price is undefined: leave the label null
    fwd_px = px.shift(-horizon).over("symbol")
    ret = (fwd_px / px).log()
    if timeframe is not None:
        # A hole in the grid would make "h rows later" a different horizon: null it instead.
        expected = timeframe_delta(timeframe) * horizon
        ret = pl.when(pl.col("ts").shift(-horizon).over("symbol") - pl.col("ts") == expected).then(ret)
    out = out.with_columns(ret.alias(ret_col))
    return out.with_columns(
        pl.when(pl.col(ret_col).is_null() | pl.col(ret_col).is_nan())
        .then(None)
        .otherwise((pl.col(ret_col) > 0).cast(pl.Int8))
        .cast(pl.Int8)
        .alias(dir_col)
    )


def missing_months(frame: pl.DataFrame, start: dt.datetime, end: dt.datetime) -> list[str]:
    """Month keys (`YYYY-MM-01`) in [start, end) with no row in `frame` (any symbol counts)."""
    months: list[dt.date] = []
    month = start.date()
    while utc(month) < end:
        months.append(month)
        month = add_months(month, 1)
    if frame.height == 0:
        present: set[dt.date] = set()
    else:
        in_window = frame.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        present = set(in_window.select(pl.col("ts").dt.truncate("1mo").dt.date().unique()).to_series().to_list())
    return [m.strftime("%Y-%m-%d") for m in months if m not in present]


def check_complete(frame: pl.DataFrame, window: FoldWindow) -> None:
    """Raise ValueError naming the fold and the months of [train_start, test_end) that have no rows at all.

    Dagster clamps a mapped partition window at the upstream's bounds without error, so a fold could silently
    train on fewer months than configured. Completeness is calendar-wide, not per symbol: a symbol that lists
    mid-sample simply has no rows before its listing.
    """
    gaps = missing_months(frame, window.train_start, window.test_end)
    if gaps:
        raise ValueError(
            f"fold {window.key}: features do not cover the window [{window.train_start:%Y-%m-%d}, "
            f"{window.test_end:%Y-%m-%d}); missing months: {', '.join(gaps)}"
        )


def split_fold(
    features: pl.DataFrame, window: FoldWindow, purge_bars: int, timeframe: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, test) rows of one fold from long `symbol, ts, ...` frames (labels already added).

    train = ts in [train_start, train_end − purge_bars × bar): the train window minus its last `purge_bars` bars
    (purge, López de Prado AFML ch. 7: those rows' labels overlap the test window). The purge is by time, so on
    the regular bar grid it removes exactly each symbol's last `purge_bars` bars of the train window, and a
    symbol whose bars stop earlier loses only rows whose labels really reach the test window.
    test  = ts in [test_start, test_end). No embargo is needed after the test window: in walk-forward the
    train window always precedes it.

    Raises ValueError naming the fold if any month of the window has no rows, or if the purge leaves no train
    rows. Both frames are sorted by (symbol, ts).
    """
    if purge_bars < 0:
        raise ValueError(f"purge_bars must be ≥ 0, got {purge_bars}")
    missing = [c for c in ("symbol", "ts") if c not in features.columns]
    if missing:
        raise ValueError(f"fold {window.key}: features lack columns {missing}")
    ts_dtype = features.schema["ts"]
    if not isinstance(ts_dtype, pl.Datetime) or ts_dtype.time_zone != "UTC":
        raise ValueError(f"fold {window.key}: `ts` must be a UTC Datetime, got {ts_dtype}")
    check_complete(features, window)
    purge_from = window.train_end - timeframe_delta(timeframe) * purge_bars
    ordered = features.sort("symbol", "ts")
    ts = pl.col("ts")
    train = ordered.filter((ts >= window.train_start) & (ts < purge_from))
    test = ordered.filter((ts >= window.test_start) & (ts < window.test_end))
    if train.height == 0:
        raise ValueError(f"fold {window.key}: no train rows left after purging {purge_bars} bars")
    return train, test
