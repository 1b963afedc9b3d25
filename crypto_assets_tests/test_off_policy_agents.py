"""SAC_Agent and TD3_Agent (crypto_assets.families.sac_agent / td3_agent, trained by crypto_assets.agents.off_policy)
on the trading environment: their settings are config entries (continuous actions only), a fitted fold's artifact
replays its stored decisions, the same seed gives the same policy while the test window's data never reaches
training, and, at the demo's update schedule and network, each learns to use a feature that leaks the next bar's
return without collapsing onto one constant (saturated) action (FinRL #713 / #935)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from crypto_assets.agents import EnvData, TradingEnv
from crypto_assets.config import parse_config
from crypto_assets.config.schema import SyntheticSection
from crypto_assets.families import (
    Artifact,
    Context,
    FoldData,
    build_fold,
    compute_inputs,
    fit_artifact,
    get_family,
    order_rows,
    replay,
    validate_params,
)
from crypto_assets.families.agent import AgentParams, OffPolicyParams
from crypto_assets.families.sac_agent import SACParams
from crypto_assets.families.td3_agent import TD3Params
from crypto_assets.folds import fold_window_for_key
from crypto_assets.folds.windows import FoldSpec
from crypto_assets.sources.synthetic import SyntheticSource
from crypto_assets_tests.test_ppo import LOW_COSTS, SYMBOLS, _final_value, leak_market

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
SPEC = FoldSpec(train_months=1, test_months=1, step_months=1, purge_bars=12, label_horizon=12)
TYPES = ["SAC_Agent", "TD3_Agent"]
TINY: dict[str, Any] = {
    "total_timesteps": 600,
    "learning_starts": 200,
    "batch_size": 32,
    "net_arch": [16],
    "window": 4,
    "episode_bars": 64,
    "rebalance_every": 4,
}  # train_freq / gradient_steps: the defaults (the demo's)


def _state(artifact: Artifact) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in artifact.model.model.policy.state_dict().items()}


@pytest.fixture(scope="module")
def fold() -> tuple[FoldData, Any, Any, pl.DataFrame]:
    """Fold 2024-02 (train January, purged; test February) of a 2-symbol synthetic market at 250,000 USDT."""
    config = parse_config(
        {
            "experiment": {"name": "off_policy", "capital": 250_000.0},
            "data": {"tickers": ["BTC/USDT", "ETH/USDT"], "start": "2024-01-01", "end": "2024-02-29"},
            "walk_forward": {"train_months": 1, "test_months": 1, "label_horizon": 12, "purge_bars": 12},
        }
    )
    bars = SyntheticSource(SyntheticSection(), seed=3, anchor=START).fetch(["BTC/USDT", "ETH/USDT"], "1h", START, END)
    window = fold_window_for_key("2024-02-01", SPEC)
    frame, scaler = build_fold(compute_inputs(bars, "1h"), bars, window, SPEC.purge_bars, SPEC.label_horizon, "1h")
    return FoldData(window.key, frame, bars, Context.from_experiment(config)), scaler, window, bars


@pytest.fixture(scope="module")
def fitted(fold: tuple[FoldData, Any, Any, pl.DataFrame]) -> dict[str, tuple[Artifact, pl.DataFrame]]:
    data, scaler, window, _ = fold
    out = {}
    for family_type in TYPES:
        params = validate_params({"type": family_type, **TINY})
        out[family_type] = fit_artifact(params, data, scaler, window, seed=11)
    return out


def test_params_are_config_entries_with_continuous_actions_only() -> None:
    for family_type, params_class in zip(TYPES, (SACParams, TD3Params), strict=True):
        assert get_family(family_type).params_class is params_class and issubclass(params_class, OffPolicyParams)
        params = validate_params({"type": family_type, "net_arch": [16, 8], "reward": "drawdown_penalty"})
        assert isinstance(params, params_class) and isinstance(params, AgentParams) and params.net_arch == [16, 8]
        env = params.env_params(initial_value=5e5)
        assert (env.reward, env.action, env.initial_value) == ("drawdown_penalty", "continuous", 5e5)
        with pytest.raises(ValidationError, match="action"):
            validate_params({"type": family_type, "action": "discrete"})  # SB3 SAC / TD3 need a bounded Box
        with pytest.raises(ValidationError, match="train_freq"):
            validate_params({"type": family_type, "train_freq": 0})
        with pytest.raises(ValidationError, match="learning_starts"):  # would never learn
            validate_params({"type": family_type, "total_timesteps": 1_000, "learning_starts": 1_000})
    assert validate_params({"type": "SAC_Agent", "ent_coef": 0.05}).ent_coef == 0.05  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="ent_coef"):
        SACParams(ent_coef="often")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="action_noise_sigma"):
        TD3Params(action_noise_sigma=-0.1)


@pytest.mark.parametrize("family_type", TYPES)
def test_saved_artifact_replays_the_stored_decisions(
    family_type: str,
    fold: tuple[FoldData, Any, Any, pl.DataFrame],
    fitted: dict[str, tuple[Artifact, pl.DataFrame]],
    tmp_path: Path,
) -> None:
    _, _, window, bars = fold
    artifact, decisions = fitted[family_type]
    stored = order_rows(decisions)
    assert stored.height > 0 and stored["ts"].min() >= window.test_start  # type: ignore[operator]
    assert (stored["weight"] >= 0).all()  # long-only: softmax with a cash leg
    assert stored.group_by("ts").agg(pl.col("weight").sum())["weight"].max() < 1.0  # type: ignore[operator]
    directory = artifact.save(tmp_path / family_type)
    assert (directory / "model" / f"{artifact.params.algorithm}.zip").exists()  # type: ignore[attr-defined]
    curves = pl.read_parquet(directory / "curves" / "reward.parquet")
    # SB3 collects whole `train_freq` chunks: the budget, rounded up to one
    trained = artifact.model.model.num_timesteps
    assert TINY["total_timesteps"] <= trained < TINY["total_timesteps"] + artifact.params.train_freq  # type: ignore[attr-defined]
    assert curves["timesteps"].to_list()[-1] == trained and curves["episodes"].sum() > 0
    assert Artifact.load(directory).weights(bars).equals(stored)
    assert replay(directory, bars).equals(stored)
    loaded = Artifact.load(directory)
    assert loaded.params == artifact.params and loaded.model.seed == 11
    assert all(np.array_equal(v, _state(artifact)[k]) for k, v in _state(loaded).items())


@pytest.mark.parametrize("family_type", TYPES)
def test_same_seed_same_policy_and_the_test_window_never_reaches_training(
    family_type: str,
    fold: tuple[FoldData, Any, Any, pl.DataFrame],
    fitted: dict[str, tuple[Artifact, pl.DataFrame]],
) -> None:
    """Retrained with the same seed on the fold whose test rows and test bars are corrupted, the policy is
    bit-identical (so training reads neither, and reruns reproduce); its decisions on the corrupted test window
    differ (the corruption is real). Another seed gives another policy."""
    data, scaler, window, _ = fold
    artifact, decisions = fitted[family_type]
    rng = np.random.default_rng(0)
    test = pl.col("ts") >= window.test_start
    features = [c for c in artifact.feature_columns if data.frame.schema[c].is_float()]
    frame = data.frame.with_columns(
        pl.when(pl.col("split") == "test")
        .then(pl.lit(rng.normal(0, 50, data.frame.height)))
        .otherwise(pl.col(c))
        .alias(c)
        for c in features
    )
    scale = pl.when(test).then(pl.lit(rng.uniform(0.2, 5.0, data.bars.height))).otherwise(1.0)
    bars = data.bars.with_columns(
        *(pl.col(c) * scale for c in ("open", "high", "low", "close")), pl.col("volume") * scale * scale
    )
    poisoned = FoldData(data.key, frame, bars, data.context)
    params = artifact.params
    again, poisoned_decisions = fit_artifact(params, poisoned, scaler, window, seed=11)
    assert all(np.array_equal(v, _state(artifact)[k]) for k, v in _state(again).items())
    assert again.model.curves.equals(artifact.model.curves)
    assert not order_rows(poisoned_decisions).equals(order_rows(decisions))
    other, _ = fit_artifact(params, data, scaler, window, seed=12)
    assert not all(np.array_equal(v, _state(artifact)[k]) for k, v in _state(other).items())


@pytest.mark.parametrize("params_class", [SACParams, TD3Params])
def test_exploits_a_leaked_next_bar_return_without_collapsing_to_one_action(
    params_class: type[OffPolicyParams],
) -> None:
    """The demo's update schedule, batch and network (the class defaults); only the budget and the environment's
    shape (one bar of two features, short episodes) are the test's. Perfect foresight is worth ~e^(300 × 0.4 %)
    here and buy-and-hold is a coin flip around the capital; a collapsed policy (one action whatever the leak says,
    or every entry pinned at ±1) can't beat buy-and-hold by much, and the actions spread over observations."""
    from crypto_assets.agents import train_sac, train_td3

    fold_frame, bars = leak_market(leak=True)
    data = EnvData.from_frames(fold_frame, bars, split="train")
    params = params_class.model_validate({"total_timesteps": 4096, "window": 1, "episode_bars": 64})
    train = train_sac if params.algorithm == "sac" else train_td3
    agent = train(lambda: TradingEnv(data, LOW_COSTS, params.env_params()), params, seed=0)  # type: ignore[operator]
    env = TradingEnv(data, LOW_COSTS, params.env_params(), training=False)
    weights = agent.predict_weights(env)
    first = weights["ts"].min()
    buy_and_hold = pl.DataFrame({"symbol": list(SYMBOLS), "ts": [first] * 2, "weight": [0.5, 0.5]})
    value, bh = _final_value(bars, weights), _final_value(bars, buy_and_hold)
    capital = params.env_params().initial_value
    assert value > 3.0 * bh and value > 3.0 * capital, (value, bh)

    obs, _ = env.reset(options={"replay": True})
    actions, done = [], False
    while not done:
        action = agent.act(obs)
        actions.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
    spread = np.asarray(actions)
    assert (spread.std(axis=0) > 0.05).all(), spread.std(axis=0)  # every leg moves with the observation
    assert np.mean(np.abs(spread) > 0.999) < 0.75  # not pinned at the bounds


