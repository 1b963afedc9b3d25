"""`crypto-lab`: the project's command line.

crypto-lab validate-config FILE          check an experiment file without running anything
crypto-lab run --config FILE             materialize the experiment end to end: runs launched on its
                                         persistent Dagster instance (storage/<experiment>/dagster_home)
                                         against the code location, so the UI lists them
                                         (`crypto-lab run --help`: --only, --folds, --skip-training)
crypto-lab report --config FILE          (re)write the experiment's HTML dashboard from its stored tables
crypto-lab report --compare A B ...      one HTML page comparing experiments (their config files)
crypto-lab home --config FILE            print that instance's DAGSTER_HOME (for `export`)
crypto-lab dagster --config FILE -- ARGS run the `dagster` CLI on the experiment's instance
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from crypto_assets.config import ConfigError, ExperimentConfig, config_hash, load_config

if TYPE_CHECKING:  # dagster is imported lazily: `validate-config` must stay fast
    from dagster import DagsterEvent, DagsterInstance, Definitions, EventLogEntry, ExecuteInProcessResult

    from crypto_assets.orchestration.launcher import RunRequest


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


STAGES = ("data", "folds", "reports", "stress", "live", "paper", "sweep")
LIVE_JOB = "live"  # = orchestration.definitions.LIVE_JOB, the live fold (DESIGN.md §6.2), when the experiment has one
STRESS_JOB = "stress"  # = orchestration.definitions.STRESS_JOB (DESIGN.md §6.3), when a stress scenario is enabled
PAPER_JOB = "paper"  # = orchestration.definitions.PAPER_JOB, the paper ledger (DESIGN.md §6.5), with the live fold
# = orchestration.definitions.SWEEP_JOB (DESIGN.md §6.4), when the experiment has a `sweep`; --only sweep runs it
SWEEP_JOB = "sweeps"
INTERRUPTED = 130  # the shell's code for a command ended by SIGINT
CANCEL_WAIT_S = 120.0  # default wait for a canceled run to stop by itself (CRYPTO_LAB_CANCEL_WAIT_S overrides)


class UsageError(Exception):
    """A `crypto-lab run` option that does not fit this experiment (exit code 2)."""


def _stages(args: argparse.Namespace, *, data_only: str | None, jobs: set[str]) -> list[str]:
    """The stages to run, in graph order: `--only` if given, else data + folds + reports + stress (stress when the
    experiment has the job; data + folds with `--folds`: the KPI tables need every fold); a data-only experiment
    has only `data`."""
    if args.only:
        chosen = {stage.strip() for value in args.only for stage in value.split(",") if stage.strip()}
        unknown = sorted(chosen - set(STAGES))
        if unknown:
            raise UsageError(f"--only: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    else:
        chosen = {"data", "folds"} if args.folds else {"data", "folds", "reports"}
        if not args.folds and STRESS_JOB in jobs:
            chosen.add("stress")
    if data_only and chosen & {"folds", "reports", "stress"}:
        if args.only or args.folds:
            raise UsageError(f"this experiment has no folds and no reports ({data_only}); run --only data")
        chosen = {"data"}
    if "live" in chosen and LIVE_JOB not in jobs:
        raise UsageError(
            f"--only live: this experiment's definitions have no `{LIVE_JOB}` job (jobs: {', '.join(sorted(jobs))})"
        )
    if "paper" in chosen and PAPER_JOB not in jobs:
        raise UsageError(
            f"--only paper: this experiment's definitions have no `{PAPER_JOB}` job (jobs: {', '.join(sorted(jobs))})"
        )
    if "stress" in chosen and STRESS_JOB not in jobs:
        raise UsageError(
            f"--only stress: this experiment's definitions have no `{STRESS_JOB}` job (every stress scenario is off)"
        )
    if "sweep" in chosen and SWEEP_JOB not in jobs:
        raise UsageError(f"--only sweep: this experiment's definitions have no `{SWEEP_JOB}` job (no `sweep` section)")
    if args.folds and "folds" not in chosen:
        raise UsageError("--folds selects fold runs: add `folds` to --only")
    if args.skip_training and "folds" not in chosen:
        raise UsageError("--skip-training applies to fold runs: add `folds` to --only")
    return [stage for stage in STAGES if stage in chosen]


def _selected_folds(option: str | None, folds: list[str]) -> list[str]:
    """`--folds` keys (`YYYY-MM-01`, or `YYYY-MM`) checked against the experiment's folds, in fold order."""
    if not option:
        return folds
    wanted = {key if len(key) > 7 else f"{key}-01" for key in (part.strip() for part in option.split(",")) if key}
    unknown = sorted(wanted - set(folds))
    if unknown or not wanted:
        raise UsageError(
            f"--folds: {', '.join(unknown) or 'no key'} is not a fold of this experiment; its {len(folds)} folds "
            f"(first month of each test window): {', '.join(folds)}"
        )
    return [key for key in folds if key in wanted]


