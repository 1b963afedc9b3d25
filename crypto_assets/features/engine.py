"""Causal technical and cross-asset features from long-format bars (DESIGN §3.5, §3.8).

Input: long bars `symbol, ts, open, high, low, close, volume` (+ optional flag columns, ignored), `ts` =
bar open time in UTC, each symbol on a regular grid of `timeframe` with no holes (the bars stage fills
exchange gaps). Symbols may list mid-sample: a symbol simply has no rows before its first bar.

Output: one row per input bar, `symbol, ts, <FEATURE_COLUMNS>`, sorted by (symbol, ts), all Float64.

Timing: the value at row (symbol, t) uses bars with ts ≤ t only — the close of bar t included, which is
exactly the information a weight decided at the close of t may use (DESIGN §3.3). Nothing is centred,
back-filled or normalised with future data.

Naming scheme: `<family>_<param>[_<param>...]`, parameters in the order the family's definition takes
them, windows and horizons counted in bars of the input timeframe (so `logret_24` is one day on 1h bars
and six hours on 15m bars); a non-integer multiplier is written with `p` for the dot (2.5σ → `2p5`).
Cross-asset features name the benchmark between family and parameters (`rel_ret_btc_24`).

Columns (P = periods_per_year(timeframe); "from" = first valid bar, 0-based within the symbol):

- `logret_h` = ln(close_t / close_{t−h}); `ret_h` = close_t / close_{t−h} − 1.  From h.
- `rvol_w` = std(logret_1 over the last w bars, ddof=1) × √P, annualised.  From w.
- `rsi_n`: Wilder RSI in 0–100, 100·G / (G + L) with G, L = EWM(α = 1/n) of gains / losses; 50 when
  G + L = 0 (flat).  From n.
- `macd_f_s_g` = (EMA_f − EMA_s)(close) / close_t, EMAs with α = 2/(span+1).  From s − 1.
  `macd_signal_f_s_g` = EMA_g(EMA_f − EMA_s) / close_t; `macd_hist_f_s_g` = macd − signal.  From s + g − 2.
- `bb_pctb_w_k` = (close − lower) / (upper − lower), bands SMA_w ± k·σ_w (σ with ddof=0, as Bollinger);
  0.5 when σ = 0.  `bb_width_w_k` = (upper − lower) / SMA_w.  From w − 1.
- `atr_n` = Wilder ATR (EWM α = 1/n of the true range) / close_t; the first true range is high − low.
  From n − 1.
- `volume_z_w` = z-score of ln(1 + volume) against its last w values (t included, ddof=1); 0 when they
  are all equal.  From w − 1.
- `amihud_w` = mean over the last w bars of |ret_1| / (close·volume) × 1e6 (per million quote units);
  zero-volume bars are skipped.  From w.
- `hour_sin`, `hour_cos` = sin/cos(2π·(hour + minute/60)/24) and `dow_sin`, `dow_cos` =
  sin/cos(2π·weekday/7) (Monday = 0) of the bar open time in UTC.  From 0.
- `rel_ret_btc_h` = logret_h − the benchmark's logret_h at the same ts; null where it has no bar.  From h.
- `corr_btc_w`, `beta_btc_w` = rolling correlation and beta (cov / var_benchmark) of logret_1 with the
  benchmark's over the last w bars where both exist; null if either is flat.  From w.

Warm-up: every feature is null on each symbol's first bars until its window is full ("first valid bar"
is the 0-based bar index within the symbol); exponential smoothers (RSI, MACD, ATR) are seeded with the
symbol's first value (not an SMA) and reported from `min_periods` = their period / span on. The seed's
weight after k bars is (1 − α)^k, so values just past the null warm-up still depend slightly on where the
history starts (≈1e-4 relative on the MACD signal at bar 168): a caller that reads a lookback should read
`warmup_bars(ewm_tolerance=1e-10)` bars (404 with the defaults) to match a full-history run to ~1e-10.
Cross-asset features are also null while the benchmark is in its own warm-up or has no bar.

Benchmark ("BTC"): the symbol whose base currency (before "/") is `FeatureSpec.benchmark_base`; with
several, or none, the one with the earliest first bar (ties: alphabetical). "Earliest first bar" rather
than "first in the list" so that truncating history can never change which symbol is the benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import polars as pl

from crypto_assets.timeframes import periods_per_year, timeframe_delta

BAR_COLUMNS: Final[tuple[str, ...]] = ("symbol", "ts", "open", "high", "low", "close", "volume")
AMIHUD_SCALE: Final[float] = 1e6  # |return| per million quote units: keeps values O(1e-5..1) for ML


@dataclass(frozen=True)
class FeatureSpec:
    """Parameters of the feature set, all in bars of the input timeframe (see the module docstring)."""

    return_horizons: tuple[int, ...] = (1, 4, 24)
    rvol_windows: tuple[int, ...] = (24, 168)
    rsi_period: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    bb_window: int = 20
    bb_k: float = 2.0
    atr_period: int = 14
    volume_z_window: int = 24
    amihud_window: int = 24
    rel_ret_horizon: int = 24
    corr_window: int = 168
    benchmark_base: str = "BTC"

    def __post_init__(self) -> None:
        windows = [
            *self.return_horizons, *self.rvol_windows, self.rsi_period, self.macd_fast, self.macd_slow,
            self.macd_signal, self.bb_window, self.atr_period, self.volume_z_window, self.amihud_window,
            self.rel_ret_horizon, self.corr_window,
        ]  # fmt: skip
        if any(w < 1 for w in windows):
            raise ValueError(f"feature windows must be ≥ 1 bar: {self}")
        if min(*self.rvol_windows, self.volume_z_window, self.corr_window) < 2:
            raise ValueError("standard-deviation windows need at least 2 bars")
        if self.macd_fast >= self.macd_slow or self.bb_k <= 0:
            raise ValueError("need macd_fast < macd_slow and bb_k > 0")


DEFAULT_SPEC: Final[FeatureSpec] = FeatureSpec()


def _fmt(x: float) -> str:
    """2.0 → '2', 2.5 → '2p5': parameters in names without dots (dots break SQL identifiers)."""
    return f"{x:g}".replace(".", "p").replace("-", "m")


def _bench(spec: FeatureSpec) -> str:
    return spec.benchmark_base.lower()


def feature_warmups(spec: FeatureSpec = DEFAULT_SPEC) -> dict[str, int]:
    """Feature column → its warm-up: the 0-based index, within a symbol, of its first non-null bar
    (before that the value is null). Ordered as the output columns."""
    f, s, g = spec.macd_fast, spec.macd_slow, spec.macd_signal
    macd = f"{f}_{s}_{g}"
    bb = f"{spec.bb_window}_{_fmt(spec.bb_k)}"
    b = _bench(spec)
    out: dict[str, int] = {}
    out.update({f"logret_{h}": h for h in spec.return_horizons})
    out.update({f"ret_{h}": h for h in spec.return_horizons})
    out.update({f"rvol_{w}": w for w in spec.rvol_windows})
    out[f"rsi_{spec.rsi_period}"] = spec.rsi_period
    out[f"macd_{macd}"] = s - 1
    out[f"macd_signal_{macd}"] = s + g - 2
    out[f"macd_hist_{macd}"] = s + g - 2
    out[f"bb_pctb_{bb}"] = spec.bb_window - 1
    out[f"bb_width_{bb}"] = spec.bb_window - 1
    out[f"atr_{spec.atr_period}"] = spec.atr_period - 1
    out[f"volume_z_{spec.volume_z_window}"] = spec.volume_z_window - 1
    out[f"amihud_{spec.amihud_window}"] = spec.amihud_window
    out.update({"hour_sin": 0, "hour_cos": 0, "dow_sin": 0, "dow_cos": 0})
    out[f"rel_ret_{b}_{spec.rel_ret_horizon}"] = spec.rel_ret_horizon
    out[f"corr_{b}_{spec.corr_window}"] = spec.corr_window
    out[f"beta_{b}_{spec.corr_window}"] = spec.corr_window
    return out


def feature_columns(spec: FeatureSpec = DEFAULT_SPEC) -> list[str]:
    """The feature columns `compute_features` emits after `symbol, ts`, in order."""
    return list(feature_warmups(spec))


def warmup_bars(spec: FeatureSpec = DEFAULT_SPEC, *, ewm_tolerance: float | None = None) -> int:
    """The longest warm-up in bars: read at least this many bars of lookback before the first bar you
    need features for, and every feature is non-null there (given the benchmark has that history too).

    With `ewm_tolerance`, also long enough for the exponential smoothers to forget their seed: the
    seed's weight (1 − α)^k falls below the tolerance, so values agree with a run over a longer
    history to about that relative precision (a lookback of `warmup_bars()` alone leaves ~1e-4 relative
    on the MACD signal, ~5e-6 on RSI 14; `ewm_tolerance=1e-10` asks for 404 bars with the defaults)."""
    bars = max(feature_warmups(spec).values())
    if ewm_tolerance is None:
        return bars

    def forget(alpha: float) -> int:  # smallest k with (1 − α)^k ≤ tolerance
        return math.ceil(math.log(ewm_tolerance) / math.log1p(-alpha))

    if not 0.0 < ewm_tolerance < 1.0:
        raise ValueError(f"ewm_tolerance must be in (0, 1), got {ewm_tolerance}")
    rsi = forget(1.0 / spec.rsi_period)
    atr = forget(1.0 / spec.atr_period)
    # The signal line smooths the MACD line, which itself carries the slow EMA's seed: add both.
    macd = forget(2.0 / (spec.macd_slow + 1)) + forget(2.0 / (spec.macd_signal + 1))
    return max(bars, rsi, atr, macd)


FEATURE_COLUMNS: Final[tuple[str, ...]] = tuple(feature_columns())


def pick_benchmark(bars: pl.DataFrame, base: str = "BTC") -> str | None:
    """The benchmark symbol (see module docstring): base currency `base` if any, earliest first bar,
    ties alphabetical. None for an empty frame."""
    firsts = (
        bars.group_by("symbol")
        .agg(pl.col("ts").min().alias("first"))
        .with_columns(is_base=pl.col("symbol").str.split("/").list.first().str.to_uppercase() == base.upper())
    )
    if firsts.height == 0:
        return None
    ranked = firsts.sort(["is_base", "first", "symbol"], descending=[True, False, False])
    return str(ranked["symbol"][0])


def validate_bars(bars: pl.DataFrame, timeframe: str, columns: tuple[str, ...] = BAR_COLUMNS) -> pl.DataFrame:
    """`columns` of `bars` (which must include `symbol`, `ts`, `close`), prices as Float64 and `ts` as
    UTC microseconds, sorted by (symbol, ts), after checking the contract every rolling window here
    relies on: one bar per grid step per symbol with no holes or duplicates (a window of w rows must be
    w bars of time), non-null values and close > 0. Raises ValueError naming the first offending row."""
    missing = [c for c in columns if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack columns {missing}; need {list(columns)}")
    step = timeframe_delta(timeframe)
    ts_dtype = bars.schema["ts"]
    if not isinstance(ts_dtype, pl.Datetime):
        raise ValueError(f"bars.ts must be a Datetime, got {ts_dtype}")
    # Naive timestamps are taken as UTC (RAW_SCHEMA is UTC-aware, so this only helps notebooks).
    ts = pl.col("ts").dt.convert_time_zone("UTC") if ts_dtype.time_zone else pl.col("ts").dt.replace_time_zone("UTC")
    values = [c for c in columns if c not in ("symbol", "ts")]
    frame = bars.select(
        pl.col("symbol").cast(pl.String), ts.dt.cast_time_unit("us"), *(pl.col(c).cast(pl.Float64) for c in values)
    ).sort("symbol", "ts")
    bad = frame.filter(
        pl.any_horizontal(pl.col(values).is_null()) | (pl.col("close") <= 0) | pl.col("symbol").is_null()
    )
    if bad.height:
        raise ValueError(f"bars need non-null {values} and close > 0; first bad row: {bad.row(0, named=True)}")
    gaps = frame.with_columns(dt=pl.col("ts").diff().over("symbol")).filter(
        pl.col("dt").is_not_null() & (pl.col("dt") != step)
    )
    if gaps.height:
        row = gaps.row(0, named=True)
        raise ValueError(
            f"bars must be on a regular {timeframe} grid per symbol with one bar per step (fill gaps upstream); "
            f"{row['symbol']} at {row['ts']} follows the previous bar by {row['dt']}"
        )
    return frame


def compute_features(
    bars: pl.DataFrame,
    timeframe: str = "1h",
    *,
    spec: FeatureSpec = DEFAULT_SPEC,
    benchmark: str | None = None,
) -> pl.DataFrame:
    """Causal features of long bars: `symbol, ts, *feature_columns(spec)`, one row per input bar.

    `timeframe` fixes the grid step that is validated and the √P that annualises `rvol_*`. `benchmark`
    overrides the cross-asset benchmark symbol (default: `pick_benchmark`). Definitions, naming, warm-up
    and timing are in the module docstring. Raises ValueError if the bars are not on a regular grid per
    symbol, have duplicate bars, or have null prices.
    """
    frame = validate_bars(bars, timeframe)
    warm = feature_warmups(spec)
    columns = list(warm)  # = feature_columns(spec)
    if frame.height == 0:
        return pl.DataFrame(
            schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC"), **dict.fromkeys(columns, pl.Float64)}
        )
    bench = benchmark if benchmark is not None else pick_benchmark(frame, spec.benchmark_base)
    if bench not in set(frame["symbol"].unique().to_list()):
        raise ValueError(f"benchmark {bench!r} has no bars; symbols: {sorted(frame['symbol'].unique().to_list())}")
    ann = math.sqrt(periods_per_year(timeframe))
    sym = "symbol"
    close, lc = pl.col("close"), pl.col("_lc")
    i = pl.col("_i")

    def lag(e: pl.Expr, n: int) -> pl.Expr:
        # Frames are sorted by symbol, so a plain shift is the in-symbol shift except on each symbol's
        # first n rows, which are masked: exact, and cheaper than a windowed shift.
        return pl.when(i >= n).then(e.shift(n))

    # Stage 1: per-bar building blocks (log close, 1-bar moves) with each symbol's first bar masked.
    lf = frame.lazy().with_columns(_i=pl.int_range(pl.len(), dtype=pl.Int32).over(sym), _lc=close.log())
    lf = lf.with_columns(_prev=lag(close, 1), _lr1=lc - lag(lc, 1), _lv=pl.col("volume").log1p())
    prev = pl.col("_prev")
    lf = lf.with_columns(
        _gain=(close - prev).clip(lower_bound=0.0),  # null on the first bar: no move yet
        _loss=(prev - close).clip(lower_bound=0.0),
        # max_horizontal skips nulls, so the first bar's true range is high − low (Wilder).
        _tr=pl.max_horizontal(
            pl.col("high") - pl.col("low"), (pl.col("high") - prev).abs(), (pl.col("low") - prev).abs()
        ),
        # Amihud's per-bar ratio; a zero-volume (filled) bar has no price impact to measure: null.
        _illiq=pl.when(close * pl.col("volume") > 0).then(
            (close / prev - 1.0).abs() / (close * pl.col("volume")) * AMIHUD_SCALE
        ),
    )

    # Stage 2: the features. Rolling windows and EWMs run `.over(symbol)` so that each symbol's numbers
    # depend on its own history only (bit-identical under truncation of any other symbol).
    f, s, g = spec.macd_fast, spec.macd_slow, spec.macd_signal
    macd_id = f"{f}_{s}_{g}"
    b = _bench(spec)
    lr1 = pl.col("_lr1")
    exprs: dict[str, pl.Expr] = {}
    for h in spec.return_horizons:
        exprs[f"logret_{h}"] = lc - lag(lc, h)
        exprs[f"ret_{h}"] = close / lag(close, h) - 1.0
    for w in spec.rvol_windows:
        exprs[f"rvol_{w}"] = lr1.rolling_std(w, min_samples=w).over(sym) * ann
    n = spec.rsi_period
    avg_gain = pl.col("_gain").ewm_mean(alpha=1.0 / n, adjust=False, min_samples=n).over(sym)
    avg_loss = pl.col("_loss").ewm_mean(alpha=1.0 / n, adjust=False, min_samples=n).over(sym)
    exprs[f"rsi_{n}"] = (
        pl.when(avg_gain + avg_loss > 0)
        .then(100.0 * avg_gain / (avg_gain + avg_loss))
        .otherwise(
            pl.when(avg_gain.is_not_null()).then(50.0)  # flat window: neither overbought nor oversold
        )
    )
    exprs["_macd_raw"] = close.ewm_mean(span=f, adjust=False, min_samples=f).over(sym) - close.ewm_mean(
        span=s, adjust=False, min_samples=s
    ).over(sym)
    bw, k = spec.bb_window, spec.bb_k
    bb_id = f"{bw}_{_fmt(k)}"
    mid = close.rolling_mean(bw, min_samples=bw).over(sym)
    sd = close.rolling_std(bw, min_samples=bw, ddof=0).over(sym)  # Bollinger uses the population σ
    exprs[f"bb_pctb_{bb_id}"] = (
        pl.when(sd > 0)
        .then((close - (mid - k * sd)) / (2.0 * k * sd))
        .otherwise(
            pl.when(sd.is_not_null()).then(0.5)  # zero-width bands: close sits on the middle band
        )
    )
    exprs[f"bb_width_{bb_id}"] = 2.0 * k * sd / mid
    a = spec.atr_period
    exprs[f"atr_{a}"] = pl.col("_tr").ewm_mean(alpha=1.0 / a, adjust=False, min_samples=a).over(sym) / close
    vw = spec.volume_z_window
    lv = pl.col("_lv")
    lv_mean = lv.rolling_mean(vw, min_samples=vw).over(sym)
    lv_sd = lv.rolling_std(vw, min_samples=vw).over(sym)
    exprs[f"volume_z_{vw}"] = (
        pl.when(lv_sd > 0).then((lv - lv_mean) / lv_sd).otherwise(pl.when(lv_sd.is_not_null()).then(0.0))
    )
    aw = spec.amihud_window
    # min_samples=1 lets zero-volume bars drop out of the mean; the row mask below enforces the window.
    exprs[f"amihud_{aw}"] = pl.col("_illiq").rolling_mean(aw, min_samples=1).over(sym)
    ts_utc = pl.col("ts")
    hour = (ts_utc.dt.hour().cast(pl.Float64) + ts_utc.dt.minute().cast(pl.Float64) / 60.0) * (2.0 * math.pi / 24.0)
    dow = (ts_utc.dt.weekday().cast(pl.Float64) - 1.0) * (2.0 * math.pi / 7.0)  # polars: Monday = 1
    exprs.update(hour_sin=hour.sin(), hour_cos=hour.cos(), dow_sin=dow.sin(), dow_cos=dow.cos())
    lf = lf.with_columns(**exprs)

    # Stage 3: MACD signal (an EMA of the MACD line), and the benchmark's returns joined on ts.
    macd_raw = pl.col("_macd_raw")
    signal_raw = macd_raw.ewm_mean(span=g, adjust=False, min_samples=g).over(sym)
    rh = spec.rel_ret_horizon
    bench_lf = lf.filter(pl.col(sym) == bench).select(
        "ts", _b_lr1=lr1, _b_lrh=pl.col(f"logret_{rh}") if rh in spec.return_horizons else lc - lag(lc, rh)
    )
    own_lrh = pl.col(f"logret_{rh}") if rh in spec.return_horizons else lc - lag(lc, rh)
    lf = lf.with_columns(
        **{
            f"macd_{macd_id}": macd_raw / close,
            f"macd_signal_{macd_id}": signal_raw / close,
            f"macd_hist_{macd_id}": (macd_raw - signal_raw) / close,
        },
        _own_lrh=own_lrh,
    ).join(bench_lf, on="ts", how="left", maintain_order="left")

    # Stage 4: cross-asset. Pairs where either return is missing are dropped from both sides so the
    # moments are over the same bars; population moments from rolling means (ddof cancels in corr/beta).
    cw = spec.corr_window
    both = lr1.is_not_null() & pl.col("_b_lr1").is_not_null()
    x = pl.when(both).then(lr1)
    y = pl.when(both).then(pl.col("_b_lr1"))

    def rmean(e: pl.Expr) -> pl.Expr:
        return e.rolling_mean(cw, min_samples=cw).over(sym)

    lf = lf.with_columns(_mx=rmean(x), _my=rmean(y), _mxy=rmean(x * y), _mxx=rmean(x * x), _myy=rmean(y * y))
    mx, my = pl.col("_mx"), pl.col("_my")
    cov = pl.col("_mxy") - mx * my
    vx = pl.col("_mxx") - mx * mx
    vy = pl.col("_myy") - my * my
    lf = lf.with_columns(
        **{
            f"rel_ret_{b}_{rh}": pl.col("_own_lrh") - pl.col("_b_lrh"),
            f"corr_{b}_{cw}": pl.when((vx > 0) & (vy > 0)).then((cov / (vx * vy).sqrt()).clip(-1.0, 1.0)),
            f"beta_{b}_{cw}": pl.when(vy > 0).then(cov / vy),
        }
    )

    # Stage 5: explicit warm-up mask — null until the window is full, whatever the expression did.
    out = lf.select(
        pl.col(sym),
        pl.col("ts"),
        *(pl.when(i >= warm[c]).then(pl.col(c)).cast(pl.Float64).alias(c) for c in columns),
    )
    return out.collect()
