"""`TD3_Agent`: a stable-baselines3 Twin Delayed DDPG policy on the trading environment (crypto_assets.agents).

fit / predict / save / load / curves are the agent families' shared behaviour (crypto_assets.families.agent);
this module adds TD3's own settings and its training call. Continuous actions only (TD3 needs a bounded Box).
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


class TD3Params(OffPolicyParams):
    """TD3 settings on top of the shared agent / replay-buffer settings: a `models.families` entry
    `{type: TD3_Agent, ...}`."""

    algorithm: ClassVar[str] = "td3"
    type: Literal["TD3_Agent"] = "TD3_Agent"
    action: Literal["continuous"] = "continuous"
    """TD3 acts in a bounded Box: continuous portfolio weights only."""
    action_noise_sigma: Annotated[float, Field(ge=0, le=2)] = 0.3
    """Standard deviation of the Gaussian exploration noise added to every action entry (actions in [-1, 1])."""
    policy_delay: Annotated[int, Field(ge=1, le=100)] = 2
    """Critic updates per actor (and target network) update."""
    target_policy_noise: Annotated[float, Field(ge=0, le=2)] = 0.2
    """Standard deviation of the noise on the target policy's action (target smoothing)."""
    target_noise_clip: Annotated[float, Field(ge=0, le=2)] = 0.5


class TD3AgentFamily(AgentFamily):
    type = "TD3_Agent"
    params_class = TD3Params
    description = "TD3 policy (stable-baselines3) on the trading environment, deterministic at decision time."

    def train(self, env_factory: Callable[[], TradingEnv], params: Any, seed: int, device: str) -> TrainedAgent:
        from crypto_assets.agents.off_policy import train_td3

        return train_td3(env_factory, params, seed=seed, device=device)


register(TD3AgentFamily())
