"""The RL trading environment (crypto_assets.agents.env): API conformance (gymnasium and SB3 checkers), the
same fills, costs and equity as `run_backtest` on the executed weights, listing, look-ahead, seeding, actions
and rewards."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import warnings

import numpy as np
import polars as pl
import pytest

from crypto_assets.agents import EnvData, EnvParams, TradingEnv, evaluate_policy_weights
from crypto_assets.backtest import CostModel, run_backtest
from crypto_assets_tests.builders import ALL_ON, ohlcv_frame

T0 = dt.datetime(2022, 1, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
TS = pl.Datetime("us", "UTC")
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def make_market(
    n_bars: int = 300,
    *,
    seed: int = 0,
    symbols: tuple[str, ...] = SYMBOLS,
    listing: dict[str, int] | None = None,
    n_features: int = 5,
    history: int = 30,
    vol: float = 0.01,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(fold frame, bars): random-walk bars from `history` bars before the split (σ's lookback) and fold rows
    of random "scaled" features with regime codes, split "train" for the first half and "test" after.
    `listing`: symbol → bar (within the split) of its first bar; it has neither bars nor rows before."""
    listing = {"SOL/USDT": n_bars // 3} if listing is None else listing
    rng = np.random.default_rng(seed)
    total = n_bars + history
    ts = pl.datetime_range(T0 - history * HOUR, T0 + (n_bars - 1) * HOUR, "1h", eager=True, time_zone="UTC")
    bars, rows = [], []
    for i, sym in enumerate(symbols):
        close = 100.0 * (i + 1) * np.exp(np.cumsum(rng.normal(0.0, vol, total)))
        open_ = np.concatenate([[close[0]], close[:-1]]) * np.exp(rng.normal(0.0, vol / 5, total))
        volume = rng.uniform(50.0, 500.0, total)
        volume[rng.random(total) < 0.02] = 0.0  # zero-volume bars: unfillable under the participation cap
        first = history + listing.get(sym, -history)
        bars.append(ohlcv_frame(sym, ts, open_, close, volume).slice(first))
        feats = {f"feat_{k}": rng.normal(size=total) for k in range(n_features)}
        frame = pl.DataFrame(
            {
                "symbol": sym,
                "ts": ts,
                **feats,
                "vol_regime_code": rng.integers(0, 2, total).astype(np.float64),
                "trend_regime_code": rng.integers(-1, 2, total).astype(np.float64),
                "label_fwd_ret_1": rng.normal(size=total),
            }
        ).slice(max(first, history))
        # features warm up after listing: nulls, as the features stage emits them
        frame = frame.with_columns(
            pl.when(pl.int_range(pl.len()) < 5).then(None).otherwise(pl.col("feat_0")).alias("feat_0")
        )
        rows.append(frame)
    fold = pl.concat(rows).with_columns(
        split=pl.when(pl.col("ts") < T0 + (n_bars // 2) * HOUR).then(pl.lit("train")).otherwise(pl.lit("test"))
    )
    return fold, pl.concat(bars)


def make_env(
    costs: CostModel = ALL_ON, *, split: str = "test", training: bool = False, seed: int = 0, **params: object
) -> tuple[TradingEnv, pl.DataFrame]:
    fold, bars = make_market(seed=seed)
    data = EnvData.from_frames(fold, bars, split=split)
    base = EnvParams(window=8, episode_bars=50, initial_value=1e4)
    env_params = dataclasses.replace(base, **params)  # type: ignore[arg-type]
    return TradingEnv(data, costs, env_params, training=training, seed=seed), bars


VARIANTS = [
    pytest.param(dataclasses.replace(ALL_ON, allow_short=False, max_leverage=1.0), "continuous", id="softmax"),
    pytest.param(ALL_ON, "continuous", id="signed"),
    pytest.param(dataclasses.replace(ALL_ON, allow_short=False, max_leverage=1.0), "discrete", id="discrete"),
    pytest.param(ALL_ON, "discrete", id="discrete-short"),
]


# ------------------------------------------------------------------------------------------ API conformance


@pytest.mark.parametrize(("costs", "action"), VARIANTS)
def test_gymnasium_and_sb3_env_checkers_pass(costs: CostModel, action: str) -> None:
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    env, _ = make_env(costs, split="train", training=True, action=action)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning is a failure too
        gym_check(env, skip_render_check=True)
        sb3_check(env, warn=True)
    if action == "discrete":
        assert env.action_space.nvec.tolist() == [3, 3, 3]  # type: ignore[attr-defined]
    else:
        assert env.action_space.shape == ((3,) if costs.allow_short else (4,))
    n_obs = 8 * 3 * 5 + 3 + 4  # window × symbols × features, weights, cash, drawdown, two regime codes
    assert env.observation_space.shape == (n_obs,)


# ---------------------------------------------------------------------- one cost model: the engine's


@pytest.mark.parametrize(("costs", "action"), VARIANTS)
@pytest.mark.parametrize("rebalance_every", [1, 3])
def test_env_equity_and_costs_equal_run_backtest(costs: CostModel, action: str, rebalance_every: int) -> None:
    env, bars = make_env(costs, action=action, rebalance_every=rebalance_every)
    rng = np.random.default_rng(rebalance_every)

    def policy(_obs: np.ndarray) -> np.ndarray:
        return rng.uniform(-1, 1, 4) if action == "continuous" else rng.integers(0, 3, 3)

    weights = evaluate_policy_weights(env, policy)
    episode = env.episode_frame()
    result = run_backtest(bars, weights, costs, initial_value=1e4)
    joined = episode.join(result.equity, on="ts", how="left").join(result.costs, on="ts", how="left", suffix="_bt")
    assert joined.height == env.last_bar - env.first_decision + 1 and joined["value_right"].null_count() == 0
    np.testing.assert_allclose(joined["value"], joined["value_right"], rtol=1e-12)
    for col in ("fees", "slippage", "impact", "funding"):
        np.testing.assert_allclose(joined[col], joined[f"{col}_bt"], rtol=1e-12, atol=1e-12 * 1e4, err_msg=col)
    # the comparison means something: every cost component was paid, the participation cap bound
    assert all(episode[c].sum() > 0 for c in ("fees", "slippage", "impact"))
    assert episode["funding"].sum() > 0 or not costs.allow_short
    assert (result.trades["notional"].abs() < result.trades["requested_notional"].abs()).any()
    decided = weights["ts"].unique().sort()
    first_ts = dt.datetime.fromtimestamp(env.data.ts_us[env.first_decision] / 1e6, tz=dt.UTC)
    assert decided[0] == first_ts  # the replay starts at the first full feature window
    if action == "continuous":  # (discrete: a decision where every symbol holds places no order at all)
        assert decided.diff().drop_nulls().unique().to_list() == [rebalance_every * HOUR]


def test_env_learns_at_the_experiments_capital_with_the_engines_capacity_limits() -> None:
    """By default the env starts at the experiment's default capital (100,000), not 1 unit; at any capital its
    equity is the engine's at that capital, and the participation cap binds more often the larger the book."""
    from crypto_assets.backtest import DEFAULT_CAPITAL
    from crypto_assets.config.schema import ExperimentSection

    assert EnvParams().initial_value == DEFAULT_CAPITAL == ExperimentSection.model_fields["capital"].default == 1e5
    fold, bars = make_market(seed=3)
    data = EnvData.from_frames(fold, bars, split="test")
    costs = dataclasses.replace(ALL_ON, allow_short=False, max_leverage=1.0)
    capped_share: dict[float, float] = {}
    for capital in (1e3, 1e5, 1e7):
        env = TradingEnv(data, costs, EnvParams(window=8, initial_value=capital), training=False)
        rng = np.random.default_rng(0)  # the same actions at every capital
        weights = evaluate_policy_weights(env, lambda _obs, rng=rng: rng.uniform(-1, 1, 4))  # type: ignore[misc]
        result = run_backtest(bars, weights, costs, initial_value=capital)
        episode = env.episode_frame().join(result.equity, on="ts", how="left")
        assert episode["value"][0] == capital
        np.testing.assert_allclose(episode["value"], episode["value_right"], rtol=1e-12)
        capped_share[capital] = float(result.turnover["capped_fills"].sum()) / float(result.turnover["fills"].sum())
    # DV per bar here is ~275 × 100..300 quote: 5 % of it is ~1,400-4,100
    assert capped_share[1e3] < 0.1 and 0.5 < capped_share[1e5] < capped_share[1e7]


@pytest.mark.parametrize(("costs", "action"), [VARIANTS[0], VARIANTS[3]])
def test_env_with_cost_multipliers_equals_run_backtest(costs: CostModel, action: str) -> None:
    """A stress scenario's per-bar factors on the half-spread and on impact reach the env's fills exactly as
    they reach the engine's (the same kernel), and factors of 1 change nothing, bit for bit."""
    fold, bars = make_market(seed=4)
    data = EnvData.from_frames(fold, bars, split="test")
    params = EnvParams(window=8, initial_value=1e4, action=action)  # type: ignore[arg-type]
    rng = np.random.default_rng(4)
    cells = bars.select("symbol", "ts")
    mult = cells.with_columns(
        spread_mult=pl.Series(rng.uniform(0, 8, cells.height)), impact_mult=pl.Series(rng.uniform(0, 8, cells.height))
    )

    def replay(multipliers: pl.DataFrame | None) -> tuple[TradingEnv, pl.DataFrame]:
        env = TradingEnv(data, costs, params, training=False, multipliers=multipliers)
        acts = np.random.default_rng(0)  # the same actions in every replay
        n = env.action_space.shape[0]  # type: ignore[index]
        policy = (lambda _o: acts.uniform(-1, 1, n)) if action == "continuous" else (lambda _o: acts.integers(0, 3, n))
        return env, evaluate_policy_weights(env, policy)

    env, weights = replay(mult)
    episode = env.episode_frame()
    result = run_backtest(bars, weights, costs, initial_value=1e4, multipliers=mult)
    joined = episode.join(result.equity, on="ts", how="left").join(result.costs, on="ts", how="left", suffix="_bt")
    assert joined["value_right"].null_count() == 0
    np.testing.assert_allclose(joined["value"], joined["value_right"], rtol=1e-12)
    for col in ("fees", "slippage", "impact", "funding"):
        np.testing.assert_allclose(joined[col], joined[f"{col}_bt"], rtol=1e-12, atol=1e-12 * 1e4, err_msg=col)
    # the factors mattered: the same orders cost otherwise without them
    plain = run_backtest(bars, weights, costs, initial_value=1e4)
    for col in ("slippage", "impact"):
        assert not np.allclose(result.costs[col], plain.costs[col]), col
    # factors of 1 everywhere: the env's episode is bit-identical to one without multipliers
    ones = mult.with_columns(spread_mult=pl.lit(1.0), impact_mult=pl.lit(1.0))
    env_ones, w_ones = replay(ones)
    env_none, w_none = replay(None)
    assert w_ones.equals(w_none) and env_ones.episode_frame().equals(env_none.episode_frame())


def test_reward_timing_fill_at_next_open_marked_at_its_close() -> None:
    """log_return rewards: the step's reward is ln(V at the close of t+k / V at the close of t); their sum is
    the episode's log growth; the first decision cannot change the value at its own close."""
    env, _ = make_env(ALL_ON, reward="log_return", rebalance_every=2)
    _, info = env.reset()
    assert info["value"] == 1e4
    rewards = []
    for k in range(10):
        _, reward, _, _, info = env.step(np.array([0.8, -0.3, 0.5]) * (-1) ** k)
        rewards.append(reward)
    values = env.episode_frame()["value"].to_numpy()
    assert values[0] == 1e4 and values.shape == (21,)
    np.testing.assert_allclose(rewards, np.log(values[2::2] / values[:-2:2]), rtol=1e-12)
    assert sum(rewards) == pytest.approx(math.log(info["value"] / 1e4), rel=1e-12)


def test_drawdown_penalty_and_differential_sortino_rewards() -> None:
    lam = 3.0
    env, _ = make_env(ALL_ON, reward="drawdown_penalty", drawdown_penalty=lam)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (40, 3))
    env.reset()
    got = [env.step(a)[1] for a in actions]
    v = env.episode_frame()["value"].to_numpy()
    dd = 1 - v / np.maximum.accumulate(v)
    want = np.log(v[1:] / v[:-1]) - lam * np.maximum(np.diff(dd), 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert (np.diff(dd) > 0).any()

    eta = 0.05
    env, _ = make_env(ALL_ON, reward="differential_sortino", sortino_eta=eta, reward_clip=1e9)
    env.reset()
    dd2 = env._sortino_dd2  # the causal prior dd0² set at reset
    got = [env.step(a)[1] for a in actions]
    v = env.episode_frame()["value"].to_numpy()
    a_ema, want = 0.0, []
    for r in (v[1:] / v[:-1] - 1).tolist():
        dd_r = max(math.sqrt(dd2), env._dd_floor)  # (dd above is the drawdown array)
        want.append((r - a_ema / 2) / dd_r if r > 0 else (dd_r**2 * (r - a_ema / 2) - a_ema * r * r / 2) / dd_r**3)
        a_ema, dd2 = a_ema + eta * (r - a_ema), dd2 + eta * (min(r, 0.0) ** 2 - dd2)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    # sign: a gain with a flat running mean is rewarded, a loss penalised
    returns = v[1:] / v[:-1] - 1
    assert np.sign(got[0]) == np.sign(returns[0])


# ------------------------------------------------------------------------------------ listing, look-ahead


def test_symbols_not_listed_yet_get_zero_weight() -> None:
    costs = dataclasses.replace(ALL_ON, allow_short=False, max_leverage=1.0, max_participation=None)
    env, _ = make_env(costs, split="train", training=False)
    sol = env.data.symbols.index("SOL/USDT")
    listed_at = int(np.argmax(env.listed[:, sol]))
    assert env.first_decision < listed_at < env.last_bar  # SOL lists inside the split
    action = np.array([-1.0, -1.0, 1.0, -1.0])  # everything on SOL
    obs, _ = env.reset()
    states = []
    while True:
        obs, _, terminated, truncated, _ = env.step(action)
        states.append(obs[-(3 + 4) :][:3].copy())  # the symbols' weights in the observation
        if terminated or truncated:
            break
    weights = env.executed_weights().filter(pl.col("symbol") == "SOL/USDT").sort("ts")
    ts_listed = dt.datetime.fromtimestamp(env.data.ts_us[listed_at] / 1e6, tz=dt.UTC)
    before, after = weights.filter(pl.col("ts") < ts_listed), weights.filter(pl.col("ts") >= ts_listed)
    assert before.height > 0 and (before["weight"] == 0.0).all()
    assert (after["weight"] > 0.99).all()
    held = np.array(states)[:, sol]
    decision = np.arange(env.first_decision + 1, env.last_bar + 1)
    assert (held[decision <= listed_at] == 0.0).all()  # no fill before the open after the listing bar
    assert (held[decision > listed_at + 3] > 0.9).mean() > 0.9  # (zero-volume bars block a few fills)
    # discrete: a buy on an unlisted symbol orders 0 and does not move its target
    env, _ = make_env(costs, split="train", action="discrete")
    env.reset()
    for _ in range(3):
        env.step(np.array([0, 0, 1]))
    assert (env.executed_weights().filter(pl.col("symbol") == "SOL/USDT")["weight"] == 0.0).all()


@pytest.mark.parametrize("action", ["continuous", "discrete"])
def test_observation_at_t_ignores_data_after_t(action: str) -> None:
    """Scramble every bar and feature after a cut: the observations up to the cut stay bit-identical."""
    fold, bars = make_market(seed=3)
    cut = T0 + 200 * HOUR
    rng = np.random.default_rng(9)
    later_bars = pl.col("ts") > cut
    bars2 = bars.with_columns(
        [
            pl.when(later_bars).then(pl.col(c) * pl.Series(rng.uniform(0.9, 1.1, bars.height))).otherwise(pl.col(c))
            for c in ("open", "close", "volume")
        ]
    ).with_columns(high=pl.max_horizontal("open", "close"), low=pl.min_horizontal("open", "close"))
    feature_cols = [c for c in fold.columns if c.startswith("feat_") or c.endswith("_code")]
    fold2 = fold.with_columns(
        [
            pl.when(pl.col("ts") > cut).then(pl.Series(rng.normal(size=fold.height))).otherwise(pl.col(c)).alias(c)
            for c in feature_cols
        ]
    )
    observations = []
    for f, b in ((fold, bars), (fold2, bars2)):
        params = EnvParams(window=8, action=action)  # type: ignore[arg-type]
        env = TradingEnv(EnvData.from_frames(f, b, split="test"), ALL_ON, params, training=False)
        act_rng = np.random.default_rng(1)
        obs, _ = env.reset()
        seen = {env.decision_bar: obs}
        while True:
            a = act_rng.uniform(-1, 1, 3) if action == "continuous" else act_rng.integers(0, 3, 3)
            obs, _, terminated, truncated, _ = env.step(a)
            seen[env.decision_bar] = obs
            if terminated or truncated:
                break
        observations.append(seen)
    cut_idx = int((cut - T0) / HOUR) - 150  # index of the cut bar in the test split (it starts at bar 150)
    full, scrambled = observations
    assert min(full) < cut_idx < min(max(full), max(scrambled))
    for t in full:
        if t <= cut_idx:
            assert np.array_equal(full[t], scrambled[t]), t
    assert not np.array_equal(full[cut_idx + 1], scrambled[cut_idx + 1])  # the scramble does reach later ones


def test_test_split_preceded_by_train_rows_decides_from_its_first_bar() -> None:
    """With the last window − 1 train rows as context, the test replay decides at the first test bar, its first
    observation is those rows + test bar 0, and its fills and costs are still exactly `run_backtest`'s."""
    fold, bars = make_market(seed=6)
    train = EnvData.from_frames(fold, bars, split="train")
    test = EnvData.from_frames(fold, bars, split="test").preceded_by(train, 7)
    env = TradingEnv(test, ALL_ON, EnvParams(window=8, initial_value=1e4), training=False)
    assert env.first_decision == 0
    obs, _ = env.reset()
    feats = [f"feat_{k}" for k in range(5)]
    rows = pl.concat(
        [fold.filter(pl.col("split") == "train").sort("ts").tail(7 * 3), fold.filter(pl.col("ts") == T0 + 150 * HOUR)]
    )
    want = rows.sort("ts", "symbol").select(feats).fill_null(0.0).to_numpy().astype(np.float32).ravel()
    np.testing.assert_array_equal(obs[: 8 * 3 * 5], want)
    rng = np.random.default_rng(2)
    weights = evaluate_policy_weights(env, lambda _obs: rng.uniform(-1, 1, 3))
    assert weights["ts"].min() == T0 + 150 * HOUR  # the first test bar
    result = run_backtest(bars, weights, ALL_ON, initial_value=1e4)
    joined = env.episode_frame().join(result.equity, on="ts", how="left")
    np.testing.assert_allclose(joined["value"], joined["value_right"], rtol=1e-12)
    plain = TradingEnv(EnvData.from_frames(fold, bars, split="test"), ALL_ON, EnvParams(window=8), training=False)
    assert plain.first_decision == 7 and plain.observation_space == env.observation_space

    longer = train.features.shape[0] + 5  # more than the train split holds: all of it
    assert test.preceded_by(train, longer).context.shape == train.features.shape  # type: ignore[union-attr]
    assert test.preceded_by(train, 0).context.shape[0] == 0  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="must end before"):
        train.preceded_by(test, 7)
    other = EnvData.from_frames(fold, bars, split="train", symbols=SYMBOLS[:2])
    with pytest.raises(ValueError, match="one fold frame and symbol list"):
        test.preceded_by(other, 7)


@pytest.mark.parametrize(("action", "rebalance_every"), [("continuous", 1), ("continuous", 3), ("discrete", 1)])
def test_final_decision_is_what_a_replay_one_bar_longer_decides_there(action: str, rebalance_every: int) -> None:
    """`final_decision` adds the decision at the close of the split's last bar (the replay does not step into it:
    its fill lies past the split) and changes no other row: it is exactly the decision the replay of the split one
    bar longer makes at that bar by stepping, only where that bar is one of the episode's decision bars, and from a
    single decision bar on (context rows before it)."""
    fold, bars = make_market(seed=4)
    train = EnvData.from_frames(fold, bars, split="train")
    params = EnvParams(window=8, initial_value=1e4, rebalance_every=rebalance_every)
    params = dataclasses.replace(params, action=action)  # type: ignore[arg-type]
    first = T0 + 150 * HOUR  # the test split's first bar

    def replay(n_bars: int, final: bool) -> pl.DataFrame:
        end = pl.col("ts") < first + n_bars * HOUR
        test = EnvData.from_frames(fold.filter(end), bars.filter(end), split="test").preceded_by(train, 7)
        env = TradingEnv(test, ALL_ON, params, training=False)
        k = int(env.action_space.shape[0])  # type: ignore[index]

        def policy(obs: np.ndarray) -> np.ndarray:  # deterministic in the observation
            mixed = np.sin(obs[:k] * 7.0 + obs[-k:] * 3.0 + obs[-k - 3 : -3])
            return mixed if action == "continuous" else np.floor((mixed + 1.0) * 1.5).clip(0, 2).astype(np.int64)

        return evaluate_policy_weights(env, policy, final_decision=final).sort("symbol", "ts")

    assert replay(1, final=False).is_empty()  # one decision bar: nothing to step
    for n_bars in (1, 40, 41):
        with_final, plain, longer = replay(n_bars, True), replay(n_bars, False), replay(n_bars + 1, False)
        last = first + (n_bars - 1) * HOUR
        assert plain["ts"].max() is None or plain["ts"].max() < last  # type: ignore[operator]
        assert with_final.filter(pl.col("ts") < last).equals(plain)  # no other decision changes
        if (n_bars - 1) % rebalance_every == 0:  # the last bar is a decision bar of the episode
            assert with_final.equals(longer.filter(pl.col("ts") <= last))
            assert with_final.filter(pl.col("ts") == last).height or action == "discrete"  # discrete may hold
        else:
            assert with_final.equals(plain)


# ----------------------------------------------------------------------------------------- episodes


def test_seeded_resets_reproduce_training_episodes() -> None:
    def episode(env: TradingEnv, seed: int | None) -> tuple[int, list[float], np.ndarray]:
        obs, _ = env.reset(seed=seed)
        start, rewards = env.decision_bar, []
        rng = np.random.default_rng(0)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 3))
            rewards.append(reward)
            done = terminated or truncated
        return start, rewards, obs

    env_a, _ = make_env(ALL_ON, split="train", training=True)
    env_b, _ = make_env(ALL_ON, split="train", training=True)
    a1, b1 = episode(env_a, 7), episode(env_b, 7)
    assert a1[0] == b1[0] and a1[1] == b1[1] and np.array_equal(a1[2], b1[2])
    assert len(a1[1]) == 50  # episode_bars decisions of one bar each
    starts = {episode(env_a, None)[0] for _ in range(8)}  # later resets draw new starts from the stream
    assert len(starts) > 1
    # the constructor's seed seeds the first reset, and the stream goes on identically in both envs
    fresh = [make_env(ALL_ON, split="train", training=True, seed=5)[0] for _ in range(2)]
    assert [episode(fresh[0], None)[0] for _ in range(3)] == [episode(fresh[1], None)[0] for _ in range(3)]


