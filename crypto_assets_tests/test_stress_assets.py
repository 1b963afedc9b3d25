"""The `stress` job through Dagster on a tiny experiment (tiny models): paths and results as warehouse tables,
stress_kpis with its native table, chart and the WARN check, every fold's trained strategies replayed."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from crypto_assets.config import load_config
from crypto_assets.orchestration.assets.stress import CHECK_NAME, stress_folds, stress_history_bars
from crypto_assets.orchestration.definitions import FOLDS_JOB, INGEST_JOB, STRESS_JOB, build_definitions
from crypto_assets.paths import experiment_root
from crypto_assets.storage.warehouse import Warehouse
from crypto_assets.stress import replay
from crypto_assets_tests.tiny import MODEL_STRATEGIES, TINY_MODELS

FOLDS = ["2024-03-01", "2024-04-01"]
RANGE = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-04-01"}
STAND_IN = "crypto_assets_tests.test_stress_replay:crash_path"


def write_config(tmp_path: Path, **stress: object) -> Path:
    raw = {
        "experiment": {"name": "stress", "gpu_id": None, "seed": 5, "storage_dir": str(tmp_path / "storage")},
        "data": {
            "tickers": ["BTC/USDT", "ETH/USDT"],
            "timeframe": "1h",
            "source": "synthetic",
            "start": "2024-01-01",
            "end": "2024-04-30",
        },
        "walk_forward": {"train_months": 2, "test_months": 1, "label_horizon": 12},
        "baselines": ["buy_and_hold_btc", "trend_following"],
        "constraints": {"max_drawdown": 0.2},
        "models": TINY_MODELS,
        "stress": {"enabled": True, "seeds": [0], "paths_per_seed": 2, **stress},
    }
    path = tmp_path / "stress.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def stressed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dg.ExecuteInProcessResult]:
    tmp_path = tmp_path_factory.mktemp("stress")
    config = load_config(write_config(tmp_path))
    defs = build_definitions(config)
    patch = pytest.MonkeyPatch()
    # the stand-in crash generator for both scenarios (the real ones are tested in their own modules)
    patch.setitem(replay.SCENARIOS, "crash_bootstrap", STAND_IN)
    patch.setitem(replay.SCENARIOS, "panic", STAND_IN)
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            assert defs.resolve_job_def(INGEST_JOB).execute_in_process(instance=instance, tags=RANGE).success
            for fold in FOLDS:
                assert defs.resolve_job_def(FOLDS_JOB).execute_in_process(instance=instance, partition_key=fold).success
            result = defs.resolve_job_def(STRESS_JOB).execute_in_process(instance=instance)
    finally:
        patch.undo()
    assert result.success  # the WARN check does not fail the run
    return experiment_root(config), result


def test_stress_tables_chart_and_check(stressed: tuple[Path, dg.ExecuteInProcessResult]) -> None:
    root, result = stressed
    warehouse = Warehouse(root)
    paths = warehouse.read_table("stress_paths")
    assert paths is not None
    assert paths.select("scenario", "seed", "path_id").unique().height == 4  # 2 scenarios × 1 seed × 2 paths
    results = warehouse.read_table("stress_results")
    assert results is not None
    strategies = ["buy_and_hold_btc", "trend_following", *MODEL_STRATEGIES]
    assert sorted(results["strategy"].unique().to_list()) == sorted(strategies)
    # trained strategies once per fold and path, baselines once per path
    assert results.filter(pl.col("strategy") == "lstm_attn")["fold"].unique().sort().to_list() == FOLDS
    assert results.height == 4 * (2 + len(MODEL_STRATEGIES) * len(FOLDS))
    assert results["max_drawdown"].is_between(0, 1).all()
    kpis = warehouse.read_table("stress_kpis")
    assert kpis is not None
    assert kpis.height == 2 * len(strategies)
    assert kpis.filter(pl.col("strategy") == "buy_and_hold_btc")["p_breach"].to_list() == [1.0, 1.0]
    assert kpis["note"].to_list()[0] == "stand-in crash"

    events = result.get_asset_materialization_events()
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in events if e.asset_key is not None}
    table = meta["stress_kpis"]["kpis"]
    assert isinstance(table, dg.TableMetadataValue) and len(table.records) == kpis.height
    chart, notes = meta["stress_kpis"]["max_drawdown_chart"], meta["stress_kpis"]["notes"]
    assert isinstance(chart, dg.MarkdownMetadataValue) and isinstance(notes, dg.MarkdownMetadataValue)
    assert str(chart.value).startswith("![max drawdown on stress paths](data:image/png")
    assert "stand-in crash" in str(notes.value)
    assert meta["stress_results"]["replays"].value == results.height
    speed = meta["stress_results"]["replays_per_s"].value
    assert isinstance(speed, float) and speed > 0

    checks = result.get_asset_check_evaluations()
    assert [c.check_name for c in checks] == [CHECK_NAME]
    check = checks[0]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN  # buy & hold rides the crash
    assert "buy_and_hold_btc" in (check.description or "")


def test_stress_folds_and_history(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, folds="last"))
    assert stress_folds(config) == FOLDS[-1:]
    assert stress_folds(load_config(write_config(tmp_path, folds=["2024-03-01"]))) == ["2024-03-01"]
    with pytest.raises(ValueError, match="not a fold"):
        stress_folds(load_config(write_config(tmp_path, folds=["2024-02-01"])))
    # trend_following's 50-day SMA and the features' 30-day warm-up
    assert stress_history_bars(config) == 50 * 24 - 1 + 30 * 24
    for off in ({"enabled": False}, {"crash_bootstrap": {"enabled": False}, "panic": {"enabled": False}}):
        defs = build_definitions(load_config(write_config(tmp_path, **off)))
        assert STRESS_JOB not in {job.name for job in defs.jobs or ()}


def test_crypto_lab_run_plans_the_stress_stage_after_the_reports(tmp_path: Path) -> None:
    from crypto_assets import cli
    from crypto_assets.cli import UsageError, _plan, build_parser

    assert cli.STRESS_JOB == STRESS_JOB  # cli keeps its own copy: `validate-config` imports no dagster

    def plan(*options: str, **stress: object) -> list[str]:
        path = write_config(tmp_path, **stress)
        config = load_config(path)
        args = build_parser().parse_args(["run", "--config", str(path), *options])
        return [request.job for request in _plan(args, config, build_definitions(config), None)]

    assert plan() == ["ingest", *["folds"] * len(FOLDS), "reports", "stress"]
    assert plan("--only", "stress") == ["stress"]
    assert plan("--folds", "2024-03-01") == ["ingest", "folds"]  # the stress replays need every fold
    assert plan(enabled=False) == ["ingest", *["folds"] * len(FOLDS), "reports"]
    with pytest.raises(UsageError, match="no `stress` job"):
        plan("--only", "stress", enabled=False)
