"""Reinforcement-learning agents on the backtest engine's cost model.

- `crypto_assets.agents.env`: `TradingEnv` (gymnasium), built from a fold split (`EnvData.from_frames`), whose
  fills, costs and marks are the backtest engine's own compiled per-bar functions; `evaluate_policy_weights`.
- `crypto_assets.agents.ppo`: `train_ppo` (stable-baselines3 PPO) → `TrainedAgent`
  (`crypto_assets.agents.trained`: the training loop, curves, save / load and replay every algorithm shares).
- `crypto_assets.agents.off_policy`: `train_sac`, `train_td3` (stable-baselines3 SAC / TD3) → `TrainedAgent`.

torch / stable-baselines3 load only when one of those names is first used (they are heavy, and the Dagster executor
re-imports the code location in every step process).
"""

from __future__ import annotations

from typing import Any

from crypto_assets.agents.env import EnvData, EnvParams, TradingEnv, evaluate_policy_weights

_LAZY = {
    "PPOParams": "ppo",
    "train_ppo": "ppo",
    "TrainedAgent": "trained",
    "train_sac": "off_policy",
    "train_td3": "off_policy",
}

__all__ = [
    "EnvData",
    "EnvParams",
    "PPOParams",
    "TradingEnv",
    "TrainedAgent",
    "evaluate_policy_weights",
    "train_ppo",
    "train_sac",
    "train_td3",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"crypto_assets.agents.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
