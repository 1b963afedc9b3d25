"""What the RL agent families (`PPO_Agent`, `SAC_Agent`, `TD3_Agent`) share: the environment settings and the
Family behaviour over the trading environment (crypto_assets.agents).

`AgentParams` is the ONE place environment fields live (observation window, episodes, reward, action space,
rebalancing, network and training budget); an algorithm's parameter class adds only its algorithm settings.
`AgentFamily` trains on the fold's train split (`TradingEnv` at the experiment's capital and costs, random
episodes) through its `train` method, replays the deterministic policy over the decision window (looking back into
the last train bars so it decides from the window's first bar on; at the window's last bar only when the data ask
for the `final_decision`), and saves / loads / reports the resulting
`crypto_assets.agents.TrainedAgent`. SB3 and torch are imported inside the methods.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import polars as pl
from pydantic import Field, field_validator, model_validator

from crypto_assets.config.schema import OMIT_AT_DEFAULT, FamilyParams
from crypto_assets.families.base import Family, FoldData

if TYPE_CHECKING:  # the env module compiles numba kernels on import: typing only
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

    from crypto_assets.agents.env import EnvParams, TradingEnv
    from crypto_assets.agents.trained import TrainedAgent
    from crypto_assets.models.cross_fit import StateForecaster

NetArch = Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1, max_length=8)]


class AgentParams(FamilyParams):
    """Environment and training settings shared by every agent family (subclasses add their algorithm's)."""

    algorithm: ClassVar[str]
    """stable-baselines3 algorithm (`ppo`, `sac`, `td3`): `crypto_assets.agents.trained.ALGORITHMS` key."""
    curve_every_steps: ClassVar[int] = 0
    """Transitions between training-curve rows at least; 0: one row per rollout (PPO's n_steps × n_envs)."""

    total_timesteps: Annotated[int, Field(ge=1)] = 20_000
    """Environment transitions collected in training."""
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 3e-4
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.99
    net_arch: NetArch = Field(default_factory=lambda: [64, 64])
    """Hidden layers of the actor (policy) and critic (value) MLPs (separate networks of this shape)."""
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
    """MLP policies train faster on CPU; set true to train on the experiment's GPU."""
    state_forecasters: list[str] = Field(default_factory=list, json_schema_extra=OMIT_AT_DEFAULT)
    """Hybrid state: forecaster families the experiment trains (any registered family declaring `p_up` and `vol`
    forecast columns: LSTM_Attn, CNN_LSTM, NHITS, TFT, NF_LSTM) whose outputs on each bar (P(up) − 0.5, log
    forecast vol) the agent observes as extra features: cross-fitted out of sample inside the train window, the
    fold's own forecaster at decision time (crypto_assets.models.cross_fit)."""
    state_blocks: Annotated[int, Field(ge=2, le=20, json_schema_extra=OMIT_AT_DEFAULT)] = 4
    """Blocks of the inner cross-fitting of the state forecasters over the train window."""

    @property
    def observed_families(self) -> dict[str, list[str]]:
        return {"state_forecasters": list(self.state_forecasters)} if self.state_forecasters else {}

    @field_validator("state_forecasters")
    @classmethod
    def _forecasters(cls, types: list[str]) -> list[str]:
        from crypto_assets.families.registry import get_family, registered_types

        forecasters = [t for t in registered_types() if get_family(t).is_state_forecaster]
        unknown = [t for t in types if t not in forecasters]
        if unknown or len(set(types)) != len(types):
            raise ValueError(f"{types}: list each of the forecaster families {', '.join(forecasters)} at most once")
        return types

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


def _device(params: AgentParams, device: str) -> str:
    """The device an agent trains on: the experiment's when `use_gpu`, else the CPU (MLP policies are faster there)."""
    return device if params.use_gpu else "cpu"


class AgentFamily(Family):
    """A stable-baselines3 agent on the trading environment; subclasses set the class attributes and `train`."""

    params_class: ClassVar[type[AgentParams]]

    @abstractmethod
    def train(self, env_factory: Callable[[], TradingEnv], params: Any, seed: int, device: str) -> TrainedAgent:
        """Train the algorithm on environments from `env_factory` (training-mode `TradingEnv`s of the train split)."""

    def fit(self, data: FoldData, params: Any, seed: int, device: str) -> TrainedAgent:
        return self._train_on_fold(
            data, params, device, lambda env_factory: self.train(env_factory, params, seed, _device(params, device))
        )

    def fit_warm(self, data: FoldData, params: Any, seed: int, device: str, init: TrainedAgent) -> TrainedAgent:
        """Continue training `init` (the previous fold's agent: its policy and value / critic networks and their
        optimizer state; an off-policy agent's replay buffer is not stored and refills from this fold) on this
        fold's train split for ceil(`fine_tune_fraction` × `total_timesteps`) transitions, seeded with `seed` as a
        fresh fit is. The new agent's `params.total_timesteps` is the budget it trained; `init` is left as it was."""
        import io
        import math

        from crypto_assets.agents.trained import ALGORITHMS, train_agent

        budget = params.model_copy(
            update={"total_timesteps": math.ceil(params.fine_tune_fraction * params.total_timesteps)}
        )
        saved = io.BytesIO()
        init.model.save(saved)  # a copy through SB3's own format: the previous fold's artifact stays untouched

        def resume(venv: VecEnv) -> BaseAlgorithm:
            saved.seek(0)
            model = ALGORITHMS[params.algorithm].load(saved, env=venv, device=_device(params, device))
            model.seed = seed
            model.set_random_seed(seed)  # torch, numpy, the action space and the environments' episode draws
            return model

        def train(env_factory: Callable[[], TradingEnv]) -> TrainedAgent:
            return train_agent(env_factory, budget, resume, n_envs=init.model.n_envs, seed=seed)

        return self._train_on_fold(data, params, device, train, previous=init)

    def _train_on_fold(
        self,
        data: FoldData,
        params: Any,
        device: str,
        train: Callable[[Callable[[], TradingEnv]], TrainedAgent],
        previous: TrainedAgent | None = None,
    ) -> TrainedAgent:
        """`train` on training-mode environments of the fold's train split, at the experiment's capital and costs;
        the agent records what its observation is made of. `previous` (warm start) must observe the same. A hybrid
        agent's state forecasters are cross-fitted on `device` (the experiment's: where the forecasters train)."""
        from crypto_assets.agents import EnvData, TradingEnv

        ctx = data.context
        costs = ctx.cost_model()
        env_params = params.env_params(initial_value=ctx.capital)  # impact and the cap depend on the capital
        frame, forecasters = _with_state_forecasts(data, params, device)
        train_data = EnvData.from_frames(frame, data.bars, split="train", timeframe=ctx.timeframe)
        # what the policy's observation is made of: replay on other bars must build exactly this
        inputs = {
            "symbols": list(train_data.symbols),
            "features": list(train_data.feature_names),
            "benchmark": train_data.benchmark,
        }
        if previous is not None and previous.inputs != inputs:
            raise ValueError(
                f"cannot fine-tune: the previous fold's agent observed {previous.inputs}, this fold's train split "
                f"gives {inputs} (a symbol listed or delisted in between: use retrain: full)"
            )
        agent = train(lambda: TradingEnv(train_data, costs, env_params, training=True))
        agent.inputs = inputs
        agent.state_forecasters = forecasters
        return agent

    def predict(self, model: TrainedAgent, data: FoldData) -> pl.DataFrame:
        from crypto_assets.agents import EnvData, TradingEnv
        from crypto_assets.models.cross_fit import with_state

        ctx = data.context
        frame = with_state(data, model.state_forecasters)  # the fold's own forecasters, on every bar
        env_params = model.params.env_params(initial_value=ctx.capital)
        spec = model.inputs
        common = {
            "timeframe": ctx.timeframe,
            "symbols": spec["symbols"],
            "feature_columns": spec["features"],
            "benchmark": spec["benchmark"],
        }
        test = EnvData.from_frames(frame, data.bars, split="test", **common)
        if (frame["split"] == "train").any():
            train = EnvData.from_frames(frame, data.bars, split="train", **common)
            test = test.preceded_by(train, env_params.window - 1)  # decide from the first bar, as the forecasters do
        env = TradingEnv(test, ctx.cost_model(), env_params, training=False)
        return model.predict_weights(env, final_decision=data.final_decision)

    def metrics(self, model: TrainedAgent, data: FoldData) -> dict[str, float]:
        curves = model.curves
        last = curves.tail(1)
        out = {"timesteps": float(model.params.total_timesteps), "rollouts": float(curves.height)}
        for name in ("ep_reward_mean_100", "ep_final_value_mean"):
            if last.height:
                value = last[name][0]
                out[f"final_{name}"] = float("nan") if value is None else float(value)
        return out

    def curves(self, model: TrainedAgent) -> dict[str, pl.DataFrame]:
        return {"reward": model.curves}

    def training_info(self, model: TrainedAgent) -> dict[str, Any]:
        return {
            "device": str(model.model.device),
            "precision": model.precision,
            "timesteps_per_second": float(model.timesteps_per_second),
            "train_seconds": float(model.train_seconds),
            "timesteps": model.params.total_timesteps,
            "rollouts": model.curves.height,
        }

    def save_model(self, model: TrainedAgent, directory: Path) -> None:
        model.save(directory)
        for prefix, forecaster in model.state_forecasters.items():  # a hybrid agent replays with its forecasters
            forecaster.save(directory / STATE_DIR / prefix)

    def load_model(self, directory: Path, device: str) -> TrainedAgent:
        from crypto_assets.agents.trained import TrainedAgent
        from crypto_assets.models.cross_fit import StateForecaster

        agent = TrainedAgent.load(directory, device=device)
        state = directory / STATE_DIR
        if state.exists():
            agent.state_forecasters = {p.name: StateForecaster.load(p, device) for p in sorted(state.iterdir())}
        return agent


STATE_DIR = "state_forecasters"
"""Sub-folder of a hybrid agent's model folder: one `StateForecaster` folder per state-column prefix (its type,
vol scale and the family's own `save_model` files)."""


def state_prefix(forecaster_type: str) -> str:
    """Prefix of the state columns a forecaster family's outputs become (`LSTM_Attn` → `fc_lstm_attn`)."""
    return f"fc_{forecaster_type.lower()}"


def _with_state_forecasts(
    data: FoldData, params: AgentParams, device: str
) -> tuple[pl.DataFrame, dict[str, StateForecaster]]:
    """The fold frame with each state forecaster's columns (train rows cross-fitted out of sample, the other rows
    from the fold's own forecaster, crypto_assets.models.cross_fit) and those forecasters by prefix."""
    from crypto_assets.models.cross_fit import StateForecaster, cross_fitted_forecasts, with_state

    forecasters, cross_fitted = {}, {}
    for forecaster_type in params.state_forecasters:
        artifact = data.state_models.get(forecaster_type)
        if artifact is None:
            raise ValueError(f"{params.type} observes {forecaster_type}, but the fold data carries no such model")
        prefix = state_prefix(forecaster_type)
        forecasters[prefix] = StateForecaster(
            family_type=artifact.family_type,
            model=artifact.model,
            vol_scale=artifact.family.forecast_vol_scale(artifact.model, data),
            family_module=artifact.family_module,
        )
        cross_fitted[prefix] = cross_fitted_forecasts(
            data, artifact.params, seed=artifact.seed, k=params.state_blocks, device=device
        )
    return with_state(data, forecasters, cross_fitted), forecasters


class OffPolicyParams(AgentParams):
    """Replay-buffer settings SAC and TD3 share (stable-baselines3's names). SB3's defaults (one gradient step of
    a 256 × 256 net per environment step) train at ~15-25 steps/s on a CPU here; updating every `train_freq`
    steps with `gradient_steps` steps (one update per 8 transitions by default), a batch of 128 and the 64 × 64 nets
    (actor and each twin critic: `net_arch`) is ~35× faster (benchmarks/agent_steps.py)."""

    curve_every_steps: ClassVar[int] = 2_048  # SB3 ends an off-policy "rollout" every `train_freq` steps
    n_envs: Annotated[int, Field(ge=1, le=64)] = 1
    """Environments stepped together (each vector step adds `n_envs` transitions)."""
    buffer_size: Annotated[int, Field(ge=1_000)] = 50_000
    """Replay buffer capacity in transitions (memory: ~8 bytes × observation size each; 1,735 floats at the
    default window and 3 symbols, ~14 kB: 50,000 hold ~0.7 GB once full)."""
    learning_starts: Annotated[int, Field(ge=0)] = 1_000
    """Transitions of uniformly random actions collected before learning starts."""
    batch_size: Annotated[int, Field(ge=8)] = 128
    """Transitions per gradient step (SB3: 256; 128 is ~1.7× faster per update on the demo's observations)."""
    tau: Annotated[float, Field(gt=0, le=1)] = 0.005
    """Polyak rate of the target networks."""
    train_freq: Annotated[int, Field(ge=1)] = 16
    """Vector-environment steps between updates."""
    gradient_steps: Annotated[int, Field(ge=1)] = 2
    """Gradient steps per update."""

    @model_validator(mode="after")
    def _learns_something(self) -> OffPolicyParams:
        if self.learning_starts >= self.total_timesteps:
            raise ValueError(
                f"learning_starts ({self.learning_starts}) must be below total_timesteps ({self.total_timesteps}): "
                "the agent would only ever act at random"
            )
        return self
