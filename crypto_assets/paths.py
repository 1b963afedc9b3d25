"""Where one experiment keeps everything it writes (DESIGN.md §3.2: experiments never mix)."""

from __future__ import annotations

from pathlib import Path

from crypto_assets.config.loader import resolve_path
from crypto_assets.config.schema import ExperimentConfig


def experiment_root(config: ExperimentConfig) -> Path:
    """`<storage_dir>/<experiment name>/`: warehouse, DuckDB, artifacts and the Dagster instance."""
    return resolve_path(config.experiment.storage_dir) / config.experiment.name


def dagster_home(config: ExperimentConfig) -> Path:
    """The experiment's own Dagster instance, so the UI never mixes two experiments' runs."""
    return experiment_root(config) / "dagster_home"
