"""PPO (stable-baselines3) on `TradingEnv`: `train_ppo` → `TrainedAgent` (crypto_assets.agents.trained: the shared
training loop, curves, save / load, test-split weights, and why the same seed gives the same policy on CPU).

    agent = train_ppo(lambda: TradingEnv(train_data, costs, params.env_params()), params, seed=seed)
    weights = agent.predict_weights(TradingEnv(test_data, costs, params.env_params(), training=False))
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv

from crypto_assets.agents.trained import CURVE_SCHEMA, TrainedAgent, train_agent
from crypto_assets.families.ppo_agent import PPOParams

__all__ = ["CURVE_SCHEMA", "PPOParams", "TrainedAgent", "train_ppo"]


def train_ppo(
    train_env_factory: Callable[[], gym.Env],  # type: ignore[type-arg]
    params: PPOParams,
    *,
    seed: int,
    device: str = "cpu",
) -> TrainedAgent:
    """Train SB3 PPO ("MlpPolicy", `params.net_arch` for policy and value nets) for `params.total_timesteps`
    transitions on `params.n_envs` environments from `train_env_factory` (each a training-mode `TradingEnv`,
    seeded seed + i), deterministically on CPU; one curve row per rollout."""

    def build(venv: VecEnv) -> PPO:
        return PPO(
            "MlpPolicy",
            venv,
            learning_rate=params.learning_rate,
            n_steps=params.n_steps,
            batch_size=params.batch_size,
            n_epochs=params.n_epochs,
            gamma=params.gamma,
            ent_coef=params.ent_coef,
            policy_kwargs={"net_arch": list(params.net_arch)},
            seed=seed,
            device=torch.device(device),
            verbose=0,
        )

    return train_agent(train_env_factory, params, build, n_envs=params.n_envs, seed=seed)
