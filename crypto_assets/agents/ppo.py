"""PPO (stable-baselines3) on `TradingEnv`: training, training curves, save / load, test-split weights.

    agent = train_ppo(lambda: TradingEnv(train_data, costs, params.env_params()), params, seed=seed)
    weights = agent.predict_weights(TradingEnv(test_data, costs, params.env_params(), training=False))
    run_backtest(bars, weights, costs)       # the same fills and costs the agent trained under

Reproducibility (DESIGN §3.6): training runs inside `crypto_assets.models.device.deterministic(threads=1)`
(one torch thread: the summation order of CPU reductions is fixed; deterministic kernels on), Python / NumPy /
torch are seeded with `seed`, and SB3 seeds the `n_envs` environments of the `DummyVecEnv` with seed + i
(`PPO(seed=seed)` → `VecEnv.seed(seed)`), each drawing its episode starts from its own seeded stream. Same
seed, same data, same machine and package versions → identical policy weights and decisions on CPU.
`DummyVecEnv` (not subprocesses): the environment step is a few microseconds, far below the cost of
inter-process messaging, and one process keeps the run deterministic and cheap to start.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import polars as pl
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from crypto_assets.agents.env import TradingEnv, evaluate_policy_weights
from crypto_assets.families.ppo_agent import PPOParams
from crypto_assets.models.device import deterministic, precision_name, seed_everything

CURVE_SCHEMA: dict[str, pl.DataType] = {
    "timesteps": pl.Int64(),
    "episodes": pl.Int64(),
    "ep_reward_mean": pl.Float64(),
    "ep_len_mean": pl.Float64(),
    "ep_final_value_mean": pl.Float64(),
    "ep_reward_mean_100": pl.Float64(),
}


class TrainingCurves(BaseCallback):
    """Per rollout: the episodes that ended in it (count, mean reward, mean length, mean final portfolio
    value) and SB3's running mean reward over the last 100 episodes."""

    def __init__(self) -> None:
        super().__init__(verbose=0)
        self.rows: list[dict[str, float | int]] = []
        self._rewards: list[float] = []
        self._lengths: list[int] = []
        self._values: list[float] = []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            episode = info.get("episode")
            if episode is not None:  # set by Monitor on the step that ends an episode
                self._rewards.append(float(episode["r"]))
                self._lengths.append(int(episode["l"]))
                self._values.append(float(info.get("value", math.nan)))
        return True

    def _on_rollout_end(self) -> None:
        buffer = [float(ep["r"]) for ep in self.model.ep_info_buffer] if self.model.ep_info_buffer else []

        def mean(xs: list[float] | list[int]) -> float:
            return float(np.mean(xs)) if xs else math.nan

        self.rows.append(
            {
                "timesteps": int(self.num_timesteps),
                "episodes": len(self._rewards),
                "ep_reward_mean": mean(self._rewards),
                "ep_len_mean": mean(self._lengths),
                "ep_final_value_mean": mean(self._values),
                "ep_reward_mean_100": mean(buffer),
            }
        )
        self._rewards, self._lengths, self._values = [], [], []

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=CURVE_SCHEMA)


@dataclass
class TrainedAgent:
    """A trained PPO policy with its settings and training curves (one row per rollout, `CURVE_SCHEMA`)."""

    model: PPO
    params: PPOParams
    seed: int
    curves: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=CURVE_SCHEMA))
    train_seconds: float = math.nan
    """Wall time of `model.learn` (environment steps and gradient updates)."""
    inputs: dict[str, Any] = field(default_factory=dict)
    """What its observations are built from (`symbols`, `features`, `benchmark`), so a replay on other bars builds
    the same observation (set by the PPO_Agent family)."""

    @property
    def precision(self) -> str:
        """SB3 trains in full fp32 (no autocast); labelled as the forecasters label theirs."""
        return precision_name(bf16=False)

    @property
    def timesteps_per_second(self) -> float:
        """Training throughput: environment transitions collected and learned from per second of `learn`."""
        return self.params.total_timesteps / self.train_seconds

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The deterministic action (the policy's mode) for one observation."""
        action, _ = self.model.predict(observation, deterministic=True)
        return action

    def predict_weights(self, test_env: TradingEnv) -> pl.DataFrame:
        """Replay the deterministic policy over `test_env`'s whole split: long `symbol, ts, weight` decisions
        (decided at the close of `ts`), for `run_backtest` on the same bars and costs."""
        model = self.model
        if test_env.observation_space != model.observation_space or test_env.action_space != model.action_space:
            raise ValueError(
                "test_env's spaces differ from the training env's: "
                f"{test_env.observation_space} / {test_env.action_space} vs "
                f"{self.model.observation_space} / {self.model.action_space}"
            )
        with deterministic(threads=1, warn_only=True):
            return evaluate_policy_weights(test_env, self.act)

    def save(self, path: str | Path) -> Path:
        """Write `path/` (a directory): `ppo.zip` (SB3: policy, optimizer, spaces), `agent.json` (params,
        seed, training time), `curves.parquet`. Returns the directory."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save(out / "ppo.zip")
        meta = {
            "params": self.params.model_dump(mode="json"),
            "seed": self.seed,
            "train_seconds": self.train_seconds,
            "inputs": self.inputs,
        }
        (out / "agent.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        self.curves.write_parquet(out / "curves.parquet")
        return out

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> TrainedAgent:
        src = Path(path)
        meta = json.loads((src / "agent.json").read_text())
        model = PPO.load(src / "ppo.zip", device=device)
        return cls(
            model=model,
            params=PPOParams.model_validate(meta["params"]),
            seed=int(meta["seed"]),
            curves=pl.read_parquet(src / "curves.parquet"),
            train_seconds=float(meta.get("train_seconds", math.nan)),
            inputs=dict(meta.get("inputs", {})),
        )


def train_ppo(
    train_env_factory: Callable[[], gym.Env],  # type: ignore[type-arg]
    params: PPOParams,
    *,
    seed: int,
    device: str = "cpu",
) -> TrainedAgent:
    """Train SB3 PPO ("MlpPolicy", `params.net_arch` for policy and value nets) for `params.total_timesteps`
    transitions on a `DummyVecEnv` of `params.n_envs` environments from `train_env_factory` (each a
    training-mode `TradingEnv`, seeded seed + i), deterministically on CPU (module docstring)."""

    def monitored() -> gym.Env:  # type: ignore[type-arg]
        return Monitor(train_env_factory())  # episode returns / lengths for the curves

    with deterministic(threads=1, warn_only=True):
        seed_everything(seed)
        venv = DummyVecEnv([monitored] * params.n_envs)
        model = PPO(
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
        curves = TrainingCurves()
        started = time.perf_counter()
        model.learn(total_timesteps=params.total_timesteps, callback=curves)
        train_seconds = time.perf_counter() - started
        venv.close()
    return TrainedAgent(model=model, params=params, seed=seed, curves=curves.frame(), train_seconds=train_seconds)
