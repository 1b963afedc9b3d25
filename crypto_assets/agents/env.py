"""A gymnasium trading environment on one split of a fold, executing through the backtest engine's kernels.

Data
----
`EnvData.from_frames(fold_frame, bars, split=...)` turns the `fold_dataset` rows of one split (`symbol, ts,
<robust-z-scored features>, vol_regime_code, trend_regime_code, label_*, split`) into dense arrays over the
split's bar grid: features (T, N, F) as float32 with NaN → 0 (warm-up nulls, symbols not listed yet), and the
benchmark's causal regime codes (T, 2). `bars` (long `symbol, ts, open, close, volume`) may reach back before
the split: the cost model's σ and ADV then have their lookbacks at the split's first bars, exactly as
`run_backtest` on the same bars computes them (with less history they average the bars there are). Symbols default to every symbol of the whole fold frame, so the train and test
environments of a fold share one observation and action shape. `test.preceded_by(train, window − 1)` gives the
test split the last train feature rows as look-back, so its replay decides from the first test bar on.

Timing (DESIGN §3.3, as the engine)
-----------------------------------
The agent acts at the close of decision bar t. Its action becomes target weights w[t] which fill at the OPEN
of t + 1 through `crypto_assets.backtest.kernels.execute_bar` (fees, half-spread, vol slippage, square-root
impact on the trailing ADV, participation cap on the execution bar's dollar volume: the engine's cost model,
the same compiled code, at the same capital `EnvParams.initial_value`); funding accrues at every close
(`accrue_funding`) and the book is marked at every close (`mark_to_market`). Per-bar cost multipliers
(`TradingEnv(..., multipliers=...)`, a stress scenario's wider spreads and impact) enter as they do in
`run_backtest(..., multipliers=...)`: the same frame gives the same fills and costs in both. A step covers
`rebalance_every` bars: fill at t + 1, then hold to the close of t + rebalance_every, which is the next
decision bar; the reward is computed from the value at those two closes. Feeding `executed_weights()` to
`run_backtest` on the same bars reproduces the environment's equity and per-bar costs (tested to 1e-12).
A symbol without a bar yet at t (not listed) gets weight 0 whatever the action says.

Observation (float32, flat, entries clipped to ±OBS_BOUND)
----------------------------------------------------------
    [features of bars t−window+1 .. t  (window × N × F, oldest bar first, symbol-major within a bar),
     weight of each symbol at the close of t (N), cash weight (1), drawdown 1 − V_t / max_{s≤t} V_s (1),
     benchmark vol_regime_code (0 / 1) and trend_regime_code (−1 / 0 / 1) at t (2)]
Everything in it is known at the close of t: changing data after t changes none of it (tested).

Actions (`EnvParams.action`)
----------------------------
- "continuous", long-only: Box([-1, 1]^(N+1)); logits = logit_scale × a (the last entry is the cash leg),
  weights = softmax over the listed symbols and cash (a symbol not listed drops out of the softmax and gets 0).
  Σ w < 1 always; every decision re-targets the whole book.
- "continuous" with `costs.allow_short`: Box([-1, 1]^N); w = max_leverage × a / max(Σ|a|, 1), so gross
  exposure never exceeds `max_leverage`.
- "discrete": MultiDiscrete([3] * N), per symbol 0 = hold (no order: the position drifts, nothing is paid),
  1 = buy, 2 = sell: the symbol's target moves one step of `discrete_step` × max_leverage / N within
  [0, max_leverage / N] (long-only) or [−max_leverage / N, max_leverage / N] (shorts allowed) and that target
  is ordered. Targets are integer multiples of the step, so selling back down reaches exactly 0; the bound
  per symbol keeps the gross of the targets ≤ max_leverage.

Rewards (`EnvParams.reward`); R = V_{t+k} / V_t − 1 over the step, V at closes
-------------------------------------------------------------------------------
- "log_return": ln(V_{t+k} / V_t).
- "drawdown_penalty" (Calmar-style): ln(V_{t+k} / V_t) − λ × max(DD_{t+k} − DD_t, 0), DD = drawdown above,
  λ = `drawdown_penalty`: only new drawdown is penalised, recovering is rewarded by the return alone.
- "differential_sortino" (default): Moody & Saffell's differential Sharpe ratio (Moody & Saffell 2001,
  "Learning to trade via direct reinforcement", IEEE TNN 12(4)) with the downside deviation in the
  denominator (their "differential downside deviation ratio"). Exponential moving estimates with decay η:
      A_t   = A_{t−1}   + η (R_t − A_{t−1})                (mean return)
      DD²_t = DD²_{t−1} + η (min(R_t, 0)² − DD²_{t−1})     (downside second moment)
  and the reward is the first-order effect of R_t on A / DD:
      D_t = (R_t − A_{t−1}/2) / DD_{t−1}                                   if R_t > 0
      D_t = (DD²_{t−1} (R_t − A_{t−1}/2) − A_{t−1} R_t² / 2) / DD³_{t−1}    if R_t ≤ 0
  η = `sortino_eta` (default 0.01: a memory of ~100 decisions). At reset A = 0 and DD² = dd0², dd0 = the
  downside deviation of the equal-weight close-to-close returns of the `window` bars up to the start
  (causal), × √rebalance_every; DD is floored at dd0 / 10 (a long spell without losses would otherwise make
  the next small loss explode) and D is clipped to ±`reward_clip`.
A wipe-out (V ≤ 0) terminates the episode with reward −reward_clip.

Episodes
--------
Training (`training=True`): `reset` draws a start uniformly among the decision bars of the split that leave
`episode_bars` bars (from the first bar with a full feature window), using the env's seeded `np_random`
(`reset(seed=...)`, or the constructor's `seed` on the first reset); the episode ends (truncated) after
`episode_bars` bars. Evaluation (`training=False`, or `reset(options={"replay": True})`): one deterministic
episode from the first bar with a full window (bar 0 with `preceded_by` context) to the split's last bar.
`evaluate_policy_weights(env, policy_fn)` replays it and returns the decisions as long `symbol, ts, weight`,
ready for `run_backtest`. The episode never steps into its last bar (its decision would fill at the next open,
past the split), so that bar has no decision unless asked for (`final_decision=True`: decided at its close from
its observation, which reads bars up to it only; a forward trader's decision on the newest closed bar). An
evaluation env needs one decision bar (a training env two: one step).

Speed: one numba call per step (action → weights → fills → funding → marks → account state); no polars in
`step`. The kernel reads typed records: the engine's `MarketPanel` (the split's rows) and `CostParams`, and this
module's `_Policy` (action → weights) and `_Episode` (state and logs, written in place), boxed once per env in
a numba structref (`_StepInputs`), so a call types one pointer instead of ~30 record fields. The step kernel
is not disk-cached on purpose: numba's cache does not notice changes to the engine functions it inlines (it
only checks this file), so a cached copy could silently keep an old cost model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Self

import gymnasium as gym
import numpy as np
import polars as pl
from gymnasium import spaces
from numba import njit
from numba.core import types
from numba.experimental import structref

from crypto_assets.backtest.costs import DEFAULT_CAPITAL, CostModel, CostParams
from crypto_assets.backtest.kernels import accrue_funding, execute_bar, mark_to_market
from crypto_assets.backtest.market import Market, MarketPanel, ts_epoch_us
from crypto_assets.folds.dataset import scaled_columns
from crypto_assets.sources.base import TS_DTYPE
from crypto_assets.timeframes import timeframe_us

RewardKind = Literal["differential_sortino", "drawdown_penalty", "log_return"]
ActionKind = Literal["continuous", "discrete"]
REGIME_COLUMNS: tuple[str, str] = ("vol_regime_code", "trend_regime_code")
OBS_BOUND = 1e3
"""Observation entries live in [−OBS_BOUND, OBS_BOUND] (fixed, so train and test envs have equal spaces):
features are clipped there (robust z-scores are ±3), account weights too (only near a wipe-out can they grow)."""

# action kinds inside the kernel
_SOFTMAX, _SIGNED, _DISCRETE = 0, 1, 2
# account vector: cash, value, running peak of value
_CASH, _VALUE, _PEAK = 0, 1, 2


@dataclass(frozen=True)
class EnvParams:
    """Environment settings; the first six come from the agent families' shared parameters
    (`crypto_assets.families.agent.AgentParams.env_params`)."""

    window: int = 24
    """Bars of features in each observation (ending at the decision bar)."""
    episode_bars: int = 720
    """Bars per training episode (clipped to what the split holds)."""
    reward: RewardKind = "differential_sortino"
    drawdown_penalty: float = 1.0
    """λ of the "drawdown_penalty" reward."""
    action: ActionKind = "continuous"
    rebalance_every: int = 1
    """Bars between decisions (one env step spans this many bars)."""
    sortino_eta: float = 0.01
    """Decay η of the differential Sortino's moving estimates."""
    reward_clip: float = 10.0
    """|reward| cap of the differential Sortino, and the penalty of a wipe-out."""
    logit_scale: float = 5.0
    """Continuous long-only: logits = logit_scale × action (action in [-1, 1]); 5 allows ~99.97 % in one leg."""
    discrete_step: float = 0.25
    """Discrete: a buy / sell moves the target by this fraction of max_leverage / N (1 / step must be whole)."""
    initial_value: float = DEFAULT_CAPITAL
    """Starting cash in quote currency, the experiment's `capital` (100,000 by default): impact and the
    participation cap depend on absolute size, so the agent learns with the capacity limits it will trade under."""

    def __post_init__(self) -> None:
        if self.window < 1 or self.episode_bars < 1 or self.rebalance_every < 1:
            raise ValueError(f"window, episode_bars and rebalance_every must be ≥ 1: {self}")
        if self.reward not in ("differential_sortino", "drawdown_penalty", "log_return"):
            raise ValueError(f"unknown reward {self.reward!r}")
        if self.action not in ("continuous", "discrete"):
            raise ValueError(f"unknown action {self.action!r}")
        if not (0 < self.sortino_eta <= 1 and self.reward_clip > 0 and self.logit_scale > 0):
            raise ValueError(f"need 0 < sortino_eta ≤ 1, reward_clip > 0, logit_scale > 0: {self}")
        levels = 1.0 / self.discrete_step if self.discrete_step > 0 else math.nan
        if not (0 < self.discrete_step <= 1 and abs(levels - round(levels)) < 1e-9):
            raise ValueError(f"discrete_step must be 1/k for a whole k ≥ 1, got {self.discrete_step}")
        if not (math.isfinite(self.initial_value) and self.initial_value > 0 and self.drawdown_penalty >= 0):
            raise ValueError(f"need initial_value > 0 and drawdown_penalty ≥ 0: {self}")


