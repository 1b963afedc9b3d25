"""Set up an experiment's own Dagster instance (DESIGN.md §2: DAGSTER_HOME and the `gpu` pool)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from crypto_assets.config import ExperimentConfig
from crypto_assets.paths import dagster_home, experiment_root
from crypto_assets.storage.fingerprint import check_data_fingerprint, data_fingerprint

GPU_POOL = "gpu"
GPU_POOL_LIMIT = 1
# The instance settings every experiment's DAGSTER_HOME gets. Not at the project root: `dagster dev` warns
# about a dagster.yaml in the current folder that DAGSTER_HOME does not use.
INSTANCE_TEMPLATE = Path(__file__).with_name("dagster.yaml")


def prepare_instance(experiment: ExperimentConfig, config_path: str | Path) -> Path:
    """Create `storage/<experiment>/dagster_home` with the project's dagster.yaml, point DAGSTER_HOME
    and CRYPTO_ASSETS_CONFIG at it and the config, and put the `gpu` pool limit on the instance
    (pool limits live in the instance's storage, not in dagster.yaml).

    First, refuse a config whose data differs from what the experiment already stores
    (`DataMismatchError`, before anything is created or run); the first write records the fingerprint."""
    check_data_fingerprint(experiment_root(experiment), data_fingerprint(experiment), record=False)
    home = dagster_home(experiment)
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INSTANCE_TEMPLATE, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ["CRYPTO_ASSETS_CONFIG"] = str(Path(config_path).resolve())

    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        if instance.event_log_storage.get_concurrency_info(GPU_POOL).slot_count != GPU_POOL_LIMIT:
            instance.event_log_storage.set_concurrency_slots(GPU_POOL, GPU_POOL_LIMIT)
    return home
