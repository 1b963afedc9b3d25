"""A trained stable-baselines3 agent (PPO, SAC or TD3) on `TradingEnv`: the shared training loop, training curves,
save / load and test-split weights.

    agent = train_ppo(lambda: TradingEnv(train_data, costs, params.env_params()), params, seed=seed)
    weights = agent.predict_weights(TradingEnv(test_data, costs, params.env_params(), training=False))
    run_backtest(bars, weights, costs)       # the same fills and costs the agent trained under

Reproducibility (DESIGN §3.6): training runs inside `crypto_assets.models.device.deterministic(threads=1)`
(one torch thread: the summation order of CPU reductions is fixed; deterministic kernels on), Python / NumPy /
torch are seeded with `seed` (NumPy's global stream also drives TD3's action noise), and SB3 seeds the environments
of the `DummyVecEnv` with seed + i (`Algorithm(seed=seed)` → `VecEnv.seed(seed)`) and the action space (SAC / TD3
warm-up actions), each environment drawing its episode starts from its own seeded stream. Same seed, same data,
same machine and package versions → identical policy weights and decisions on CPU. `DummyVecEnv` (not
subprocesses): the environment step is a few microseconds, far below the cost of inter-process messaging, and one
process keeps the run deterministic and cheap to start.
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
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from crypto_assets.agents.env import TradingEnv, evaluate_policy_weights
from crypto_assets.families.agent import AgentParams
from crypto_assets.models.cross_fit import StateForecaster
from crypto_assets.models.device import deterministic, precision_name, seed_everything

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "td3": TD3}
"""`AgentParams.algorithm` → the SB3 class; the model file is `<algorithm>.zip`."""

CURVE_SCHEMA: dict[str, pl.DataType] = {
    "timesteps": pl.Int64(),
    "episodes": pl.Int64(),
    "ep_reward_mean": pl.Float64(),
    "ep_len_mean": pl.Float64(),
    "ep_final_value_mean": pl.Float64(),
    "ep_reward_mean_100": pl.Float64(),
}


class TrainingCurves(BaseCallback):
    """One row per rollout (PPO) or per `every_steps` transitions at least (off-policy algorithms end a "rollout"
    every `train_freq` steps): the episodes that ended since the last row (count, mean reward, mean length, mean
    final portfolio value) and SB3's running mean reward over the last 100 episodes."""

    def __init__(self, every_steps: int = 0) -> None:
        super().__init__(verbose=0)
        self.every_steps = every_steps
        self.rows: list[dict[str, float | int]] = []
        self._rewards: list[float] = []
        self._lengths: list[int] = []
        self._values: list[float] = []
        self._last_row_at = 0

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            episode = info.get("episode")
            if episode is not None:  # set by Monitor on the step that ends an episode
                self._rewards.append(float(episode["r"]))
                self._lengths.append(int(episode["l"]))
                self._values.append(float(info.get("value", math.nan)))
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps - self._last_row_at >= self.every_steps:
            self._add_row()

    def _on_training_end(self) -> None:
        if self.num_timesteps > self._last_row_at:  # the last transitions since the last row
            self._add_row()

    def _add_row(self) -> None:
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
        self._last_row_at = int(self.num_timesteps)

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=CURVE_SCHEMA)


@dataclass
class TrainedAgent:
    """A trained SB3 policy with its settings and training curves (`CURVE_SCHEMA`)."""

    model: BaseAlgorithm
    params: AgentParams
    seed: int
    curves: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=CURVE_SCHEMA))
    train_seconds: float = math.nan
    """Wall time of `model.learn` (environment steps and gradient updates)."""
    inputs: dict[str, Any] = field(default_factory=dict)
    """What its observations are built from (`symbols`, `features`, `benchmark`), so a replay on other bars builds
    the same observation (set by the agent families)."""
    state_forecasters: dict[str, StateForecaster] = field(default_factory=dict)
    """Hybrid agents: state-column prefix → the fold's forecaster (any forecaster family) whose outputs it observes
    (saved and loaded with it by the agent families, crypto_assets.models.cross_fit)."""

    @property
    def precision(self) -> str:
        """SB3 trains in full fp32 (no autocast); labelled as the forecasters label theirs."""
        return precision_name(bf16=False)

    @property
    def timesteps_per_second(self) -> float:
        """Training throughput: environment transitions collected and learned from per second of `learn`."""
        return self.params.total_timesteps / self.train_seconds

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The deterministic action (the policy's mode; SAC: the squashed mean, no noise) for one observation."""
        action, _ = self.model.predict(observation, deterministic=True)
        return action

    def predict_weights(self, test_env: TradingEnv, *, final_decision: bool = False) -> pl.DataFrame:
        """Replay the deterministic policy over `test_env`'s whole split: long `symbol, ts, weight` decisions
        (decided at the close of `ts`), for `run_backtest` on the same bars and costs; `final_decision`: also at
        the close of the split's last bar (`evaluate_policy_weights`)."""
        model = self.model
        if test_env.observation_space != model.observation_space or test_env.action_space != model.action_space:
            raise ValueError(
                "test_env's spaces differ from the training env's: "
                f"{test_env.observation_space} / {test_env.action_space} vs "
                f"{self.model.observation_space} / {self.model.action_space}"
            )
        with deterministic(threads=1, warn_only=True):
            return evaluate_policy_weights(test_env, self.act, final_decision=final_decision)

    def save(self, path: str | Path) -> Path:
        """Write `path/` (a directory): `<algorithm>.zip` (SB3: policy, optimizer, spaces; no replay buffer),
        `agent.json` (params, seed, training time, inputs), `curves.parquet`. Returns the directory."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save(out / f"{self.params.algorithm}.zip")
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
        from crypto_assets.families.registry import validate_params

        src = Path(path)
        meta = json.loads((src / "agent.json").read_text())
        params = validate_params(meta["params"])  # the family's own parameter class, by its `type`
        if not isinstance(params, AgentParams):
            raise TypeError(f"{src}: {params.type} is not an agent family")
        algorithm = ALGORITHMS[params.algorithm]
        return cls(
            model=algorithm.load(src / f"{params.algorithm}.zip", device=device),
            params=params,
            seed=int(meta["seed"]),
            curves=pl.read_parquet(src / "curves.parquet"),
            train_seconds=float(meta.get("train_seconds", math.nan)),
            inputs=dict(meta.get("inputs", {})),
        )


def train_agent(
    train_env_factory: Callable[[], gym.Env],  # type: ignore[type-arg]
    params: AgentParams,
    build: Callable[[VecEnv], BaseAlgorithm],
    *,
    n_envs: int,
    seed: int,
) -> TrainedAgent:
    """The training loop every algorithm shares: a `DummyVecEnv` of `n_envs` monitored environments from
    `train_env_factory`, the model `build(venv)` makes (seeded with `seed`), `params.total_timesteps` transitions,
    deterministically on CPU (module docstring); a curve row at least every `params.curve_every_steps` transitions."""

    def monitored() -> gym.Env:  # type: ignore[type-arg]
        return Monitor(train_env_factory())  # episode returns / lengths for the curves

    with deterministic(threads=1, warn_only=True):
        seed_everything(seed)
        venv = DummyVecEnv([monitored] * n_envs)
        model = build(venv)
        curves = TrainingCurves(params.curve_every_steps)
        started = time.perf_counter()
        model.learn(total_timesteps=params.total_timesteps, callback=curves)
        train_seconds = time.perf_counter() - started
        venv.close()
    return TrainedAgent(model=model, params=params, seed=seed, curves=curves.frame(), train_seconds=train_seconds)
