"""Scenario (b) of `stress` (DESIGN.md §6.3): an agent-based panic market.

Franke & Westerhoff (2012, "Structural stochastic volatility in asset pricing dynamics: estimation and model
contest", JEDC 36(8), 1193-1211), model DCA-HPM, in log prices p with fundamental value p* = 0 and one step a
day: a market maker moves the price by μ times the excess demand of fundamentalists (share n_f) and chartists
(n_c = 1 − n_f),

    p_{t+1} = p_t + μ [n_f (φ (p* − p_t) + ε_f) + n_c (χ (p_t − p_{t−1}) + ε_c)],  ε_f ~ N(0, σ_f²), ε_c ~ N(0, σ_c²),

and agents switch strategy by a logit on the attractiveness of fundamentalism, revised once a day,

    n_f,t = 1 / (1 + exp(−β a_{t−1})),  a_t = α_0 + α_n (n_f,t − n_c,t) + α_p (p_t − p*)².

σ_c > σ_f, so herding into chartism gives volatile spells and fundamentalism calm ones: volatility clusters and
returns are fat-tailed without any GARCH term ("structural stochastic volatility"). Defaults are the published
estimates (crypto_assets.config.schema.PanicSection).

Adaptations, each a documented choice of this project, not of the paper:
- Sub-steps. The model is daily; paths are on the experiment's timeframe with `substeps_per_bar` sub-steps in a
  bar (high and low come from them), k sub-steps a day. Drift terms are scaled by 1/k, the noise by √(1/k) (an
  Euler scheme of the daily map: a day of sub-steps has FW's conditional daily mean and variance); the chartists'
  signal is the trailing one-day change p_s − p_{s−k}; the shares are revised once per model day, as in FW.
- Several assets. Every symbol has its own FW price, but all share one population (the herding index n_f − n_c,
  driven by the misalignment of the equal-weight market) and their demand noises are correlated with the real
  correlation matrix of the experiment's daily returns (market component + idiosyncratic noise, via Cholesky).
- Scale. FW's model unit is mapped onto each symbol: log price = log(start price) + s_i (p_i − p_i,0), with s_i
  making the model's daily volatility, stops included (measured once on a long reference run), the symbol's
  realised daily volatility times `vol_multiplier`. Stop distances are multiples of the FW part's daily
  volatility (volatility-scaled stops, like ATR stops), so every symbol has the same dynamics in model units.
- Stop-loss / liquidation cascade (not in FW). Each symbol holds a finite book of resting sell stops, a fraction
  of its daily volume V split over levels below a trailing high. The levels the price falls through in a sub-step
  fire as one sell metaorder of size Q and move the price by the square-root law −Y σ √(Q/V) (Tóth et al. 2011;
  σ the prevailing daily volatility), which can take the price through the next level in the same sub-step, and
  the chartists extend the fall in the next ones: a cascade, until the book is exhausted. The
  trailing high decays towards the price (`stop_trail_days`), and fired levels are placed again once the price
  is back above them, so the book refills after a crash. Impact is partly transient (Bouchaud, Farmer & Lillo
  2009; Moro et al. 2009: about 2/3 of the peak stays): the permanent share moves the price and the fundamental
  value together (it is news to the market, so it does not build FW misalignment; otherwise a sell-only book
  would drift every long run far from p* and freeze the population in fundamentalism), the rest rebounds with
  half-life `stop_rebound_days`. Agents trade on the observed price, so chartists see the cascade's fall.
- Volume = normal bar volume × realised / normal bar volatility (the volume-volatility relation, Clark 1973;
  Tauchen & Pitts 1983) + the fired stops. Cost multipliers: spread_mult = EWMA realised / normal volatility
  (spreads scale with volatility, Wyart et al. 2008), impact_mult = 1 + depth_k × EWMA(fired / normal bar
  volume) (stops eat the book's depth); both ≥ 1 and capped.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np
import polars as pl
from numba import njit

from crypto_assets.config.schema import PanicSection
from crypto_assets.sources.base import RAW_COLUMNS, RAW_SCHEMA, TS_DTYPE
from crypto_assets.stress.paths import StressPath
from crypto_assets.timeframes import parse_duration, timeframe_delta

SCENARIO = "panic"
DAY = dt.timedelta(days=1)
REFERENCE_DAYS = 4000  # reference run that measures the model's daily volatility in model units
REFERENCE_SEED = 20120801  # fixed: the scale must not depend on the caller's seed
VOLUME_DAYS = 30  # volume level = median daily volume of the last 30 days (the path starts now)
MIN_COMMON_DAYS = 30  # fewer common days of returns than this: symbols uncorrelated


@njit(cache=True)
def _simulate(
    zf: np.ndarray,
    zc: np.ndarray,
    fw: np.ndarray,
    scale: np.ndarray,
    dist: np.ndarray,
    q_level: float,
    impact_y: float,
    trail_decay: float,
    permanent: float,
    rebound: float,
    k: int,
    m: int,
    n_burn: int,
    n_bars: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One path: `zf`, `zc` (burn + bars × m sub-steps, N) correlated standard normals; `fw` = φ, χ, σ_f, σ_c,
    α_0, α_n, α_p, β, μ. A stop jump J moves the price by J: `permanent` × J moves the fundamental value with
    it (no misalignment), the rest is a dislocation that decays by the factor `rebound` a sub-step. Returns per
    bar and symbol, in real log units relative to the start (x = s_i p_i),
    open, high, low, close, the sum of squared sub-step moves and the fired stop size (fraction of daily volume).
    `dist` (N, levels): log distances of the stop levels below the trailing high; no stops when it has no
    columns or q_level is 0."""
    phi, chi, sf, sc, a0, an, ap, beta, mu = fw[0], fw[1], fw[2], fw[3], fw[4], fw[5], fw[6], fw[7], fw[8]
    n_sym = zf.shape[1]
    n_lev = dist.shape[1]
    p = np.zeros(n_sym)  # FW log price net of the stops' transient dislocation
    fund = np.zeros(n_sym)  # log fundamental value p*: moved only by the permanent share of stop impact
    dis = np.zeros(n_sym)  # transient dislocation from fired stops (≤ 0); the observed log price is p + dis
    ring = np.zeros((k, n_sym))  # p at the last k sub-steps: the chartists' one-day signal
    pos = 0
    nf = 0.5
    inv_k = 1.0 / k
    sq_k = np.sqrt(inv_k)
    high_mark = np.zeros(n_sym)
    armed = np.ones((n_sym, n_lev), dtype=np.bool_)
    p0 = np.zeros(n_sym)
    o = np.empty((n_bars, n_sym))
    h = np.empty((n_bars, n_sym))
    lo = np.empty((n_bars, n_sym))
    c = np.empty((n_bars, n_sym))
    rv2 = np.zeros((n_bars, n_sym))
    fired = np.zeros((n_bars, n_sym))
    n_steps = n_burn + n_bars * m
    for s in range(n_steps):
        if s % k == 0:  # FW's daily revision of the population from yesterday's state
            pbar = 0.0
            for i in range(n_sym):
                pbar += p[i] + dis[i] - fund[i]
            pbar /= n_sym
            a = a0 + an * (2.0 * nf - 1.0) + ap * pbar * pbar
            nf = 1.0 / (1.0 + np.exp(-beta * a))
        nc = 1.0 - nf
        if s == n_burn:  # the path starts here: prices relative to this point, stops at the current high
            for i in range(n_sym):
                p0[i] = p[i] + dis[i]
                high_mark[i] = 0.0
        active = s >= n_burn
        b = (s - n_burn) // m if active else 0
        first = active and (s - n_burn) % m == 0
        sig_model = mu * np.sqrt((nf * sf) ** 2 + (nc * sc) ** 2)  # prevailing daily vol, model units
        for i in range(n_sym):
            seen = p[i] + dis[i]  # agents trade on the observed price
            trend = seen - ring[pos, i]
            ring[pos, i] = seen
            x_before = scale[i] * (seen - p0[i])
            if first:
                o[b, i] = x_before
                h[b, i] = x_before
                lo[b, i] = x_before
            p[i] += mu * inv_k * (nf * phi * (fund[i] - seen) + nc * chi * trend) + mu * sq_k * (
                nf * sf * zf[s, i] + nc * sc * zc[s, i]
            )
            dis[i] *= rebound
            if not active:
                continue
            x = scale[i] * (p[i] + dis[i] - p0[i])
            if n_lev > 0 and q_level > 0.0:
                # the trailing high follows new highs at once and decays towards the price after a fall
                high_mark[i] = max(x, high_mark[i] - (high_mark[i] - x) * trail_decay)
                for j in range(n_lev):  # refill: a level is placed again once the price is back above it
                    if not armed[i, j] and x - (high_mark[i] - dist[i, j]) >= dist[i, 0]:
                        armed[i, j] = True
                # The levels a sub-step fires are one sell metaorder of size Q: the square-root law gives it the
                # total impact Y σ √(Q/V) (concave), so the level that fires after q_cum has already sold moves the
                # price by Y σ (√(q_cum + q) − √q_cum). Nearest level first: each fill can take the price through
                # the next one.
                y_sig = impact_y * scale[i] * sig_model
                q_cum = 0.0
                for j in range(n_lev):
                    if armed[i, j] and x < high_mark[i] - dist[i, j]:
                        armed[i, j] = False
                        jump = y_sig * (np.sqrt(q_cum + q_level) - np.sqrt(q_cum))
                        q_cum += q_level
                        x -= jump
                        p[i] -= permanent * jump / scale[i]
                        fund[i] -= permanent * jump / scale[i]
                        dis[i] -= (1.0 - permanent) * jump / scale[i]
                        fired[b, i] += q_level
                        lo[b, i] = min(lo[b, i], x)
            h[b, i] = max(h[b, i], x)
            lo[b, i] = min(lo[b, i], x)
            rv2[b, i] += (x - x_before) ** 2
            c[b, i] = x
        pos = (pos + 1) % k
    return o, h, lo, c, rv2, fired


