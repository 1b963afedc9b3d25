"""Meta_Learner on a stored experiment's member predictions (no Dagster, nothing retrained).

Reads `predictions_<member>` of every fold and the bars from an experiment's warehouse (default: the demo's,
after `make demo`), fits the meta-learner per fold (MLP and logistic) exactly as the fold asset does, and prints
per fold what it fitted and how long it took (vs the soft vote of the same members on the same fold: the peer),
then the stitched walk-forward KPIs of the members, the soft-vote ensemble and both meta-learners.

    .venv/bin/python benchmarks/meta_learner_demo.py [--config configs/demo.yaml]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import polars as pl

from crypto_assets.config import load_config
from crypto_assets.ensemble import soft_vote
from crypto_assets.evaluation.runs import walk_forward_runs
from crypto_assets.families import Context
from crypto_assets.families.meta_learner import MetaLearnerParams, fit_meta_artifact, meta_window
from crypto_assets.folds import fold_window_for_key, stitch_months
from crypto_assets.ingestion.scope import experiment_fold_spec
from crypto_assets.metrics import compute_kpis
from crypto_assets.models.device import derive_seed
from crypto_assets.paths import experiment_root
from crypto_assets.storage.warehouse import Warehouse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    args = parser.parse_args()
    experiment = load_config(args.config)
    spec = experiment_fold_spec(experiment)
    ctx = Context.from_experiment(experiment)
    warehouse = Warehouse(experiment_root(experiment))
    members = [m.type for m in experiment.models.ensemble]
    votes = {m.type.lower(): m.weight for m in experiment.models.ensemble}
    predictions = {m.lower(): warehouse.read_table(f"predictions_{m.lower()}") for m in members}
    bars = warehouse.read_table("bars")
    assert bars is not None and all(p is not None for p in predictions.values())
    folds = sorted(predictions[members[0].lower()]["fold"].unique().to_list())
    strategies: dict[str, list[pl.DataFrame]] = {"meta_mlp": [], "meta_logistic": []}
    print(f"members {members}, folds {folds[0]}..{folds[-1]} ({len(folds)})")
    print("fold        learner   kind       rows  fit_s  soft_vote_s  learned weights")
    for learner in ("mlp", "logistic"):
        params = MetaLearnerParams.model_validate({"type": "Meta_Learner", "members": members, "learner": learner})
        for key in folds:
            window = meta_window(
                key, test_months=spec.test_months, step_months=spec.step_months, history_folds=params.history_folds
            )
            seed = derive_seed(experiment.experiment.seed, "model_meta_learner", key)
            t0 = time.perf_counter()
            artifact, decisions, stacked = fit_meta_artifact(
                params, predictions, bars, window, ctx, test_months=spec.test_months, seed=seed
            )
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            soft_vote({m: p.filter(pl.col("fold") == key) for m, p in predictions.items()}, votes)
            vote_s = time.perf_counter() - t0
            model = artifact.model
            learned = model.member_weights(stacked.filter(pl.col("split") == "train"))
            shown = ", ".join(f"{m}={v:+.3f}" for m, v in learned.items())
            print(f"{key}  {learner:8}  {model.kind:9}  {model.train_rows:5}  {fit_s:5.2f}  {vote_s:11.3f}  {shown}")
            strategies[f"meta_{learner}"].append(decisions.with_columns(fold=pl.lit(key)))
    weights = {
        **predictions,
        "ensemble": warehouse.read_table("ensemble"),
        **{name: pl.concat(frames) for name, frames in strategies.items()},
    }
    spans = stitch_months([fold_window_for_key(k, spec) for k in folds], spec.step_months)
    runs = walk_forward_runs(
        bars,
        weights,  # type: ignore[arg-type]
        spans,
        ctx.cost_model(),
        capital=ctx.capital,
        timeframe=ctx.timeframe,
        lookback=dt.timedelta(days=8),
    )
    print("\nstitched walk-forward (same engine, capital and costs):")
    print("strategy         sharpe  max_dd  total_return")
    for (name,), group in runs.per_bar.group_by("strategy", maintain_order=True):
        k = compute_kpis(group.sort("ts")["return"], ctx.periods_per_year)
        print(f"{name:15} {k['sharpe']:7.2f}  {k['max_drawdown']:6.3f}  {k['total_return']:+.3f}")


if __name__ == "__main__":
    main()
