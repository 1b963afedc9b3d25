"""Synthetic crash stress tests (DESIGN.md §6.3): generated OHLCV paths on which every trained strategy and
baseline is replayed through the backtest engine at the experiment's capital and costs.

- `crypto_assets.stress.paths`: `StressPath`, what every scenario generator returns.
- `crypto_assets.stress.bootstrap`: (a) stationary block bootstrap of historical crash windows.
- `crypto_assets.stress.abm`: (b) an agent-based panic market (Franke & Westerhoff 2012 + stop-loss cascade).
- `crypto_assets.stress.replay`: strategies replayed on paths, and the per strategy × scenario results.
"""

from crypto_assets.stress.paths import StressPath
from crypto_assets.stress.replay import (
    SCENARIOS,
    Strategy,
    aggregate,
    artifact_strategy,
    baseline_strategy,
    generate_paths,
    paths_from_table,
    paths_table,
    replay_paths,
    scenario_generator,
    splice,
)

__all__ = [
    "SCENARIOS",
    "Strategy",
    "StressPath",
    "aggregate",
    "artifact_strategy",
    "baseline_strategy",
    "crash_bootstrap",
    "generate_paths",
    "panic_market",
    "paths_from_table",
    "paths_table",
    "replay_paths",
    "scenario_generator",
    "splice",
]


def __getattr__(name: str) -> object:
    """The scenario generators, imported on first use (arch and scipy load only when a scenario runs)."""
    if name in ("crash_bootstrap", "panic_market"):
        return scenario_generator({"crash_bootstrap": "crash_bootstrap", "panic_market": "panic"}[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
