"""`crypto-lab run`: runs launched on the experiment's instance against the code location, so the UI lists
them; stage and fold selection, training skipped, failures with their error chain, Ctrl-C cancels."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from crypto_assets.cli import build_parser, main
from crypto_assets.config import load_config
from crypto_assets.orchestration.launcher import CODE_LOCATION, CODE_MODULE
from crypto_assets.paths import dagster_home, experiment_root
from crypto_assets.storage.warehouse import Warehouse
from crypto_assets_tests.tiny import TINY_MODELS, tiny_models

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = "__repository__"  # the repository name Dagster gives a module's single `Definitions`


def write_config(
    tmp_path: Path, name: str, *, end: str, train_months: int = 1, models: dict[str, Any] | None = None
) -> Path:
    raw = {
        "experiment": {"name": name, "gpu_id": None, "seed": 3, "storage_dir": str(tmp_path / "storage")},
        "data": {"tickers": ["BTC/USDT"], "timeframe": "1h", "source": "synthetic", "start": "2024-01-01", "end": end},
        "walk_forward": {"train_months": train_months, "test_months": 1, "label_horizon": 12},
        "models": models or TINY_MODELS,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(autouse=True)
def _restore_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # `crypto-lab run` points DAGSTER_HOME and CRYPTO_ASSETS_CONFIG at the experiment; undone after each test.
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("CRYPTO_ASSETS_CONFIG", raising=False)


def runs_of(path: Path) -> list[dg.DagsterRun]:
    """The experiment instance's runs, oldest first."""
    with dg.DagsterInstance.from_config(str(dagster_home(load_config(path)))) as instance:
        return list(reversed(instance.get_runs()))


def assert_launched_from_the_code_location(path: Path, run: dg.DagsterRun) -> None:
    """What the UI needs to list a run under its job: a remote origin naming the code location and repository."""
    origin = run.remote_job_origin
    assert origin is not None, f"run {run.run_id} ({run.job_name}) has no remote origin"
    assert origin.job_name == run.job_name
    assert origin.repository_origin.repository_name == REPOSITORY
    assert origin.repository_origin.code_location_origin.location_name == CODE_LOCATION
    # The Jobs page asks for the job's runs by the repository label Dagster stores with such a run.
    label = {".dagster/repository": f"{REPOSITORY}@{CODE_LOCATION}"}
    with dg.DagsterInstance.from_config(str(dagster_home(load_config(path)))) as instance:
        listed = instance.get_runs(dg.RunsFilter(job_name=run.job_name, tags=label))
    assert run.run_id in {listed_run.run_id for listed_run in listed}
    assert run.job_code_origin is not None
    assert run.job_code_origin.repository_origin.code_pointer.module == CODE_MODULE  # type: ignore[attr-defined]


