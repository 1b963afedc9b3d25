"""Input windows for the sequence forecasters, built from a long fold frame (`symbol, ts, <features>, label_*, split`).

A window for (symbol, t) is the `window` consecutive rows of that symbol ending at t (inclusive):

    X[symbol, t] = features[symbol, t − window + 1 .. t]        shape (window, F), float32

- Only bars ≤ t enter it (DESIGN §3.5): changing a later bar never changes an earlier window.
- It never crosses symbols: rows are sorted by (symbol, ts) and a window exists only where the symbol has
  `window` rows up to t; a symbol's first `window − 1` bars have none.
- "Consecutive rows", not "consecutive bar times": a hole in the grid (an exchange maintenance gap, or the
  fold's purge gap between the train and the test window) is bridged, so the first test bars are predicted
  from the last train bars before the purge. That is still causal (all earlier in time) and avoids losing
  the first `window − 1` bars of every test window.
- Missing values (null / NaN / ±inf) become 0 — the centre of the robust z-scores — so a feature still in
  its warm-up contributes "average", and no mask feature is needed.

Windows are not materialised: `WindowSet` keeps the (N, F) feature matrix once plus the row index of each
window's last bar, and gathers batches on demand through a strided view (numpy `sliding_window_view`, torch
`Tensor.unfold`), so 100k windows × 48 bars cost the memory of the rows, not 48× that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from crypto_assets.folds.split import LABEL_PREFIX, label_columns


def default_feature_columns(frame: pl.DataFrame) -> list[str]:
    """Every numeric column except the keys (`symbol, ts, split, fold`) and the `label_*` targets, in frame
    order: the fold frame's inputs, by the one rule of `crypto_assets.folds.dataset.input_columns`."""
    from crypto_assets.folds.dataset import input_columns

    return input_columns(frame)


@dataclass(frozen=True)
class WindowSet:
    """Windows over one frame. Index i refers to the window ending at row `ends[i]` of `features`."""

    features: np.ndarray
    """(N, F) float32: every row of the frame, sorted by (symbol, ts), missing values → 0."""
    ends: np.ndarray
    """(M,) int64: row of each window's last bar (the decision bar t), ascending."""
    window: int
    keys: pl.DataFrame
    """(M rows) `symbol, ts` of each window's decision bar."""
    y_dir: np.ndarray | None = None
    """(M,) float32 `label_dir_h` at t (1.0 / 0.0), NaN where the label is null; None without a horizon."""
    fwd_ret: np.ndarray | None = None
    """(M,) float32 `label_fwd_ret_h` at t, NaN where null; None without a horizon."""

    def __len__(self) -> int:
        return int(self.ends.size)

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    def labelled(self) -> np.ndarray:
        """Boolean mask of windows whose labels are both present and finite (the only ones to fit on)."""
        if self.y_dir is None or self.fwd_ret is None:
            raise ValueError("this WindowSet was built without a horizon: it has no labels")
        return np.isfinite(self.y_dir) & np.isfinite(self.fwd_ret)

    def subset(self, selector: np.ndarray) -> WindowSet:
        """The windows picked by a boolean mask or an index array (the feature matrix is shared, not copied)."""
        idx = np.flatnonzero(selector) if selector.dtype == bool else np.asarray(selector, dtype=np.int64)
        return WindowSet(
            features=self.features,
            ends=self.ends[idx],
            window=self.window,
            keys=self.keys[idx],
            y_dir=None if self.y_dir is None else self.y_dir[idx],
            fwd_ret=None if self.fwd_ret is None else self.fwd_ret[idx],
        )

    def windows(self, idx: np.ndarray | None = None) -> np.ndarray:
        """(B, window, F) float32 copy of the windows `idx` (all when None)."""
        view = np.lib.stride_tricks.sliding_window_view(self.features, self.window, axis=0)  # (N−w+1, F, w)
        ends = self.ends if idx is None else self.ends[idx]
        return np.ascontiguousarray(view[ends - (self.window - 1)].transpose(0, 2, 1))


def gather_windows(features: torch.Tensor, ends: torch.Tensor, window: int) -> torch.Tensor:
    """Torch twin of `WindowSet.windows` for a feature matrix already on the device: (B, window, F)."""
    view = features.unfold(0, window, 1)  # (N−w+1, F, w), a strided view: no copy until indexed
    return view[ends - (window - 1)].transpose(1, 2).contiguous()


def build_windows(
    frame: pl.DataFrame, feature_columns: list[str], window: int, horizon: int | None = None
) -> WindowSet:
    """Every full window of `frame` (see the module docstring); labels of horizon `horizon` when given.

    `frame`: long `symbol, ts, <feature_columns>` (+ `label_fwd_ret_{h}`, `label_dir_{h}` when `horizon` is
    given; other columns are ignored). Raises ValueError on a missing column, a non-numeric feature, or a
    duplicate (symbol, ts).
    """
    if window < 1:
        raise ValueError(f"window must be ≥ 1 bar, got {window}")
    if not feature_columns:
        raise ValueError("feature_columns is empty")
    labels = list(label_columns(horizon)) if horizon is not None else []
    needed = ["symbol", "ts", *feature_columns, *labels]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"build_windows: columns {missing} not in the frame")
    bad = [c for c in feature_columns if not frame.schema[c].is_numeric()]
    if bad:
        raise ValueError(f"build_windows: feature columns must be numeric, got non-numeric {bad}")
    if any(c.startswith(LABEL_PREFIX) for c in feature_columns):
        raise ValueError("build_windows: label_* columns look ahead and can never be features")
    data = frame.select(needed).sort("symbol", "ts")
    if data.height and data.select(pl.struct("symbol", "ts").is_duplicated().any()).item():
        raise ValueError("build_windows: duplicate (symbol, ts) rows")

    feats = data.select(pl.col(feature_columns).cast(pl.Float32)).to_numpy().astype(np.float32, copy=False)
    feats = np.ascontiguousarray(np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0))  # nulls arrive as NaN

    # Position of each row within its symbol's run; a window ends wherever `window − 1` rows precede it.
    symbols = data.get_column("symbol").to_numpy()
    n = symbols.size
    rows = np.arange(n, dtype=np.int64)
    is_start = np.ones(n, dtype=bool)
    if n > 1:
        is_start[1:] = symbols[1:] != symbols[:-1]
    run_start = np.maximum.accumulate(np.where(is_start, rows, 0)) if n else rows
    ends = rows[(rows - run_start) >= window - 1]

    keys = data.select("symbol", "ts")[ends]
    y_dir = fwd_ret = None
    if horizon is not None:
        ret_col, dir_col = labels
        fwd_ret = data.get_column(ret_col).cast(pl.Float32).to_numpy()[ends].astype(np.float32)
        y_dir = data.get_column(dir_col).cast(pl.Float32).to_numpy()[ends].astype(np.float32)
    return WindowSet(features=feats, ends=ends, window=window, keys=keys, y_dir=y_dir, fwd_ret=fwd_ret)
