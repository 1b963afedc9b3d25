"""Causal market-regime labels, safe to use as model features (DESIGN §3.5).

Every label at (symbol, t) uses that symbol's closes with ts ≤ t only (trailing windows, no centring, no
full-sample statistics), so it can be computed in `features[month]` and fed to a model. Contrast
`crypto_assets.regimes.ex_post`, which looks at the whole sample and is for reporting only.

Columns (windows in bars of the input timeframe, defaults in `RegimeSpec`):

- `vol_regime` ("high" / "low") and `vol_regime_code` (1 / 0): trailing realized volatility
  σ_t = std(logret_1 over the last `vol_window` bars, ddof=1) against its own trailing median over the
  last `vol_median_window` values of σ: high when σ_t > median. First valid bar (0-based, per symbol):
  `vol_window + vol_median_window − 1`.
- `trend_regime` ("bull" / "bear" / "chop") and `trend_regime_code` (1 / −1 / 0): bull when
  close_t > SMA_slow·(1 + band) and SMA_fast > SMA_slow; bear when close_t < SMA_slow·(1 − band) and
  SMA_fast < SMA_slow; chop otherwise (inside the ±band around the slow average, or the averages
  disagree with the price). First valid bar: `trend_slow − 1`.

Labels are null during warm-up, never back-filled. `regime_warmup_bars()` is the longest warm-up; the
defaults (503 bars ≈ 21 days at 1h) fit in the features stage's 30-day lookback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import polars as pl

from crypto_assets.features.engine import validate_bars


@dataclass(frozen=True)
class RegimeSpec:
    """Windows in bars; `chop_band` is a fraction of the slow moving average (0.02 = ±2%)."""

    vol_window: int = 24
    vol_median_window: int = 480
    trend_fast: int = 50
    trend_slow: int = 200
    chop_band: float = 0.02

    def __post_init__(self) -> None:
        if self.vol_window < 2 or self.vol_median_window < 1 or not 1 <= self.trend_fast < self.trend_slow:
            raise ValueError("need vol_window ≥ 2, vol_median_window ≥ 1 and 1 ≤ trend_fast < trend_slow")
        if not 0.0 <= self.chop_band < 1.0:
            raise ValueError(f"chop_band must be in [0, 1), got {self.chop_band}")


DEFAULT_REGIME_SPEC: Final[RegimeSpec] = RegimeSpec()
CAUSAL_REGIME_COLUMNS: Final[tuple[str, ...]] = ("vol_regime", "vol_regime_code", "trend_regime", "trend_regime_code")
VOL_LABELS: Final[dict[int, str]] = {1: "high", 0: "low"}
TREND_LABELS: Final[dict[int, str]] = {1: "bull", -1: "bear", 0: "chop"}


def regime_warmups(spec: RegimeSpec = DEFAULT_REGIME_SPEC) -> dict[str, int]:
    """Column → 0-based index, within a symbol, of its first non-null label."""
    vol = spec.vol_window + spec.vol_median_window - 1
    trend = spec.trend_slow - 1
    return {"vol_regime": vol, "vol_regime_code": vol, "trend_regime": trend, "trend_regime_code": trend}


def regime_warmup_bars(spec: RegimeSpec = DEFAULT_REGIME_SPEC) -> int:
    """Bars of lookback needed before the first bar that should carry both labels."""
    return max(regime_warmups(spec).values())


def causal_regimes(
    bars: pl.DataFrame, timeframe: str = "1h", *, spec: RegimeSpec = DEFAULT_REGIME_SPEC
) -> pl.DataFrame:
    """Causal regime labels `symbol, ts, vol_regime, vol_regime_code, trend_regime, trend_regime_code`
    for long bars (`symbol, ts, close` at least; other columns ignored) on a regular `timeframe` grid
    per symbol, one row per bar, sorted by (symbol, ts). Codes are Int8, labels strings.

    A feature frame (`symbol, ts, logret_1`, no `close`) works too: the price path is rebuilt relative
    to each symbol's first row, exp(Σ logret_1), and every rule here is scale-free (ratios to moving
    averages, volatility of log returns), so the labels match those from the bars themselves."""
    if "close" not in bars.columns:
        if "logret_1" not in bars.columns:
            raise ValueError(f"causal_regimes needs `close` (bars) or `logret_1` (features); got {bars.columns}")
        bars = bars.sort("symbol", "ts").with_columns(
            close=pl.col("logret_1").fill_null(0.0).cum_sum().over("symbol").exp()
        )
    frame = validate_bars(bars, timeframe, ("symbol", "ts", "close"))
    sym = "symbol"
    close = pl.col("close")
    i = pl.int_range(pl.len(), dtype=pl.Int32).over(sym)
    warm = regime_warmups(spec)
    # Per-symbol windows (`over`) so a symbol's labels depend on its own history only.
    lf = frame.lazy().with_columns(_i=i, _lr1=close.log().diff().over(sym))
    lf = lf.with_columns(
        _rv=pl.col("_lr1").rolling_std(spec.vol_window, min_samples=spec.vol_window).over(sym),
        _fast=close.rolling_mean(spec.trend_fast, min_samples=spec.trend_fast).over(sym),
        _slow=close.rolling_mean(spec.trend_slow, min_samples=spec.trend_slow).over(sym),
    )
    lf = lf.with_columns(
        _rv_med=pl.col("_rv").rolling_median(spec.vol_median_window, min_samples=spec.vol_median_window).over(sym)
    )
    fast, slow, band = pl.col("_fast"), pl.col("_slow"), spec.chop_band
    vol_code = pl.when(pl.col("_i") >= warm["vol_regime"]).then((pl.col("_rv") > pl.col("_rv_med")).cast(pl.Int8))
    trend_code = pl.when(pl.col("_i") >= warm["trend_regime"]).then(
        pl.when((close > slow * (1.0 + band)) & (fast > slow))
        .then(pl.lit(1, pl.Int8))
        .when((close < slow * (1.0 - band)) & (fast < slow))
        .then(pl.lit(-1, pl.Int8))
        .otherwise(pl.lit(0, pl.Int8))
    )
    out = lf.select(sym, "ts", vol_regime_code=vol_code, trend_regime_code=trend_code).with_columns(
        vol_regime=pl.col("vol_regime_code").replace_strict(VOL_LABELS, return_dtype=pl.String),
        trend_regime=pl.col("trend_regime_code").replace_strict(TREND_LABELS, return_dtype=pl.String),
    )
    return out.select(sym, "ts", *CAUSAL_REGIME_COLUMNS).collect()