@njit(cache=True)
def _ewma(values: np.ndarray, alpha: float, start: np.ndarray) -> np.ndarray:
    """Causal EWMA down the rows of a (T, N) array, starting from `start` (the normal level)."""
    out = np.empty_like(values)
    level = start.copy()
    for t in range(values.shape[0]):
        level = (1.0 - alpha) * level + alpha * values[t]
        out[t] = level
    return out


def _fw(params: PanicSection) -> np.ndarray:
    return np.array(
        [
            params.phi,
            params.chi,
            params.sigma_f,
            params.sigma_c,
            params.alpha_0,
            params.alpha_n,
            params.alpha_p,
            params.beta,
            params.mu,
        ]
    )


def _reference_vol(params: PanicSection, k: int, dist: np.ndarray, q_level: float) -> float:
    rng = np.random.default_rng(REFERENCE_SEED)
    n = (params.burn_in_days + REFERENCE_DAYS) * k
    zf, zc = rng.standard_normal((n, 1)), rng.standard_normal((n, 1))
    _, _, _, close, _, _ = _simulate(
        zf, zc, _fw(params), np.ones(1), dist[None, :], q_level, *_stop_dynamics(params, k), k, k,
        params.burn_in_days * k, REFERENCE_DAYS,
    )  # fmt: skip
    return float(np.diff(close[:, 0]).std(ddof=1))