def _plan(
    args: argparse.Namespace, config: ExperimentConfig, defs: Definitions, data_only: str | None
) -> list[RunRequest]:
    """One run per partitions definition, in order (DESIGN.md §2): all months in one run, then each fold,
    then the reports, then the live fold."""
    from crypto_assets.folds import fold_keys
    from crypto_assets.orchestration.assets.common import fold_spec
    from crypto_assets.orchestration.definitions import FOLDS_JOB, INGEST_JOB, REPORTS_JOB
    from crypto_assets.orchestration.instance import GPU_POOL
    from crypto_assets.orchestration.launcher import RunRequest
    from crypto_assets.orchestration.partitions import data_end_exclusive, data_partitions

    stages = _stages(args, data_only=data_only, jobs={job.name for job in defs.jobs or ()})
    folds = [] if data_only else fold_keys(config.data.start, data_end_exclusive(config.data), fold_spec(config))
    chosen_folds = _selected_folds(args.folds, folds) if "folds" in stages else []
    months = data_partitions(config.data).get_partition_keys()
    plan: list[RunRequest] = []
    if "data" in stages:
        plan.append(
            RunRequest(
                INGEST_JOB,
                f"raw_ohlcv → bars → features, {len(months)} months {months[0]} .. {months[-1]} in one run",
                {"dagster/asset_partition_range_start": months[0], "dagster/asset_partition_range_end": months[-1]},
            )
        )
    if chosen_folds:
        selection, what = None, "dataset, strategies, backtest"
        if args.skip_training:
            # Training assets are the ones in the `gpu` pool; the rest reads their stored outputs.
            graph = defs.resolve_job_def(FOLDS_JOB).asset_layer.asset_graph
            trained = {key for key in graph.executable_asset_keys if GPU_POOL in (graph.get(key).pools or ())}
            selection = frozenset(graph.executable_asset_keys - trained)
            names = ", ".join(sorted(key.to_user_string() for key in trained))
            what = f"everything but the trained models, from their stored outputs (skipping {names})"
        plan += [
            RunRequest(FOLDS_JOB, f"fold {key}: {what}", {"dagster/partition": key}, selection) for key in chosen_folds
        ]
    if "reports" in stages:
        plan.append(RunRequest(REPORTS_JOB, "walk-forward equity, kpis, regime_kpis, trials"))
    if "stress" in stages:
        plan.append(RunRequest(STRESS_JOB, "stress_paths, stress_results, stress_kpis (every stored fold strategy)"))
    if "live" in stages:
        live = defs.resolve_job_def(LIVE_JOB).partitions_def
        key = live.get_last_partition_key() if live is not None else None
        plan.append(RunRequest(LIVE_JOB, f"live fold {key}", {"dagster/partition": key} if key else {}))
    if "paper" in stages:
        paper = defs.resolve_job_def(PAPER_JOB).partitions_def
        key = paper.get_last_partition_key() if paper is not None else None
        what = f"paper ledger {key}: the live models traded forward on the bars closed by now"
        plan.append(RunRequest(PAPER_JOB, what, {"dagster/partition": key} if key else {}))
    if "sweep" in stages:
        plan.append(RunRequest(SWEEP_JOB, "hyper-parameter sweep on Ray (RAY_ADDRESS, or a local Ray for the run)"))
    return plan


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    from crypto_assets.ingestion.scope import data_only_note
    from crypto_assets.orchestration.definitions import build_definitions
    from crypto_assets.orchestration.instance import prepare_instance

    home = prepare_instance(config, args.config)
    note = data_only_note(config)
    defs = build_definitions(config)  # the code server loads the same module and config: same jobs
    try:
        plan = _plan(args, config, defs, note)  # a note: no fold yet, so no fold or report runs
    except UsageError as exc:
        print(f"crypto-lab run: {exc}", file=sys.stderr)
        return 2
    print(f"experiment {config.experiment.name!r}: instance {home}")
    if note:
        print(f"note: {note}")
    started = time.perf_counter()
    status = _launch_all(plan, args.log_level)
    if status:
        return status
    print(f"done in {time.perf_counter() - started:.1f} s")
    reported = any(request.job == "reports" for request in plan)
    if reported or plan[0].job == "ingest":  # bars after an ingest; KPI tables only when this command refreshed them
        _print_summary(config, with_kpis=reported)
    if any(request.job in ("reports", STRESS_JOB, SWEEP_JOB, PAPER_JOB) for request in plan):  # they render it
        from crypto_assets.dashboard import dashboard_path
        from crypto_assets.paths import experiment_root

        page = dashboard_path(experiment_root(config))
        if page.exists():  # a paper run before any report or ledger row has nothing to show
            print(f"\ndashboard: {page}")
    return 0


