"""The Dagster code location: `dagster ... -m crypto_assets.definitions`.

The experiment comes from `CRYPTO_ASSETS_CONFIG` (a YAML path; default `configs/demo.yaml`), so the UI,
schedules and the Dagster CLI all see the same experiment. Relative paths resolve against the working
directory first, then the project root.
"""

from __future__ import annotations

import os
from pathlib import Path

from crypto_assets.config import load_config
from crypto_assets.config.loader import resolve_path
from crypto_assets.orchestration.definitions import build_definitions

DEFAULT_CONFIG = "configs/demo.yaml"


def config_path_from_env() -> Path:
    raw = os.environ.get("CRYPTO_ASSETS_CONFIG", DEFAULT_CONFIG)
    path = Path(raw)
    return path if path.is_absolute() or path.exists() else resolve_path(path)


defs = build_definitions(load_config(config_path_from_env()))
