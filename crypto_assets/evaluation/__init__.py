"""From backtests to KPI tables: per fold, stitched walk-forward, per ex-post regime, with provenance."""

from crypto_assets.evaluation.provenance import data_fingerprint, provenance
from crypto_assets.evaluation.tables import STITCHED, kpi_rows, per_bar_results, regime_kpi_rows

__all__ = [
    "STITCHED",
    "data_fingerprint",
    "kpi_rows",
    "per_bar_results",
    "provenance",
    "regime_kpi_rows",
]
