"""Small builders shared by the tests and benchmarks: OHLCV bar frames and a cost model with every cost on."""

from __future__ import annotations

import numpy as np
import polars as pl

from crypto_assets.backtest import CostModel

ALL_ON = CostModel(
    taker_fee=0.001,
    half_spread=0.0005,
    vol_k=0.1,
    vol_window=24,
    impact_k=0.5,
    max_participation=0.05,
    allow_short=True,
    max_leverage=1.5,
    funding_rate_8h=0.001,
)
"""Every cost component on (fees, half-spread, vol slippage, impact, participation cap, funding), shorts allowed."""


def ohlcv_frame(
    symbol: str, ts: pl.Series, open_: np.ndarray, close: np.ndarray, volume: np.ndarray, wick: float = 0.0
) -> pl.DataFrame:
    """Bars of one symbol: high / low are the larger / smaller of open and close, widened by the fraction `wick`."""
    return pl.DataFrame(
        {
            "symbol": symbol,
            "ts": ts,
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wick),
            "low": np.minimum(open_, close) * (1 - wick),
            "close": close,
            "volume": volume,
        }
    )
