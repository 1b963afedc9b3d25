"""raw_ohlcv → bars through Dagster: partitions, single-run ranges, checks, storage, schedule, CLI."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from crypto_assets.cli import main
from crypto_assets.config import ExperimentConfig, load_config
from crypto_assets.orchestration.assets.ingestion import BAR_CHECKS
from crypto_assets.orchestration.definitions import INGEST_JOB, build_definitions
from crypto_assets.paths import dagster_home, experiment_root
from crypto_assets.storage.warehouse import Warehouse
from crypto_assets.validation import RULE_NAMES
from crypto_assets_tests.tiny import TINY_MODELS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def write_config(tmp_path: Path, name: str = "tiny", **data: object) -> Path:
    raw = {
        "experiment": {"name": name, "gpu_id": None, "seed": 3, "storage_dir": str(tmp_path / "storage")},
        "data": {
            "tickers": ["BTC/USDT", "ETH/USDT"],
            "timeframe": "1h",
            "source": "synthetic",
            "start": "2024-01-01",
            "end": "2024-03-31",
            **data,
        },
        # Short data spans still need one walk-forward fold for the later assets to be defined.
        "walk_forward": {"train_months": 1, "test_months": 1, "label_horizon": 12},
        "models": TINY_MODELS,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    from crypto_assets.cli import failure_messages

    return "\n".join(failure_messages(result))


def run_ingest(
    config: ExperimentConfig, first: str, last: str, instance: dg.DagsterInstance, **kwargs: object
) -> dg.ExecuteInProcessResult:
    job = build_definitions(config).resolve_job_def(INGEST_JOB)
    tags = {} if first == last else dict(zip(RANGE_TAGS, (first, last), strict=True))
    return job.execute_in_process(
        instance=instance, partition_key=first if first == last else None, tags=tags, raise_on_error=False, **kwargs
    )


@pytest.mark.parametrize("name", ["demo.yaml", "csv.yaml", "binance.yaml"])
def test_definitions_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTO_ASSETS_CONFIG", str(PROJECT_ROOT / "configs" / name))
    import importlib

    import crypto_assets.definitions as module

    defs = importlib.reload(module).defs
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} >= {"raw_ohlcv", "bars"}
    assert {k.name for k in graph.asset_check_keys} == set(BAR_CHECKS)
    assert tuple(BAR_CHECKS) == RULE_NAMES  # one asset check per validation rule
    schedule = defs.resolve_schedule_def("ingest_current_month")
    live = name == "binance.yaml"
    assert schedule.default_status == (dg.DefaultScheduleStatus.RUNNING if live else dg.DefaultScheduleStatus.STOPPED)
    assert schedule.cron_schedule == "2 * * * *"


def test_single_run_range_writes_one_file_per_month(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_ingest(config, "2024-01-01", "2024-03-01", instance)
        assert result.success
        checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == set(BAR_CHECKS)
    assert all(c.passed for c in checks if c.check_name in ("schema", "ohlc_consistency", "unique_sorted_timestamps"))
    wh = Warehouse(experiment_root(config))
    assert wh.stored_keys("bars") == ["2024-01-01", "2024-02-01", "2024-03-01"]
    counts = wh.query("SELECT symbol, count(*) AS n FROM bars GROUP BY symbol ORDER BY symbol")
    assert counts["n"].to_list() == [(31 + 29 + 31) * 24] * 2
    feb = wh.read_partitions("bars", ["2024-02-01"])
    assert feb["ts"].min() == dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
    assert feb["ts"].max() == dt.datetime(2024, 2, 29, 23, tzinfo=dt.UTC)
    assert feb.schema["ts"] == pl.Datetime("us", "UTC")


def test_rematerializing_one_month_replaces_only_it(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    wh = Warehouse(experiment_root(config))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_ingest(config, "2024-01-01", "2024-03-01", instance).success
        before = {k: wh.partition_path("bars", k).stat().st_mtime_ns for k in wh.stored_keys("bars")}
        jan = wh.read_partitions("bars", ["2024-01-01"])
        assert run_ingest(config, "2024-02-01", "2024-02-01", instance).success
    after = {k: wh.partition_path("bars", k).stat().st_mtime_ns for k in wh.stored_keys("bars")}
    assert after["2024-01-01"] == before["2024-01-01"] and after["2024-03-01"] == before["2024-03-01"]
    assert after["2024-02-01"] != before["2024-02-01"]
    assert wh.read_partitions("bars", ["2024-01-01"]).equals(jan)
    assert wh.query("SELECT count(*) AS n FROM bars")["n"][0] == (31 + 29 + 31) * 24 * 2


def test_hard_validation_error_fails_before_writing(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    wh = Warehouse(experiment_root(config))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_ingest(config, "2024-01-01", "2024-01-01", instance).success
        good_bars = wh.read_partitions("bars", ["2024-01-01"])
        # Corrupt the stored raw partition (high below low on one row), then rebuild only `bars`.
        raw = wh.read_partitions("raw_ohlcv", ["2024-01-01"])
        raw = raw.with_columns(
            pl.when(pl.int_range(pl.len()) == 5).then(pl.col("low") * 0.5).otherwise(pl.col("high")).alias("high")
        )
        wh.write_partition("raw_ohlcv", raw, "2024-01-01")
        job = build_definitions(config).resolve_job_def(INGEST_JOB)
        result = job.execute_in_process(
            instance=instance, partition_key="2024-01-01", asset_selection=[dg.AssetKey("bars")], raise_on_error=False
        )
    assert not result.success
    message = failure_text(result)
    assert "ohlc_consistency" in message and "high" in message
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["ohlc_consistency"].passed
    assert wh.read_partitions("bars", ["2024-01-01"]).equals(good_bars)  # nothing half-written


def test_schedule_refreshes_current_month_incrementally(tmp_path: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    start = (today.replace(day=1) - dt.timedelta(days=1)).replace(day=1)  # first day of last month
    config = load_config(write_config(tmp_path, start=start.isoformat(), end=None))
    defs = build_definitions(config)
    current = today.replace(day=1).isoformat()
    wh = Warehouse(experiment_root(config))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_ingest(config, start.isoformat(), current, instance).success  # features read last month too
        full = wh.read_partitions("raw_ohlcv", [current])
        # Drop the newest six bars of each symbol, as if the last hours had not been fetched yet.
        cutoff = full["ts"].max() - dt.timedelta(hours=5)
        wh.write_partition("raw_ohlcv", full.filter(pl.col("ts") < cutoff), current)
        schedule = defs.resolve_schedule_def("ingest_current_month")
        tick = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=dt.datetime.now(dt.UTC),
            repository_def=defs.get_repository_def(),
        )
        request = schedule.evaluate_tick(tick).run_requests[0]
        assert request.partition_key == current
        result = defs.resolve_job_def(INGEST_JOB).execute_in_process(
            instance=instance, partition_key=request.partition_key, run_config=request.run_config
        )
    assert result.success
    meta = result.asset_materializations_for_node("raw_ohlcv")[0].metadata
    assert meta["mode"].value.startswith("incremental from")
    assert 12 <= meta["fetched_bars"].value <= 14  # the six dropped bars per symbol (+ one newly closed)
    refreshed = wh.read_partitions("raw_ohlcv", [current])
    assert refreshed.filter(pl.col("ts") <= full["ts"].max()).equals(full)


def test_experiments_do_not_mix(tmp_path: Path) -> None:
    first = load_config(write_config(tmp_path, name="first"))
    second = load_config(write_config(tmp_path, name="second", tickers=["SOL/USDT"]))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_ingest(first, "2024-01-01", "2024-01-01", instance).success
        snapshot = Warehouse(experiment_root(first)).read_table("bars")
        assert run_ingest(second, "2024-01-01", "2024-01-01", instance).success
    assert experiment_root(first) != experiment_root(second)
    assert Warehouse(experiment_root(first)).read_table("bars").equals(snapshot)
    assert Warehouse(experiment_root(second)).read_table("bars")["symbol"].unique().to_list() == ["SOL/USDT"]


def test_crypto_lab_run_uses_the_persistent_instance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # restored after the test: `run` sets both
    monkeypatch.delenv("CRYPTO_ASSETS_CONFIG", raising=False)
    path = write_config(tmp_path, end="2024-02-29")
    assert main(["run", "--config", str(path), "--log-level", "WARNING"]) == 0
    out = capsys.readouterr().out
    assert "done in" in out and "BTC/USDT" in out and "duckdb -readonly" in out and "stitched walk-forward KPIs" in out
    config = load_config(path)
    home = dagster_home(config)
    assert (home / "dagster.yaml").exists()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = {run.job_name: run for run in instance.get_runs()}
        assert len(instance.get_runs()) == 3  # months in one run, the one fold (2024-02), the reports
        assert runs["ingest"].tags["dagster/asset_partition_range_end"] == "2024-02-01"
        assert runs["folds"].tags["dagster/partition"] == "2024-02-01"
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 1


def test_dagster_cli_materialize_partition_and_range(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    config = load_config(path)
    env = {**os.environ, "CRYPTO_ASSETS_CONFIG": str(path), "DAGSTER_HOME": str(dagster_home(config))}
    dagster_home(config).mkdir(parents=True)
    (dagster_home(config) / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    dagster = str(Path(sys.executable).parent / "dagster")
    base = [dagster, "asset", "materialize", "-m", "crypto_assets.definitions", "--select", "raw_ohlcv,bars"]
    ran = subprocess.run(
        [*base, "--partition-range", "2024-01-01...2024-02-01"], env=env, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    ran = subprocess.run([*base, "--partition", "2024-03-01"], env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert Warehouse(experiment_root(config)).stored_keys("bars") == ["2024-01-01", "2024-02-01", "2024-03-01"]
    with dg.DagsterInstance.from_config(str(dagster_home(config))) as instance:
        assert len(instance.get_runs()) == 2  # the range was one run


def test_ccxt_experiment_through_the_local_exchange(tmp_path: Path) -> None:
    from crypto_assets_tests.local_exchange import garbage_row, load_fixture, running_exchange

    recorded = pl.concat([load_fixture(s) for s in ("BTC/USDT", "SOL/USDT")]).filter(
        (pl.col("ts") >= dt.datetime(2020, 7, 1, tzinfo=dt.UTC))
        & (pl.col("ts") < dt.datetime(2020, 9, 1, tzinfo=dt.UTC))
    )
    with running_exchange(recorded) as exchange:
        path = write_config(
            tmp_path,
            tickers=["BTC/USDT", "SOL/USDT"],
            source="binance_historical",
            api_url=exchange.url,
            start="2020-07-01",
            end="2020-08-31",
            ccxt={"rate_limit_ms": 0, "backoff_s": 0.0, "max_retries": 1},
        )
        config = load_config(path)
        wh = Warehouse(experiment_root(config))
        with dg.DagsterInstance.ephemeral() as instance:
            assert run_ingest(config, "2020-07-01", "2020-08-01", instance).success
            raw = wh.read_table("raw_ohlcv")
            assert raw.sort("symbol", "ts").equals(recorded.sort("symbol", "ts"))  # SOL lists on 2020-08-11
            stored = wh.read_table("bars")
            # An exchange returning garbage fails the partition and leaves what is stored untouched.
            exchange.inject(garbage_row(2, "non_numeric"), garbage_row(2, "non_numeric"))
            result = run_ingest(config, "2020-08-01", "2020-08-01", instance)
        assert not result.success
        message = failure_text(result)
        assert "binance: BTC/USDT 1h" in message and "must be numeric" in message
        assert wh.read_table("bars").equals(stored) and wh.read_table("raw_ohlcv").equals(raw)


def test_real_gaps_flagged_not_filled_stop_features_with_a_hint(tmp_path: Path) -> None:
    shared = PROJECT_ROOT.parent / "shared" / "data" / "ohlcv"
    path = write_config(tmp_path, source="csv", csv_dir=str(shared), start="2020-01-01", end="2020-03-31")
    raw = yaml.safe_load(path.read_text())
    raw["validation"] = {"gap_policy": "flag"}
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_ingest(config, "2020-01-01", "2020-03-01", instance)
    assert not result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["continuity"].passed and checks["continuity"].severity == dg.AssetCheckSeverity.WARN
    assert "set validation.gap_policy: ffill" in failure_text(result)
    # The flagged bars were stored (the gaps listed, not filled): 2020-02-09 02:00 is missing.
    bars = Warehouse(experiment_root(config)).read_partitions("bars", ["2020-02-01"])
    assert bars.filter(pl.col("ts") == dt.datetime(2020, 2, 9, 2, tzinfo=dt.UTC)).is_empty()
