"""Build the configured source (imports are deferred: ccxt alone takes ~0.5 s to import)."""

from __future__ import annotations

import datetime as dt

from crypto_assets.config.loader import resolve_path
from crypto_assets.config.schema import ExperimentConfig
from crypto_assets.sources.base import OhlcvSource


def data_anchor(config: ExperimentConfig) -> dt.datetime:
    """00:00 UTC of the configured first day: where the data (and the synthetic path) starts."""
    return dt.datetime.combine(config.data.start, dt.time(), tzinfo=dt.UTC)


def make_source(config: ExperimentConfig) -> OhlcvSource:
    data = config.data
    if data.source_kind == "synthetic":
        from crypto_assets.sources.synthetic import SyntheticSource

        return SyntheticSource(data.synthetic, seed=config.experiment.seed, anchor=data_anchor(config))
    if data.source_kind == "csv":
        from crypto_assets.sources.csv_archive import CsvArchiveSource

        assert data.csv_dir is not None  # enforced by the config schema
        return CsvArchiveSource(resolve_path(data.csv_dir))
    from crypto_assets.sources.ccxt_source import CcxtSource

    return CcxtSource(data.exchange_id, data.ccxt, api_url=data.api_url)
