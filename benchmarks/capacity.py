"""Capacity: every strategy's stitched target weights replayed through the engine at several capitals.

Reads the weights of every strategy of an experiment that `crypto-lab run` materialized (the baselines'
`baseline_<name>`, the models' `predictions_<model>` and `ensemble` tables), stitches them exactly as the
`walk_forward_equity` asset does (each fold trades its first `step_months`), and runs `run_backtest` on the
stitched span with the experiment's cost model at each capital (quote currency). Prints, per strategy and
capital: the stitched Sharpe (bar returns, × √P), CAGR, max drawdown, cost share (costs / pre-cost profit; NaN
when the strategy lost money before costs), the share of fills the participation cap cut short, the fill count
and impact's share of the costs.

The weights are what the experiment decided: the forecasters' sizing does not depend on capital, and the PPO
agent was trained at the config's `experiment.capital` (its decisions are not re-learned at each capital). So
the table shows what the same decisions cost at each size, DESIGN.md §3.3's point: impact grows as √(order / ADV)
and the participation cap (5 % of the execution bar's dollar volume by default) cancels what does not fit.

    python benchmarks/capacity.py --config configs/csv.yaml [--capitals 1e4 1e5 1e6 1e7] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import time

import polars as pl

from crypto_assets.backtest import run_backtest
from crypto_assets.config import ExperimentConfig, load_config
from crypto_assets.evaluation import STITCHED, kpi_rows, per_bar_results
from crypto_assets.folds import fold_windows, stitch_months
from crypto_assets.orchestration.assets.common import (
    PREDICTIONS_PREFIX,
    STRATEGY_PREFIX,
    cost_lookback,
    cost_model,
    fold_spec,
    order_rows,
)
from crypto_assets.orchestration.partitions import data_end_exclusive
from crypto_assets.paths import experiment_root
from crypto_assets.storage.warehouse import Warehouse
from crypto_assets.timeframes import periods_per_year

CAPITALS = (1e4, 1e5, 1e6, 1e7)


def strategy_tables(experiment: ExperimentConfig) -> dict[str, str]:
    """Strategy name → warehouse table holding its weights (as `build_definitions` picks the strategies)."""
    out = {}
    folder = experiment_root(experiment) / "warehouse"  # one sub-folder per table
    for table in sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.exists() else []:
        if table.startswith(STRATEGY_PREFIX):
            out[table.removeprefix(STRATEGY_PREFIX)] = table
        elif table.startswith(PREDICTIONS_PREFIX) or table == "ensemble":
            out[table.removeprefix(PREDICTIONS_PREFIX)] = table
    return out


def _spans(experiment: ExperimentConfig) -> dict[str, tuple[dt.datetime, dt.datetime]]:
    """Fold key → the [start, end) it trades in the stitched run, as `walk_forward_equity` cuts them."""
    spec = fold_spec(experiment)
    windows = fold_windows(experiment.data.start, data_end_exclusive(experiment.data), spec)
    return stitch_months(windows, spec.step_months)


def stitched_orders(experiment: ExperimentConfig, weights: pl.DataFrame) -> pl.DataFrame:
    """The rows each fold trades in the stitched run (its first `step_months`), as orders."""
    spans = _spans(experiment)
    missing = sorted(set(spans) - set(weights["fold"].unique().to_list()))
    if missing:
        raise SystemExit(f"folds {', '.join(missing)} are not materialized; run the experiment first")
    rows = [
        weights.filter((pl.col("fold") == key) & (pl.col("ts") >= s) & (pl.col("ts") < e))
        for key, (s, e) in spans.items()
    ]
    return order_rows(pl.concat(rows))


def capacity_table(experiment: ExperimentConfig, capitals: tuple[float, ...] = CAPITALS) -> pl.DataFrame:
    warehouse = Warehouse(experiment_root(experiment))
    bars = warehouse.read_table("bars")
    if bars is None:
        raise SystemExit(f"no bars in {warehouse.root}: run the experiment first")
    spans = _spans(experiment)
    first, last = min(s for s, _ in spans.values()), max(e for _, e in spans.values())
    history = bars.filter((pl.col("ts") >= first - cost_lookback(experiment)) & (pl.col("ts") < last))
    costs = cost_model(experiment)
    timeframe = experiment.data.timeframe
    rows = []
    for name, table in sorted(strategy_tables(experiment).items()):
        weights = warehouse.read_table(table)
        if weights is None or "weight" not in weights.columns:
            continue
        orders = stitched_orders(experiment, weights)
        for capital in capitals:
            started = time.perf_counter()
            result = run_backtest(history, orders, costs, initial_value=capital, timeframe=timeframe)
            per_bar = per_bar_results(result, name, first, last)
            kpis = kpi_rows(
                per_bar,
                None,
                periods_per_year(timeframe),
                scope=STITCHED,
                max_drawdown_limit=experiment.constraints.max_drawdown,
                min_sharpe=experiment.constraints.min_sharpe,
            )[0]
            total = float(per_bar["cost"].sum())
            rows.append(
                {
                    "strategy": name,
                    "capital": capital,
                    "sharpe": kpis["sharpe"],
                    "cagr": kpis["cagr"],
                    "max_drawdown": kpis["max_drawdown"],
                    "cost_share": kpis["cost_share"],
                    "capped_share": kpis["capped_share"],
                    "fills": kpis["fills"],
                    "impact_of_costs": float(per_bar["impact"].sum()) / total if total > 0 else math.nan,
                    "seconds": time.perf_counter() - started,
                }
            )
    return pl.DataFrame(rows)


def markdown(table: pl.DataFrame) -> str:
    lines = [
        "| strategy | capital (USDT) | Sharpe | CAGR | max DD | cost share | fills capped | fills | impact / costs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def pct(x: float) -> str:
        return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f} %"

    for r in table.iter_rows(named=True):
        lines.append(
            f"| {r['strategy']} | {r['capital']:,.0f} | {r['sharpe']:.2f} | {pct(r['cagr'])} "
            f"| {pct(r['max_drawdown'])} | {pct(r['cost_share'])} | {pct(r['capped_share'])} | {r['fills']:,} "
            f"| {pct(r['impact_of_costs'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/csv.yaml")
    parser.add_argument("--capitals", type=float, nargs="+", default=list(CAPITALS))
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for RESULTS.md)")
    args = parser.parse_args()
    experiment = load_config(args.config)
    table = capacity_table(experiment, tuple(args.capitals))
    if args.markdown:
        print(markdown(table))
    else:
        with pl.Config(tbl_rows=200, tbl_cols=20, tbl_width_chars=200, float_precision=4):
            print(table)


if __name__ == "__main__":
    main()
