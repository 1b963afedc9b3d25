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

Any registered family that declares `forecast_columns` with `p_up` and `vol` (`Family.is_state_forecaster`: the
torch forecasters LSTM_Attn / CNN_LSTM and the NeuralForecast NHITS / TFT / NF_LSTM) is cross-fitted and asked
through the Family protocol alone: `fit` on a block's fit rows, `predict` on the block. The agent needs a value on
every bar while a forecaster family predicts on its rebalancing grid, so it is asked with a copy of the context
whose `rebalance_every` is 1 (the grid is then every bar; the sizing of its weights, unused here, is the only other
thing that setting changes). Its inputs stay causal: a forecast at a bar reads the rows up to that bar only.
A family sees a block's fit rows as one frame, so its training windows may run across the left-out span (a torch
forecaster's input window, a NeuralForecast window's h target returns after its decision row): they read rows on
both sides of the span, never inside it, so never a held-out label; a few such windows per block are just noisier.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from crypto_assets.config.schema import FamilyParams
from crypto_assets.families.base import MODEL_DIR, STATE_FORECAST_COLUMNS, Family, FoldData, load_family
from crypto_assets.models.device import derive_seed

STATE_MANIFEST = "state_forecaster.json"


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


def every_bar(data: FoldData, frame: pl.DataFrame) -> FoldData:
    """`data` with `frame` as its rows, asking a forecaster family for a forecast on every `test` row of it: its
    `predict` forecasts on the context's rebalancing grid, which `rebalance_every` 1 makes every bar."""
    context = dataclasses.replace(data.context, rebalance_every=1)
    return dataclasses.replace(data, frame=frame, context=context, state_models={}, final_decision=False)


def forecasts_of(family: Family, model: Any, data: FoldData) -> pl.DataFrame:
    """`symbol, ts, p_up, vol` of `family`'s `model` on `data`'s test rows (`every_bar` data), sorted."""
    return family.predict(model, data).select("symbol", "ts", *STATE_FORECAST_COLUMNS).sort("symbol", "ts")


def cross_fitted_forecasts(
    data: FoldData, params: FamilyParams, *, seed: int, k: int, device: str = "cpu"
) -> pl.DataFrame:
    """`symbol, ts, p_up, vol` for the train rows of `data` (`split == "train"`), each from a `params.type`
    forecaster that never fitted its label (module docstring): `k` blocks purged / embargoed by the label horizon.
    Block j's model is `family.fit(<the block's fit rows>, params, derive_seed(seed, "cross_fit", j), device)`.
    Rows the family cannot forecast (no full input window) get none."""
    family = load_family(params.type)
    train = data.frame.filter(pl.col("split") == "train").sort("symbol", "ts")
    ts_us = pl.col("ts").dt.epoch("us")
    blocks = purged_blocks(train["ts"].dt.epoch("us").to_numpy(), k, data.context.label_horizon)
    out = []
    for j, block in enumerate(blocks):
        fit_rows = dataclasses.replace(
            data, frame=train.filter(ts_us.is_in(pl.Series(block.fit))), state_models={}, final_decision=False
        )
        model = family.fit(fit_rows, params, derive_seed(seed, "cross_fit", str(j)), device)
        held = ts_us.is_in(pl.Series(block.held))
        # the block and the history before it; only the block is predicted (labels are never read by predict)
        scoring = train.filter(ts_us <= int(block.held.max())).with_columns(
            split=pl.when(held).then(pl.lit("test")).otherwise(pl.lit("train"))
        )
        out.append(forecasts_of(family, model, every_bar(data, scoring)))
    return pl.concat(out).sort("symbol", "ts")


@dataclass
class StateForecaster:
    """A forecaster family's trained model as a hybrid agent observes it: the fold's own artifact's model (trained
    on the whole train window) and the volatility its `vol` is measured against (`Family.forecast_vol_scale`)."""

    family_type: str
    model: Any
    vol_scale: float
    family_module: str = ""
    """Module that registers the family (imported on load when the type is not registered yet: plug-ins)."""

    @property
    def family(self) -> Family:
        return load_family(self.family_type, self.family_module)

    def forecasts(self, data: FoldData) -> pl.DataFrame:
        """`symbol, ts, p_up, vol` on every row of `data.frame` it can forecast, train and test alike (each from
        the rows up to it: the look-back of the first decisions needs the train tail's)."""
        everywhere = every_bar(data, data.frame.with_columns(split=pl.lit("test")))
        return forecasts_of(self.family, self.model, everywhere)

    def save(self, directory: Path) -> None:
        """`state_forecaster.json` (type, module, vol scale) and `model/`, the family's own `save_model` files."""
        (directory / MODEL_DIR).mkdir(parents=True, exist_ok=True)
        self.family.save_model(self.model, directory / MODEL_DIR)
        meta = {"family_type": self.family_type, "family_module": self.family_module, "vol_scale": self.vol_scale}
        (directory / STATE_MANIFEST).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path, device: str = "cpu") -> StateForecaster:
        meta = json.loads((directory / STATE_MANIFEST).read_text())
        family = load_family(meta["family_type"], meta["family_module"])
        return cls(
            family_type=meta["family_type"],
            model=family.load_model(directory / MODEL_DIR, device),
            vol_scale=float(meta["vol_scale"]),
            family_module=meta["family_module"],
        )


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


def with_state(
    data: FoldData, forecasters: dict[str, StateForecaster], cross_fitted: dict[str, pl.DataFrame] | None = None
) -> pl.DataFrame:
    """`data.frame` with the `state_columns` of each forecaster (prefix → forecaster) joined on (symbol, ts): from
    `cross_fitted[prefix]` for the rows it covers (training), from the forecaster's own forecasts on `data` for
    every other row (decisions and their look back). A row without a forecast (no full input window yet) gets 0
    (no signal)."""
    frame = data.frame
    for prefix, forecaster in forecasters.items():
        own = forecaster.forecasts(data)
        fitted = (cross_fitted or {}).get(prefix)
        if fitted is not None:
            own = pl.concat([fitted, own.join(fitted, on=["symbol", "ts"], how="anti")])
        state = state_columns(own, prefix, forecaster.vol_scale)
        names = [c for c in state.columns if c not in ("symbol", "ts")]
        frame = frame.join(state, on=["symbol", "ts"], how="left", maintain_order="left").with_columns(
            pl.col(names).fill_null(0.0)
        )
    return frame
