"""The meta-learner's fold assets (crypto_assets.families.meta_learner, one set per `Meta_Learner` entry):

    predictions_<member>[folds k − history_folds … k] ─┬─► model_meta_learner[k]        fitted parameters (artifacts/)
    bars[their test windows, σ warm-up before] ────────┘   predictions_meta_learner[k]  decisions + target weights

Fold k learns only from the members' predictions of EARLIER folds' test windows, with labels ending before fold
k's test window (crypto_assets.ensemble.meta); fold k's own predictions are read only to decide on its window.
`predictions_meta_learner` is declared a strategy, so it is backtested and reported (kpis, regime_kpis) like
every family. Run the folds in order: fold k reads the members' earlier folds.
"""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

import math

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, fingerprint
from crypto_assets.families import Context, get_family
from crypto_assets.families.meta_learner import MetaLearnerParams
from crypto_assets.orchestration.assets.common import (
    PREDICTIONS_PREFIX,
    fold_spec,
    months_covering,
    optional_out,
    selected_outputs,
)
from crypto_assets.orchestration.metadata import table_metadata
from crypto_assets.orchestration.partitions import fold_partitions
from crypto_assets.timeframes import parse_duration

MODEL_PREFIX = "model_"


def build_meta_learner_asset(experiment: ExperimentConfig, params: MetaLearnerParams) -> dg.AssetsDefinition:
    """`model_<slug>` + `predictions_<slug>` of one `Meta_Learner` entry on the fold partitions."""
    from crypto_assets.orchestration.assets.families import family_version  # that module builds these assets

    family = get_family(params.type)
    slug = family.slug
    spec = fold_spec(experiment)
    step = spec.step_months
    model_name, predictions_name = f"{MODEL_PREFIX}{slug}", f"{PREDICTIONS_PREFIX}{slug}"
    member_versions = [family_version(experiment, experiment.models.params_of(m)) for m in params.members]
    version = family_version(experiment, params) + "-members=" + fingerprint(member_versions)
    ctx = Context.from_experiment(experiment)
    seed_root = experiment.experiment.seed
    # σ's warm-up before the oldest history fold's window, in whole steps of the fold grid
    warm_up_steps = math.ceil(max(1, months_covering(parse_duration(params.vol_window, "vol_window"))) / step)
    member_ins = {
        f"{PREDICTIONS_PREFIX}{m}": dg.AssetIn(
            partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-params.history_folds, end_offset=0)
        )
        for m in params.member_slugs
    }

    @dg.multi_asset(
        can_subset=True,
        name=model_name,
        partitions_def=fold_partitions(experiment.data, spec),
        ins={
            **member_ins,
            "bars": dg.AssetIn(
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-(params.history_folds + warm_up_steps), end_offset=spec.test_months // step - 1
                )
            ),
        },
        outs={
            model_name: optional_out(
                version,
                "The fold's fitted meta-learner (soft vote before enough history): parameters, members, context "
                "(crypto_assets.families.meta_learner.MetaArtifact replays it).",
                "model_io",
            ),
            predictions_name: optional_out(
                version, "The meta-learner's decisions on the fold's test window (p_up, vol) and target weights."
            ),
        },
        group_name="models",
    )
    def _meta(context: dg.AssetExecutionContext, bars: pl.DataFrame, **predictions: pl.DataFrame):  # type: ignore[no-untyped-def]
        from crypto_assets.families.meta_learner import fit_meta_artifact, meta_window
        from crypto_assets.models.device import derive_seed

        key = context.partition_key
        window = meta_window(key, test_months=spec.test_months, step_months=step, history_folds=params.history_folds)
        members = {name.removeprefix(PREDICTIONS_PREFIX): frame for name, frame in predictions.items()}
        run_seed = derive_seed(seed_root, family.random_label(), key)
        artifact, decisions, stacked = fit_meta_artifact(
            params, members, bars, window, ctx, test_months=spec.test_months, seed=run_seed, code_version=version
        )
        model = artifact.model
        train = stacked.filter(pl.col("split") == "train")
        learned = model.member_weights(train)
        inputs = pl.DataFrame(
            {
                "member": params.members,
                "column": model.inputs,
                "learned_weight": [learned[m] for m in params.member_slugs],
                "fallback_vote": [model.votes[m] for m in params.member_slugs],
            }
        )
        meta = {
            "kind": model.kind,
            "seed": run_seed,
            "history_folds": ", ".join(model.history_folds) or "none",
            "train_rows": model.train_rows,
            "inputs": table_metadata(inputs),
            "metrics": table_metadata(
                pl.DataFrame({"metric": list(artifact.metrics), "value": list(artifact.metrics.values())})
            ),
        }
        curves = family.curves(model)
        if "loss" in curves:
            meta["loss_curve"] = table_metadata(curves["loss"], limit=500)
        out = decisions.with_columns(fold=pl.lit(key), model=pl.lit(slug))
        yield from selected_outputs(
            context,
            dg.Output(artifact, output_name=model_name, metadata=meta),
            dg.Output(
                out,
                output_name=predictions_name,
                metadata={
                    "rows": out.height,
                    "orders": int(out["weight"].is_not_null().sum()),
                    "kind": model.kind,
                    "inputs": table_metadata(inputs),
                },
            ),
        )

    return _meta


def build_meta_learner_assets(experiment: ExperimentConfig) -> tuple[list[dg.AssetsDefinition], list[dg.AssetKey]]:
    """The assets of every stacked family `models.families` lists, and their strategy tables."""
    stacked = [p for p in experiment.models.stacked if isinstance(p, MetaLearnerParams)]
    assets = [build_meta_learner_asset(experiment, params) for params in stacked]
    return assets, [dg.AssetKey(f"{PREDICTIONS_PREFIX}{p.slug}") for p in stacked]
