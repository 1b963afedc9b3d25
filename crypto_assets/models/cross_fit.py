"""Out-of-sample forecasts over a train window by purged inner cross-fitting: the hybrid agents' state features.

An agent that observes a forecaster's outputs (`state_forecasters`) must, while it learns, see what the forecaster
would say about bars it never fitted: a forecaster fitted on the whole train window and asked about those same bars
answers from memory (its in-sample fit is far better than anything it does out of sample), and the agent would learn
to trust a signal that collapses in the test window. So inside the train window the features are cross-fitted
(López de Prado, AFML ch. 7, purged k-fold):

1. The train window's distinct timestamps are cut into `k` contiguous blocks.
2. For each block, a forecaster is fitted on the train rows outside it, leaving out `gap` bars (the label horizon)
   on both sides: before the block, because a label at t looks at the close of t + h, inside the block (purge);
   after it, because the block's own labels reach h bars past it and returns are serially dependent (embargo).
3. That forecaster predicts the held-out block; its inputs there are features only, from the block and the rows
   before it (causal, no label), exactly as at decision time.

Every train bar's state feature therefore comes from a model that never saw that bar's label (nor any label within
`gap` bars of the block). A block's model may have learned from LATER blocks: this is cross-fitting, not a walk
forward, and it is out of sample in the only sense the agent needs (no fit to the labels it is scored against).

In the test window (and when the agent's artifact is replayed) the features come from the fold's own forecaster,
trained on the whole train window: a genuine out-of-sample prediction for every decision bar. The agent also looks
back `window − 1` bars into the train tail at decision time; those few bars get the same forecaster's output, so a
replay on any bars builds exactly the observation the fold decided on.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from crypto_assets.models.device import derive_seed
from crypto_assets.models.forecasters import ForecasterParams
from crypto_assets.models.training import TrainedForecaster, train_forecaster


@dataclass(frozen=True)
class PurgedBlock:
    """One cross-fitting split over a train window's timestamps (epoch µs)."""

    held: np.ndarray
    """The held-out block's timestamps (predicted by the block's model)."""
    fit: np.ndarray
    """The timestamps the block's model is fitted on: all others but `gap` bars on each side of the block."""


def purged_blocks(timestamps_us: np.ndarray, k: int, gap: int) -> list[PurgedBlock]:
    """`k` contiguous blocks of the distinct `timestamps_us`, each with its fit set purged / embargoed by `gap`
    timestamps on both sides. Raises ValueError when a block would have no timestamp or no fit set."""
    grid = np.unique(timestamps_us)
    if k < 2:
        raise ValueError(f"cross-fitting needs at least 2 blocks, got {k}")
    if grid.size < k:
        raise ValueError(f"{grid.size} timestamps cannot make {k} blocks")
    bounds = np.linspace(0, grid.size, k + 1).round().astype(int)
    blocks = []
    for start, end in itertools.pairwise(bounds.tolist()):
        fit = np.concatenate([grid[: max(0, start - gap)], grid[end + gap :]])
        if fit.size == 0:
            raise ValueError(f"a purge of {gap} bars around a block of {end - start} leaves nothing to fit on")
        blocks.append(PurgedBlock(held=grid[start:end], fit=fit))
    return blocks


def cross_fitted_forecasts(
    frame: pl.DataFrame,
    feature_columns: list[str],
    horizon: int,
    params: ForecasterParams,
    *,
    seed: int,
    k: int,
    device: str = "cpu",
) -> pl.DataFrame:
    """`symbol, ts, p_up, vol` for the train rows of `frame` (`split == "train"`), each from a forecaster that
    never fitted its label (module docstring): `k` blocks purged / embargoed by `horizon` bars. Block j's model is
    `train_forecaster(..., seed=derive_seed(seed, "cross_fit", j))`. Rows without a full input window get none."""
    train = frame.filter(pl.col("split") == "train").sort("symbol", "ts")
    ts_us = pl.col("ts").dt.epoch("us")
    out = []
    for j, block in enumerate(purged_blocks(train["ts"].dt.epoch("us").to_numpy(), k, horizon)):
        fit_rows = train.filter(ts_us.is_in(pl.Series(block.fit)))
        model = train_forecaster(
            fit_rows, feature_columns, horizon, params, device=device, seed=derive_seed(seed, "cross_fit", str(j))
        )
        held = ts_us.is_in(pl.Series(block.held))
        # the block and the history before it; only the block is predicted (labels are never read by predict)
        scoring = train.filter(ts_us <= int(block.held.max())).with_columns(
            split=pl.when(held).then(pl.lit("test")).otherwise(pl.lit("train"))
        )
        out.append(model.predict(scoring, only_split="test"))
    return pl.concat(out).sort("symbol", "ts")


def state_columns(forecasts: pl.DataFrame, prefix: str, vol_scale: float) -> pl.DataFrame:
    """Forecasts as observation features: `<prefix>_p_up` = P(up) − 0.5 and `<prefix>_log_vol` = log(vol /
    vol_scale) (the forecaster's train-window vol scale), so both are centred near 0 like the z-scored features."""
    if not (math.isfinite(vol_scale) and vol_scale > 0):
        raise ValueError(f"vol_scale must be positive, got {vol_scale}")
    return forecasts.select(
        "symbol",
        "ts",
        (pl.col("p_up") - 0.5).alias(f"{prefix}_p_up"),
        (pl.col("vol") / vol_scale).log().alias(f"{prefix}_log_vol"),
    )


def forecast_state(
    frame: pl.DataFrame, forecaster: TrainedForecaster, prefix: str, cross_fitted: pl.DataFrame | None = None
) -> pl.DataFrame:
    """`frame` with the state columns of `state_columns` joined on (symbol, ts): from `cross_fitted` for the rows
    it covers (training), from `forecaster`'s predictions on `frame` for every other row (decisions and their look
    back). A row without a forecast (no full input window yet) gets 0 (no signal)."""
    own = forecaster.predict(frame)
    if cross_fitted is not None:
        own = pl.concat([cross_fitted, own.join(cross_fitted, on=["symbol", "ts"], how="anti")])
    state = state_columns(own, prefix, forecaster.vol_scale)
    names = [c for c in state.columns if c not in ("symbol", "ts")]
    return frame.join(state, on=["symbol", "ts"], how="left", maintain_order="left").with_columns(
        pl.col(names).fill_null(0.0)
    )
