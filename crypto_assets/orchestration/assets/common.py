"""Helpers several stages of the research graph share: the fold spec, the cost model and its lookback,
multi-asset outputs, and the strategy naming scheme (DESIGN.md §1)."""
# No `from __future__ import annotations`: Dagster reads annotations of functions defined with these helpers.

import datetime as dt
import math
from typing import TYPE_CHECKING

import dagster as dg

from crypto_assets.config import ExperimentConfig
from crypto_assets.evaluation.runs import order_rows
from crypto_assets.folds import FoldSpec, FoldWindow, fold_window_for_key
from crypto_assets.ingestion.scope import experiment_fold_spec as fold_spec  # one rule: config → fold geometry
from crypto_assets.timeframes import duration_bars, parse_duration

if TYPE_CHECKING:
    from crypto_assets.backtest import CostModel

__all__ = [
    "PREDICTIONS_PREFIX",
    "STRATEGY_PREFIX",
    "context_fold_window",
    "cost_lookback",
    "cost_model",
    "fold_spec",
    "months_covering",
    "optional_out",
    "order_rows",
    "selected_outputs",
    "strategy_name",
]

STRATEGY_PREFIX = "baseline_"
PREDICTIONS_PREFIX = "predictions_"


def months_covering(span: dt.timedelta) -> int:
    """Whole months of lookback that surely contain `span` (28-day months, rounded up)."""
    return math.ceil(span / dt.timedelta(days=28)) if span > dt.timedelta(0) else 0


def context_fold_window(context: dg.AssetExecutionContext, spec: FoldSpec) -> FoldWindow:
    """The fold window of the partition this step runs."""
    return fold_window_for_key(context.partition_key, spec)


def cost_model(experiment: ExperimentConfig) -> "CostModel":
    """The engine's cost model of the experiment: the config's duration windows become bars of its timeframe."""
    from crypto_assets.backtest import CostModel  # numba-compiled: imported when a step needs it

    section = experiment.costs.model_dump()
    for key in ("vol_window", "adv_window"):
        section[key] = duration_bars(section[key], experiment.data.timeframe, f"costs.{key}")
    return CostModel(**section)


def cost_lookback(experiment: ExperimentConfig) -> dt.timedelta:
    """History the engine needs before a window's first decision bar: σ's and ADV's windows."""
    costs = experiment.costs
    return max(
        parse_duration(costs.vol_window, "costs.vol_window"),
        parse_duration(costs.adv_window, "costs.adv_window"),
    )


def optional_out(code_version: str, description: str, io_manager_key: str = "warehouse_io") -> dg.AssetOut:
    """A multi-asset output (warehouse table by default); optional, so a run may select only some."""
    return dg.AssetOut(
        is_required=False, io_manager_key=io_manager_key, code_version=code_version, description=description
    )


def selected_outputs(context: dg.AssetExecutionContext, *outputs: dg.Output) -> list[dg.Output]:
    """The outputs of a multi-asset that this run selected (`--select backtest` alone works: the step
    computes everything and stores only what was asked for)."""
    return [o for o in outputs if o.output_name in context.selected_output_names]


def strategy_name(asset_key: dg.AssetKey) -> str:
    """`baseline_trend_following` → `trend_following`, `predictions_lstm_attn` → `lstm_attn`."""
    name = asset_key.path[-1]
    for prefix in (STRATEGY_PREFIX, PREDICTIONS_PREFIX):
        name = name.removeprefix(prefix)
    return name