def _benchmark(symbols: Sequence[str], frame: pl.DataFrame, base: str = "BTC") -> str:
    """The features' benchmark rule: the symbol with base currency `base`, else the earliest first row."""
    from crypto_assets.features.engine import pick_benchmark

    bench = pick_benchmark(frame.select("symbol", "ts"), base)
    return bench if bench is not None else symbols[0]


@dataclass(frozen=True, eq=False)
class EnvData:
    """Dense inputs of `TradingEnv` for one split (see the module docstring); build with `from_frames`."""

    symbols: tuple[str, ...]
    ts_us: np.ndarray  # (T,) int64 µs, the split's bar grid
    timeframe: str
    feature_names: tuple[str, ...]
    features: np.ndarray  # (T, N, F) float32, NaN → 0
    regime: np.ndarray  # (T, 2) float32: the benchmark's vol_regime_code, trend_regime_code at t (NaN → 0)
    benchmark: str
    bars: pl.DataFrame  # long bars of `symbols`, possibly with history before the split
    context: np.ndarray | None = None
    """(C, N, F) float32 feature rows of C bars before the split, oldest first, that the first observations look
    back into (`preceded_by`); None: none, so the first decision waits for a full window inside the split."""

    @classmethod
    def from_frames(
        cls,
        fold_frame: pl.DataFrame,
        bars: pl.DataFrame,
        *,
        split: str = "train",
        timeframe: str = "1h",
        symbols: Sequence[str] | None = None,
        feature_columns: Sequence[str] | None = None,
        benchmark: str | None = None,
    ) -> EnvData:
        """Dense arrays for the rows of `fold_frame` with `split == split` (no `split` column: all rows).

        symbols: default, every symbol of the whole `fold_frame` (sorted). feature_columns: default, its numeric
        columns except keys, `split`, `label_*` targets and `*_code` regime codes. benchmark: default, as the
        features choose it (base currency BTC, else the earliest symbol). The split's bars must be a contiguous
        stretch of the timeframe grid; `bars` must cover it for every symbol that has rows.
        """
        for col in ("symbol", "ts"):
            if col not in fold_frame.columns:
                raise ValueError(f"fold_frame lacks {col!r}; it has {fold_frame.columns}")
        syms = tuple(sorted(fold_frame["symbol"].unique().to_list())) if symbols is None else tuple(symbols)
        if not syms:
            raise ValueError("fold_frame has no symbols")
        names = (
            tuple(scaled_columns(fold_frame))  # the fold's scaled features (folds.dataset: one rule)
            if feature_columns is None
            else tuple(feature_columns)
        )
        if benchmark is None:
            benchmark = _benchmark(syms, fold_frame.filter(pl.col("symbol").is_in(syms)))
        bench = benchmark
        rows = fold_frame.filter(pl.col("split") == split) if "split" in fold_frame.columns else fold_frame
        rows = rows.filter(pl.col("symbol").is_in(syms))
        if rows.height == 0:
            raise ValueError(f"fold_frame has no rows for split {split!r}")
        step_us = timeframe_us(timeframe)
        ts_us = ts_epoch_us(rows, "fold_frame")  # naive = UTC, as the engine reads it
        t0, t1 = int(ts_us.min()), int(ts_us.max())
        if np.any((ts_us - t0) % step_us):
            raise ValueError(f"fold rows are off the {timeframe} grid")
        n_t, n_s, n_f = (t1 - t0) // step_us + 1, len(syms), len(names)
        t_idx = (ts_us - t0) // step_us
        s_idx = rows["symbol"].cast(pl.Enum(list(syms))).to_physical().to_numpy().astype(np.int64)
        features = np.zeros((n_t, n_s, n_f), dtype=np.float32)
        if n_f:
            values = rows.select(pl.col(list(names)).cast(pl.Float64)).to_numpy()
            values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
            features[t_idx, s_idx] = np.clip(values, -OBS_BOUND, OBS_BOUND)
        regime = np.zeros((n_t, 2), dtype=np.float32)
        if all(c in rows.columns for c in REGIME_COLUMNS):
            b = s_idx == syms.index(bench)
            codes = rows.select(pl.col(list(REGIME_COLUMNS)).cast(pl.Float64)).to_numpy()[b]
            regime[t_idx[b]] = np.nan_to_num(codes, nan=0.0)
        return cls(
            symbols=syms,
            ts_us=t0 + np.arange(n_t, dtype=np.int64) * step_us,
            timeframe=timeframe,
            feature_names=names,
            features=features,
            regime=regime,
            benchmark=bench,
            bars=bars.filter(pl.col("symbol").is_in(syms)),
        )

    def preceded_by(self, earlier: EnvData, bars: int) -> EnvData:
        """This split with the last `bars` feature rows of `earlier` (an earlier split of the same fold: train
        for test) as look-back context, so that decisions start at the split's first bar rather than after
        `window − 1` bars of it. Like the forecasters' windows (`models.data`), this bridges the fold's purge gap
        with the last train bars before it: still causal, every row is earlier in time."""
        if earlier.symbols != self.symbols or earlier.feature_names != self.feature_names:
            raise ValueError(
                f"context split has symbols {earlier.symbols} and features {earlier.feature_names}, "
                f"this one {self.symbols} and {self.feature_names}: build both from one fold frame and symbol list"
            )
        if earlier.ts_us[-1] >= self.ts_us[0]:
            raise ValueError("the context split must end before this split starts")
        if bars < 0:
            raise ValueError(f"context bars must be ≥ 0, got {bars}")
        first = max(earlier.features.shape[0] - bars, 0)  # a shorter earlier split gives all it has
        return dataclasses.replace(self, context=earlier.features[first:])