def ui_job_runs(path: Path, job: str) -> list[tuple[str, str]]:
    """A job's runs as the Dagster UI's GraphQL API returns them, on the workspace `make ui` loads."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    query = """query ($selector: PipelineSelector!) {
      pipelineOrError(params: $selector) { ... on Pipeline { runs { runId status } } }
    }"""
    selector = {"pipelineName": job, "repositoryName": REPOSITORY, "repositoryLocationName": CODE_LOCATION}
    assert os.environ["CRYPTO_ASSETS_CONFIG"] == str(path.resolve())  # the location loads this experiment
    with (
        dg.DagsterInstance.from_config(str(dagster_home(load_config(path)))) as instance,
        WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(PROJECT_ROOT / "workspace.yaml")])) as ui,
    ):
        result = execute_dagster_graphql(ui.create_request_context(), query, {"selector": selector})
    return [(run["runId"], run["status"]) for run in result.data["pipelineOrError"]["runs"]]


def test_workspace_yaml_names_the_code_location_runs_are_launched_against() -> None:
    """`make ui` loads workspace.yaml; the UI matches runs to jobs by location and repository name."""
    (entry,) = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())["load_from"]
    assert entry["python_module"] == {"module_name": CODE_MODULE, "location_name": CODE_LOCATION}


def test_data_only_run_is_listed_with_its_job_and_code_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, "short", end="2024-02-29", train_months=6)
    assert main(["run", "--config", str(path), "--log-level", "WARNING"]) == 0
    out = capsys.readouterr().out
    assert "note: data 2024-01-01..2024-02-29 is shorter than one fold" in out
    assert "[1/1]   bars started" in out and "[1/1]   bars done" in out  # step progress as it happens
    assert "[1/1] raw_ohlcv → bars → features, 2 months 2024-01-01 .. 2024-02-01 in one run: ok" in out
    assert "BTC/USDT" in out and "KPIs" not in out
    home = dagster_home(load_config(path))
    assert (home / "dagster.yaml").exists()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 1
    (run,) = runs_of(path)
    assert run.job_name == "ingest" and run.status == dg.DagsterRunStatus.SUCCESS
    assert_launched_from_the_code_location(path, run)
    assert run.tags["dagster/asset_partition_range_end"] == "2024-02-01"
    # The query behind the UI's job page (`make ui` loads workspace.yaml) lists the run under its job.
    assert ui_job_runs(path, "ingest") == [(run.run_id, "SUCCESS")]
    # A data-only experiment has nothing to fold or report.
    assert main(["run", "--config", str(path), "--only", "reports"]) == 2
    assert "no folds and no reports" in capsys.readouterr().err


def test_folds_select_exactly_those_fold_runs_and_every_run_is_launched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, "two_folds", end="2024-03-31")  # folds 2024-02-01 and 2024-03-01
    # --folds alone: the data and that fold, no reports (they need every fold).
    assert main(["run", "--config", str(path), "--folds", "2024-03", "--log-level", "WARNING"]) == 0
    assert [(run.job_name, run.tags.get("dagster/partition")) for run in runs_of(path)] == [
        ("ingest", None),
        ("folds", "2024-03-01"),
    ]
    assert "KPIs" not in capsys.readouterr().out
    # The other fold and the tables, from the stored data.
    argv = ["run", "--config", str(path), "--only", "folds", "--only", "reports", "--folds", "2024-02-01"]
    assert main([*argv, "--log-level", "WARNING"]) == 0
    assert "stitched walk-forward KPIs" in capsys.readouterr().out
    runs = runs_of(path)
    assert [(run.job_name, run.tags.get("dagster/partition")) for run in runs] == [
        ("ingest", None),
        ("folds", "2024-03-01"),
        ("folds", "2024-02-01"),
        ("reports", None),
    ]
    for run in runs:
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert_launched_from_the_code_location(path, run)
    warehouse = Warehouse(experiment_root(load_config(path)))
    assert sorted(warehouse.query("SELECT DISTINCT scope FROM kpis WHERE scope <> 'stitched'")["scope"]) == [
        "2024-02-01",
        "2024-03-01",
    ]

    # --skip-training: one fold again without its trained assets (the `gpu` pool's), which keep their stored
    # materializations; everything else of the fold is recomputed from them.
    from crypto_assets.orchestration.definitions import build_definitions

    graph = build_definitions(load_config(path)).resolve_job_def("folds").asset_layer.asset_graph
    trained = {key for key in graph.executable_asset_keys if "gpu" in (graph.get(key).pools or ())}
    assert trained  # the tiny experiment trains its ensemble members
    home = str(dagster_home(load_config(path)))
    with dg.DagsterInstance.from_config(home) as instance:
        stored = {key: instance.get_latest_materialization_event(key) for key in trained}
    assert main(["run", "--config", str(path), "--only", "folds", "--folds", "2024-02-01", "--skip-training"]) == 0
    out = capsys.readouterr().out
    assert f"skipping {', '.join(sorted(key.to_user_string() for key in trained))}" in out and "backtest done" in out
    last = runs_of(path)[-1]
    assert last.status == dg.DagsterRunStatus.SUCCESS and last.asset_selection is not None
    assert {key.to_user_string() for key in last.asset_selection} >= {"fold_dataset", "ensemble", "backtest"}
    assert not last.asset_selection & trained
    with dg.DagsterInstance.from_config(home) as instance:
        assert {key: instance.get_latest_materialization_event(key) for key in trained} == stored
        backtest = instance.get_latest_materialization_event(dg.AssetKey("backtest"))
    assert backtest is not None and backtest.run_id == last.run_id


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--folds", "2024-05-01"], "--folds: 2024-05-01 is not a fold of this experiment; its 2 folds"),
        (["--folds", "2024-02-01", "--only", "data"], "--folds selects fold runs: add `folds` to --only"),
        (["--skip-training", "--only", "reports"], "--skip-training applies to fold runs"),
        (
            ["--only", "data,backtests"],
            "--only: unknown stage(s) backtests; choose from data, folds, reports, stress, live",
        ),
    ],
)
def test_bad_options_exit_2_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    path = write_config(tmp_path, "options", end="2024-03-31")
    assert main(["run", "--config", str(path), *options]) == 2
    err = capsys.readouterr().err
    assert message in err
    if "--folds:" in message:
        assert "2024-02-01, 2024-03-01" in err  # the valid keys are listed
    assert runs_of(path) == []


def test_live_stage_only_when_the_definitions_have_the_live_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from crypto_assets import cli
    from crypto_assets.orchestration import definitions
    from crypto_assets.orchestration.definitions import build_definitions

    assert cli.LIVE_JOB == definitions.LIVE_JOB  # cli keeps its own copy: `validate-config` imports no dagster

    path = write_config(tmp_path, "live", end="2024-03-31")
    config = load_config(path)
    defs = build_definitions(config)
    args = build_parser().parse_args(["run", "--config", str(path), "--only", "live"])
    if cli.LIVE_JOB in {job.name for job in defs.jobs or ()}:  # the registry's live fold: the newest month
        (request,) = cli._plan(args, config, defs, None)
        assert (request.job, dict(request.tags)) == (cli.LIVE_JOB, {"dagster/partition": "2024-03-01"})
    monkeypatch.setattr(cli, "LIVE_JOB", "no_such_job")  # definitions without it: refused, nothing launched
    assert main(["run", "--config", str(path), "--only", "live"]) == 2
    assert "--only live: this experiment's definitions have no `no_such_job` job" in capsys.readouterr().err
    assert runs_of(path) == []


def test_a_failed_run_stops_the_command_with_its_error_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, "no_data", end="2024-02-29")
    # Folds on an empty warehouse: the first step that loads stored data fails; reports are never launched.
    assert main(["run", "--config", str(path), "--only", "folds,reports", "--log-level", "ERROR"]) == 1
    captured = capsys.readouterr()
    assert ": FAILURE (" in captured.out
    # Each failed step with its chain: Dagster's wrapper, then our error naming the missing months.
    assert "failed:\n  dagster._core.errors.DagsterExecutionLoadInputError" in captured.err
    assert "table 'bars' has no stored partition 2024-01-01" in captured.err
    (run,) = runs_of(path)
    assert run.job_name == "folds" and run.status == dg.DagsterRunStatus.FAILURE


def test_ctrl_c_cancels_the_launched_run_and_exits_non_zero(tmp_path: Path) -> None:
    """SIGINT once the fold run executes its steps (its PPO budget would take hours): the run is canceled through
    the launcher (it ends CANCELED, the reports never start) and the command exits 130. That a step started is
    read from the instance, not guessed with a sleep."""
    models = tiny_models(PPO_Agent={"total_timesteps": 50_000_000})  # hours of training
    path = write_config(tmp_path, "interrupted", end="2024-02-29", models=models)
    assert main(["run", "--config", str(path), "--only", "data", "--log-level", "ERROR"]) == 0
    env = {key: value for key, value in os.environ.items() if key not in ("DAGSTER_HOME", "CRYPTO_ASSETS_CONFIG")}
    # A step sees a cancel only at its next event: whether the run stops by itself (a step boundary) or its
    # worker, busy training, is killed after this wait, it must end CANCELED with nothing left running.
    env["CRYPTO_LAB_CANCEL_WAIT_S"] = "5"
    command = [sys.executable, "-m", "crypto_assets.cli", "run", "--config", str(path), "--log-level", "ERROR"]
    lab = subprocess.Popen(
        [*command, "--only", "folds,reports"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with dg.DagsterInstance.from_config(str(dagster_home(load_config(path)))) as instance:
            deadline = time.monotonic() + 300
            while not _step_started(instance, "folds"):
                assert lab.poll() is None, lab.communicate()
                assert time.monotonic() < deadline, "the fold run never started a step"
                time.sleep(0.2)
        lab.send_signal(signal.SIGINT)
        _, err = lab.communicate(timeout=180)
    finally:
        if lab.poll() is None:
            lab.kill()
    assert lab.returncode == 130, err[-3000:]
    assert "interrupted: canceling run" in err and ": CANCELED" in err
    runs = runs_of(path)
    assert [(run.job_name, run.status) for run in runs[1:]] == [("folds", dg.DagsterRunStatus.CANCELED)]
    assert _processes_of(path) == [], "a code server or run worker outlived crypto-lab"


def _processes_of(config: Path) -> list[int]:
    """Live processes started for this experiment: they inherit CRYPTO_ASSETS_CONFIG from crypto-lab."""
    marker = f"CRYPTO_ASSETS_CONFIG={config.resolve()}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def _step_started(instance: dg.DagsterInstance, job: str) -> bool:
    return any(
        instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START).records
        for run in instance.get_runs(dg.RunsFilter(job_name=job))
    )


def test_run_help_explains_every_option_with_an_example() -> None:
    parser = build_parser()
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    run = commands.choices["run"]
    text = run.format_help()
    for action in run._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.option_strings
            option = action.option_strings[0]
            assert any(option in line for line in text.split("examples:")[1].splitlines()), option
