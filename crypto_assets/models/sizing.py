"""Turn forecasts (P(up), per-bar vol) into target weights for the backtest engine (DESIGN §3.3).

No torch here: this works on prediction frames from any model.
"""

from __future__ import annotations

import math

import polars as pl

from crypto_assets.baselines import WEIGHT_SCHEMA


def forecast_to_weights(
    preds: pl.DataFrame,
    *,
    target_vol_annual: float,
    periods_per_year: int,
    max_leverage: float,
    allow_short: bool,
    rebalance_every: int = 1,
) -> pl.DataFrame:
    """Long `symbol, ts, weight` target weights, decided at the close of `ts` (executed at the next open).

    `preds`: `symbol, ts, p_up, vol` — P(forward return > 0) and the forecast per-bar volatility of the log
    return (e.g. `TrainedForecaster.predict`). Rule, per (symbol, ts):

        edge       = 2·p_up − 1                                   ∈ [−1, 1]; 0 at a coin flip
        σ*_bar     = target_vol_annual / √periods_per_year        target vol per bar (P = 8760 for 1h)
        raw        = edge · σ*_bar / vol                          conviction × inverse-vol sizing
        raw        = max(raw, 0)        unless allow_short        long-only: a bearish view means flat
        capped     = clip(raw, −max_leverage, +max_leverage)       per-symbol cap
        weight     = capped · min(1, max_leverage / Σ_symbols |capped|)   gross cap at each ts

    So a sure-up forecast (p = 1) alone sizes the position to the vol target, a 60 % forecast to a fifth of
    it, and when the symbols together would exceed `max_leverage` gross they are scaled down proportionally.
    A row with no usable forecast (null p_up, or vol null / non-finite / ≤ 0) gets weight 0: no estimate, no
    position. `rebalance_every` = k emits rows only at every k-th distinct timestamp of `preds` (the first,
    the (k+1)-th, …); between them there are no rows, which the engine reads as "hold" (weights drift).
    Output sorted by (symbol, ts); `ts` as Datetime(us, UTC).
    """
    if not target_vol_annual > 0 or not max_leverage > 0:
        raise ValueError(f"target_vol_annual and max_leverage must be > 0, got {target_vol_annual}, {max_leverage}")
    if periods_per_year < 1:
        raise ValueError(f"periods_per_year must be ≥ 1, got {periods_per_year}")
    if rebalance_every < 1:
        raise ValueError(f"rebalance_every must be ≥ 1, got {rebalance_every}")
    missing = [c for c in ("symbol", "ts", "p_up", "vol") if c not in preds.columns]
    if missing:
        raise ValueError(f"forecast_to_weights needs columns {missing}; got {preds.columns}")
    p = pl.col("p_up").cast(pl.Float64)
    bad = preds.filter(p.is_not_null() & ~p.is_nan() & ((p < 0) | (p > 1)))
    if bad.height:
        raise ValueError(f"p_up must lie in [0, 1]; {bad.height} rows do not (first: {bad.row(0, named=True)})")

    target_per_bar = target_vol_annual / math.sqrt(periods_per_year)
    vol = pl.col("vol").cast(pl.Float64)
    usable = p.is_not_null() & ~p.is_nan() & vol.is_not_null() & vol.is_finite() & (vol > 0)
    raw = pl.when(usable).then((2.0 * p - 1.0) * target_per_bar / vol).otherwise(0.0)
    if not allow_short:
        raw = raw.clip(lower_bound=0.0)
    capped = raw.clip(-max_leverage, max_leverage)

    frame = preds.select("symbol", pl.col("ts").cast(pl.Datetime("us", "UTC")), capped.alias("capped"))
    gross = pl.col("capped").abs().sum().over("ts")
    scale = pl.when(gross > max_leverage).then(max_leverage / gross).otherwise(1.0)
    out = frame.with_columns((pl.col("capped") * scale).alias("weight"))
    if rebalance_every > 1:
        grid = out.select(pl.col("ts").unique().sort()).with_row_index("_k")
        keep = grid.filter(pl.col("_k") % rebalance_every == 0).select("ts")
        out = out.join(keep, on="ts", how="semi")
    out = out.select("symbol", "ts", "weight").sort("symbol", "ts")
    return out.cast(WEIGHT_SCHEMA)  # type: ignore[arg-type]
