"""`crypto-lab`: the project's command line.

crypto-lab validate-config FILE          check an experiment file without running anything
crypto-lab run --config FILE             materialize the experiment end to end on its persistent
                                         Dagster instance (storage/<experiment>/dagster_home)
crypto-lab home --config FILE            print that instance's DAGSTER_HOME (for `export`)
crypto-lab dagster --config FILE -- ARGS run the `dagster` CLI on the experiment's instance
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from crypto_assets.config import ConfigError, ExperimentConfig, config_hash, load_config

if TYPE_CHECKING:  # dagster is imported lazily: `validate-config` must stay fast
    from dagster import ExecuteInProcessResult


def _load(path: str) -> ExperimentConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


def _validate_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    data = config.data
    print(
        f"{args.file}: OK — experiment {config.experiment.name!r}, {len(data.tickers)} symbols, "
        f"{data.timeframe} bars from {data.source!r} ({data.source_kind}), {data.start} .. {data.end or 'now'}, "
        f"config hash {config_hash(config)}"
    )
    from crypto_assets.ingestion.scope import data_only_note

    note = data_only_note(config)
    if note:
        print(f"note: {note}")
    return 0


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    from crypto_assets.orchestration.instance import prepare_instance

    home = prepare_instance(config, args.config)
    import dagster as dg

    from crypto_assets.folds import fold_keys
    from crypto_assets.ingestion.scope import data_only_note
    from crypto_assets.orchestration.assets.common import fold_spec
    from crypto_assets.orchestration.definitions import FOLDS_JOB, INGEST_JOB, REPORTS_JOB, build_definitions
    from crypto_assets.orchestration.partitions import data_end_exclusive, data_partitions

    defs = build_definitions(config)
    months = data_partitions(config.data).get_partition_keys()
    folds = fold_keys(config.data.start, data_end_exclusive(config.data), fold_spec(config))
    logging = {"loggers": {"console": {"config": {"log_level": args.log_level}}}}
    range_tags = {"dagster/asset_partition_range_start": months[0], "dagster/asset_partition_range_end": months[-1]}
    # One run per partitions definition, in order (DESIGN.md §2): months in one run, then each fold, then reports.
    plan: list[tuple[str, str, dict[str, object]]] = [
        (
            INGEST_JOB,
            f"raw_ohlcv → bars → features, {len(months)} months {months[0]} .. {months[-1]} in one run",
            {"tags": range_tags},
        ),
        *((FOLDS_JOB, f"fold {key}: dataset, strategies, backtest", {"partition_key": key}) for key in folds),
        (REPORTS_JOB, "walk-forward equity, kpis, regime_kpis, trials", {}),
    ]
    note = data_only_note(config)
    if note:  # no fold (yet): ingest and validate only, no KPI tables
        plan = plan[:1]
    print(f"experiment {config.experiment.name!r}: instance {home}")
    if note:
        print(f"note: {note}")
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        for step, (job, label, options) in enumerate(plan, 1):
            t0 = time.perf_counter()
            result = defs.resolve_job_def(job).execute_in_process(
                instance=instance,
                run_config=logging,
                raise_on_error=False,
                **options,  # type: ignore[arg-type]
            )
            status = "ok" if result.success else "FAILED"
            print(
                f"[{step}/{len(plan)}] {label}: {status} ({time.perf_counter() - t0:.1f} s, run {result.run_id[:8]})",
                flush=True,
            )
            if not result.success:
                print("\n".join(failure_messages(result)), file=sys.stderr)
                return 1
    print(f"done in {time.perf_counter() - started:.1f} s")
    _print_summary(config, with_kpis=note is None)
    return 0


def failure_messages(result: ExecuteInProcessResult) -> list[str]:
    """Each failed step's error with its causes (Dagster wraps the user's exception in its own)."""
    messages = []
    for event in result.all_events:
        if not (event.is_step_failure and event.step_failure_data and event.step_failure_data.error):
            continue
        error, chain = event.step_failure_data.error, []
        while error is not None:
            chain.append(error.message.strip())
            error = error.cause
        messages.append(f"step {event.step_key} failed:\n  " + "\n  ".join(chain))
    return messages


def _print_summary(config: ExperimentConfig, *, with_kpis: bool = True) -> None:
    import polars as pl

    from crypto_assets.paths import experiment_root
    from crypto_assets.storage.warehouse import Warehouse

    warehouse = Warehouse(experiment_root(config))
    bars = warehouse.query(
        "SELECT symbol, count(*) AS bars, strftime(min(ts), '%Y-%m-%d %H:%M') AS first_bar, "
        "strftime(max(ts), '%Y-%m-%d %H:%M') AS last_bar, count(*) FILTER (is_filled) AS filled, "
        "count(*) FILTER (is_wick_outlier) AS wick_outliers, count(*) FILTER (is_illiquid) AS illiquid_bars "
        "FROM bars GROUP BY symbol ORDER BY symbol"
    )
    if not with_kpis:  # a data-only experiment: no fold ran, so there is no KPI table to show
        with pl.Config(tbl_rows=200, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
            print(f"\nbars (warehouse {warehouse.db_path}; open with: {warehouse.reader_command})")
            print(bars)
        return
    kpis = warehouse.query(
        "SELECT strategy, round(capital) AS capital, round(final_value) AS final_value, round(sharpe, 2) AS sharpe, "
        "round(sharpe_daily, 2) AS sharpe_daily, round(sortino, 2) AS sortino, "
        "round(max_drawdown, 3) AS max_dd, round(cagr, 3) AS cagr, round(calmar, 2) AS calmar, round(romad, 2) AS romad, "
        "round(turnover, 1) AS turnover, round(cost_share, 3) AS cost_share, round(capped_share, 3) AS capped_share, "
        "round(exposure, 2) AS exposure, "
        "round(psr, 3) AS psr, round(dsr, 3) AS dsr, passes_constraints AS passes "
        "FROM kpis WHERE scope = 'stitched' ORDER BY sharpe DESC"
    )
    folds = warehouse.query(
        "SELECT strategy, count(*) AS folds, round(median(sharpe), 2) AS median_sharpe, "
        "round(avg(CASE WHEN total_return > 0 THEN 1 ELSE 0 END), 2) AS share_positive, "
        "round(max(max_drawdown), 3) AS worst_max_dd FROM kpis WHERE scope <> 'stitched' GROUP BY strategy ORDER BY strategy"
    )
    with pl.Config(
        tbl_rows=200, tbl_cols=30, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_width_chars=200
    ):
        print(f"\nbars (warehouse {warehouse.db_path}; open with: {warehouse.reader_command})")
        print(bars)
        print(
            f"\nstitched walk-forward KPIs at a capital of {config.experiment.capital:,.0f} (quote currency; "
            "DESIGN.md §3.3-3.4; capped_share = fills cut short by the participation cap; constraints: "
            f"max drawdown <= {config.constraints.max_drawdown}, Sharpe >= {config.constraints.min_sharpe})"
        )
        print(kpis)
        print("\nper-fold KPIs (test windows)")
        print(folds)


def _home(args: argparse.Namespace) -> int:
    from crypto_assets.paths import dagster_home

    print(dagster_home(_load(args.config)))
    return 0


# `dagster asset materialize` and `dagster dev` each print a SupersessionWarning ("use dg launch / dg dev")
# on every call; `dg` needs a dg project layout this project does not have, so the documented commands
# stay. Only those two messages are ignored (Python's -W syntax: action:message-prefix), nothing else.
QUIET_DAGSTER_CLI = (
    "ignore:Function `asset_materialize_command` is superseded",
    "ignore:Function `dev_command` is superseded",
)


def _dagster(args: argparse.Namespace) -> int:
    config = _load(args.config)
    from crypto_assets.orchestration.instance import prepare_instance

    prepare_instance(config, args.config)
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or shutil.which("dagster")
    if dagster is None:
        print("the `dagster` command is not installed in this environment", file=sys.stderr)
        return 2
    argv = args.dagster_args[1:] if args.dagster_args[:1] == ["--"] else args.dagster_args  # drop the separator only
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), *QUIET_DAGSTER_CLI]))
    os.execv(dagster, [dagster, *argv])
    return 0  # unreachable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crypto-lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate-config", help="check an experiment YAML file")
    validate.add_argument("file")
    validate.set_defaults(handler=_validate_config)

    run = sub.add_parser("run", help="materialize the experiment end to end through Dagster")
    run.add_argument("--config", required=True)
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(handler=_run)

    home = sub.add_parser("home", help="print the experiment's DAGSTER_HOME")
    home.add_argument("--config", required=True)
    home.set_defaults(handler=_home)

    dagster = sub.add_parser("dagster", help="run the dagster CLI on the experiment's instance")
    dagster.add_argument("--config", required=True)
    dagster.add_argument("dagster_args", nargs=argparse.REMAINDER)
    dagster.set_defaults(handler=_dagster)
    return parser


def main(argv: list[str] | None = None) -> int:
    from crypto_assets.storage.fingerprint import DataMismatchError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except DataMismatchError as exc:  # same experiment name, other data: refused before any run
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
