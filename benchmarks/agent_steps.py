"""Training throughput of the agent families on the trading environment (CPU, one torch thread): PPO, SAC and TD3
at the settings proposed for the demo, and SAC / TD3 at stable-baselines3's defaults for contrast.

    .venv/bin/python benchmarks/agent_steps.py            # ~2-3 minutes on an idle 2-core machine
    .venv/bin/python benchmarks/agent_steps.py --quick    # smaller budgets, to check the set-up

Data: `env_throughput.synthetic` (3 symbols, 24 random "z-scored" features + the two regime codes), 4,380 hourly
bars (the demo's ~6 train months), so observations have the demo's size (window 24: 24 × 3 × 24 + 7 = 1,735
floats). Costs: `CostModel()` defaults; environment: window 24, 512-bar episodes, decisions every 4 bars (the
demo's PPO entry). Each run is timed from `learn` (`TrainedAgent.train_seconds`) after an untimed warm-up run
(imports, kernel compile, torch init). Figures are steps/s (per second of wall time of `learn`, and per second of
this process's CPU time, the steadier figure on a shared machine: training runs one torch thread) and their ratio
to PPO measured in the same run, and the seconds a demo fold's training takes at the proposed budget.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from env_throughput import synthetic

from crypto_assets.agents import EnvData, TradingEnv
from crypto_assets.backtest import CostModel
from crypto_assets.families.agent import AgentParams
from crypto_assets.families.ppo_agent import PPOParams
from crypto_assets.families.sac_agent import SACParams
from crypto_assets.families.td3_agent import TD3Params

ENV: dict[str, Any] = {"window": 24, "episode_bars": 512, "rebalance_every": 4}
PPO_DEMO = PPOParams.model_validate(
    {"total_timesteps": 20_480, "n_envs": 4, "n_steps": 256, "batch_size": 256, "n_epochs": 4, **ENV}
)
"""configs/demo.yaml's PPO_Agent entry."""
SAC_DEMO = SACParams.model_validate({"total_timesteps": 5_000, **ENV})
TD3_DEMO = TD3Params.model_validate({"total_timesteps": 5_000, **ENV})
"""The SAC_Agent / TD3_Agent entries proposed for configs/demo.yaml (update schedule, batch, network: defaults)."""
SB3_DEFAULTS: dict[str, Any] = {
    "train_freq": 1,
    "gradient_steps": 1,
    "net_arch": [256, 256],
    "batch_size": 256,
    "learning_starts": 100,
}
"""What SAC / TD3 do without settings (SB3's defaults; buffer kept at ours: SB3's 10⁶ would reserve ~14 GB)."""


def _train(params: AgentParams) -> Callable[..., Any]:
    from crypto_assets.agents import train_ppo, train_sac, train_td3

    return {"ppo": train_ppo, "sac": train_sac, "td3": train_td3}[params.algorithm]  # type: ignore[no-any-return]


def steps_per_second(data: EnvData, params: AgentParams) -> tuple[float, float]:
    """(steps per second of wall time of `learn`, steps per second of this process's CPU time around the whole
    training call): on a machine shared with other jobs the CPU-time rate is the steadier figure."""
    env_params = params.env_params(initial_value=1e5)
    cpu = time.process_time()
    agent = _train(params)(lambda: TradingEnv(data, CostModel(), env_params), params, seed=0)
    cpu_seconds = time.process_time() - cpu
    steps = agent.model.num_timesteps  # off-policy: whole train_freq chunks, the budget rounded up
    return steps / agent.train_seconds, steps / cpu_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller budgets")
    args = parser.parse_args()
    scale = 4 if args.quick else 1
    fold, bars = synthetic(4380)
    data = EnvData.from_frames(fold, bars, split="train")
    print(f"{os.uname().nodename}, {os.cpu_count()} CPUs; load: {os.getloadavg()}")
    print(f"3 symbols × {data.ts_us.shape[0]} bars, window 24, decisions every 4 bars, CPU, 1 torch thread")
    # (name, settings, steps timed); the SB3-default runs are timed on 1,000 learning steps (a full budget would
    # take minutes) and their fold time is extrapolated to the demo's budget
    runs: list[tuple[str, AgentParams, int]] = [
        ("PPO demo", PPO_DEMO, PPO_DEMO.total_timesteps),
        ("SAC demo", SAC_DEMO, SAC_DEMO.total_timesteps),
        ("TD3 demo", TD3_DEMO, TD3_DEMO.total_timesteps),
        ("SAC SB3 defaults", SACParams.model_validate({**ENV, **SB3_DEFAULTS}), 1_100),
        ("TD3 SB3 defaults", TD3Params.model_validate({**ENV, **SB3_DEFAULTS}), 1_100),
    ]
    for _, params, _ in runs[:3]:  # warm-up, untimed
        steps_per_second(data, params.model_copy(update={"total_timesteps": 1_200}))
    ppo_rate = ppo_cpu_rate = 0.0
    for name, params, timed in runs:
        steps = max(timed // scale, 300)
        budget = params.total_timesteps if timed == params.total_timesteps else SAC_DEMO.total_timesteps
        rate, cpu_rate = steps_per_second(data, params.model_copy(update={"total_timesteps": steps}))
        ppo_rate, ppo_cpu_rate = ppo_rate or rate, ppo_cpu_rate or cpu_rate
        settings = (
            f"n_envs {params.n_envs}, n_steps {params.n_steps}, batch {params.batch_size}, {params.n_epochs} epochs"
            if isinstance(params, PPOParams)
            else f"train_freq {params.train_freq}, gradient_steps {params.gradient_steps}"  # type: ignore[attr-defined]
        )
        print(
            f"{name:17s} ({settings}, net {params.net_arch}): wall {rate:6,.0f} steps/s = {rate / ppo_rate:6.3f} × PPO"
            f", CPU time {cpu_rate:6,.0f} steps/s = {cpu_rate / ppo_cpu_rate:6.3f} × PPO; a demo fold's {budget:,} "
            f"steps ≈ {budget / rate:6.1f} s wall, {budget / cpu_rate:6.1f} s CPU"
        )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
