"""One asset factory for every model family the experiment trains (DESIGN.md §6.1), and the ensemble.

    fold_dataset[fold] ─┬─► model_<slug>[fold]        the trained artifact (model IO manager, under artifacts/)
    features, bars ─────┘   predictions_<slug>[fold]  out-of-sample decisions + target weights (warehouse)
    predictions_<member>[fold] ─► ensemble[fold]       soft vote of the configured members

`<slug>` is the family's config type in lower case (`LSTM_Attn` → `lstm_attn`); the KPI strategy is the slug.
Which assets are strategies is declared here (`FamilyAssets.strategies`), never guessed from names. torch and
stable-baselines3 are imported inside the step bodies (the code location is re-imported per step).
"""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, fingerprint, section_hash
from crypto_assets.config.schema import FamilyParams
from crypto_assets.families import Context, get_family
from crypto_assets.orchestration.assets.common import (
    PREDICTIONS_PREFIX,
    context_fold_window,
    fold_spec,
    optional_out,
    selected_outputs,
)
from crypto_assets.orchestration.instance import GPU_POOL
from crypto_assets.orchestration.metadata import table_metadata
from crypto_assets.orchestration.partitions import fold_partitions, fold_window_mapping
from crypto_assets.orchestration.resources import TorchDeviceResource

MODEL_PREFIX = "model_"
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
    """`model_<slug>` + `predictions_<slug>` on the fold partitions for the family `params.type`."""
    family = get_family(params.type)
    slug = family.slug
    spec = fold_spec(experiment)
    model_name, predictions_name = f"{MODEL_PREFIX}{slug}", f"{PREDICTIONS_PREFIX}{slug}"
    version = family_version(experiment, params)
    ctx = Context.from_experiment(experiment)
    seed_root = experiment.experiment.seed

    @dg.multi_asset(
        can_subset=True,
        name=model_name,
        partitions_def=fold_partitions(experiment.data, spec),
        ins={
            "fold_dataset": dg.AssetIn(),
            # the fold's features and bars again: to keep the scaler fold_dataset fitted (it stores scaled rows only)
            "features": dg.AssetIn(partition_mapping=fold_window_mapping(spec)),
            "bars": dg.AssetIn(partition_mapping=fold_window_mapping(spec)),
        },
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
    ):  # type: ignore[no-untyped-def]
        from crypto_assets.families import FoldData, build_fold, fit_artifact
        from crypto_assets.models.device import derive_seed

        window = context_fold_window(context, spec)
        frame, scaler = build_fold(features, bars, window, spec.purge_bars, spec.label_horizon, ctx.timeframe)
        if not _same_rows(frame, fold_dataset):
            raise dg.Failure(
                f"fold {window.key}: fold_dataset differs from the fold rebuilt from features and bars; "
                "re-materialize fold_dataset (it is stale)"
            )
        run_seed = derive_seed(seed_root, family.random_label(), window.key)
        device = str(torch_device.device(context.log)) if family.uses_gpu else "cpu"
        data = FoldData(key=window.key, frame=fold_dataset, bars=bars, context=ctx)
        artifact, decisions = fit_artifact(
            params, data, scaler, window, seed=run_seed, device=device, code_version=version
        )
        out = decisions.with_columns(fold=pl.lit(window.key), model=pl.lit(slug))
        curves = family.curves(artifact.model)
        yield from selected_outputs(
            context,
            dg.Output(
                artifact,
                output_name=model_name,
                metadata=training_metadata(params.type, artifact.model, run_seed, artifact.metrics, curves),
            ),
            dg.Output(
                out,
                output_name=predictions_name,
                metadata={"rows": out.height, "orders": int(out["weight"].is_not_null().sum())},
            ),
        )

    return _train


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
    trained = [build_family_asset(experiment, params) for params in experiment.models.trained]
    strategies = [dg.AssetKey(f"{PREDICTIONS_PREFIX}{params.slug}") for params in experiment.models.trained]
    return FamilyAssets(
        assets=[*trained, build_ensemble_asset(experiment)], strategies=[*strategies, dg.AssetKey(ENSEMBLE)]
    )
