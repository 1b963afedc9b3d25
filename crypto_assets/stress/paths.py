"""What every stress scenario generator returns: one synthetic market path for the experiment's universe."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class StressPath:
    """One generated path.

    bars: RAW_SCHEMA columns (`symbol, ts, open, high, low, close, volume`, crypto_assets.sources.base), on the
        experiment's timeframe grid, valid OHLC (low ≤ min(open, close), max(open, close) ≤ high, prices > 0).
    multipliers: None, or `symbol, ts, spread_mult, impact_mult` per execution bar (the engine's per-bar cost
        multipliers, `run_backtest(..., multipliers=...)`): liquidity drying up in a panic.
    high_vol_bear: `ts, high_vol_bear` (bool): the bars where the path is in a high-volatility bear phase, for
        "does it go to cash or short?" (exposure measured there).
    note: how the path was made, in words (e.g. that the experiment's own worst drawdowns stood in for the
        configured crash windows).
    """

    scenario: str
    seed: int
    path_id: int
    bars: pl.DataFrame
    high_vol_bear: pl.DataFrame
    multipliers: pl.DataFrame | None = None
    note: str = ""
