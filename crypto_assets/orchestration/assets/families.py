"""One asset factory for every model family the experiment trains (DESIGN.md §6.1), and the ensemble.

    fold_dataset[fold] ─┬─► model_<slug>[fold]        the trained artifact (model IO manager, under artifacts/)
    features, bars ─────┘   predictions_<slug>[fold]  out-of-sample decisions + target weights (warehouse)
                            seed_models_<slug>[fold]      n_seeds > 1: the other seeds' artifacts (seed_<i>/)
                            seed_predictions_<slug>[fold] n_seeds > 1: every seed's decisions (`seed_index`)
    model_<slug>[fold − 1] ─► model_<slug>[fold]       retrain: fine_tune (warm start from the previous fold)
    model_<forecaster>[fold] ─► model_<agent>[fold]    state_forecasters: a hybrid agent observes the fold's own
                                                       forecaster (crypto_assets.models.cross_fit)
    predictions_<member>[fold] ─► ensemble[fold]       soft vote of the configured members

Seeds: seed index 0 trains with `derive_seed(experiment seed, label, fold)` as always, and is the family's
strategy (`predictions_<slug>`, KPIs); index i > 0 adds `seed=<i>` to that derivation. Fine-tuning: seed i of
fold k starts from seed i of fold k − 1, which must have been trained by the same code version (folds run in
order; Dagster's self-dependency orders a backfill the same way); the first fold trains in full.

`<slug>` is the family's config type in lower case (`LSTM_Attn` → `lstm_attn`); the KPI strategy is the slug.
Which assets are strategies is declared here (`FamilyAssets.strategies`), never guessed from names. torch and
stable-baselines3 are imported inside the step bodies (the code location is re-imported per step).
"""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, fingerprint, section_hash
from crypto_assets.config.schema import FamilyParams
from crypto_assets.families import Artifact, Context, Family, get_family
from crypto_assets.folds import add_months, first_fold_month
from crypto_assets.folds.windows import parse_key
from crypto_assets.orchestration.assets.common import (
    PREDICTIONS_PREFIX,
    context_fold_window,
    fold_spec,
    optional_out,
    selected_outputs,
)
from crypto_assets.orchestration.instance import GPU_POOL
from crypto_assets.orchestration.metadata import table_metadata
from crypto_assets.orchestration.partitions import (
    MONTH_FMT,
    fold_partitions,
    fold_window_mapping,
    previous_fold_mapping,
)
from crypto_assets.orchestration.resources import TorchDeviceResource
from crypto_assets.paths import experiment_root

MODEL_PREFIX = "model_"
SEED_MODELS_PREFIX = "seed_models_"
SEED_PREDICTIONS_PREFIX = "seed_predictions_"
ENSEMBLE = "ensemble"


@dataclass(frozen=True)
class FamilyAssets:
    assets: list[dg.AssetsDefinition]
    strategies: list[dg.AssetKey]
    """The tables of target weights the backtests and reports evaluate (`predictions_<slug>`, `ensemble`)."""


def family_version(experiment: ExperimentConfig, params: FamilyParams) -> str:
    """Code version of a family's assets: what its training and decisions read (the walk-forward geometry, the
    costs, its own parameters, the shared sizing and the capital), so only a change there marks it stale."""
    return (
        section_hash(experiment, "walk_forward", "costs")
        + "-"
        + fingerprint([params.model_dump(mode="json"), experiment.models.sizing.model_dump(mode="json")])
        + f"-capital={experiment.experiment.capital!r}"
    )


def seed_for(seed_root: int, family: Family, fold_key: str, index: int) -> int:
    """The training seed of seed index `index` of `family` on a fold: index 0 is the family's one seed (unchanged
    by n_seeds), the others add their index to the derivation."""
    from crypto_assets.models.device import derive_seed

    label = family.random_label()
    return (
        derive_seed(seed_root, label, fold_key)
        if index == 0
        else derive_seed(seed_root, label, fold_key, f"seed={index}")
    )


