"""SAC and TD3 (stable-baselines3) on `TradingEnv`: `train_sac`, `train_td3` → `TrainedAgent`
(crypto_assets.agents.trained: the shared training loop, curves, save / load, test-split weights, and why the same
seed gives the same policy on CPU).

    agent = train_sac(lambda: TradingEnv(train_data, costs, params.env_params()), params, seed=seed)
    weights = agent.predict_weights(TradingEnv(test_data, costs, params.env_params(), training=False))

Both need a bounded Box action space: the continuous actions of `TradingEnv` are in [-1, 1] and the environment maps
them to portfolio weights (softmax with a cash leg long-only; L1-scaled to `max_leverage` with shorts), so the
policies' tanh outputs are the environment's actions as they are. The discrete action space is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import VecEnv

from crypto_assets.agents.trained import TrainedAgent, train_agent
from crypto_assets.families.agent import OffPolicyParams
from crypto_assets.families.sac_agent import SACParams
from crypto_assets.families.td3_agent import TD3Params


def _common(params: OffPolicyParams, venv: VecEnv, seed: int, device: str) -> dict[str, Any]:
    if not isinstance(venv.action_space, spaces.Box):
        raise ValueError(f"{params.type} needs continuous actions (action: continuous), got {venv.action_space}")
    return {
        "policy": "MlpPolicy",
        "env": venv,
        "learning_rate": params.learning_rate,
        "buffer_size": params.buffer_size,
        "learning_starts": params.learning_starts,
        "batch_size": params.batch_size,
        "tau": params.tau,
        "gamma": params.gamma,
        "train_freq": params.train_freq,
        "gradient_steps": params.gradient_steps,
        "policy_kwargs": {"net_arch": list(params.net_arch)},
        "seed": seed,
        "device": torch.device(device),
        "verbose": 0,
    }


def train_sac(
    train_env_factory: Callable[[], gym.Env],  # type: ignore[type-arg]
    params: SACParams,
    *,
    seed: int,
    device: str = "cpu",
) -> TrainedAgent:
    """Train SB3 SAC ("MlpPolicy": actor and twin critics of `params.net_arch`) for `params.total_timesteps`
    transitions on `params.n_envs` environments from `train_env_factory` (training-mode `TradingEnv`s, seeded
    seed + i), deterministically on CPU. `ent_coef: auto` learns the entropy weight towards −dim(action)."""

    def build(venv: VecEnv) -> SAC:
        return SAC(**_common(params, venv, seed, device), ent_coef=params.ent_coef)

    return train_agent(train_env_factory, params, build, n_envs=params.n_envs, seed=seed)


def train_td3(
    train_env_factory: Callable[[], gym.Env],  # type: ignore[type-arg]
    params: TD3Params,
    *,
    seed: int,
    device: str = "cpu",
) -> TrainedAgent:
    """Train SB3 TD3 ("MlpPolicy": actor and twin critics of `params.net_arch`) with Gaussian exploration noise of
    standard deviation `params.action_noise_sigma` on every action entry (drawn from NumPy's seeded global
    stream), target policy smoothing `target_policy_noise` and delayed actor updates `policy_delay`."""

    def build(venv: VecEnv) -> TD3:
        n_actions = int(np.prod(venv.action_space.shape or (1,)))
        noise = NormalActionNoise(np.zeros(n_actions), np.full(n_actions, params.action_noise_sigma))
        return TD3(
            **_common(params, venv, seed, device),
            action_noise=noise,
            policy_delay=params.policy_delay,
            target_policy_noise=params.target_policy_noise,
            target_noise_clip=params.target_noise_clip,
        )

    return train_agent(train_env_factory, params, build, n_envs=params.n_envs, seed=seed)
