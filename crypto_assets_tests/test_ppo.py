"""PPO on the trading environment (crypto_assets.agents.ppo): it can learn (a feature that leaks the next
bar's return is exploited well beyond buy-and-hold), it is reproducible (same seed → identical decisions), it
saves and loads, and its settings are the PPO_Agent family's config entry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from crypto_assets.agents import EnvData, TradingEnv
from crypto_assets.agents.ppo import CURVE_SCHEMA, PPOParams, TrainedAgent, train_ppo
from crypto_assets.backtest import CostModel, run_backtest
from crypto_assets_tests.builders import ohlcv_frame

T0 = dt.datetime(2022, 1, 1, tzinfo=dt.UTC)
SYMBOLS = ("BTC/USDT", "ETH/USDT")
LOW_COSTS = CostModel(taker_fee=0.0005, half_spread=0.0, vol_k=0.0, impact_k=0.0, max_participation=None)


def leak_market(
    n_bars: int = 300, *, leak: bool, seed: int = 0, vol: float = 0.01
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Random-walk bars and a one-split fold frame with features `leak` and `noise`. With leak=True, `leak` at
    t is the return a decision at t earns (open of t+1 → close of t+1) / vol: information from the future,
    which real features never carry (TEST ONLY). With leak=False it is noise too."""
    rng = np.random.default_rng(seed)
    ts = pl.datetime_range(T0, T0 + (n_bars - 1) * dt.timedelta(hours=1), "1h", eager=True, time_zone="UTC")
    bars, rows = [], []
    for i, sym in enumerate(SYMBOLS):
        open_ = 100.0 * (i + 1) * np.exp(np.cumsum(rng.normal(0.0, vol, n_bars)))
        close = open_ * np.exp(rng.normal(0.0, vol, n_bars))
        open_[1:] = close[:-1]
        earned = np.append(close[1:] / open_[1:] - 1.0, 0.0)
        bars.append(ohlcv_frame(sym, ts, open_, close, np.full(n_bars, 1e6)))
        signal = earned / vol if leak else rng.normal(size=n_bars)
        noise = rng.normal(size=n_bars)
        rows.append(pl.DataFrame({"symbol": sym, "ts": ts, "leak": signal, "noise": noise, "split": "train"}))
    return pl.concat(rows), pl.concat(bars)


PARAMS = PPOParams(
    total_timesteps=8192,
    n_envs=4,
    n_steps=128,
    batch_size=128,
    n_epochs=10,
    learning_rate=1e-3,
    gamma=0.5,
    net_arch=[32, 32],
    window=1,
    episode_bars=64,
)  # reward: the default differential Sortino


def _final_value(bars: pl.DataFrame, weights: pl.DataFrame) -> float:
    return float(run_backtest(bars, weights, LOW_COSTS).equity["value"][-1])


def test_ppo_exploits_a_leaked_next_bar_return_in_sample() -> None:
    fold, bars = leak_market(leak=True)
    data = EnvData.from_frames(fold, bars, split="train")
    agent = train_ppo(lambda: TradingEnv(data, LOW_COSTS, PARAMS.env_params()), PARAMS, seed=0)
    weights = agent.predict_weights(TradingEnv(data, LOW_COSTS, PARAMS.env_params(), training=False))
    first = weights["ts"].min()
    buy_and_hold = pl.DataFrame({"symbol": list(SYMBOLS), "ts": [first] * 2, "weight": [0.5, 0.5]})
    ppo, bh = _final_value(bars, weights), _final_value(bars, buy_and_hold)
    # perfect foresight is worth ~e^(300 × 0.4 %) here; buy-and-hold is a coin flip around 1
    assert ppo > 2.0 * bh and ppo > 2.0, (ppo, bh)
    # the training curves were recorded, one row per rollout, and show the learning
    curves = agent.curves
    assert curves.schema == CURVE_SCHEMA
    assert curves.height == 8192 // (4 * 128) and curves["timesteps"].to_list()[-1] == 8192
    assert curves["ep_final_value_mean"][-1] > curves["ep_final_value_mean"][0]


def test_same_seed_same_policy_and_save_load_round_trip(tmp_path: Path) -> None:
    """Without a leak nothing is asserted about profit: only reproducibility and persistence."""
    fold, bars = leak_market(leak=False, seed=1, n_bars=120)
    data = EnvData.from_frames(fold, bars, split="train")
    params = PARAMS.model_copy(
        update={"total_timesteps": 512, "n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 2, "episode_bars": 32}
    )

    def run(seed: int) -> tuple[TrainedAgent, pl.DataFrame]:
        agent = train_ppo(lambda: TradingEnv(data, LOW_COSTS, params.env_params()), params, seed=seed)
        return agent, agent.predict_weights(TradingEnv(data, LOW_COSTS, params.env_params(), training=False))

    (agent_a, w_a), (agent_b, w_b), (_, w_c) = run(7), run(7), run(8)
    assert w_a.equals(w_b)
    state_a, state_b = agent_a.model.policy.state_dict(), agent_b.model.policy.state_dict()
    assert all(np.array_equal(state_a[k].numpy(), state_b[k].numpy()) for k in state_a)
    assert agent_a.curves.equals(agent_b.curves)
    assert not w_a.equals(w_c)  # the seed matters
    assert (w_a["weight"] >= 0).all() and w_a.group_by("ts").agg(pl.col("weight").sum())["weight"].max() < 1.0

    loaded = TrainedAgent.load(agent_a.save(tmp_path / "agent"))
    assert loaded.params == params and loaded.seed == 7 and loaded.curves.equals(agent_a.curves)
    assert loaded.train_seconds == agent_a.train_seconds > 0 and loaded.timesteps_per_second > 0
    assert loaded.predict_weights(TradingEnv(data, LOW_COSTS, params.env_params(), training=False)).equals(w_a)
    discrete = TradingEnv(
        data, LOW_COSTS, params.model_copy(update={"action": "discrete"}).env_params(), training=False
    )
    with pytest.raises(ValueError, match="spaces differ"):
        loaded.predict_weights(discrete)


def test_params_are_the_config_entry() -> None:
    """One class: the `{type: PPO_Agent, ...}` entry of `models.families` is what `train_ppo` takes."""
    from crypto_assets.config.schema import FamilyParams
    from crypto_assets.families import get_family, validate_params

    assert get_family("PPO_Agent").params_class is PPOParams and issubclass(PPOParams, FamilyParams)
    params = validate_params({"type": "PPO_Agent", "net_arch": [16, 8], "reward": "log_return", "action": "discrete"})
    assert isinstance(params, PPOParams) and params.net_arch == [16, 8]
    env_params = params.env_params(initial_value=5e5)
    assert (env_params.reward, env_params.action, env_params.initial_value) == ("log_return", "discrete", 5e5)
    with pytest.raises(ValueError, match="total_timesteps"):
        PPOParams(total_timesteps=0)
