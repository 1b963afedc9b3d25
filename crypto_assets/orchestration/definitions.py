"""Assemble the Dagster `Definitions` for one experiment config."""

from __future__ import annotations

import dagster as dg

from crypto_assets.config import ExperimentConfig
from crypto_assets.ingestion.scope import data_only_note
from crypto_assets.orchestration.assets.backtests import build_backtest_assets
from crypto_assets.orchestration.assets.baselines import build_baseline_assets
from crypto_assets.orchestration.assets.common import fold_spec
from crypto_assets.orchestration.assets.dashboard import build_dashboard_asset
from crypto_assets.orchestration.assets.families import build_family_assets
from crypto_assets.orchestration.assets.features import build_feature_assets
from crypto_assets.orchestration.assets.folds import build_fold_assets
from crypto_assets.orchestration.assets.ingestion import build_ingestion_assets
from crypto_assets.orchestration.assets.live import build_live_assets
from crypto_assets.orchestration.assets.paper import build_paper_asset
from crypto_assets.orchestration.assets.reports import build_report_assets
from crypto_assets.orchestration.assets.stress import build_stress_assets
from crypto_assets.orchestration.assets.sweeps import RAY_RESOURCE, build_sweep_assets
from crypto_assets.orchestration.executors import fold_executor
from crypto_assets.orchestration.io_managers import ModelArtifactIOManager, WarehouseIOManager
from crypto_assets.orchestration.partitions import data_partitions, fold_partitions
from crypto_assets.orchestration.resources import (
    DataSourceResource,
    RayResource,
    TorchDeviceResource,
    WarehouseResource,
)
from crypto_assets.orchestration.schedules import build_ingest_schedule, build_paper_schedule
from crypto_assets.paths import experiment_root

INGEST_JOB = "ingest"
FOLDS_JOB = "folds"
REPORTS_JOB = "reports"
LIVE_JOB = "live"
STRESS_JOB = "stress"
SWEEP_JOB = "sweeps"  # not "sweep": a job may not share the name of its asset's op
PAPER_JOB = "paper"