class _Policy(NamedTuple):
    """How an action becomes target weights (fixed per env)."""

    kind: int  # _SOFTMAX, _SIGNED or _DISCRETE
    logit_scale: float
    step_size: float  # discrete: weight of one level
    lo_level: float  # discrete: the lowest and highest level
    hi_level: float
    max_leverage: float
    listed: np.ndarray  # (T, N) bool: the symbol has a bar at or before t


class _Episode(NamedTuple):
    """The current episode's state and logs, written in place by the step kernel (rows = the split's bars)."""

    units: np.ndarray  # (N,) held
    acct: np.ndarray  # (3,) cash, value, running peak of value
    level: np.ndarray  # (N,) discrete target levels
    target: np.ndarray  # (N,) scratch: the decision's target weights (NaN = no order)
    filled: np.ndarray  # (N,) scratch: execute_bar's outputs
    requested: np.ndarray
    orders: np.ndarray  # (T, N) target weights decided at each bar, NaN = no order
    log_value: np.ndarray  # (T,) value at each close
    log_costs: np.ndarray  # (T, 4) fees, slippage, impact, funding paid in each bar
    state: np.ndarray  # (N + 2,) account part of the observation: weights, cash weight, drawdown


@structref.register
class _StepInputsType(types.StructRef):
    def preprocess_fields(self, fields: Any) -> tuple[tuple[str, Any], ...]:
        return tuple((name, types.unliteral(typ)) for name, typ in fields)


