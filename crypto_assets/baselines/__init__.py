"""Rule-based baseline strategies (buy & hold, equal weight, trend following, vol targeting) as target weights.

See `crypto_assets.baselines.rules` for the shared timing contract (decided at the close of `ts`, executed at
the next open; no row = hold).
"""

from crypto_assets.baselines.panel import WEIGHT_SCHEMA, Panel, build_panel
from crypto_assets.baselines.rules import (
    BASELINES,
    BaselineFn,
    baseline_params,
    buy_and_hold,
    equal_weight,
    lookback_bars,
    trend_following,
    vol_targeted,
    vol_targeted_trend,
)

__all__ = [
    "BASELINES",
    "WEIGHT_SCHEMA",
    "BaselineFn",
    "Panel",
    "baseline_params",
    "build_panel",
    "buy_and_hold",
    "equal_weight",
    "lookback_bars",
    "trend_following",
    "vol_targeted",
    "vol_targeted_trend",
]