def _launch_all(plan: list[RunRequest], log_level: str) -> int:
    """Launch the plan's runs one after the other on the experiment's instance; stop at the first failure.
    Ctrl-C (or SIGTERM) cancels the run in flight through the launcher and exits 130."""
    import dagster as dg
    from dagster._core.utils import make_new_run_id

    from crypto_assets.orchestration.launcher import code_server, launch, mark_canceled, watch

    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    server_level = "WARNING" if log_level == "INFO" else log_level  # its INFO lines are start / stop chatter
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)  # a `kill` cancels like Ctrl-C
    run_id: str | None = None
    unstopped: str | None = None  # a canceled run still busy when the wait ran out
    try:
        with dg.DagsterInstance.get() as instance:
            with code_server(instance, server_level) as workspace:
                try:
                    for step, request in enumerate(plan, 1):
                        t0 = time.perf_counter()
                        print(f"[{step}/{len(plan)}] {request.label}", flush=True)
                        run_id = make_new_run_id()  # known before the run exists, so a Ctrl-C mid-launch cancels it
                        run = launch(instance, workspace, request, run_config, run_id=run_id)
                        progress = _Progress(f"[{step}/{len(plan)}]")
                        run = watch(instance, run.run_id, progress)
                        ok = run.status == dg.DagsterRunStatus.SUCCESS
                        print(
                            f"[{step}/{len(plan)}] {request.label}: {'ok' if ok else run.status.value} "
                            f"({time.perf_counter() - t0:.1f} s, run {run.run_id[:8]})",
                            flush=True,
                        )
                        if not ok:
                            print(
                                "\n".join(failure_messages(progress.events)) or f"run {run.run_id} {run.status.value}",
                                file=sys.stderr,
                            )
                            return 1
                except KeyboardInterrupt:
                    unstopped = _cancel(instance, run_id)
                    if unstopped is None:
                        return INTERRUPTED
            # The code server is gone and its process group with it, so the worker of a run that ignored the
            # cancel is stopped too: record that.
            if unstopped is not None:
                mark_canceled(
                    instance, unstopped, f"worker killed by crypto-lab after {cancel_wait_s():g} s of canceling"
                )
                print(
                    f"run {unstopped}: CANCELED (its worker was killed: the step ignored the cancel)", file=sys.stderr
                )
                return INTERRUPTED
    except KeyboardInterrupt:  # while the code server started or stopped: nothing of ours is running
        print("\ninterrupted", file=sys.stderr)
        return INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    return 0


def cancel_wait_s() -> float:
    """How long Ctrl-C waits for a canceled run to stop by itself: a step sees the cancel only when it next
    reports an event, so a long training step may not stop at all (its worker is then killed)."""
    return float(os.environ.get("CRYPTO_LAB_CANCEL_WAIT_S", CANCEL_WAIT_S))


def _cancel(instance: DagsterInstance, run_id: str | None) -> str | None:
    """Cancel the run in flight and wait (bounded) until it has stopped; a second Ctrl-C stops waiting.
    Returns the run's id when it is still running then (the caller kills its worker), else None."""
    from crypto_assets.orchestration.launcher import terminate, watch

    if run_id is None:
        print("\ninterrupted before a run started", file=sys.stderr)
        return None
    print(f"\ninterrupted: canceling run {run_id} (Ctrl-C again to stop waiting)", file=sys.stderr, flush=True)
    try:
        terminate(instance, run_id)
        run = watch(instance, run_id, lambda _: None, timeout_s=cancel_wait_s())
    except KeyboardInterrupt:
        print(f"stopped waiting; killing run {run_id}'s worker", file=sys.stderr)
        return run_id
    print(f"run {run_id}: {run.status.value}", file=sys.stderr)
    return None if run.is_finished else run_id


