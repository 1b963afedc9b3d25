"""Market regimes. Two kinds that must never be confused (DESIGN §3.5):

- `crypto_assets.regimes.causal` — `causal_regimes`: trailing-window labels (`vol_regime`,
  `trend_regime` and their `_code` integers); causal, usable as model features.
- `crypto_assets.regimes.ex_post` — `ex_post_regimes`: full-sample labels with the `xp_` prefix, for
  reporting KPIs by regime ONLY; they must never reach a model.
"""

from crypto_assets.regimes.causal import (
    CAUSAL_REGIME_COLUMNS,
    DEFAULT_REGIME_SPEC,
    RegimeSpec,
    causal_regimes,
    regime_warmup_bars,
    regime_warmups,
)
from crypto_assets.regimes.ex_post import XP_REGIME_COLUMNS, ex_post_regimes, ex_post_trend_codes, turning_points

__all__ = [
    "CAUSAL_REGIME_COLUMNS",
    "DEFAULT_REGIME_SPEC",
    "XP_REGIME_COLUMNS",
    "RegimeSpec",
    "causal_regimes",
    "ex_post_regimes",
    "ex_post_trend_codes",
    "regime_warmup_bars",
    "regime_warmups",
    "turning_points",
]
