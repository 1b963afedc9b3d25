"""`PPO_Agent`: a stable-baselines3 PPO policy on the trading environment (crypto_assets.agents).

fit: PPO on the fold's train split (`TradingEnv` at the experiment's capital and costs, random episodes).
predict: the deterministic policy replayed over the decision window, looking back into the last train bars so it
decides from the window's first bar on. SB3 and torch are imported inside the methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import polars as pl
from pydantic import Field

from crypto_assets.config.schema import FamilyParams
from crypto_assets.families.base import Family, FoldData
from crypto_assets.families.registry import register

if TYPE_CHECKING:  # the env module compiles numba kernels on import: typing only
    from crypto_assets.agents.env import EnvParams


class PPOParams(FamilyParams):
    """PPO and environment hyper-parameters: a `models.families` entry `{type: PPO_Agent, ...}`."""

    type: Literal["PPO_Agent"] = "PPO_Agent"
    total_timesteps: Annotated[int, Field(ge=1)] = 20_000
    n_envs: Annotated[int, Field(ge=1, le=256)] = 4
    n_steps: Annotated[int, Field(ge=8)] = 256
    """Steps per environment per rollout (a rollout is n_steps × n_envs transitions)."""
    batch_size: Annotated[int, Field(ge=8)] = 256
    n_epochs: Annotated[int, Field(ge=1, le=100)] = 5
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 3e-4
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.99
    ent_coef: Annotated[float, Field(ge=0, le=1)] = 0.0
    net_arch: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1, max_length=8)] = Field(
        default_factory=lambda: [64, 64]
    )
    """Hidden layers of the policy and value MLPs (separate networks of this shape)."""
    window: Annotated[int, Field(ge=1, le=1024)] = 24
    """Bars of scaled features in each observation."""
    episode_bars: Annotated[int, Field(ge=16)] = 720
    """Length of a training episode, sampled at random inside the train window."""
    reward: Literal["differential_sortino", "drawdown_penalty", "log_return"] = "differential_sortino"
    drawdown_penalty: Annotated[float, Field(ge=0, le=100)] = 1.0
    """Weight of the drawdown term for `reward: drawdown_penalty` (Calmar-style)."""
    action: Literal["continuous", "discrete"] = "continuous"
    """`continuous`: portfolio weights with a cash leg; `discrete`: hold / buy / sell per symbol."""
    rebalance_every: Annotated[int, Field(ge=1, le=10_000)] = 1
    """Bars between the agent's decisions."""
    use_gpu: bool = False
    """MLP policies train faster on CPU; set true to put PPO on the experiment's GPU."""

    def env_params(self, **overrides: Any) -> EnvParams:
        """The `EnvParams` these settings imply (window, episode, reward, action, rebalancing) + overrides."""
        from crypto_assets.agents.env import EnvParams

        return EnvParams(
            window=self.window,
            episode_bars=self.episode_bars,
            reward=self.reward,
            drawdown_penalty=self.drawdown_penalty,
            action=self.action,
            rebalance_every=self.rebalance_every,
            **overrides,
        )


class PPOAgentFamily(Family):
    type = "PPO_Agent"
    params_class = PPOParams
    # The fold asset was `agent_ppo` when the published results were made; its name seeds every random stream of
    # training, so it stays the label: renaming the asset must not change the results.
    seed_label = "agent_ppo"
    description = "PPO policy (stable-baselines3) on the trading environment, deterministic at decision time."

    def fit(self, data: FoldData, params: Any, seed: int, device: str) -> Any:
        from crypto_assets.agents import EnvData, TradingEnv
        from crypto_assets.agents.ppo import train_ppo

        ctx = data.context
        costs = ctx.cost_model()
        env_params = params.env_params(initial_value=ctx.capital)  # impact and the cap depend on the capital
        train = EnvData.from_frames(data.frame, data.bars, split="train", timeframe=ctx.timeframe)
        agent = train_ppo(
            lambda: TradingEnv(train, costs, env_params, training=True),
            params,
            seed=seed,
            device=device if params.use_gpu else "cpu",
        )
        # what the policy's observation is made of: replay on other bars must build exactly this
        agent.inputs = {
            "symbols": list(train.symbols),
            "features": list(train.feature_names),
            "benchmark": train.benchmark,
        }
        return agent

    def predict(self, model: Any, data: FoldData) -> pl.DataFrame:
        from crypto_assets.agents import EnvData, TradingEnv

        ctx = data.context
        env_params = model.params.env_params(initial_value=ctx.capital)
        spec = model.inputs
        common = {
            "timeframe": ctx.timeframe,
            "symbols": spec["symbols"],
            "feature_columns": spec["features"],
            "benchmark": spec["benchmark"],
        }
        test = EnvData.from_frames(data.frame, data.bars, split="test", **common)
        if (data.frame["split"] == "train").any():
            train = EnvData.from_frames(data.frame, data.bars, split="train", **common)
            test = test.preceded_by(train, env_params.window - 1)  # decide from the first bar, as the forecasters do
        return model.predict_weights(TradingEnv(test, ctx.cost_model(), env_params, training=False))

    def metrics(self, model: Any, data: FoldData) -> dict[str, float]:
        curves = model.curves
        last = curves.tail(1)
        out = {"timesteps": float(model.params.total_timesteps), "rollouts": float(curves.height)}
        for name in ("ep_reward_mean_100", "ep_final_value_mean"):
            if last.height:
                value = last[name][0]
                out[f"final_{name}"] = float("nan") if value is None else float(value)
        return out

    def curves(self, model: Any) -> dict[str, pl.DataFrame]:
        return {"reward": model.curves}

    def training_info(self, model: Any) -> dict[str, Any]:
        return {
            "device": str(model.model.device),
            "precision": model.precision,
            "timesteps_per_second": float(model.timesteps_per_second),
            "train_seconds": float(model.train_seconds),
            "timesteps": model.params.total_timesteps,
            "rollouts": model.curves.height,
        }

    def save_model(self, model: Any, directory: Path) -> None:
        model.save(directory)

    def load_model(self, directory: Path, device: str) -> Any:
        from crypto_assets.agents.ppo import TrainedAgent

        return TrainedAgent.load(directory, device=device)


register(PPOAgentFamily())