class _Progress:
    """Prints each step's start and end as the run's events arrive, and keeps them for the failure report."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.events: list[DagsterEvent] = []
        self._started: dict[str, float] = {}

    def __call__(self, entry: EventLogEntry) -> None:
        event = entry.dagster_event
        if event is None:
            return
        self.events.append(event)
        step, kind = event.step_key, event.event_type_value
        if kind == "STEP_START" and step:
            self._started[step] = entry.timestamp
            print(f"{self.prefix}   {step} started", flush=True)
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED", "STEP_UP_FOR_RETRY") and step:
            took = entry.timestamp - self._started.get(step, entry.timestamp)
            word = {"STEP_SUCCESS": "done", "STEP_FAILURE": "FAILED", "STEP_SKIPPED": "skipped"}.get(kind, "retrying")
            print(f"{self.prefix}   {step} {word} ({took:.1f} s)", flush=True)


def failure_messages(result: ExecuteInProcessResult | Iterable[DagsterEvent]) -> list[str]:
    """Each failed step's error with its causes (Dagster wraps the user's exception in its own); a run that
    failed outside any step (launch, worker crash) reports the run's own error."""
    from crypto_assets.orchestration.launcher import failure_chain

    events: list[DagsterEvent] = list(result.all_events if hasattr(result, "all_events") else result)
    messages = [
        f"step {event.step_key} failed:\n  " + "\n  ".join(failure_chain(event.step_failure_data.error))
        for event in events
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error
    ]
    if not messages:
        for event in events:
            data = event.job_failure_data if event.is_job_failure else None
            if data is not None and data.error is not None:
                messages.append("run failed:\n  " + "\n  ".join(failure_chain(data.error)))
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
        "round(psr, 3) AS psr, round(dsr, 3) AS dsr, n_trials AS n, round(pbo, 2) AS pbo, passes_constraints AS passes "
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
            f"max drawdown <= {config.constraints.max_drawdown}, Sharpe >= {config.constraints.min_sharpe}, "
            f"DSR >= {config.constraints.min_dsr} over the n distinct configurations in the trials registry, "
            "PSR when n = 1; pbo = probability of backtest overfitting of those trials)"
        )
        print(kpis)
        print("\nper-fold KPIs (test windows)")
        print(folds)


def _report(args: argparse.Namespace) -> int:
    """Write one experiment's dashboard, or a page comparing several, from their stored tables (no run)."""
    from crypto_assets.config.loader import resolve_path
    from crypto_assets.dashboard import MissingTableError, compare, dashboard, dashboard_path, from_config, write_page

    configs = [_load(path) for path in (args.compare or [args.config])]
    try:
        experiments = [from_config(config) for config in configs]
        if args.compare:
            page = compare(experiments)
            names = "__".join(data.name for data in experiments)
            default = resolve_path(configs[0].experiment.storage_dir) / "compare" / f"{names}.html"
        else:
            page = dashboard(experiments[0])
            default = dashboard_path(experiments[0].root)
    except (MissingTableError, ValueError) as exc:
        print(f"crypto-lab report: {exc}", file=sys.stderr)
        return 2
    path = write_page(page, Path(args.out) if args.out else default)
    print(f"{', '.join(page.sections)} ({page.charts} charts): {path}")
    return 0


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


RUN_DESCRIPTION = """\
Materialize the experiment through Dagster on its persistent instance (storage/<experiment>/dagster_home),
then print the bars summary and the KPI tables. Runs are launched like the UI launches them: against the
code location `crypto_assets` (workspace.yaml, module crypto_assets.definitions with CRYPTO_ASSETS_CONFIG set
to FILE) on the instance's run launcher, so `make ui` lists them on its Jobs page and Overview timeline. One
run per partitions definition, one after the other: `ingest` (every month in one run), `folds` (one per
fold), `reports`, `stress` (when a stress scenario is on). Each run's steps are shown as they start and finish; the first failure stops the
command with each failed step's error chain (exit 1). Ctrl-C cancels the run in flight (it ends CANCELED;
a step still busy after CRYPTO_LAB_CANCEL_WAIT_S seconds, default 120, has its worker killed) and exits 130. An experiment shorter than one fold is data-only: it ingests, validates and prints the bars.
"""