def build_definitions(experiment: ExperimentConfig) -> dg.Definitions:
    """Three jobs, one per partitions definition (the CLI cannot mix them in one selection):
    `ingest` (monthly data: raw_ohlcv → bars → features), `folds` (per fold: datasets, baselines,
    trained models, ensemble, backtests) and `reports` (unpartitioned: walk-forward equity, KPI tables, trials);
    `live` when the experiment has a live fold, with `paper` (monthly: the live models traded forward into the
    append-only paper ledger, and its `paper_trade` schedule), and `stress` (unpartitioned, after the folds: stress
    paths and every stored strategy replayed on them) when `stress.enabled` and a scenario is on.

    A data-only experiment (a fixed span shorter than one fold) gets only `ingest` and its monthly assets:
    the note saying so is in the job's description and the definitions' metadata (`data_only`)."""
    ingestion = build_ingestion_assets(experiment)
    baselines = build_baseline_assets(experiment)
    research = [*build_feature_assets(experiment), *build_fold_assets(experiment), *baselines]
    families = build_family_assets(experiment)
    # Strategies are declared by what builds them (every baseline asset; the families' predictions and the
    # ensemble), never found by name; the live fold is no strategy of the walk-forward reports.
    strategies = [*(key for asset in baselines for key in asset.keys), *families.strategies]
    live = build_live_assets(experiment)
    research = [
        *research,
        *families.assets,
        *build_backtest_assets(experiment, strategies),
        *build_report_assets(experiment, strategies),
    ]
    months, folds = data_partitions(experiment.data), fold_partitions(experiment.data, fold_spec(experiment))
    note = data_only_note(experiment)
    data_only = note is not None and experiment.data.end is not None
    if data_only:
        # No fold can ever exist: keep the monthly data assets (raw_ohlcv, bars, features), drop the rest.
        research = [asset for asset in research if asset.partitions_def == months]
        live = []
    # The live fold's strategies traded forward (DESIGN.md §6.5): monthly like the data, in its own job.
    paper_asset = build_paper_asset(experiment) if live else None
    paper = [paper_asset] if paper_asset is not None else []
    # Unpartitioned like the reports, but their own job: they read the stored fold artifacts, after the folds.
    stress = [] if data_only else build_stress_assets(experiment)
    # A hyper-parameter sweep on Ray (DESIGN.md §6.4): unpartitioned, its own job, when `sweep` is configured.
    sweeps = [] if data_only else build_sweep_assets(experiment)
    # The dashboard renders what exists: in the reports job, and again in the stress, sweep and paper jobs after
    # stress_kpis / the sweep / paper_ledger, where the page gains those sections.
    report = [] if data_only else [build_dashboard_asset(experiment, [*stress, *sweeps, *paper])]
    research = [*research, *report]
    by_partitions: dict[str, list[dg.AssetsDefinition]] = {
        INGEST_JOB: [],
        FOLDS_JOB: [],
        REPORTS_JOB: [],
        LIVE_JOB: live,
        PAPER_JOB: [*paper, *report] if paper else [],
        STRESS_JOB: [*stress, *report] if stress else [],
        SWEEP_JOB: [*sweeps, *report] if sweeps else [],
    }
    for asset in [*ingestion, *research]:
        if asset.partitions_def == months:
            by_partitions[INGEST_JOB].append(asset)
        elif asset.partitions_def == folds:
            by_partitions[FOLDS_JOB].append(asset)
        else:
            by_partitions[REPORTS_JOB].append(asset)
    descriptions = {
        INGEST_JOB: "raw_ohlcv → bars → features for the selected months (one run for a whole range)."
        + (f" Note: {note}." if note else ""),
        FOLDS_JOB: "One walk-forward fold: dataset, strategy weights, backtests.",
        REPORTS_JOB: (
            "Stitched walk-forward equity and the KPI, regime and trial tables over all folds; the HTML dashboard."
        ),
        LIVE_JOB: "The live fold of a month: every family trained on the train_months before it, its decisions in it.",
        PAPER_JOB: (
            "Paper trading of a month: its live models traded forward on closed bars, appended to the ledger; the "
            "dashboard again, with its paper section."
        ),
        STRESS_JOB: (
            "Stress paths per scenario × seed and every stored fold strategy and baseline replayed on them; the "
            "dashboard again, with its stress section."
        ),
        SWEEP_JOB: (
            "Hyper-parameter sweep on Ray (RAY_ADDRESS or a local Ray): trials walk-forward evaluated, registered; the "
            "dashboard again, with its sweep section."
        ),
    }
    jobs = [
        dg.define_asset_job(
            name,
            selection=dg.AssetSelection.assets(*assets),
            partitions_def={
                INGEST_JOB: months,
                FOLDS_JOB: folds,
                REPORTS_JOB: None,
                LIVE_JOB: months,
                PAPER_JOB: months,
                STRESS_JOB: None,
                SWEEP_JOB: None,
            }[name],
            description=descriptions[name],
            # One process per run, not per step: a step process re-imports the code location (~2 s here, more
            # with torch / SB3 loaded), the jobs' steps mostly run one after the other anyway (ingest is a
            # chain; training assets share the `gpu` pool of 1), and pools are honoured in process too.
            # CRYPTO_LAB_EXECUTOR=ray puts each `folds` step on a Ray cluster instead (orchestration.executors).
            executor_def=fold_executor() if name == FOLDS_JOB else dg.in_process_executor,
        )
        for name, assets in by_partitions.items()
        if assets or name == INGEST_JOB
    ]
    return dg.Definitions(
        assets=[*ingestion, *research, *live, *paper, *stress, *sweeps],
        jobs=jobs,
        schedules=[
            build_ingest_schedule(experiment, jobs[0]),
            *(build_paper_schedule(experiment, job) for job in jobs if job.name == PAPER_JOB),
        ],
        metadata={"data_only": note} if note else None,
        resources={
            "warehouse_io": WarehouseIOManager.for_experiment(experiment),
            "model_io": ModelArtifactIOManager(storage_root=str(experiment_root(experiment))),
            "torch_device": TorchDeviceResource(gpu_id=experiment.experiment.gpu_id),
            # Swappable (tests, a recorded exchange): assets reach the source and the stored tables only here.
            "data_source": DataSourceResource.for_experiment(experiment),
            "warehouse": WarehouseResource.for_experiment(experiment),
            RAY_RESOURCE: RayResource(),
        },
    )
