"""The `sweep` asset (DESIGN.md §6.4): a hyper-parameter sweep of one family on Ray, in its own job `sweep`.

    bars, features (every month) ─► sweep   (the sweep table; trials appended to the trials registry)

Thin wiring: crypto_assets.sweeps does the work; the `ray_cluster` resource (RayResource) says where (RAY_ADDRESS
or a local Ray started for the run). Every trial is walk-forward evaluated on the folds before the holdout and
appended to the registry (pruned ones flagged); the metadata carries the best configuration's stability (its fold
Sharpes and its nearest neighbours') and its result on the holdout months, which no trial's objective saw.
"""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

import json

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, section_hash
from crypto_assets.orchestration.metadata import table_metadata
from crypto_assets.orchestration.resources import RayResource
from crypto_assets.paths import experiment_root

SWEEP_GROUP = "sweep"
RAY_RESOURCE = "ray_cluster"


def build_sweep_assets(experiment: ExperimentConfig) -> list[dg.AssetsDefinition]:
    """The `sweep` asset when the experiment has a `sweep` section; none otherwise."""
    sweep_section = experiment.sweep
    if sweep_section is None:
        return []
    version = (
        section_hash(experiment, "data", "features", "walk_forward", "costs", "models", "sweep")
        + f"-seed={experiment.experiment.seed}-capital={experiment.experiment.capital!r}"
    )

    @dg.asset(
        ins={"bars": dg.AssetIn(), "features": dg.AssetIn()},
        code_version=version,
        io_manager_key="warehouse_io",
        group_name=SWEEP_GROUP,
        kinds={"ray", "optuna", "polars"},
        description=(
            f"Hyper-parameter sweep of {sweep_section.family} (Optuna TPE on Ray): one row per trial with its "
            "stitched walk-forward Sharpe on the folds before the holdout, its fold Sharpes and state (complete / "
            "pruned); every trial is appended to the trials registry."
        ),
    )
    def sweep(
        context: dg.AssetExecutionContext, ray_cluster: RayResource, bars: pl.DataFrame, features: pl.DataFrame
    ) -> dg.Output[pl.DataFrame]:
        from crypto_assets.evaluation.trials import TrialRegistry
        from crypto_assets.storage.warehouse import Warehouse
        from crypto_assets.sweeps import run_sweep

        registry = TrialRegistry(Warehouse(experiment_root(experiment)).tables_dir, experiment.experiment.name)
        try:
            with ray_cluster.session() as session:
                context.log.info(
                    f"Ray at {session.address} ({'started for this run' if session.started_locally else 'connected'}"
                    f", {session.startup_seconds:.1f} s)"
                )
                outcome = run_sweep(experiment, bars, features, registry=registry)
        except ValueError as exc:  # a sweep the data cannot hold (no fold before the holdout, ...)
            raise dg.Failure(str(exc)) from exc
        table = outcome.table
        metadata: dict[str, object] = {
            "trials": table.height,
            "pruned": int((table["state"] == "pruned").sum()),
            "nodes": table["node_id"].n_unique(),
            "ray_address": session.address,
            "ray_started_locally": session.started_locally,
            "ray_startup_seconds": round(session.startup_seconds, 2),
            "sweep_folds": dg.MetadataValue.json([w.key for w in outcome.plan.windows]),
            "registry_added": len(outcome.added),
            "trials_table": table_metadata(table.drop("fold_sharpes", "node_id"), digits=3),
            "stability": table_metadata(outcome.stability, digits=3),
        }
        if outcome.best is not None:
            metadata["best_trial"] = outcome.best.number
            metadata["best_params"] = dg.MetadataValue.json(outcome.best.sampled)
            metadata["best_objective_sharpe"] = outcome.best.result.objective
        if outcome.holdout is not None:
            holdout = pl.DataFrame(
                {
                    "fold": [f.key for f in outcome.holdout.folds],
                    "sharpe": outcome.holdout.fold_sharpes,
                }
            )
            metadata["holdout_folds"] = table_metadata(holdout, digits=3)
            metadata["holdout_sharpe"] = outcome.holdout.objective
            metadata["holdout_start"] = str(outcome.plan.holdout_start)
        context.log.info(f"sweep: {json.dumps({k: v for k, v in metadata.items() if isinstance(v, int | float)})}")
        return dg.Output(table, metadata=metadata)  # type: ignore[arg-type]

    return [sweep]
