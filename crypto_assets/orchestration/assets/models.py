"""Learned models per fold: forecasters (torch), the PPO agent (SB3) and the soft-voting ensemble.

    fold_dataset[fold] ─► forecaster_<arch>[fold] ─► predictions_<arch>[fold] ─┐
                       └► agent_ppo[fold] ──────────► predictions_ppo[fold] ───┴► ensemble[fold]

Each trainer is a multi-asset: the checkpoint (model IO manager, under artifacts/) and the
out-of-sample predictions with target weights (warehouse). torch / SB3 are imported inside the bodies.
"""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, fingerprint, section_hash
from crypto_assets.families.forecaster import ARCH_TYPES
from crypto_assets.orchestration.assets.common import PREDICTIONS_PREFIX, fold_spec, optional_out, selected_outputs
from crypto_assets.orchestration.instance import GPU_POOL
from crypto_assets.orchestration.markdown import md
from crypto_assets.orchestration.partitions import fold_partitions
from crypto_assets.orchestration.resources import TorchDeviceResource
from crypto_assets.timeframes import periods_per_year

# Config ensemble member → (asset family, model key)
MEMBERS = {
    "LSTM_Attn": ("forecaster", "lstm_attn"),
    "CNN_LSTM": ("forecaster", "cnn_lstm"),
    "PPO_Agent": ("agent", "ppo"),
}


def metrics_frame(slices: dict[str, dict[str, float]]) -> pl.DataFrame:
    """One row per slice (validation, out of sample), one column per metric, sorted by name."""
    names = sorted({name for metrics in slices.values() for name in metrics})
    return pl.DataFrame(
        [
            {"slice": label, **{n: float(metrics.get(n, float("nan"))) for n in names}}
            for label, metrics in slices.items()
        ]
    )


def build_model_assets(experiment: ExperimentConfig) -> list[dg.AssetsDefinition]:
    spec = fold_spec(experiment)
    folds = fold_partitions(experiment.data, spec)
    timeframe = experiment.data.timeframe
    P = periods_per_year(timeframe)
    sizing = experiment.models.sizing
    costs = experiment.costs
    seed = experiment.experiment.seed

    def forecaster_assets(arch: str) -> dg.AssetsDefinition:
        section = experiment.models.params_of(ARCH_TYPES[arch])
        name = f"forecaster_{arch}"
        # Sizing reads costs.max_leverage / allow_short; other models' settings do not matter here.
        version = (
            section_hash(experiment, "walk_forward", "costs")
            + "-"
            + fingerprint([section.model_dump(mode="json"), sizing.model_dump(mode="json")])
        )

        @dg.multi_asset(
            can_subset=True,
            name=name,
            partitions_def=folds,
            ins={"fold_dataset": dg.AssetIn()},
            outs={
                name: optional_out(version, f"The fold's trained {arch} checkpoint and its config.", "model_io"),
                f"{PREDICTIONS_PREFIX}{arch}": optional_out(
                    version,
                    "Out-of-sample p_up and forecast vol on the test window, and the target weights they size to.",
                ),
            },
            pool=GPU_POOL,
            group_name="models",
        )
        def _train(context: dg.AssetExecutionContext, torch_device: TorchDeviceResource, fold_dataset: pl.DataFrame):  # type: ignore[no-untyped-def]
            from crypto_assets.models import (
                default_feature_columns,
                derive_seed,
                forecast_to_weights,
                train_forecaster,
            )

            fold = context.partition_key
            params = section
            device = torch_device.device(context.log)
            run_seed = derive_seed(seed, name, fold)
            model = train_forecaster(
                fold_dataset,
                default_feature_columns(fold_dataset),
                spec.label_horizon,
                params,
                device=device,
                seed=run_seed,
            )
            preds = model.predict(fold_dataset, only_split="test")
            weights = forecast_to_weights(
                preds,
                target_vol_annual=sizing.target_vol_annual,
                periods_per_year=P,
                max_leverage=costs.max_leverage,
                allow_short=costs.allow_short,
                rebalance_every=sizing.rebalance_every or spec.label_horizon,
            )
            out = preds.join(weights, on=["symbol", "ts"], how="left").with_columns(
                fold=pl.lit(fold), model=pl.lit(arch)
            )
            oos = model.evaluate(fold_dataset, only_split="test")
            history = model.history
            yield from selected_outputs(
                context,
                dg.Output(
                    model,
                    output_name=name,
                    metadata={
                        "device": str(model.device),
                        "precision": model.precision,
                        "samples_per_second": float(model.samples_per_second),
                        "train_seconds": float(model.train_seconds),
                        "seed": run_seed,
                        "epochs_run": model.epochs_run,
                        "best_epoch": model.best_epoch,
                        "loss_curves": dg.MetadataValue.json(
                            {k: [round(float(x), 6) for x in v] for k, v in history.items()}
                        ),
                        "metrics": md(metrics_frame({"validation": model.val_metrics, "out_of_sample": oos})),
                        "oos_auc": float(oos.get("auc", float("nan"))),
                        "oos_accuracy": float(oos.get("accuracy", float("nan"))),
                        "oos_brier": float(oos.get("brier", float("nan"))),
                    },
                ),
                dg.Output(
                    out,
                    output_name=f"{PREDICTIONS_PREFIX}{arch}",
                    metadata={"rows": out.height, "orders": int(out["weight"].is_not_null().sum())},
                ),
            )

        return _train

    trained = []
    for member in experiment.models.ensemble:
        family, key = MEMBERS[member.type]
        if family == "forecaster":
            trained.append(forecaster_assets(key))
        else:
            from crypto_assets.orchestration.assets.agents import build_ppo_assets

            trained.append(build_ppo_assets(experiment))

    member_ins = {f"{PREDICTIONS_PREFIX}{MEMBERS[m.type][1]}": dg.AssetIn() for m in experiment.models.ensemble}
    member_weights = {f"{PREDICTIONS_PREFIX}{MEMBERS[m.type][1]}": m.weight for m in experiment.models.ensemble}

    @dg.asset(
        partitions_def=folds,
        ins=member_ins,
        code_version=section_hash(experiment, "models"),
        io_manager_key="warehouse_io",
        group_name="models",
        kinds={"polars", "parquet"},
        description="Soft-voting ensemble: the members' target weights averaged with the config's weights.",
    )
    def ensemble(context: dg.AssetExecutionContext, **members: pl.DataFrame) -> dg.Output[pl.DataFrame]:
        from crypto_assets.ensemble import soft_vote

        combined = soft_vote({name: frame for name, frame in members.items()}, member_weights)
        out = combined.with_columns(fold=pl.lit(context.partition_key))
        return dg.Output(out, metadata={"members": dg.MetadataValue.json(member_weights), "orders": out.height})

    return [*trained, ensemble]
