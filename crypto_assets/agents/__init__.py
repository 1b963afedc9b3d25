"""Reinforcement-learning agents on the backtest engine's cost model.

- `crypto_assets.agents.env`: `TradingEnv` (gymnasium), built from a fold split (`EnvData.from_frames`), whose
  fills, costs and marks are the backtest engine's own compiled per-bar functions; `evaluate_policy_weights`.
- `crypto_assets.agents.ppo`: `train_ppo` (stable-baselines3 PPO) → `TrainedAgent`.

torch / stable-baselines3 load only when a PPO name is first used (they are heavy, and the Dagster executor
re-imports the code location in every step process).
"""

from __future__ import annotations

from typing import Any

from crypto_assets.agents.env import EnvData, EnvParams, TradingEnv, evaluate_policy_weights

_PPO_NAMES = ("PPOParams", "TrainedAgent", "train_ppo")

__all__ = ["EnvData", "EnvParams", "PPOParams", "TradingEnv", "TrainedAgent", "evaluate_policy_weights", "train_ppo"]


def __getattr__(name: str) -> Any:
    if name in _PPO_NAMES:
        from crypto_assets.agents import ppo

        return getattr(ppo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
