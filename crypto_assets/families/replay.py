"""Replay any trained strategy from its artifact folder alone (DESIGN.md §6.1): stress paths, the live fold,
a notebook."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from crypto_assets.families.base import Artifact


def replay(
    artifact_dir: str | Path,
    bars: pl.DataFrame,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    features: pl.DataFrame | None = None,
    device: str = "cpu",
) -> pl.DataFrame:
    """Target weights (long `symbol, ts, weight`, decided at the close of ts, orders only) of the strategy saved in
    `artifact_dir`, on `bars` (long OHLCV of the artifact's symbols), for decisions in [start, end) — by default
    the artifact's own decision window (its fold's test window, or its live month).

    Features come from the bars (`crypto_assets.features.compute_features` and the causal regime codes, one pass
    over every bar given) unless `features` are given, and are scaled with the fold's train-only scaler; an agent's
    environment runs at the capital and costs stored in the artifact with its deterministic policy. Given its
    fold's own bars (from the experiment's first bar, as a single-run ingest computes the features) it returns
    exactly the weights the fold stored. Bars before `start` are history (indicator warm-up, input windows,
    σ / ADV of the cost model); the `purge_bars` just before `start` are left out of the inputs as the fold's
    purge left them out of training. Exact equality holds on the device the model decided on when it was stored
    (`device`; CPU unless a family trained on a GPU: pass e.g. `device="cuda:0"` for those).
    """
    artifact = Artifact.load(artifact_dir, device=device)
    return artifact.weights(bars, features=features, start=start, end=end)
