"""Synthetic crypto market: seeded, correlated OHLCV series with the stylized facts of real crypto bars.

The offline default source. Every number is a pure function of (seed, `data.synthetic` parameters,
anchor, timeframe, position of the symbol in the ticker list): there is ONE path per timeframe that
starts at the anchor (00:00 UTC of `data.start`), and every request returns a slice of it. Fetching
January and February separately gives exactly the rows of fetching January-February at once, bit for
bit; the same seed gives the same bytes; another seed gives another market. Symbol `i` of the list
always gets component `i`, so `["BTC/USDT"]` alone and `["BTC/USDT", "ETH/USDT"]` agree on BTC.

Model (all per bar of length Δ; `h` = Δ / 365 days, `k` = Δ / 1 hour)
----------------------------------------------------------------------
Market factor log return::

    f_t = μ[regime_t]·h + c_t + σ_t · m[regime_t] · q_t · z_t

- `z_t`: Student-t shocks with `t_dof` degrees of freedom, scaled to unit variance (fat tails).
- `σ_t²`: GARCH(1,1) variance, `σ²_{t+1} = ω + α σ_t² z_t² + β σ_t²`, with long-run variance
  `annual_vol² · h`, so the factor's volatility is `annual_vol` per year on every timeframe.
  `garch_alpha` / `garch_beta` are the values for 1h bars; for other bar lengths the persistence
  `α + β` is raised to the power `k` (shocks to volatility decay at the same speed in calendar time)
  and `α` scales with `√k` (the GARCH diffusion limit), capped at the persistence.
- Regimes: a Markov chain over bull / bear / chop. Each regime lasts a geometric number of bars with
  mean `regime_mean_days` (switch probability `1 - exp(-Δ / regime_mean_days)` per bar) and then
  jumps to one of the other two at random. `μ` = `bull_drift`, `bear_drift`, `chop_drift`
  (annualised log drifts). Volatility multipliers `m` are 0.9 / 1.0 / 1.1 (chop whipsaws a little
  more), normalised so that their mean square is 1 (long-run volatility stays `annual_vol`).
- Crash episodes arrive as a Poisson process with `crash_rate_per_year`. Each lasts a Gamma(4)
  number of days with mean `crash_days` and loses a log-normal fraction of value with mean
  `crash_depth` (at most 95%), spread evenly over its bars as the drift `c_t`; volatility is doubled
  (`q_t = 2`) while a crash runs. Crashes hit the market factor, so all symbols fall together.

Symbol `i` (0-based, in the order of the ticker list)::

    r_{i,t} = b_i · f_t + idio_vol_ratio · σ_t · m · q · √g_{i,t} · u_{i,t}

- `b_i = market_beta · (1 + 0.2·(i mod 5))`: 1, 1.2, 1.4, 1.6, 1.8, 1, ... times `market_beta`
  (positive cross-correlation; the high-beta symbols are the "alts").
- `u_{i,t}`: its own unit-variance Student-t shocks; `g_{i,t}`: its own unit-mean GARCH(1,1) with the
  same α, β, so each symbol's idiosyncratic volatility also clusters, on top of the market's.
- Start price: `start_price` × 1, 0.06, 0.002, 0.02, 0.0005, 0.1, 0.005, 0.0001 (cycling, halved
  every further 8 symbols), i.e. BTC-, ETH- and SOL-like levels for the first three.

Bars: `open` = previous `close` (the first open is the start price), `close = open · exp(r)`,
`high = max(open, close) · exp(0.5 · s · |N|)`, `low = min(open, close) · exp(-0.5 · s · |N'|)`
with `s` the symbol's conditional volatility of that bar (always OHLC-consistent, wicks widen in
turbulent markets). `volume` (base asset) is log-normal around `base_volume` per hour of symbol 0
in a calm market, scaled by `k` (bar length), per symbol by (dollar share / price fraction) with
dollar shares 1, 1/1.75, 1/2.5, ..., and rising with the market's volatility level
(`(σ m q / σ_long-run)^0.7`) and with the bar's surprise `|r| / s`
(`(1 + 0.6 |r|/s) / (1 + 0.6 · 0.6745)`); the log-normal spread is `0.35 · k^-0.15` (short bars
are noisier).

Defects (`data.synthetic.defects`, all off by default), so that validation has something to catch:

- Maintenance gaps (`maintenance_gaps_per_year`): starting at a bar with probability rate × Δ/365 days, an
  exponential duration (mean 1.5 h, at most 12 h, at least one bar) of bars is not published for any
  symbol, like Binance's maintenance windows. The path runs on underneath: the first bar after the gap
  opens at the unpublished bar's close, so the gap also hides a price move.
- Wick artifacts (`wick_artifacts_per_year`, per symbol): one bar's high (or low, at random) is pushed
  out to max(open, close) · exp(+m · s) (or min(open, close) · exp(-m · s)), m uniform in 30-60 and
  m · s at most 1: a lone spike of one symbol that the market does not share.
- Illiquid days (`illiquid_days_per_year`, per symbol): a whole UTC day (from 00:00, as the anchor is
  midnight) whose volume is multiplied by 10^U(-4, -3).

Defects come from their own streams `SeedSequence([seed, H(timeframe)], spawn_key=(b, j, 1))`, drawn
in full whenever any defect is on: prices and volumes elsewhere are bit for bit those without defects,
the same seed gives the same defects, and a month fetched alone equals that month inside a range.

Expected drift: the market's long-run log drift is roughly the mean of the three regime drifts plus
`crash_rate_per_year · log(1 - crash_depth)`: with the defaults (1.2 - 0.9 + 0) / 3 + 1.5·log(0.75)
≈ -0.33 per year, i.e. the default market is a volatile, slightly losing one.

Determinism: random numbers come in fixed blocks of 4,096 bars, block `b` of component `j` (0 = the
market, `i + 1` = symbol `i`) drawn from `default_rng(SeedSequence([seed, H(timeframe)],
spawn_key=(b, j)))`, `H` a stable hash of "synthetic" and the timeframe. Every array a block computes
has the same length whatever the request, and the state carried from block to block (log prices,
GARCH variances, regime, running crashes) is exact, so a longer request only appends blocks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from dataclasses import dataclass, field
from itertools import accumulate

import numpy as np
import polars as pl

from crypto_assets.config.schema import SyntheticSection
from crypto_assets.sources.base import TS_DTYPE, conform, empty_raw
from crypto_assets.timeframes import epoch_us, timeframe_delta, timeframe_us

BLOCK = 4096
"""Bars per random-number block (part of the determinism contract: changing it changes the data)."""

_YEAR = dt.timedelta(days=365)
_HOUR = dt.timedelta(hours=1)
_INIT_KEY = 2**32 - 1  # spawn key of the stream that draws the initial regime (never a block index)

_REGIME_VOL = np.array([0.9, 1.0, 1.1])  # bull, bear, chop
_REGIME_VOL = _REGIME_VOL / np.sqrt(np.mean(_REGIME_VOL**2))  # mean square 1: long-run vol unchanged
_CRASH_VOL = 2.0
_CRASH_SHAPE = 4.0  # Gamma shape of crash durations (coefficient of variation 0.5)
_CRASH_DEPTH_SD = 0.35  # log-normal spread of crash depths
_WICK = 0.5
_VOLUME_SURPRISE = 0.6
_MEDIAN_ABS_NORMAL = 0.6745
_VOLUME_ACTIVITY = 0.7
_PRICE_FRACTIONS = (1.0, 0.06, 0.002, 0.02, 0.0005, 0.1, 0.005, 0.0001)
_DEFECT_KEY = 1  # third spawn-key word of the defect streams: (block, component, 1), never a price stream
_GAP_MEAN_HOURS = 1.5  # Binance's maintenance gaps: 32 bars in 15 gaps of BTC/USDT 1h over 2020-2025
_GAP_MAX_HOURS = 12.0
_SPIKE_SIGMAS = (30.0, 60.0)  # wick artifacts: far beyond validation's 12σ, and unshared by construction
_SPIKE_MAX_LOG = 1.0  # ×2.7 up or ×0.37 down; 0.5 hid spikes in crashes (realized σ of alts near 0.04/h)
_ILLIQUID_LOG10 = (-4.0, -3.0)  # an illiquid day trades 0.01%-0.1% of its normal volume


def timeframe_key(timeframe: str) -> int:
    """Stable 64-bit hash of ("synthetic", timeframe): the second entropy word of the seed sequence."""
    return int.from_bytes(hashlib.blake2b(f"synthetic/{timeframe}".encode(), digest_size=8).digest(), "little")


def symbol_beta(params: SyntheticSection, i: int) -> float:
    return params.market_beta * (1.0 + 0.2 * (i % 5))


def symbol_price_fraction(i: int) -> float:
    return _PRICE_FRACTIONS[i % len(_PRICE_FRACTIONS)] * 0.5 ** (i // len(_PRICE_FRACTIONS))


def symbol_dollar_share(i: int) -> float:
    return 1.0 / (1.0 + 0.75 * i)


@dataclass(frozen=True)
class BarParams:
    """SyntheticSection translated to one bar of the timeframe."""

    k_hours: float
    var_long_run: float  # market variance per bar
    alpha: float
    beta: float
    drifts: np.ndarray  # log drift per bar in bull, bear, chop
    p_switch: float
    p_crash: float
    bars_per_day: float
    volume_sd: float
    p_gap: float  # a maintenance gap starts at a bar
    p_wick: float  # a symbol's bar gets a wick artifact
    p_illiquid: float  # a symbol's UTC day is illiquid

    @classmethod
    def from_section(cls, params: SyntheticSection, timeframe: str) -> BarParams:
        bar = timeframe_delta(timeframe)
        h = bar / _YEAR
        k = bar / _HOUR
        rho = (params.garch_alpha + params.garch_beta) ** k
        alpha = min(params.garch_alpha * np.sqrt(k), rho)
        days = bar / dt.timedelta(days=1)
        return cls(
            k_hours=k,
            var_long_run=params.annual_vol**2 * h,
            alpha=float(alpha),
            beta=float(rho - alpha),
            drifts=np.array([params.bull_drift, params.bear_drift, params.chop_drift]) * h,
            p_switch=float(-np.expm1(-days / params.regime_mean_days)),
            p_crash=float(-np.expm1(-params.crash_rate_per_year * h)),
            bars_per_day=1.0 / days,
            volume_sd=0.35 * k**-0.15,
            p_gap=float(-np.expm1(-params.defects.maintenance_gaps_per_year * h)),
            p_wick=float(-np.expm1(-params.defects.wick_artifacts_per_year * h)),
            p_illiquid=float(-np.expm1(-params.defects.illiquid_days_per_year / 365.0)),
        )


def _garch(a: np.ndarray, omega: float, start: float) -> tuple[np.ndarray, float]:
    """Variance path of s[t+1] = omega + a[t] * s[t] from s[0] = start, and the carried s[len]."""
    # Sequential by nature; plain Python floats are ~10x faster than numpy scalars here.
    coeffs = a.tolist()
    path = list(accumulate(coeffs[:-1], lambda s, c: omega + c * s, initial=start))
    return np.array(path), omega + coeffs[-1] * path[-1]


@dataclass
class _Crash:
    start: int  # global bar index of its first bar
    bars: int
    drift: float  # log return added to each of its bars


@dataclass
class _Path:
    """One timeframe's path for n symbols, grown block by block (state carried exactly)."""

    params: SyntheticSection
    bar: BarParams
    entropy: list[int]
    n_symbols: int
    blocks: int = 0
    columns: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)
    regime: int = 0
    market_var: float = 0.0
    idio_var: list[float] = field(default_factory=list)
    close: list[float] = field(default_factory=list)
    crashes: list[_Crash] = field(default_factory=list)
    # Defects (only when `params.defects.any`): which bars are published (market-wide, per block), and the
    # bars still to drop / to thin out when a gap or an illiquid day runs into the next block.
    present: list[np.ndarray] = field(default_factory=list)
    gap_left: int = 0
    illiquid_left: list[int] = field(default_factory=list)
    illiquid_factor: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        init = np.random.default_rng(np.random.SeedSequence(self.entropy, spawn_key=(_INIT_KEY,)))
        self.regime = int(init.integers(3))
        self.market_var = self.bar.var_long_run
        self.idio_var = [1.0] * self.n_symbols
        self.close = [self.params.start_price * symbol_price_fraction(i) for i in range(self.n_symbols)]
        self.columns = {c: [[] for _ in range(self.n_symbols)] for c in ("open", "high", "low", "close", "volume")}
        self.illiquid_left = [0] * self.n_symbols
        self.illiquid_factor = [1.0] * self.n_symbols

    def _rng(self, block: int, component: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.entropy, spawn_key=(block, component)))

    def _defect_rng(self, block: int, component: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.entropy, spawn_key=(block, component, _DEFECT_KEY)))

    def _gaps(self, b: int) -> None:
        """Market-wide maintenance gaps of block `b`: the `present` mask (False = not published)."""
        n, bar = BLOCK, self.bar
        rng = self._defect_rng(b, 0)
        starts_u = rng.random(n)
        hours = np.minimum(rng.exponential(_GAP_MEAN_HOURS, n), _GAP_MAX_HOURS)
        present = np.ones(n, dtype=bool)
        carried = min(self.gap_left, n)
        present[:carried] = False
        self.gap_left -= carried
        for t in np.flatnonzero(starts_u < bar.p_gap).tolist():
            length = max(1, int(np.ceil(hours[t] / bar.k_hours - 1e-9)))
            present[t : t + length] = False
            self.gap_left = max(self.gap_left, t + length - n)
        self.present.append(present)

    def _symbol_defects(
        self, b: int, i: int, open_: np.ndarray, close: np.ndarray, sd: np.ndarray, cols: dict[str, np.ndarray]
    ) -> None:
        """Wick artifacts and illiquid days of symbol `i` in block `b`, applied in place to `cols`."""
        n, bar = BLOCK, self.bar
        rng = self._defect_rng(b, i + 1)
        wick_u, wick_up, wick_size = rng.random(n), rng.random(n) < 0.5, rng.uniform(*_SPIKE_SIGMAS, n)
        day_u, day_log10 = rng.random(n), rng.uniform(*_ILLIQUID_LOG10, n)
        spikes = np.flatnonzero(wick_u < bar.p_wick)
        move = np.minimum(wick_size[spikes] * sd[spikes], _SPIKE_MAX_LOG)
        up, down = spikes[wick_up[spikes]], spikes[~wick_up[spikes]]
        cols["high"][up] = np.maximum(open_[up], close[up]) * np.exp(move[wick_up[spikes]])
        cols["low"][down] = np.minimum(open_[down], close[down]) * np.exp(-move[~wick_up[spikes]])
        # Illiquid days start at UTC midnight: bar g opens at anchor (00:00 UTC) + g bars.
        per_day = round(bar.bars_per_day)
        volume = cols["volume"]
        carried = min(self.illiquid_left[i], n)
        volume[:carried] *= self.illiquid_factor[i]
        self.illiquid_left[i] -= carried
        midnight = (b * n + np.arange(n)) % per_day == 0
        for t in np.flatnonzero(midnight & (day_u < bar.p_illiquid)).tolist():
            factor = float(10.0 ** day_log10[t])
            volume[t : t + per_day] *= factor
            if t + per_day > n:
                self.illiquid_left[i], self.illiquid_factor[i] = t + per_day - n, factor

    def grow(self, blocks: int) -> None:
        while self.blocks < blocks:
            self._block(self.blocks)
            self.blocks += 1

    def _block(self, b: int) -> None:
        p, bar, n = self.params, self.bar, BLOCK
        t_scale = np.sqrt((p.t_dof - 2.0) / p.t_dof)  # unit-variance Student-t

        # Market draws: always all of them, in this order, so a parameter change never shifts the stream.
        rng = self._rng(b, 0)
        z = rng.standard_t(p.t_dof, n) * t_scale
        switch_u = rng.random(n)
        switch_step = rng.integers(1, 3, n)
        crash_u = rng.random(n)
        crash_days = rng.gamma(_CRASH_SHAPE, p.crash_days / _CRASH_SHAPE, n)
        crash_depth = p.crash_depth * rng.lognormal(-0.5 * _CRASH_DEPTH_SD**2, _CRASH_DEPTH_SD, n)

        regime = (self.regime + np.cumsum(np.where(switch_u < bar.p_switch, switch_step, 0))) % 3
        self.regime = int(regime[-1])

        omega = bar.var_long_run * (1.0 - bar.alpha - bar.beta)
        market_var, self.market_var = _garch(bar.alpha * z * z + bar.beta, omega, self.market_var)

        g0 = b * n
        for i in np.flatnonzero(crash_u < bar.p_crash).tolist():
            bars = max(1, round(float(crash_days[i]) * bar.bars_per_day))
            depth = min(float(crash_depth[i]), 0.95)
            self.crashes.append(_Crash(g0 + i, bars, float(np.log1p(-depth)) / bars))
        # Difference arrays: a crash may start in an earlier block and run into this one.
        drift_diff = np.zeros(n + 1)
        active_diff = np.zeros(n + 1, dtype=np.int64)
        for crash in self.crashes:
            lo, hi = max(crash.start - g0, 0), min(crash.start + crash.bars - g0, n)
            if lo < hi:
                drift_diff[lo] += crash.drift
                drift_diff[hi] -= crash.drift
                active_diff[lo] += 1
                active_diff[hi] -= 1
        self.crashes = [c for c in self.crashes if c.start + c.bars > g0 + n]
        crash_drift = np.cumsum(drift_diff[:n])
        in_crash = np.cumsum(active_diff[:n]) > 0

        vol_mult = _REGIME_VOL[regime] * np.where(in_crash, _CRASH_VOL, 1.0)
        market_sd = np.sqrt(market_var) * vol_mult
        market = bar.drifts[regime] + crash_drift + market_sd * z
        activity = (market_sd / np.sqrt(bar.var_long_run)) ** _VOLUME_ACTIVITY

        unit_omega = 1.0 - bar.alpha - bar.beta
        defects = p.defects.any
        if defects:
            self._gaps(b)
        for i in range(self.n_symbols):
            rng = self._rng(b, i + 1)
            u = rng.standard_t(p.t_dof, n) * t_scale
            wicks = np.abs(rng.standard_normal((2, n)))
            volume_noise = rng.standard_normal(n)

            idio_var, self.idio_var[i] = _garch(bar.alpha * u * u + bar.beta, unit_omega, self.idio_var[i])
            beta_i = symbol_beta(p, i)
            idio_sd = p.idio_vol_ratio * market_sd * np.sqrt(idio_var)
            ret = beta_i * market + idio_sd * u
            sd = np.sqrt((beta_i * market_sd) ** 2 + idio_sd**2)

            close = self.close[i] * np.exp(np.cumsum(ret))
            open_ = np.empty(n)
            open_[0] = self.close[i]
            open_[1:] = close[:-1]  # open = previous close, bit for bit
            self.close[i] = float(close[-1])
            high = np.maximum(open_, close) * np.exp(_WICK * sd * wicks[0])
            low = np.minimum(open_, close) * np.exp(-_WICK * sd * wicks[1])

            surprise = (1.0 + _VOLUME_SURPRISE * np.abs(ret) / np.where(sd > 0, sd, 1.0)) / (
                1.0 + _VOLUME_SURPRISE * _MEDIAN_ABS_NORMAL
            )
            scale = p.base_volume * bar.k_hours * symbol_dollar_share(i) / symbol_price_fraction(i)
            volume = scale * activity * surprise * np.exp(bar.volume_sd * volume_noise)

            cols = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
            if defects:
                self._symbol_defects(b, i, open_, close, sd, cols)
            for name, values in cols.items():
                self.columns[name][i].append(values)