class _StepInputs(structref.StructRefProxy):
    """The records `_env_step` reads, boxed once per env: numba types this argument by one pointer, where the
    records themselves would be re-typed field by field on every call (≈ 3.7 µs of a ≈ 10 µs step, measured)."""

    # its fields, readable inside compiled code only (declared for the type checker)
    policy: _Policy
    market: MarketPanel
    costs: CostParams
    ep: _Episode

    def __new__(cls, policy: _Policy, market: MarketPanel, costs: CostParams, ep: _Episode) -> Self:
        return structref.StructRefProxy.__new__(cls, policy, market, costs, ep)


structref.define_proxy(_StepInputs, _StepInputsType, ["policy", "market", "costs", "ep"])


@njit(cache=False)  # not cached: see the module docstring (the engine functions it inlines may change)
def _env_step(action: np.ndarray, t: int, n_bars: int, inputs: _StepInputs) -> float:
    """One decision at the close of t and `n_bars` bars of its consequences; returns the value at the end.

    Writes the order row (orders[t], NaN = no order), per-bar values and (fees, slippage, impact, funding) of
    bars t+1 .. t+n_bars, and the account part of the next observation (weights, cash weight, drawdown).
    `market` holds the split's rows (row t = split bar t), as the engine's kernels read them.
    """
    policy, market, costs, ep = inputs.policy, inputs.market, inputs.costs, inputs.ep
    units, acct, level, target, listed = ep.units, ep.acct, ep.level, ep.target, policy.listed
    logit_scale, step_size, max_leverage = policy.logit_scale, policy.step_size, policy.max_leverage
    lo_level, hi_level, kind = policy.lo_level, policy.hi_level, policy.kind
    n = units.shape[0]
    # ---- action → target weights, decided at the close of t
    if kind == _SOFTMAX:
        cash_logit = logit_scale * min(max(float(action[n]), -1.0), 1.0)
        top = cash_logit
        for i in range(n):
            if listed[t, i]:
                top = max(top, logit_scale * min(max(float(action[i]), -1.0), 1.0))
        total = math.exp(cash_logit - top)  # shift by the max: no overflow
        for i in range(n):
            target[i] = 0.0
            if listed[t, i]:
                target[i] = math.exp(logit_scale * min(max(float(action[i]), -1.0), 1.0) - top)
                total += target[i]
        for i in range(n):
            target[i] /= total
    elif kind == _SIGNED:
        gross = 0.0
        for i in range(n):
            target[i] = min(max(float(action[i]), -1.0), 1.0) if listed[t, i] else 0.0
            gross += abs(target[i])
        scale = max_leverage / max(gross, 1.0)
        for i in range(n):
            target[i] *= scale
    else:
        for i in range(n):
            a = int(action[i])
            if not listed[t, i]:
                level[i] = 0.0
                target[i] = 0.0
            elif a == 1:
                level[i] = min(level[i] + 1.0, hi_level)
                target[i] = level[i] * step_size
            elif a == 2:
                level[i] = max(level[i] - 1.0, lo_level)
                target[i] = level[i] * step_size
            else:
                target[i] = np.nan  # hold: no order
    ep.orders[t] = target
    # ---- fill at the open of t+1, then funding and marks at each close (the engine's per-bar functions)
    cash = acct[_CASH]
    peak = acct[_PEAK]
    value = acct[_VALUE]
    for b in range(n_bars):
        e = t + 1 + b
        fees = 0.0
        slippage = 0.0
        impact = 0.0
        if b == 0:
            bar = execute_bar(units, cash, market, e, target, costs, ep.filled, ep.requested)
            cash, fees, slippage, impact = bar.cash, bar.fees, bar.slippage, bar.impact
        cash, funding = accrue_funding(units, cash, market, e, costs)
        value = mark_to_market(units, cash, market, e)
        peak = max(peak, value)
        ep.log_value[e] = value
        ep.log_costs[e, 0] = fees
        ep.log_costs[e, 1] = slippage
        ep.log_costs[e, 2] = impact
        ep.log_costs[e, 3] = funding
    acct[_CASH] = cash
    acct[_VALUE] = value
    acct[_PEAK] = peak
    # ---- account state at the close of the next decision bar
    te = t + n_bars
    state = ep.state
    for i in range(n):
        state[i] = units[i] * market.mark_close[te, i] / value if value > 0.0 else 0.0
    state[n] = cash / value if value > 0.0 else 0.0
    state[n + 1] = 1.0 - value / peak if peak > 0.0 else 1.0
    return value


