"""Throughput of the RL trading environment and of PPO training on it (CPU).

    .venv/bin/python benchmarks/env_throughput.py            # 3 symbols, window 24, ~1 minute
    .venv/bin/python benchmarks/env_throughput.py --quick    # smaller budgets, to check the set-up

Data: synthetic, 3 symbols × 8,760 hourly bars (a year), random-walk prices, and a fold frame with the
feature set's 24 columns (random "z-scores") plus the two regime codes, so observations have the real size
(24 bars × 3 symbols × 24 features + 7 = 1,735 floats). Costs: `CostModel()` defaults (fee, spread, vol
slippage, square-root impact, participation cap). Reported:

1. env steps/s: one `TradingEnv`, training mode (720-bar episodes, resets included), actions drawn at random
   beforehand (so sampling them is not timed), for each action space.
2. PPO timesteps/s: `train_ppo` with the config defaults (n_envs 4, n_steps 256, batch 256, 5 epochs,
   64×64 MLP, one torch thread), CPU.
3. the share of that PPO wall time spent inside `TradingEnv.step` (target < 15 %), and inside the whole
   vectorised step (`DummyVecEnv.step_wait`: SB3's Monitor, info copies and auto-resets included).
4. `run_backtest` on the same bars (the engine whose per-bar kernels the env calls): random long-only target
   weights for every symbol at every bar (8,760 orders × 3), default costs, median wall time of repeated
   runs from the long frames to the per-bar outputs, and with every long-format output built too.
   `--backtest-only` runs just this part, `--skip-ppo` leaves out 2-3; `--cpu-time` times 1 and 4 in the
   process's CPU time (for before / after comparisons on a machine shared with other jobs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crypto_assets.agents import EnvData, EnvParams, TradingEnv
from crypto_assets.agents.env import ActionKind
from crypto_assets.backtest import CostModel, run_backtest
from crypto_assets.features import FEATURE_COLUMNS
from crypto_assets_tests.builders import ohlcv_frame

T0 = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def synthetic(n_bars: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    ts = pl.datetime_range(T0, T0 + (n_bars - 1) * dt.timedelta(hours=1), "1h", eager=True, time_zone="UTC")
    bars, rows = [], []
    for i, sym in enumerate(SYMBOLS):
        close = 100.0 * (i + 1) * np.exp(np.cumsum(rng.normal(0.0, 0.01, n_bars)))
        open_ = np.concatenate([[close[0]], close[:-1]])
        bars.append(ohlcv_frame(sym, ts, open_, close, rng.uniform(1e4, 1e5, n_bars)))
        feats = {name: np.clip(rng.normal(size=n_bars), -3, 3) for name in FEATURE_COLUMNS}
        rows.append(
            pl.DataFrame(
                {
                    "symbol": sym,
                    "ts": ts,
                    **feats,
                    "vol_regime_code": rng.integers(0, 2, n_bars),
                    "trend_regime_code": rng.integers(-1, 2, n_bars),
                    "split": "train",
                }
            )
        )
    return pl.concat(rows), pl.concat(bars)


def env_steps_per_second(
    data: EnvData, action: ActionKind, n_steps: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    env = TradingEnv(data, CostModel(), EnvParams(window=24, action=action, initial_value=1e5), seed=0)
    rng = np.random.default_rng(0)
    actions: np.ndarray
    if action == "continuous":
        actions = rng.uniform(-1, 1, (n_steps, len(SYMBOLS) + 1)).astype(np.float32)
    else:
        actions = rng.integers(0, 3, (n_steps, len(SYMBOLS)))
    env.reset()
    env.step(actions[0])  # JIT compile of the step kernel, not timed
    env.reset()
    start = clock()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return n_steps / (clock() - start)


def ppo_throughput(data: EnvData, total_timesteps: int) -> dict[str, float]:
    from stable_baselines3.common.vec_env import DummyVecEnv

    from crypto_assets.agents.ppo import PPOParams, train_ppo

    timers = {"env_step": 0.0, "vec_step": 0.0}

    class TimedEnv(TradingEnv):
        def step(self, action: Any) -> Any:
            start = time.perf_counter()
            out = super().step(action)
            timers["env_step"] += time.perf_counter() - start
            return out

    original = DummyVecEnv.step_wait

    def timed_step_wait(self: DummyVecEnv) -> Any:
        start = time.perf_counter()
        out = original(self)
        timers["vec_step"] += time.perf_counter() - start
        return out

    params = PPOParams(total_timesteps=total_timesteps)  # the config defaults: n_envs 4, 64×64, ...
    env_params = params.env_params(initial_value=1e5)
    # warm-up: imports, kernel compile, torch init
    train_ppo(lambda: TimedEnv(data, CostModel(), env_params), PPOParams(total_timesteps=1024, n_steps=256), seed=0)
    timers.update(env_step=0.0, vec_step=0.0)
    DummyVecEnv.step_wait = timed_step_wait  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        train_ppo(lambda: TimedEnv(data, CostModel(), env_params), params, seed=0)
        wall = time.perf_counter() - start
    finally:
        DummyVecEnv.step_wait = original  # type: ignore[method-assign]
    return {
        "timesteps_per_s": total_timesteps / wall,
        "wall_s": wall,
        "env_share": timers["env_step"] / wall,
        "vec_share": timers["vec_step"] / wall,
    }


def backtest_seconds(
    bars: pl.DataFrame, n_runs: int, *, long_outputs: bool, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Median wall time of `run_backtest` over `n_runs` runs (after one untimed run: kernel load / compile)."""
    rng = np.random.default_rng(0)
    ts = bars["ts"].unique().sort()
    w = rng.dirichlet(np.ones(len(SYMBOLS) + 1), ts.len())[:, : len(SYMBOLS)]  # + a cash leg: Σw < 1
    weights = pl.DataFrame(
        {
            "symbol": np.repeat(np.array(SYMBOLS), ts.len()),
            "ts": pl.concat([ts] * len(SYMBOLS)),
            "weight": w.T.reshape(-1),
        }
    )
    times = []
    for k in range(n_runs + 1):
        start = clock()
        result = run_backtest(bars, weights, CostModel(), initial_value=1e5)
        if long_outputs:
            _ = (result.positions, result.weights, result.trades, result.round_trips)
        if k:
            times.append(clock() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller budgets")
    parser.add_argument("--backtest-only", action="store_true", help="only time run_backtest")
    parser.add_argument("--skip-ppo", action="store_true", help="time run_backtest and the env, not PPO")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time run_backtest and env steps in this process's CPU time (time.process_time), not wall time: "
        "on a machine busy with other jobs, wall time measures them too",
    )
    args = parser.parse_args()
    n_env_steps, ppo_steps = (20_000, 4_096) if args.quick else (200_000, 40_960)
    fold, bars = synthetic(8760)
    n_runs = 5 if args.quick else 30
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(f"timing {'CPU time of this process' if args.cpu_time else 'wall time'}")
    for long_outputs in (False, True):
        secs = backtest_seconds(bars, n_runs, long_outputs=long_outputs, clock=clock)
        what = "with positions, orders, trades, round trips" if long_outputs else "per-bar outputs"
        print(f"run_backtest, 3 symbols × 8,760 bars, an order per symbol and bar, {what}: {secs * 1e3:.1f} ms")
    if args.backtest_only:
        return
    data = EnvData.from_frames(fold, bars, split="train")
    obs = TradingEnv(data, CostModel(), EnvParams(window=24)).observation_space.shape
    print(f"3 symbols × {data.ts_us.shape[0]} bars, {len(data.feature_names)} features, window 24 → obs {obs}")
    actions: tuple[ActionKind, ...] = ("continuous", "discrete")
    for action in actions:
        rate = env_steps_per_second(data, action, n_env_steps, clock)
        print(f"env steps/s, single env, random {action} actions: {rate:,.0f}")
    if args.skip_ppo:
        return
    ppo = ppo_throughput(data, ppo_steps)
    print(
        f"PPO (n_envs 4, n_steps 256, batch 256, 5 epochs, MLP 64×64, CPU, 1 torch thread): "
        f"{ppo['timesteps_per_s']:,.0f} timesteps/s ({ppo_steps:,} timesteps in {ppo['wall_s']:.1f}s)"
    )
    print(f"share of PPO wall time in TradingEnv.step: {ppo['env_share']:.1%} (target < 15 %)")
    print(f"share in DummyVecEnv.step_wait (Monitor, info copies, resets included): {ppo['vec_share']:.1%}")
    print(f"machine: {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