class SyntheticSource:
    """Seeded synthetic OHLCV (see the module docstring for the model). Implements `OhlcvSource`."""

    def __init__(self, params: SyntheticSection, seed: int, anchor: dt.datetime) -> None:
        self.params = params
        self.seed = int(seed)
        self.anchor = anchor
        self._anchor_us = epoch_us(anchor, "anchor")
        # Paths already generated, per (timeframe, number of symbols): monthly fetches extend, not redo.
        self._paths: dict[tuple[str, int], _Path] = {}
        self._lock = threading.Lock()

    def _path(self, timeframe: str, n_symbols: int) -> _Path:
        key = (timeframe, n_symbols)
        if key not in self._paths:
            self._paths[key] = _Path(
                params=self.params,
                bar=BarParams.from_section(self.params, timeframe),
                entropy=[self.seed, timeframe_key(timeframe)],
                n_symbols=n_symbols,
            )
        return self._paths[key]

    def fetch(self, symbols: list[str], timeframe: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """Bars with open time in [start, end) (UTC-aware), RAW_SCHEMA, sorted by (symbol, ts).

        Bar `j` opens at `anchor + j · timeframe`; nothing exists before the anchor."""
        step_us = timeframe_us(timeframe)
        start_us, end_us = epoch_us(start, "start"), epoch_us(end, "end")
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols contain duplicates: {symbols}")
        first = max(0, -((self._anchor_us - start_us) // step_us))  # ceil division
        stop = max(0, -((self._anchor_us - end_us) // step_us))
        if not symbols or stop <= first:
            return empty_raw()

        first_block, n_blocks = first // BLOCK, -(-stop // BLOCK)
        lo, hi = first - first_block * BLOCK, stop - first_block * BLOCK
        with self._lock:
            path = self._path(timeframe, len(symbols))
            path.grow(n_blocks)
            parts = {
                name: [blocks[i][first_block:n_blocks] for i in range(len(symbols))]
                for name, blocks in path.columns.items()
            }
            present = np.concatenate(path.present[first_block:n_blocks])[lo:hi] if path.present else None

        ts = pl.Series("ts", np.arange(first, stop, dtype=np.int64) * step_us + self._anchor_us).cast(TS_DTYPE)
        frames = [
            pl.DataFrame({name: np.concatenate(parts[name][i])[lo:hi] for name in parts}).with_columns(
                pl.lit(symbol, dtype=pl.String).alias("symbol"), ts
            )
            for i, symbol in enumerate(symbols)
        ]
        if present is not None:  # maintenance gaps: the bars exist on the path but were never published
            frames = [frame.filter(pl.Series(present)) for frame in frames]
        return conform(pl.concat(frames))