def _stop_dynamics(params: PanicSection, k: int) -> tuple[float, float, float, float]:
    """Y, the trailing high's decay, the permanent share and the dislocation's decay, per sub-step."""
    rebound = 0.5 ** (1.0 / (params.stop_rebound_days * k))
    return params.stop_impact_y, 1.0 / (params.stop_trail_days * k), params.stop_permanent_share, rebound


@lru_cache(maxsize=32)
def model_scale(params: PanicSection, k: int) -> tuple[np.ndarray, float, float]:
    """The stop levels in model units, the size of a level (fraction of daily volume) and the model's daily
    volatility in model units with the stops. Two long reference runs (fixed seed, one asset) at the paths' own
    sub-stepping, so the scale to real volatility does not depend on the caller's seed: the first (no stops)
    gives σ_FW, the unit of the stop distances; the second (with them) the total daily volatility that each
    symbol's realised one is mapped onto. In model units every symbol then has the same dynamics."""
    sigma_fw = _reference_vol(params, k, np.empty(0), 0.0)
    if params.stop_book_fraction == 0:
        return np.empty(0), 0.0, sigma_fw
    dist = sigma_fw * np.linspace(params.stop_min_distance, params.stop_max_distance, params.stop_levels)
    q_level = params.stop_book_fraction / params.stop_levels
    return dist, q_level, _reference_vol(params, k, dist, q_level)