RUN_EPILOG = """\
examples:
  crypto-lab run --config configs/demo.yaml                         everything, end to end
  crypto-lab run --config configs/demo.yaml --only data             ingest and validate only
  crypto-lab run --config FILE --only sweep                         the config's `sweep` (RAY_ADDRESS: on that cluster)
  crypto-lab run --config configs/demo.yaml --folds 2023-07-01,2023-09  two folds (and the data they read)
  crypto-lab run --config configs/demo.yaml --only folds,reports --folds 2024-05-01
                                                                    redo one fold, then refresh the tables
  crypto-lab run --config configs/demo.yaml --only folds,reports --skip-training
                                                                    re-backtest every fold with the stored
                                                                    models (e.g. after changing costs)
  crypto-lab run --config configs/demo.yaml --only reports          recompute the tables from stored folds
  crypto-lab run --config configs/demo.yaml --only stress           stress paths and replays of the stored folds
  crypto-lab run --config configs/binance.yaml --only live,paper    train this month's live models, paper-trade
                                                                    every bar closed so far (then: the schedule)
  crypto-lab run --config configs/demo.yaml --log-level WARNING     quieter console

exit codes: 0 done, 1 a run failed, 2 bad option or config (or data that differs from what the experiment
stores), 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crypto-lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate-config", help="check an experiment YAML file")
    validate.add_argument("file")
    validate.set_defaults(handler=_validate_config)

    run = sub.add_parser(
        "run",
        help="materialize the experiment end to end through Dagster",
        description=RUN_DESCRIPTION,
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", required=True, metavar="FILE", help="the experiment YAML, e.g. configs/demo.yaml")
    run.add_argument(
        "--only",
        action="append",
        metavar="STAGE[,STAGE...]",
        help=(
            "run only these stages, in graph order, repeatable or comma-separated: data (ingest + validate "
            "every month in one run), folds (one run per fold), reports (walk-forward equity and the KPI, "
            "regime and trial tables from the stored folds), stress (stress paths and every stored fold strategy "
            f"replayed on them, when a scenario is on), live (the `{LIVE_JOB}` job's newest month, when "
            "the experiment defines it; never part of the default), paper (the `paper` job's newest month: its live "
            "models traded forward on the bars closed by now, appended to the paper ledger; after live; never part "
            "of the default). Default: data,folds,reports,stress "
            "(data,folds with --folds)"
        ),
    )
    run.add_argument(
        "--folds",
        metavar="KEY[,KEY...]",
        help=(
            "only these fold partitions (the first month of each test window, YYYY-MM-01 or YYYY-MM); "
            "a key that is not a fold of the experiment is an error listing the folds"
        ),
    )
    run.add_argument(
        "--skip-training",
        action="store_true",
        help=(
            "fold runs leave out the trained models (the assets in the `gpu` pool) and reuse the outputs an "
            "earlier run stored: datasets, baselines, ensemble and backtests are recomputed"
        ),
    )
    run.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="console level of the runs' logs and the code server (the event log keeps everything); default INFO",
    )
    run.set_defaults(handler=_run)

    report = sub.add_parser(
        "report",
        help="write the HTML dashboard of an experiment, or one comparing experiments",
        description=(
            "Write a self-contained HTML page (plotly.js inlined: opens offline) from the experiments' stored "
            "tables, without a run. --config: the experiment's dashboard, storage/<experiment>/reports/"
            "dashboard.html (what the `report` asset of `crypto-lab run` writes). --compare: the stitched equity, "
            "KPIs and per-fold Sharpe of several experiments side by side, by default "
            "storage/compare/<A>__<B>.html (the first experiment's storage_dir). An experiment not yet run, or "
            "without its report tables, is an error naming it and the table (exit 2)."
        ),
        epilog=(
            "examples:\n  crypto-lab report --config configs/demo.yaml\n"
            "  crypto-lab report --compare configs/demo.yaml configs/csv.yaml --out /tmp/compare.html"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = report.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", metavar="FILE", help="one experiment's YAML")
    which.add_argument("--compare", nargs="+", metavar="FILE", help="two or more experiments' YAML files")
    report.add_argument("--out", metavar="PATH", help="where to write the page (default: see above)")
    report.set_defaults(handler=_report)

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