@pytest.mark.parametrize("family_type", TYPES)
def test_with_shorts_the_policy_trades_signed_weights_within_the_leverage_cap(family_type: str) -> None:
    """With `allow_short` the Box has one entry per symbol (no cash leg) and the environment scales the action to
    gross exposure ≤ max_leverage (L1): the trained policy's decisions stay inside it."""
    from crypto_assets.agents import train_sac, train_td3

    costs = dataclasses.replace(LOW_COSTS, allow_short=True, max_leverage=1.5)
    fold_frame, bars = leak_market(leak=True, n_bars=200)
    data = EnvData.from_frames(fold_frame, bars, split="train")
    params = validate_params({"type": family_type, **TINY, "window": 1})
    assert isinstance(params, OffPolicyParams)
    train = train_sac if params.algorithm == "sac" else train_td3
    agent = train(lambda: TradingEnv(data, costs, params.env_params()), params, seed=0)  # type: ignore[operator]
    assert agent.model.action_space.shape == (len(SYMBOLS),)
    weights = agent.predict_weights(TradingEnv(data, costs, params.env_params(), training=False))
    gross = weights.group_by("ts").agg(pl.col("weight").abs().sum())["weight"]
    assert weights.height > 0 and gross.max() <= 1.5 + 1e-12  # type: ignore[operator]
