"""The comparative research dashboard (DESIGN.md §6.5): one self-contained HTML file per experiment, and a
page comparing experiments. No Dagster here; the `report` asset and `crypto-lab report` call this.

    data = from_config(load_config("configs/demo.yaml"))
    write_page(dashboard(data), dashboard_path(data.root))
"""

from __future__ import annotations

from crypto_assets.config.schema import ExperimentConfig
from crypto_assets.dashboard.data import ExperimentData, MissingTableError, load_experiment
from crypto_assets.dashboard.page import Page, compare, dashboard, dashboard_path, write_page
from crypto_assets.paths import experiment_root


def from_config(experiment: ExperimentConfig) -> ExperimentData:
    """The stored results of the experiment `experiment` describes."""
    return load_experiment(
        experiment_root(experiment),
        name=experiment.experiment.name,
        timeframe=experiment.data.timeframe,
        label_horizon=experiment.walk_forward.label_horizon,
    )


__all__ = [
    "ExperimentData",
    "MissingTableError",
    "Page",
    "compare",
    "dashboard",
    "dashboard_path",
    "from_config",
    "load_experiment",
    "write_page",
]
