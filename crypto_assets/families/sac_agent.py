"""`SAC_Agent`: a stable-baselines3 Soft Actor-Critic policy on the trading environment (crypto_assets.agents).

fit / predict / save / load / curves are the agent families' shared behaviour (crypto_assets.families.agent);
this module adds SAC's own settings and its training call. Continuous actions only (SAC needs a bounded Box).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field

from crypto_assets.families.agent import AgentFamily, OffPolicyParams
from crypto_assets.families.registry import register

if TYPE_CHECKING:
    from crypto_assets.agents.env import TradingEnv
    from crypto_assets.agents.trained import TrainedAgent


class SACParams(OffPolicyParams):
    """SAC settings on top of the shared agent / replay-buffer settings: a `models.families` entry
    `{type: SAC_Agent, ...}`."""

    algorithm: ClassVar[str] = "sac"
    type: Literal["SAC_Agent"] = "SAC_Agent"
    action: Literal["continuous"] = "continuous"
    """SAC acts in a bounded Box: continuous portfolio weights only."""
    ent_coef: Literal["auto"] | Annotated[float, Field(gt=0, le=10)] = "auto"
    """Entropy weight α; `auto` learns it towards the target entropy −dim(action) (keeps the policy exploring,
    the guard against collapsing onto one saturated action)."""


class SACAgentFamily(AgentFamily):
    type = "SAC_Agent"
    params_class = SACParams
    description = "SAC policy (stable-baselines3) on the trading environment, its mean action at decision time."

    def train(self, env_factory: Callable[[], TradingEnv], params: Any, seed: int, device: str) -> TrainedAgent:
        from crypto_assets.agents.off_policy import train_sac

        return train_sac(env_factory, params, seed=seed, device=device)


register(SACAgentFamily())