def test_evaluation_replays_the_whole_split_deterministically() -> None:
    env, _ = make_env(ALL_ON, training=False, rebalance_every=4)
    policy = lambda obs: np.tanh(obs[:3])  # a deterministic function of the observation
    w1 = evaluate_policy_weights(env, policy)
    w2 = evaluate_policy_weights(env, policy)
    assert w1.equals(w2)
    n_decisions = math.ceil((env.last_bar - env.first_decision) / 4)
    assert w1["ts"].n_unique() == n_decisions
    assert w1.schema == {"symbol": pl.String, "ts": TS, "weight": pl.Float64}
    # a training env can be replayed too
    train_env, _ = make_env(ALL_ON, training=True, rebalance_every=4)
    assert evaluate_policy_weights(train_env, policy).equals(w1)


def test_discrete_actions_step_targets_and_hold_places_no_order() -> None:
    costs = dataclasses.replace(ALL_ON, allow_short=False, max_leverage=1.0, max_participation=None)
    env, _ = make_env(costs, action="discrete", discrete_step=0.25)
    env.reset()
    plan = [[1, 0, 2]] * 5 + [[2, 0, 0]] * 5
    for a in plan:
        env.step(np.array(a))
    w = env.executed_weights()
    btc = w.filter(pl.col("symbol") == "BTC/USDT")["weight"].to_list()
    step = 0.25 / 3
    assert btc == pytest.approx([step, 2 * step, 3 * step, 4 * step, 4 * step, 3 * step, 2 * step, step, 0, 0])
    assert btc[-1] == 0.0  # integer levels: back to exactly zero
    assert w.filter(pl.col("symbol") == "ETH/USDT").height == 0  # hold = no order
    sol = w.filter(pl.col("symbol") == "SOL/USDT")["weight"].to_list()
    assert sol == [0.0] * 5  # sell at the floor stays at 0 (long-only)


