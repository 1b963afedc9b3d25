"""`PPO_Agent`: a stable-baselines3 PPO policy on the trading environment (crypto_assets.agents).

fit / predict / save / load / curves are the agent families' shared behaviour (crypto_assets.families.agent);
this module adds PPO's own settings and its training call. SB3 and torch are imported inside the methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field

from crypto_assets.families.agent import AgentFamily, AgentParams
from crypto_assets.families.registry import register

if TYPE_CHECKING:
    from crypto_assets.agents.env import TradingEnv
    from crypto_assets.agents.trained import TrainedAgent


class PPOParams(AgentParams):
    """PPO settings on top of the shared agent / environment settings: a `models.families` entry
    `{type: PPO_Agent, ...}`."""

    algorithm: ClassVar[str] = "ppo"
    type: Literal["PPO_Agent"] = "PPO_Agent"
    n_envs: Annotated[int, Field(ge=1, le=256)] = 4
    n_steps: Annotated[int, Field(ge=8)] = 256
    """Steps per environment per rollout (a rollout is n_steps × n_envs transitions)."""
    batch_size: Annotated[int, Field(ge=8)] = 256
    n_epochs: Annotated[int, Field(ge=1, le=100)] = 5
    ent_coef: Annotated[float, Field(ge=0, le=1)] = 0.0


class PPOAgentFamily(AgentFamily):
    type = "PPO_Agent"
    params_class = PPOParams
    # The fold asset was `agent_ppo` when the published results were made; its name seeds every random stream of
    # training, so it stays the label: renaming the asset must not change the results.
    seed_label = "agent_ppo"
    description = "PPO policy (stable-baselines3) on the trading environment, deterministic at decision time."

    def train(self, env_factory: Callable[[], TradingEnv], params: Any, seed: int, device: str) -> TrainedAgent:
        from crypto_assets.agents.ppo import train_ppo

        return train_ppo(env_factory, params, seed=seed, device=device)


register(PPOAgentFamily())
