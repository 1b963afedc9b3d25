"""From backtests to KPI tables: per fold, stitched walk-forward, per ex-post regime, with provenance."""

from crypto_assets.evaluation.provenance import data_fingerprint, provenance
from crypto_assets.evaluation.runs import (
    MissingFoldsError,
    StrategyRuns,
    order_rows,
    run_strategies,
    stitch_fold_weights,
    stitched_bounds,
    walk_forward_runs,
)
from crypto_assets.evaluation.tables import (
    STITCHED,
    backtest_summary,
    kpi_rows,
    kpi_table,
    per_bar_results,
    regime_kpi_rows,
    regime_table,
    sharpe_variance,
    trial_rows,
)

__all__ = [
    "STITCHED",
    "MissingFoldsError",
    "StrategyRuns",
    "backtest_summary",
    "data_fingerprint",
    "kpi_rows",
    "kpi_table",
    "order_rows",
    "per_bar_results",
    "provenance",
    "regime_kpi_rows",
    "regime_table",
    "run_strategies",
    "sharpe_variance",
    "stitch_fold_weights",
    "stitched_bounds",
    "trial_rows",
    "walk_forward_runs",
]
