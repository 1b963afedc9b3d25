"""Tiny model budgets for tests whose subject is not the models (`crypto-lab run` still trains them)."""

from __future__ import annotations

import copy
from typing import Any

TINY_MODELS: dict[str, Any] = {
    "families": [
        {"type": "LSTM_Attn", "window": 8, "hidden": 4, "max_epochs": 1, "max_train_samples": 500},
        {
            "type": "PPO_Agent",
            "total_timesteps": 256,
            "n_envs": 1,
            "n_steps": 128,
            "batch_size": 64,
            "n_epochs": 1,
            "window": 4,
            "episode_bars": 64,
            "net_arch": [8],
        },
    ],
    "ensemble": [{"type": "LSTM_Attn", "weight": 0.4}, {"type": "PPO_Agent", "weight": 0.6}],
}
MODEL_STRATEGIES = ["lstm_attn", "ppo_agent", "ensemble"]


def tiny_models(**overrides: dict[str, Any]) -> dict[str, Any]:
    """`TINY_MODELS` with some parameters of some families replaced, by config type, e.g.
    `tiny_models(PPO_Agent={"total_timesteps": 50_000_000})` (a copy: TINY_MODELS is left alone)."""
    models = copy.deepcopy(TINY_MODELS)
    for entry in models["families"]:
        entry.update(overrides.pop(entry["type"], {}))
    if overrides:
        raise KeyError(f"no tiny family {sorted(overrides)}; tiny families: {[f['type'] for f in models['families']]}")
    return models
