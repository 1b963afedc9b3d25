"""EX-POST regime labels — FOR REPORTING ONLY. THEY MUST NEVER REACH A MODEL.

These labels are computed from the whole sample: whether bar t is "bull" depends on where the price goes
after t (the next confirmed peak), and "high vol" is judged with a centred window against the full-sample
median. Feeding any of them to a model, a scaler, a signal or a feature frame is look-ahead (DESIGN
§3.5). They exist to slice out-of-sample KPIs by market condition (`regime_kpis`). Every column carries
the `xp_` prefix so that a feature selector can refuse them by name; the causal labels that *may* be
features live in `crypto_assets.regimes.causal`.

Trend (`xp_trend_regime` "bull"/"bear"/"chop", `xp_trend_regime_code` 1/−1/0), per symbol:

1. Turning points, peak-to-trough with threshold θ (default 20%; the classic bull/bear dating rule of
   Pagan & Sossounov 2003 / Lunde & Timmermann 2004 without their duration filters): walking forward,
   a peak is confirmed once the close falls θ below the highest close since the last trough, and a
   trough once it rises θ above the lowest close since the last peak. Between consecutive turning points
   the market is in a bull (trough → peak) or bear (peak → trough) swing, each a move of at least θ.
   The swing in progress at the end of the sample runs to its extreme so far.
2. Chop band c (default 5%): inside a swing, bar t is bull only if the swing still gains more than c
   from t to its peak (peak / close_t − 1 > c), bear only if it still loses more than c to its trough
   (1 − trough / close_t > c); otherwise chop — the flat tops and bottoms where holding barely matters.
3. Bars before the first turning point and after the last extreme moved less than θ: chop.

Volatility (`xp_vol_regime` "high"/"low", `xp_vol_regime_code` 1/0): the centred rolling std of
1-bar log returns over `vol_window` bars (ddof=1) against the symbol's full-sample median of it.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

from crypto_assets.regimes.causal import TREND_LABELS, VOL_LABELS

XP_REGIME_COLUMNS: Final[tuple[str, ...]] = (
    "xp_trend_regime",
    "xp_trend_regime_code",
    "xp_vol_regime",
    "xp_vol_regime_code",
)


def turning_points(close: np.ndarray, threshold: float = 0.2) -> list[int]:
    """Indices of alternating confirmed turning points (peaks and troughs), then the extreme of the
    swing in progress at the end. Empty when the price never moved θ from its start range.

    A sequential scan (O(n), one pass): the state machine cannot be vectorised, and this runs once per
    symbol for reports, never inside a model loop."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    x = close.tolist()  # Python floats: a scalar loop over a list is ~10× faster than over an ndarray
    up, down = 1.0 + threshold, 1.0 - threshold
    points: list[int] = []
    state = 0  # 0 undecided, +1 in a bull swing (tracking its peak), −1 in a bear swing (its trough)
    hi = lo = ext = 0
    for t in range(1, len(x)):
        p = x[t]
        if state == 0:
            if p > x[hi]:
                hi = t
            if p < x[lo]:
                lo = t
            if p >= x[lo] * up:  # rose θ off the low: that low was a trough, a bull swing is on
                points.append(lo)
                state, ext = 1, t
            elif p <= x[hi] * down:  # fell θ off the high: that high was a peak
                points.append(hi)
                state, ext = -1, t
        elif state == 1:
            if p > x[ext]:
                ext = t
            elif p <= x[ext] * down:
                points.append(ext)
                state, ext = -1, t
        else:
            if p < x[ext]:
                ext = t
            elif p >= x[ext] * up:
                points.append(ext)
                state, ext = 1, t
    if state != 0:
        points.append(ext)  # the running swing's extreme: already ≥ θ from the last turning point
    return points


def ex_post_trend_codes(close: np.ndarray, threshold: float = 0.2, chop_band: float = 0.05) -> np.ndarray:
    """Int8 codes per bar (1 bull, −1 bear, 0 chop) for one symbol's closes, see the module docstring."""
    x = np.asarray(close, dtype=np.float64)
    codes = np.zeros(x.size, dtype=np.int8)
    points = turning_points(x, threshold)
    if len(points) < 2:
        return codes
    # For every bar inside a swing [a, b): the value at the swing's end and the swing's direction.
    starts, ends = np.array(points[:-1]), np.array(points[1:])
    lengths = ends - starts
    idx = np.arange(starts[0], ends[-1])
    end_value = np.repeat(x[ends], lengths)
    rising = np.repeat(x[ends] > x[starts], lengths)
    span = x[idx]
    bull = rising & (end_value / span - 1.0 > chop_band)
    bear = ~rising & (1.0 - end_value / span > chop_band)
    codes[idx] = np.where(bull, 1, np.where(bear, -1, 0)).astype(np.int8)
    return codes


def ex_post_regimes(
    bars: pl.DataFrame,
    *,
    threshold: float = 0.2,
    chop_band: float = 0.05,
    vol_window: int = 24,
) -> pl.DataFrame:
    """REPORTING ONLY. `symbol, ts, xp_trend_regime, xp_trend_regime_code, xp_vol_regime,
    xp_vol_regime_code` for long bars with at least `symbol, ts, close` (sorted by symbol, ts on the
    way in; one row per bar). Labels use the full sample (see the module docstring)."""
    if not 0.0 <= chop_band < threshold:
        raise ValueError(f"chop_band must be in [0, threshold), got {chop_band}")
    frame = bars.select("symbol", "ts", pl.col("close").cast(pl.Float64)).sort("symbol", "ts")
    if frame["close"].null_count() or (frame["close"] <= 0).any():
        raise ValueError("ex_post_regimes needs non-null closes > 0")
    # One scan per symbol (a loop over symbols, not rows); the frame is sorted so the codes line up.
    parts = frame.partition_by("symbol", maintain_order=True)
    trend = np.concatenate(
        [ex_post_trend_codes(p["close"].to_numpy(), threshold, chop_band) for p in parts] or [np.zeros(0, np.int8)]
    )
    sym = "symbol"
    rv = pl.col("close").log().diff().over(sym).rolling_std(vol_window, min_samples=2, center=True).over(sym)
    out = frame.with_columns(xp_trend_regime_code=pl.Series(trend, dtype=pl.Int8), _rv=rv).with_columns(
        xp_vol_regime_code=pl.when(pl.col("_rv").is_not_null()).then(
            (pl.col("_rv") > pl.col("_rv").median().over(sym)).cast(pl.Int8)
        )
    )
    out = out.with_columns(
        xp_trend_regime=pl.col("xp_trend_regime_code").replace_strict(TREND_LABELS, return_dtype=pl.String),
        xp_vol_regime=pl.col("xp_vol_regime_code").replace_strict(VOL_LABELS, return_dtype=pl.String),
    )
    return out.select(sym, "ts", *XP_REGIME_COLUMNS)
