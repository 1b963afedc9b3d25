"""Strategy metrics (DESIGN §3.4): KPIs of net bar returns, and probabilistic / deflated Sharpe ratios.

`compute_kpis(returns, periods_per_year)` is the public entry point; P comes from
`crypto_assets.timeframes.periods_per_year` (8760 for 1h — crypto trades 24/7, never 252).
"""

from crypto_assets.metrics.kpis import (
    KPI_NAMES,
    cagr,
    compute_kpis,
    cost_share,
    daily_returns,
    equity_curve,
    max_drawdown,
    sharpe_ratio,
    sortino_ratio,
    trade_stats,
)
from crypto_assets.metrics.pbo import PBOResult, pbo_or_nan, probability_of_backtest_overfitting
from crypto_assets.metrics.sharpe_inference import (
    EULER_MASCHERONI,
    deflated_sharpe,
    expected_max_sharpe,
    probabilistic_sharpe,
    sharpe_moments,
)

__all__ = [
    "EULER_MASCHERONI",
    "KPI_NAMES",
    "PBOResult",
    "cagr",
    "compute_kpis",
    "cost_share",
    "daily_returns",
    "deflated_sharpe",
    "equity_curve",
    "expected_max_sharpe",
    "max_drawdown",
    "pbo_or_nan",
    "probabilistic_sharpe",
    "probability_of_backtest_overfitting",
    "sharpe_moments",
    "sharpe_ratio",
    "sortino_ratio",
    "trade_stats",
]