def state_forecasters(params: FamilyParams) -> list[str]:
    """The forecaster families a hybrid agent observes (none for every other family; the config checks that the
    experiment trains them)."""
    return params.observed_families.get("state_forecasters", [])


def state_model_ins(params: FamilyParams, model_prefix: str) -> dict[str, dg.AssetIn]:
    """A hybrid agent's inputs: the artifact `<model_prefix><forecaster slug>` of the same partition for each
    forecaster it observes (`model_` in the folds, `live_model_` in the live fold); none for other families."""
    return {f"state_{t.lower()}": dg.AssetIn(key=f"{model_prefix}{t.lower()}") for t in state_forecasters(params)}


def observed_models(state_models: Mapping[str, Artifact]) -> dict[str, Artifact]:
    """`FoldData.state_models` from the state inputs `state_model_ins` declared (config type → artifact)."""
    return {artifact.family_type: artifact for artifact in state_models.values()}


def artifact_dir(experiment: ExperimentConfig, asset_name: str, partition_key: str) -> Path:
    """Where the model IO manager keeps `asset_name`'s checkpoint of a partition."""
    return experiment_root(experiment) / "artifacts" / asset_name / partition_key


def previous_fold_key(experiment: ExperimentConfig, fold_key: str) -> str | None:
    """The fold before `fold_key` (one step back), None for the first fold."""
    spec = fold_spec(experiment)
    day = add_months(parse_key(fold_key), -spec.step_months)
    return None if day < first_fold_month(experiment.data.start, spec) else day.strftime(MONTH_FMT)


def training_metadata(
    family_type: str, model: object, seed: int, metrics: dict[str, float], curves: dict[str, pl.DataFrame]
) -> dict[str, Any]:
    """device, precision, throughput, seed, the metrics and the loss / reward curves as native tables."""
    family = get_family(family_type)
    out: dict[str, Any] = {**family.training_info(model), "seed": seed}
    if metrics:
        frame = pl.DataFrame({"metric": list(metrics), "value": [float(v) for v in metrics.values()]})
        out["metrics"] = table_metadata(frame)
    for name, frame in curves.items():
        out[f"{name}_curve"] = table_metadata(frame, limit=500)
    return out


