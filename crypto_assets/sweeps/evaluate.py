"""The trial evaluator: one configuration walk-forward evaluated exactly as the fold assets and reports evaluate a
family (same fold rows, seeds, engine, costs and capital), with early stopping on its fold results.

For each fold (oldest first): build the fold (`families.build_fold`), fit (`families.fit_artifact`, seed
`derive_seed(experiment seed, family label, fold)` like the fold assets), take its target weights, run them
through the engine on the fold's test window (`evaluation.runs.run_strategies`) → the fold's Sharpe. After each
fold the median rule may prune the trial. The folds evaluated are then stitched (`evaluation.runs.
walk_forward_runs`) → the trial's per-bar returns and its objective (annualised stitched Sharpe).
No Dagster, no Ray here: `crypto_assets.sweeps.driver` runs this as a Ray task.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from crypto_assets.families import Context, FamilyParams
    from crypto_assets.folds import FoldWindow


@dataclass(frozen=True)
class FoldResult:
    key: str
    sharpe: float
    """Annualised Sharpe of the fold's whole test window (net per-bar returns, DESIGN §3.4)."""


@dataclass(frozen=True)
class TrialResult:
    """One configuration's walk-forward result (possibly pruned after some folds)."""

    folds: list[FoldResult]
    pruned: bool
    ts: pl.Series
    """Bars of the stitched run over the folds evaluated."""
    returns: np.ndarray
    """Net per-bar returns of the stitched run."""
    objective: float
    """Annualised Sharpe of the stitched returns."""
    node_id: str = ""
    seconds: float = 0.0

    @property
    def fold_sharpes(self) -> list[float]:
        return [f.sharpe for f in self.folds]


def running_means(sharpes: Sequence[float]) -> list[float]:
    """Mean fold Sharpe after each fold: the value the median rule compares (NaN folds count as 0: no trading)."""
    clean = [0.0 if not math.isfinite(s) else s for s in sharpes]
    return [sum(clean[: i + 1]) / (i + 1) for i in range(len(clean))]


def prune_thresholds(
    earlier: Sequence[Sequence[float]], n_folds: int, *, warmup_folds: int, min_trials: int
) -> list[float | None]:
    """Per fold index, the median of the earlier trials' running means there (None: no pruning after that fold:
    within the warm-up, at the last fold, or with fewer than `min_trials` earlier values). Built only from trials
    told before the current batch was asked, so a trial's fate does not depend on which one finished first."""
    out: list[float | None] = []
    means = [running_means(s) for s in earlier]
    for i in range(n_folds):
        values = [m[i] for m in means if len(m) > i]
        usable = i + 1 >= warmup_folds and i < n_folds - 1 and len(values) >= min_trials
        out.append(statistics.median(values) if usable else None)
    return out


def cost_lookback(context: Context) -> dt.timedelta:
    """History the engine needs before a window's first decision bar (σ's and ADV's windows, in bars)."""
    from crypto_assets.timeframes import timeframe_delta

    bars = max(int(context.costs["vol_window"]), int(context.costs["adv_window"]))
    return timeframe_delta(context.timeframe) * bars


def evaluate_trial(
    params: FamilyParams,
    windows: Sequence[FoldWindow],
    bars: pl.DataFrame,
    features: pl.DataFrame,
    context: Context,
    *,
    seed_root: int,
    step_months: int,
    thresholds: Sequence[float | None] | None = None,
    device: str = "cpu",
) -> TrialResult:
    """Walk-forward evaluate `params` on `windows` (oldest first) of `bars` / `features` (the experiment's whole
    frames, `features` as the `features` asset holds them). `thresholds[i]`: prune after fold i when the running
    mean fold Sharpe is below it (see `prune_thresholds`)."""
    from crypto_assets.backtest import CostModel
    from crypto_assets.evaluation.runs import run_strategies, walk_forward_runs
    from crypto_assets.families import FoldData, build_fold, fit_artifact, get_family, order_rows
    from crypto_assets.folds import stitch_months
    from crypto_assets.metrics import sharpe_ratio
    from crypto_assets.models.device import derive_seed

    started = time.perf_counter()
    family = get_family(params.type)
    costs = CostModel(**context.costs)
    lookback = cost_lookback(context)
    ppy = context.periods_per_year
    ts = pl.col("ts")
    folds: list[FoldResult] = []
    weights: list[pl.DataFrame] = []
    pruned = False
    for i, window in enumerate(windows):
        in_window = (ts >= window.train_start) & (ts < window.test_end)
        fold_bars, fold_features = bars.filter(in_window), features.filter(in_window)
        frame, scaler = build_fold(
            fold_features, fold_bars, window, context.purge_bars, context.label_horizon, context.timeframe
        )
        seed = derive_seed(seed_root, family.random_label(), window.key)
        data = FoldData(key=window.key, frame=frame, bars=fold_bars, context=context)
        _, decisions = fit_artifact(params, data, scaler, window, seed=seed, device=device)
        orders = order_rows(decisions)
        history = bars.filter((ts >= window.test_start - lookback) & (ts < window.test_end))
        run = run_strategies(
            history,
            {family.slug: orders},
            costs,
            capital=context.capital,
            timeframe=context.timeframe,
            start=window.test_start,
            end=window.test_end,
        )
        folds.append(FoldResult(window.key, sharpe_ratio(run.per_bar["return"].to_numpy(), ppy)))
        weights.append(orders.with_columns(fold=pl.lit(window.key)))
        limit = thresholds[i] if thresholds is not None and i < len(thresholds) else None
        if limit is not None and running_means([f.sharpe for f in folds])[-1] < limit:
            pruned = True
            break
    spans = stitch_months(list(windows[: len(folds)]), step_months)
    stitched = walk_forward_runs(
        bars,
        {family.slug: pl.concat(weights)},
        spans,
        costs,
        capital=context.capital,
        timeframe=context.timeframe,
        lookback=lookback,
    ).per_bar.sort("ts")
    returns = stitched["return"].to_numpy()
    return TrialResult(
        folds=folds,
        pruned=pruned,
        ts=stitched["ts"],
        returns=returns,
        objective=sharpe_ratio(returns, ppy),
        seconds=time.perf_counter() - started,
    )
