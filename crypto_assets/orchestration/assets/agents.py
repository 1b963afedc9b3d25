"""`agent_ppo[fold]`: a PPO agent trained on the fold's train window, replayed on its test window."""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, fingerprint, section_hash
from crypto_assets.orchestration.assets.common import PREDICTIONS_PREFIX, fold_spec, optional_out, selected_outputs
from crypto_assets.orchestration.instance import GPU_POOL
from crypto_assets.orchestration.markdown import md
from crypto_assets.orchestration.partitions import fold_partitions, fold_window_mapping
from crypto_assets.orchestration.resources import TorchDeviceResource

AGENT = "agent_ppo"


def build_ppo_assets(experiment: ExperimentConfig) -> dg.AssetsDefinition:
    spec = fold_spec(experiment)
    folds = fold_partitions(experiment.data, spec)
    timeframe = experiment.data.timeframe
    capital = experiment.experiment.capital
    # the agent learns at the experiment's capital (impact and the cap depend on it): a new capital, a new agent
    version = (
        section_hash(experiment, "walk_forward", "costs")
        + "-"
        + fingerprint(experiment.models.params_of("PPO_Agent").model_dump(mode="json"))
        + f"-capital={capital!r}"
    )

    @dg.multi_asset(
        can_subset=True,
        name=AGENT,
        partitions_def=folds,
        ins={"fold_dataset": dg.AssetIn(), "bars": dg.AssetIn(partition_mapping=fold_window_mapping(spec))},
        outs={
            AGENT: optional_out(version, "The fold's PPO policy (SB3), settings and training curves.", "model_io"),
            f"{PREDICTIONS_PREFIX}ppo": optional_out(
                version, "The deterministic policy's target weights on the test window."
            ),
        },
        pool=GPU_POOL,
        group_name="models",
    )
    def agent_ppo(
        context: dg.AssetExecutionContext,
        torch_device: TorchDeviceResource,
        fold_dataset: pl.DataFrame,
        bars: pl.DataFrame,
    ):  # type: ignore[no-untyped-def]
        from crypto_assets.agents import EnvData, TradingEnv, train_ppo
        from crypto_assets.models import derive_seed
        from crypto_assets.orchestration.assets.common import cost_model

        fold = context.partition_key
        params = experiment.models.params_of("PPO_Agent")
        costs = cost_model(experiment)
        env_params = params.env_params(initial_value=capital)
        run_seed = derive_seed(experiment.experiment.seed, AGENT, fold)
        train_data = EnvData.from_frames(fold_dataset, bars, split="train", timeframe=timeframe)
        test_data = EnvData.from_frames(
            fold_dataset, bars, split="test", timeframe=timeframe, symbols=train_data.symbols
        ).preceded_by(train_data, env_params.window - 1)  # decide from the first test bar, as the forecasters do
        device = str(torch_device.device(context.log)) if params.use_gpu else "cpu"
        agent = train_ppo(
            lambda: TradingEnv(train_data, costs, env_params, training=True), params, seed=run_seed, device=device
        )
        weights = agent.predict_weights(TradingEnv(test_data, costs, env_params, training=False))
        out = weights.with_columns(fold=pl.lit(fold), model=pl.lit("ppo"))
        curves = agent.curves
        yield from selected_outputs(
            context,
            dg.Output(
                agent,
                output_name=AGENT,
                metadata={
                    "device": device,
                    "precision": agent.precision,
                    "timesteps_per_second": float(agent.timesteps_per_second),
                    "train_seconds": float(agent.train_seconds),
                    "seed": run_seed,
                    "timesteps": params.total_timesteps,
                    "rollouts": curves.height,
                    "training_curves": md(curves, empty="(no complete rollout)"),
                },
            ),
            dg.Output(out, output_name=f"{PREDICTIONS_PREFIX}ppo", metadata={"orders": out.height}),
        )

    return agent_ppo