def build_family_asset(experiment: ExperimentConfig, params: FamilyParams) -> dg.AssetsDefinition:
    """`model_<slug>` + `predictions_<slug>` on the fold partitions for the family `params.type` (with
    `seed_models_<slug>` + `seed_predictions_<slug>` when it trains n_seeds > 1, and a dependency on its own
    previous fold when it fine-tunes)."""
    family = get_family(params.type)
    slug = family.slug
    spec = fold_spec(experiment)
    model_name, predictions_name = f"{MODEL_PREFIX}{slug}", f"{PREDICTIONS_PREFIX}{slug}"
    seed_models_name, seed_predictions_name = f"{SEED_MODELS_PREFIX}{slug}", f"{SEED_PREDICTIONS_PREFIX}{slug}"
    version = family_version(experiment, params)
    ctx = Context.from_experiment(experiment)
    seed_root = experiment.experiment.seed
    n_seeds = params.n_seeds
    fine_tune = params.retrain == "fine_tune"
    seed_outs = (
        {
            seed_models_name: optional_out(
                version,
                f"{params.type} seeds 1..{n_seeds - 1} of the fold (index 0 is {model_name}): one replayable artifact "
                "folder per seed, seed_<i>/.",
                "model_io",
            ),
            seed_predictions_name: optional_out(
                version,
                f"Every seed's out-of-sample decisions of {params.type} on the fold (`seed_index`; 0 = {predictions_name}"
                "), for the seed_dispersion report.",
            ),
        }
        if n_seeds > 1
        else {}
    )
    # hybrid agents observe the fold's own forecasters: their artifacts of the same fold are inputs
    state_ins = state_model_ins(params, MODEL_PREFIX)
    # fine_tune: fold k reads fold k − 1's checkpoints (seed i from seed i), so it depends on its previous fold.
    # One dependency, on model_<slug>: the same step writes seed_models_<slug>, and a multi-asset's deps apply to
    # all its outputs (a second one would make the two checkpoints each other's upstream inside one step).
    previous_deps = [dg.AssetDep(model_name, partition_mapping=previous_fold_mapping())] if fine_tune else []

    @dg.multi_asset(
        can_subset=True,
        name=model_name,
        partitions_def=fold_partitions(experiment.data, spec),
        ins={
            "fold_dataset": dg.AssetIn(),
            # the fold's features and bars again: to keep the scaler fold_dataset fitted (it stores scaled rows only)
            "features": dg.AssetIn(partition_mapping=fold_window_mapping(spec)),
            "bars": dg.AssetIn(partition_mapping=fold_window_mapping(spec)),
            **state_ins,
        },
        deps=previous_deps,
        outs={
            model_name: optional_out(
                version,
                f"The fold's trained {params.type} artifact: model, fitted scaler, feature list, parameters, seed "
                "(crypto_assets.families.replay replays it on any bars).",
                "model_io",
            ),
            predictions_name: optional_out(
                version, f"{params.type}'s out-of-sample decisions on the fold's test window and their target weights."
            ),
            **seed_outs,
        },
        pool=GPU_POOL if family.uses_gpu else None,
        group_name="models",
    )
    def _train(
        context: dg.AssetExecutionContext,
        torch_device: TorchDeviceResource,
        fold_dataset: pl.DataFrame,
        features: pl.DataFrame,
        bars: pl.DataFrame,
        **state_models: Artifact,
    ):  # type: ignore[no-untyped-def]
        from crypto_assets.families import FoldData, SeedArtifacts, build_fold, fit_artifact

        window = context_fold_window(context, spec)
        frame, scaler = build_fold(features, bars, window, spec.purge_bars, spec.label_horizon, ctx.timeframe)
        if not _same_rows(frame, fold_dataset):
            raise dg.Failure(
                f"fold {window.key}: fold_dataset differs from the fold rebuilt from features and bars; "
                "re-materialize fold_dataset (it is stale)"
            )
        device = str(torch_device.device(context.log)) if family.uses_gpu else "cpu"
        data = FoldData(
            key=window.key, frame=fold_dataset, bars=bars, context=ctx, state_models=observed_models(state_models)
        )
        previous = previous_artifacts(experiment, params, window.key, version) if fine_tune else {}
        artifacts: dict[int, Artifact] = {}
        decisions: list[pl.DataFrame] = []
        for index in range(n_seeds):
            artifact, seed_decisions = fit_artifact(
                params,
                data,
                scaler,
                window,
                seed=seed_for(seed_root, family, window.key, index),
                device=device,
                code_version=version,
                init=previous.get(index),
            )
            artifacts[index] = artifact
            decisions.append(seed_decisions.with_columns(fold=pl.lit(window.key), model=pl.lit(slug)))
        out = decisions[0]
        model = artifacts[0]
        curves = family.curves(model.model)
        metadata = training_metadata(params.type, model.model, model.seed, model.metrics, curves)
        if fine_tune:
            metadata["warm_start_from"] = previous_fold_key(experiment, window.key) or "none (first fold)"
        outputs: list[dg.Output[Any]] = [
            dg.Output(model, output_name=model_name, metadata=metadata),
            dg.Output(
                out,
                output_name=predictions_name,
                metadata={"rows": out.height, "orders": int(out["weight"].is_not_null().sum())},
            ),
        ]
        if n_seeds > 1:
            seeds = pl.DataFrame({"seed_index": list(artifacts), "seed": [a.seed for a in artifacts.values()]})
            every_seed = pl.concat(
                [rows.with_columns(seed_index=pl.lit(i, pl.Int64)) for i, rows in enumerate(decisions)],
                how="diagonal_relaxed",
            )
            extra = SeedArtifacts({i: a for i, a in artifacts.items() if i > 0})
            outputs += [
                dg.Output(extra, output_name=seed_models_name, metadata={"seeds": table_metadata(seeds)}),
                dg.Output(every_seed, output_name=seed_predictions_name, metadata={"seeds": n_seeds}),
            ]
        yield from selected_outputs(context, *outputs)

    return _train