def test_signed_actions_respect_the_leverage_cap() -> None:
    env, _ = make_env(ALL_ON)  # allow_short, max_leverage 1.5
    env.reset()
    for a in ([1.0, -1.0, 1.0], [0.2, 0.0, -0.1], [-1.0, -1.0, 0.0]):
        env.step(np.array(a))
    w = env.executed_weights().sort("ts", "symbol")
    gross = w.group_by("ts", maintain_order=True).agg(pl.col("weight").abs().sum())["weight"].to_list()
    assert gross == pytest.approx([1.5, 0.3 * 1.5, 1.5])


def test_observation_layout_features_account_and_benchmark_regime() -> None:
    fold, bars = make_market(seed=4)
    data = EnvData.from_frames(fold, bars, split="test")
    assert data.benchmark == "BTC/USDT" and data.feature_names == tuple(f"feat_{k}" for k in range(5))
    env = TradingEnv(data, ALL_ON, EnvParams(window=8), training=False)
    obs, _ = env.reset()
    t = env.decision_bar
    ts_t = dt.datetime.fromtimestamp(data.ts_us[t] / 1e6, tz=dt.UTC)
    window = (
        fold.filter(pl.col("split") == "test", pl.col("ts") <= ts_t)
        .sort("ts", "symbol")
        .group_by("symbol", maintain_order=True)
        .tail(8)
        .sort("ts", "symbol")
        .select([f"feat_{k}" for k in range(5)])
        .fill_null(0.0)
        .to_numpy()
    )
    np.testing.assert_array_equal(obs[: 8 * 3 * 5], window.astype(np.float32).ravel())  # bar, symbol, feature
    assert obs[8 * 3 * 5 :].tolist()[:5] == [0.0, 0.0, 0.0, 1.0, 0.0]  # flat: all cash, no drawdown
    btc = fold.filter(pl.col("symbol") == "BTC/USDT", pl.col("ts") == ts_t)
    assert obs[-2:].tolist() == [btc["vol_regime_code"][0], btc["trend_regime_code"][0]]
    eth = EnvData.from_frames(fold, bars, split="test", benchmark="ETH/USDT")
    codes = fold.filter(pl.col("symbol") == "ETH/USDT", pl.col("split") == "test").sort("ts")["vol_regime_code"]
    assert eth.regime[:, 0].tolist() == codes.to_list()
