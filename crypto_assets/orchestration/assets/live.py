"""The live fold (DESIGN.md §6.2): `live_<slug>[month]` on the monthly data partitions.

The key is the month the model trades. Each family trains on the `train_months` months before it (the last
`purge_bars` dropped: their labels look into the traded month), exactly as a walk-forward fold whose test window
is that one month, and decides over the month's bars:

    features, bars [month − train_months, month] ─► live_model_<slug>[month]  the artifact (artifacts/)
                                                  └► live_<slug>[month]        decisions + target weights (warehouse)
    live_model_<forecaster>[month] ─► live_<agent>[month]   state_forecasters: a hybrid agent observes the month's
                                                            own live forecasters, as in the folds

They run in their own `live` job and feed no report: the walk-forward KPIs never read them (the paper ledger of
a later issue does).
"""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

import datetime as dt

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig
from crypto_assets.config.schema import FamilyParams
from crypto_assets.families import Artifact, Context, get_family
from crypto_assets.folds import FoldWindow, add_months
from crypto_assets.folds.windows import parse_key, utc
from crypto_assets.orchestration.assets.common import fold_spec, optional_out, selected_outputs
from crypto_assets.orchestration.assets.families import (
    family_version,
    observed_models,
    state_model_ins,
    training_metadata,
)
from crypto_assets.orchestration.instance import GPU_POOL
from crypto_assets.orchestration.partitions import data_partitions
from crypto_assets.orchestration.resources import TorchDeviceResource

LIVE_PREFIX = "live_"
LIVE_MODEL_PREFIX = "live_model_"


def live_window(month: str, train_months: int) -> FoldWindow:
    """The live fold of `month` (`YYYY-MM-01`): train on the `train_months` months before it, decide in it."""
    first = parse_key(month)
    return FoldWindow(
        key=month,
        train_start=utc(add_months(first, -train_months)),
        train_end=utc(first),
        test_start=utc(first),
        test_end=utc(add_months(first, 1)),
    )


def build_live_asset(experiment: ExperimentConfig, params: FamilyParams) -> dg.AssetsDefinition:
    family = get_family(params.type)
    slug = family.slug
    spec = fold_spec(experiment)
    model_name, table_name = f"{LIVE_MODEL_PREFIX}{slug}", f"{LIVE_PREFIX}{slug}"
    version = family_version(experiment, params)
    ctx = Context.from_experiment(experiment)
    seed_root = experiment.experiment.seed
    window_mapping = dg.TimeWindowPartitionMapping(start_offset=-spec.train_months, end_offset=0)

    @dg.multi_asset(
        can_subset=True,
        name=table_name,
        partitions_def=data_partitions(experiment.data),
        ins={
            "features": dg.AssetIn(partition_mapping=window_mapping),
            "bars": dg.AssetIn(partition_mapping=window_mapping),
            # a hybrid agent observes the live forecasters of the same month, as a fold's agent observes its fold's
            **state_model_ins(params, LIVE_MODEL_PREFIX),
        },
        outs={
            model_name: optional_out(
                version,
                f"{params.type} trained on the train_months before the month it trades (live fold).",
                "model_io",
            ),
            table_name: optional_out(
                version, f"{params.type}'s decisions and target weights in the month (live fold; in no KPI)."
            ),
        },
        pool=GPU_POOL if family.uses_gpu else None,
        group_name="live",
    )
    def _live(
        context: dg.AssetExecutionContext,
        torch_device: TorchDeviceResource,
        features: pl.DataFrame,
        bars: pl.DataFrame,
        **state_models: Artifact,
    ):  # type: ignore[no-untyped-def]
        from crypto_assets.families import FoldData, build_fold, fit_artifact
        from crypto_assets.models.device import derive_seed

        window = live_window(context.partition_key, spec.train_months)
        frame, scaler = build_fold(features, bars, window, spec.purge_bars, spec.label_horizon, ctx.timeframe)
        # its own random streams: a live model is not any fold's model
        run_seed = derive_seed(seed_root, table_name, window.key)
        device = str(torch_device.device(context.log)) if family.uses_gpu else "cpu"
        data = FoldData(key=window.key, frame=frame, bars=bars, context=ctx, state_models=observed_models(state_models))
        artifact, decisions = fit_artifact(
            params, data, scaler, window, seed=run_seed, device=device, code_version=version
        )
        out = decisions.with_columns(fold=pl.lit(window.key), model=pl.lit(slug))
        train_ts = frame.filter(pl.col("split") == "train")["ts"]
        yield from selected_outputs(
            context,
            dg.Output(
                artifact,
                output_name=model_name,
                metadata={
                    **training_metadata(
                        params.type, artifact.model, run_seed, artifact.metrics, family.curves(artifact.model)
                    ),
                    "train_rows": f"{_iso(train_ts.min())} .. {_iso(train_ts.max())}",  # type: ignore[arg-type]
                },
            ),
            dg.Output(
                out,
                output_name=table_name,
                metadata={"rows": out.height, "orders": int(out["weight"].is_not_null().sum())},
            ),
        )

    return _live


def _iso(value: dt.datetime | None) -> str:
    return "" if value is None else value.isoformat()


def build_live_assets(experiment: ExperimentConfig) -> list[dg.AssetsDefinition]:
    """One live fold asset per family the experiment trains."""
    return [build_live_asset(experiment, params) for params in experiment.models.trained]