def previous_artifacts(
    experiment: ExperimentConfig, params: FamilyParams, fold_key: str, version: str
) -> dict[int, Artifact]:
    """Seed index → the previous fold's artifact of that seed (empty for the first fold), to fine-tune from.
    Raises dg.Failure when the previous fold was not trained, or was trained by another code version (its
    parameters changed since: fine-tuning would start from a model this configuration never made)."""
    from crypto_assets.families import SeedArtifacts

    previous = previous_fold_key(experiment, fold_key)
    if previous is None:
        return {}
    slug = params.slug
    model_dir = artifact_dir(experiment, f"{MODEL_PREFIX}{slug}", previous)
    seeds_dir = artifact_dir(experiment, f"{SEED_MODELS_PREFIX}{slug}", previous)
    if not model_dir.exists() or (params.n_seeds > 1 and not seeds_dir.exists()):
        raise dg.Failure(
            f"{params.type} fine-tunes fold {fold_key} from fold {previous}, which has no trained model yet: "
            "materialize the folds in order"
        )
    found = {0: Artifact.load(model_dir)}
    if params.n_seeds > 1:
        found.update(SeedArtifacts.load(seeds_dir).artifacts)
    stale = sorted(i for i, a in found.items() if a.code_version != version)
    missing = sorted(set(range(params.n_seeds)) - set(found))
    if stale or missing:
        raise dg.Failure(
            f"{params.type} fine-tunes fold {fold_key} from fold {previous}, whose models (seeds {stale or missing}) "
            "were trained by another configuration: re-materialize the folds in order from the first"
        )
    return found


def _same_rows(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    keys = ["split", "symbol", "ts"]
    return a.columns == b.columns and a.sort(keys).equals(b.select(a.columns).sort(keys))


def build_ensemble_asset(experiment: ExperimentConfig) -> dg.AssetsDefinition:
    """`ensemble[fold]`: the members' target weights soft-voted with the configured weights."""
    spec = fold_spec(experiment)
    members = {f"{PREDICTIONS_PREFIX}{m.type.lower()}": m.weight for m in experiment.models.ensemble}

    @dg.asset(
        partitions_def=fold_partitions(experiment.data, spec),
        ins={name: dg.AssetIn() for name in members},
        code_version=section_hash(experiment, "models"),
        io_manager_key="warehouse_io",
        group_name="models",
        kinds={"polars", "parquet"},
        description="Soft-voting ensemble: the members' target weights averaged with the config's weights.",
    )
    def ensemble(context: dg.AssetExecutionContext, **frames: pl.DataFrame) -> dg.Output[pl.DataFrame]:
        from crypto_assets.ensemble import soft_vote

        combined = soft_vote(dict(frames), members)
        out = combined.with_columns(fold=pl.lit(context.partition_key))
        votes = pl.DataFrame({"member": list(members), "weight": list(members.values())})
        return dg.Output(out, metadata={"members": table_metadata(votes), "orders": out.height})

    return ensemble


def build_family_assets(experiment: ExperimentConfig) -> FamilyAssets:
    """The fold assets of every family `models.families` lists or the ensemble needs, and the ensemble."""
    from crypto_assets.orchestration.assets.meta_learner import build_meta_learner_assets  # it imports this module

    trained = [build_family_asset(experiment, params) for params in experiment.models.trained]
    strategies = [dg.AssetKey(f"{PREDICTIONS_PREFIX}{params.slug}") for params in experiment.models.trained]
    stacked, stacked_strategies = build_meta_learner_assets(experiment)
    return FamilyAssets(
        assets=[*trained, build_ensemble_asset(experiment), *stacked],
        strategies=[*strategies, dg.AssetKey(ENSEMBLE), *stacked_strategies],
    )