def _daily(bars: pl.DataFrame) -> pl.DataFrame:
    """Per symbol and UTC day: last close, summed volume and the daily log return (first and last day may be partial)."""
    return (
        bars.sort("symbol", "ts")
        .group_by("symbol", pl.col("ts").dt.truncate("1d").alias("day"), maintain_order=True)
        .agg(pl.col("close").last(), pl.col("volume").sum())
        .with_columns(pl.col("close").log().diff().over("symbol").alias("r"))
    )


def calibrate(bars: pl.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From the experiment's bars: symbols, start prices (last close), daily volume level (median of the last
    VOLUME_DAYS days), realised daily log-return volatility and the correlation matrix of daily log returns on
    the days all symbols trade (identity with fewer than MIN_COMMON_DAYS of them)."""
    if bars.is_empty():
        raise ValueError("panic_market needs the experiment's bars to calibrate on; got none")
    symbols = sorted(bars["symbol"].unique().to_list())
    daily = _daily(bars)
    last = bars.sort("ts").group_by("symbol").agg(pl.col("close").last())
    start = np.array([last.filter(pl.col("symbol") == s)["close"][0] for s in symbols])
    vol, volume = [], []
    for s in symbols:
        d = daily.filter(pl.col("symbol") == s)
        r = d["r"].drop_nulls().drop_nans()
        if r.len() < 2:
            raise ValueError(f"panic_market: {s} has fewer than 3 days of bars; its volatility is unknowable")
        vol.append(float(r.std(ddof=1)))  # type: ignore[arg-type]
        volume.append(float(d["volume"].tail(VOLUME_DAYS).median()))  # type: ignore[arg-type]
    wide = daily.pivot(on="symbol", index="day", values="r").drop_nulls()
    corr = np.eye(len(symbols))
    if len(symbols) > 1 and wide.height >= MIN_COMMON_DAYS:
        corr = np.corrcoef(wide.select(symbols).to_numpy(), rowvar=False)
        # nearest positive definite matrix (clip eigenvalues) so that Cholesky exists
        w, v = np.linalg.eigh(corr)
        corr = (v * np.clip(w, 1e-6, None)) @ v.T
        unit = np.sqrt(np.diag(corr))
        corr = corr / np.outer(unit, unit)
    return symbols, start, np.array(volume), np.array(vol), corr


def _bars_of(duration: str, bar: dt.timedelta) -> int:
    """A duration in bars, at least one (a '1d' window is one bar at 1d)."""
    return max(1, round(parse_duration(duration) / bar))


def panic_market(
    bars: pl.DataFrame, timeframe: str, params: PanicSection, *, seed: int, n_paths: int
) -> list[StressPath]:
    """`n_paths` panic-market paths for the symbols of `bars`, starting the bar after its last bar, each
    `params.horizon` long. Path j draws from the random stream (seed, j) only: the same seed gives the same paths,
    and a path does not depend on how many others are drawn."""
    bar = timeframe_delta(timeframe)
    if DAY % bar:
        raise ValueError(f"panic_market needs a timeframe that divides a day, got {timeframe}")
    per_day = DAY // bar
    m = params.substeps_per_bar
    k = per_day * m
    n_bars = _bars_of(params.horizon, bar)
    n_burn = params.burn_in_days * k
    symbols, start, volume, vol, corr = calibrate(bars)
    n_sym = len(symbols)
    fw = _fw(params)
    target = params.vol_multiplier * vol
    unit_dist, q_level, sigma_model = model_scale(params, k)
    scale = target / sigma_model
    dist = np.outer(scale, unit_dist)  # (N, levels), real log distances
    chol = np.linalg.cholesky(corr)
    normal_bar_vol = target / np.sqrt(per_day)  # log-return std of a bar in normal times
    normal_bar_volume = volume / per_day
    alpha = 1.0 - 0.5 ** (1.0 / _bars_of(params.liquidity_halflife, bar))
    bear_window = _bars_of(params.bear_vol_window, bar)
    last_ts = bars["ts"].max()
    assert isinstance(last_ts, dt.datetime)
    ts = pl.datetime_range(last_ts + bar, last_ts + bar * n_bars, bar, eager=True, time_zone="UTC").cast(TS_DTYPE)
    n_steps = n_burn + n_bars * m

    paths = []
    for j in range(n_paths):
        rng = np.random.default_rng([seed, j])
        zf = rng.standard_normal((n_steps, n_sym)) @ chol.T
        zc = rng.standard_normal((n_steps, n_sym)) @ chol.T
        o, h, lo, c, rv2, fired = _simulate(
            zf, zc, fw, scale, dist, q_level, *_stop_dynamics(params, k), k, m, n_burn, n_bars
        )
        rv_ratio = np.sqrt(rv2) / normal_bar_vol
        bar_volume = normal_bar_volume * rv_ratio + fired * volume
        log_start = np.log(start)
        frame = pl.DataFrame(
            {
                "symbol": np.repeat(np.array(symbols, dtype=object), n_bars).tolist(),
                "ts": pl.concat([ts] * n_sym),
                "open": np.exp(log_start + o).T.ravel(),
                "high": np.exp(log_start + h).T.ravel(),
                "low": np.exp(log_start + lo).T.ravel(),
                "close": np.exp(log_start + c).T.ravel(),
                "volume": bar_volume.T.ravel(),
            }
        ).select(RAW_COLUMNS)
        frame = frame.cast(RAW_SCHEMA)  # type: ignore[arg-type]

        ewm_var = _ewma(rv2, alpha, normal_bar_vol**2)
        ewm_fired = _ewma(fired * per_day, alpha, np.zeros(n_sym))  # fired / normal bar volume
        spread = np.clip(np.sqrt(ewm_var) / normal_bar_vol, 1.0, params.max_multiplier)
        impact = np.clip(1.0 + params.depth_k * ewm_fired, 1.0, params.max_multiplier)
        multipliers = frame.select("symbol", "ts").with_columns(
            pl.Series("spread_mult", spread.T.ravel()), pl.Series("impact_mult", impact.T.ravel())
        )

        # high-vol bear: the equal-weight market below its running high by more than bear_drawdown, with its
        # trailing realised variance (mean over symbols of the sub-step variance) above the path's median
        market = c.mean(axis=1)
        drawdown = 1.0 - np.exp(market - np.maximum.accumulate(np.maximum(market, 0.0)))
        var = rv2.mean(axis=1)
        csum = np.concatenate([[0.0], np.cumsum(var)])
        idx = np.arange(n_bars)
        trailing = (csum[idx + 1] - csum[np.maximum(idx + 1 - bear_window, 0)]) / np.minimum(idx + 1, bear_window)
        hvb = (drawdown > params.bear_drawdown) & (trailing > np.median(trailing))
        high_vol_bear = pl.DataFrame({"ts": ts, "high_vol_bear": hvb})

        n_fired = int(np.count_nonzero(fired))
        paths.append(
            StressPath(
                scenario=SCENARIO,
                seed=seed,
                path_id=j,
                bars=frame,
                high_vol_bear=high_vol_bear,
                multipliers=multipliers,
                note=(
                    f"Franke-Westerhoff (2012) DCA-HPM market, {k} sub-steps a day, shared herding, noise "
                    f"correlated as the experiment's daily returns; stop book {params.stop_book_fraction:g} × daily "
                    f"volume over {params.stop_levels if q_level else 0} levels; {n_fired} symbol-bars with fired "
                    f"stops; {int(hvb.sum())} high-vol bear bars"
                ),
            )
        )
    return paths
