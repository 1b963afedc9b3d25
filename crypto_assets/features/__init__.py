"""Causal features of long-format bars (DESIGN §3.5, §3.8): `compute_features(bars, timeframe)`.

The definitions, the column naming scheme and the warm-up rules are in
`crypto_assets.features.engine`'s docstring; `warmup_bars()` says how much lookback to read.
"""

from crypto_assets.features.engine import (
    DEFAULT_SPEC,
    FEATURE_COLUMNS,
    FeatureSpec,
    compute_features,
    feature_columns,
    feature_warmups,
    pick_benchmark,
    validate_bars,
    warmup_bars,
)

__all__ = [
    "DEFAULT_SPEC",
    "FEATURE_COLUMNS",
    "FeatureSpec",
    "compute_features",
    "feature_columns",
    "feature_warmups",
    "pick_benchmark",
    "validate_bars",
    "warmup_bars",
]