class TradingEnv(gym.Env):  # type: ignore[type-arg]
    """Target-weight trading of a fold split under the engine's cost model (see the module docstring)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(
        self,
        data: EnvData,
        costs: CostModel = CostModel(),  # noqa: B008 (a frozen dataclass: immutable)
        params: EnvParams = EnvParams(),
        *,
        training: bool = True,
        seed: int | None = None,
        multipliers: pl.DataFrame | None = None,
    ) -> None:
        """multipliers: per-bar cost multipliers on `data.bars`' grid, as `run_backtest(..., multipliers=...)`
        takes them (long `symbol, ts, spread_mult, impact_mult`; ts = execution bar; 1 where not given)."""
        super().__init__()
        self.data, self.costs, self.params, self.training = data, costs, params, training
        self._default_seed = seed
        market = Market.from_bars(data.bars, costs, data.timeframe, multipliers=multipliers)
        if tuple(market.symbols) != data.symbols:
            raise ValueError(f"bars have symbols {market.symbols}, the fold rows {list(data.symbols)}")
        step_us = timeframe_us(data.timeframe)
        start = int((data.ts_us[0] - market.ts_us[0]) // step_us)
        n_t = data.ts_us.shape[0]
        if market.step_us != step_us or start < 0 or start + n_t > market.ts_us.shape[0]:
            raise ValueError("bars do not cover the split's bars on the same grid")
        context_bars = 0 if data.context is None else data.context.shape[0]
        self.first_decision = max(params.window - 1 - context_bars, 0)  # first bar with a full window
        needed = self.first_decision + (2 if training else 1)  # training: one step; evaluation: one decision
        if n_t < needed:
            raise ValueError(
                f"the split has {n_t} bars: need {needed} (window {params.window}, {context_bars} context bars, "
                f"{'one step' if training else 'one decision'})"
            )
        # the engine's panels on the split's rows: split bar t is row t, as the kernels index them
        self._market = market.panel.rows(slice(start, start + n_t))
        self._costs = costs.kernel_params(step_us)
        # closes for the reward's causal prior dd0, with up to `window` bars before the split where bars have them
        self._prior_bars = min(start, params.window)
        self._close = np.ascontiguousarray(market.close[start - self._prior_bars : start + n_t])
        self.listed = np.ascontiguousarray(np.arange(start, start + n_t)[:, None] >= market.first_bar[None, :])

        n_s, n_f = len(data.symbols), len(data.feature_names)
        self.n_symbols = n_s
        self._nf = n_s * n_f
        context = np.zeros((0, n_s, n_f), np.float32) if data.context is None else data.context
        self._context_bars = context.shape[0]
        # row-major: bar, symbol, feature; the context rows first, so split bar t is row t + context_bars
        self._feat_flat = np.ascontiguousarray(np.concatenate([context, data.features]).reshape(-1))
        self._regime = np.ascontiguousarray(data.regime)
        self._wf = params.window * self._nf
        obs_dim = self._wf + n_s + 4
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, shape=(obs_dim,), dtype=np.float32)
        if params.action == "discrete":
            kind = _DISCRETE
            self.action_space = spaces.MultiDiscrete([3] * n_s)
        elif costs.allow_short:
            kind = _SIGNED
            self.action_space = spaces.Box(-1.0, 1.0, shape=(n_s,), dtype=np.float32)
        else:
            kind = _SOFTMAX
            self.action_space = spaces.Box(-1.0, 1.0, shape=(n_s + 1,), dtype=np.float32)
        hi_level = float(round(1.0 / params.discrete_step))
        self._policy = _Policy(
            kind=kind,
            logit_scale=params.logit_scale,
            step_size=params.discrete_step * costs.max_leverage / n_s,
            lo_level=-hi_level if costs.allow_short else 0.0,
            hi_level=hi_level,
            max_leverage=costs.max_leverage,
            listed=self.listed,
        )

        self.last_bar = n_t - 1
        # per-episode state and logs, in place: the step kernel writes the same arrays
        self._ep = _Episode(
            units=np.zeros(n_s),
            acct=np.zeros(3),
            level=np.zeros(n_s),
            target=np.zeros(n_s),
            filled=np.zeros(n_s),
            requested=np.zeros(n_s),
            orders=np.full((n_t, n_s), np.nan),
            log_value=np.full(n_t, np.nan),
            log_costs=np.zeros((n_t, 4)),
            state=np.zeros(n_s + 2),
        )
        self._inputs = _StepInputs(self._policy, self._market, self._costs, self._ep)
        self._t = self._start = self._end = self.first_decision
        self._sortino_a = self._sortino_dd2 = self._dd_floor = 0.0

    # ------------------------------------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is None and self._np_random is None and self._default_seed is not None:
            seed = self._default_seed
        super().reset(seed=seed)
        options = options or {}
        first = self.first_decision
        if not self.training or options.get("replay", False):
            start, end = first, self.last_bar
        else:
            length = min(self.params.episode_bars, self.last_bar - first)
            start = first + int(self.np_random.integers(0, self.last_bar - length - first + 1))
            end = start + length
        self._start, self._t, self._end = start, start, end
        v0 = self.params.initial_value
        self._ep.units[:] = 0.0
        self._ep.acct[:] = (v0, v0, v0)
        self._ep.level[:] = 0.0
        self._ep.state[:] = 0.0
        self._ep.state[self.n_symbols] = 1.0  # all cash
        self._ep.orders[:] = np.nan
        self._ep.log_value[:] = np.nan
        self._ep.log_value[start] = v0
        self._ep.log_costs[:] = 0.0
        dd0 = self._downside_prior(start)
        self._sortino_a, self._sortino_dd2, self._dd_floor = 0.0, dd0 * dd0, 0.1 * dd0
        return self._observation(start), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        t = self._t
        if t >= self._end:
            raise RuntimeError("the episode is over: call reset()")
        n_bars = min(self.params.rebalance_every, self._end - t)
        v_before = self._ep.acct[_VALUE]
        dd_before = self._ep.state[self.n_symbols + 1]
        action_row = np.asarray(action, dtype=np.float64).reshape(-1)
        value = _env_step(action_row, t, n_bars, self._inputs)
        self._t = t + n_bars
        terminated = not value > 0.0  # wiped out (no margin calls are modelled: equity may go negative)
        truncated = self._t >= self._end and not terminated
        if terminated:
            reward = -self.params.reward_clip
        else:
            reward = self._reward(v_before, value, dd_before, float(self._ep.state[self.n_symbols + 1]))
        return self._observation(self._t), reward, terminated, truncated, self._info()

    def decide_last_bar(self, action: Any) -> None:
        """Record the decision `action` at the close of the episode's last bar, where a replay ends without
        stepping (its fill would be at the next open, past the split): its order row only, nothing simulated.
        Only when that bar is one of the episode's decision bars (every `rebalance_every` from its start)."""
        t = self._t
        if t != self._end:
            raise RuntimeError(f"the episode is at bar {t}, not at its last bar {self._end}")
        if (t - self._start) % self.params.rebalance_every == 0:
            _env_step(np.asarray(action, dtype=np.float64).reshape(-1), t, 0, self._inputs)  # 0 bars: the order

    # ------------------------------------------------------------------------------------------ internals
    def _observation(self, t: int) -> np.ndarray:
        obs = np.empty(self.observation_space.shape[0], dtype=np.float32)  # type: ignore[index]
        wf, end = self._wf, (t + self._context_bars + 1) * self._nf
        obs[:wf] = self._feat_flat[end - wf : end]
        obs[wf : wf + self.n_symbols + 2] = np.clip(self._ep.state, -OBS_BOUND, OBS_BOUND)
        obs[wf + self.n_symbols + 2 :] = self._regime[t]
        return obs

    def _info(self) -> dict[str, Any]:
        return {"value": float(self._ep.acct[_VALUE]), "drawdown": float(self._ep.state[self.n_symbols + 1])}

    def _reward(self, v_before: float, v_after: float, dd_before: float, dd_after: float) -> float:
        kind = self.params.reward
        if kind == "log_return":
            return math.log(v_after / v_before)
        if kind == "drawdown_penalty":
            return math.log(v_after / v_before) - self.params.drawdown_penalty * max(dd_after - dd_before, 0.0)
        # differential Sortino (module docstring), then the moving estimates move on
        r = v_after / v_before - 1.0
        a, dd2 = self._sortino_a, self._sortino_dd2
        dd = max(math.sqrt(dd2), self._dd_floor)
        if r > 0.0:
            d = (r - 0.5 * a) / dd
        else:
            d = (dd * dd * (r - 0.5 * a) - 0.5 * a * r * r) / (dd * dd * dd)
        eta = self.params.sortino_eta
        self._sortino_a = a + eta * (r - a)
        self._sortino_dd2 = dd2 + eta * (min(r, 0.0) ** 2 - dd2)
        clip = self.params.reward_clip
        return min(max(d, -clip), clip)

    def _downside_prior(self, t: int) -> float:
        """dd0: downside deviation of equal-weight close-to-close returns over the window up to t, per step."""
        i = t + self._prior_bars  # bar t's row in self._close
        close = self._close[max(i - self.params.window, 0) : i + 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            ret = close[1:] / close[:-1] - 1.0
        ok = np.isfinite(ret)
        counts = ok.sum(axis=1)
        market = np.where(ok, ret, 0.0).sum(axis=1)[counts > 0] / counts[counts > 0]
        dd0 = math.sqrt(float(np.mean(np.minimum(market, 0.0) ** 2))) if market.size else 0.0
        return max(dd0 * math.sqrt(self.params.rebalance_every), 1e-6)

    # ---------------------------------------------------------------------------------------- results
    @property
    def decision_bar(self) -> int:
        """Index (into the split's bars) of the current decision bar."""
        return self._t

    def executed_weights(self) -> pl.DataFrame:
        """The orders of the current episode, long `symbol, ts, weight` (ts = decision bar; only symbols that
        got an order): `run_backtest` on the same bars reproduces the episode."""
        t_idx, s_idx = np.nonzero(~np.isnan(self._ep.orders))
        return pl.DataFrame(
            [
                pl.Series("symbol", list(self.data.symbols), dtype=pl.String).gather(s_idx),
                pl.Series("ts", self.data.ts_us[t_idx]).cast(TS_DTYPE),
                pl.Series("weight", self._ep.orders[t_idx, s_idx]),
            ]
        )

    def episode_frame(self) -> pl.DataFrame:
        """Per bar of the current episode so far (its start bar included): `ts, value` at the close and the
        `fees, slippage, impact, funding` paid in that bar, in quote currency."""
        rows = slice(self._start, self._t + 1)
        costs = self._ep.log_costs[rows]
        return pl.DataFrame(
            [
                pl.Series("ts", self.data.ts_us[rows]).cast(TS_DTYPE),
                pl.Series("value", self._ep.log_value[rows]),
                *(pl.Series(name, costs[:, k]) for k, name in enumerate(("fees", "slippage", "impact", "funding"))),
            ]
        )


def evaluate_policy_weights(
    env: TradingEnv, policy_fn: Callable[[np.ndarray], Any], *, final_decision: bool = False
) -> pl.DataFrame:
    """Replay the env's whole split once (deterministic start at the first full window, context included) with
    `policy_fn(observation) -> action` and return its decisions, long `symbol, ts, weight` (decided at the close
    of `ts`), to feed `run_backtest` with the same bars and costs. `final_decision`: also the decision at the close
    of the split's last bar (module docstring, Episodes); the others are the same with or without it."""
    obs, _ = env.reset(options={"replay": True})
    terminated = False
    done = env.decision_bar >= env.last_bar  # one decision bar: nothing to step
    while not done:
        obs, _, terminated, truncated, _ = env.step(policy_fn(obs))
        done = terminated or truncated
    if final_decision and not terminated:  # a wiped-out account decides nothing more
        env.decide_last_bar(policy_fn(obs))
    return env.executed_weights()
