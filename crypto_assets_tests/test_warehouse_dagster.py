"""The warehouse under Dagster: a run killed mid-write agrees with Dagster's record and a re-run heals;
a config with other data under the same experiment name is refused by `crypto-lab run` and by the IO
manager (so `dagster asset materialize` and the UI are covered too)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from crypto_assets.cli import failure_messages, main
from crypto_assets.config import load_config
from crypto_assets.orchestration.definitions import INGEST_JOB, build_definitions
from crypto_assets.orchestration.instance import INSTANCE_TEMPLATE
from crypto_assets.paths import dagster_home, experiment_root
from crypto_assets.storage.fingerprint import FINGERPRINT_FILE
from crypto_assets.storage.warehouse import KILL_AT_ENV, Warehouse
from crypto_assets_tests.tiny import TINY_MODELS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
MONTHS = [f"2024-{m:02d}-01" for m in range(1, 7)]


def write_config(tmp_path: Path, name: str = "kept", **data: object) -> Path:
    raw = {
        "experiment": {"name": name, "gpu_id": None, "seed": 5, "storage_dir": str(tmp_path / "storage")},
        "data": {
            "tickers": ["BTC/USDT", "ETH/USDT"],
            "timeframe": "1h",
            "source": "synthetic",
            "start": "2024-01-01",
            "end": "2024-06-30",
            **data,
        },
        "walk_forward": {"train_months": 1, "test_months": 1, "label_horizon": 12},
        "models": TINY_MODELS,
    }
    path = tmp_path / f"{name}-{len(list(tmp_path.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_ingest(config_path: Path, instance: dg.DagsterInstance, first: str, last: str) -> dg.ExecuteInProcessResult:
    job = build_definitions(load_config(config_path)).resolve_job_def(INGEST_JOB)
    tags = {} if first == last else dict(zip(RANGE_TAGS, (first, last), strict=True))
    return job.execute_in_process(
        instance=instance, partition_key=first if first == last else None, tags=tags, raise_on_error=False
    )


_RUN_RANGE = """
import sys
import dagster as dg
from pathlib import Path
from crypto_assets_tests.test_warehouse_dagster import MONTHS, run_ingest
with dg.DagsterInstance.from_config(sys.argv[2]) as instance:
    result = run_ingest(Path(sys.argv[1]), instance, MONTHS[0], MONTHS[-1])
print("finished", result.success)
"""


def test_run_killed_mid_range_agrees_with_dagster_and_a_rerun_heals(tmp_path: Path) -> None:
    """One ingest run over six months, killed (SIGKILL) after 3 of bars' 6 partition files: Dagster
    records raw_ohlcv's six months and no bars, and the warehouse shows exactly that; the re-run
    stores everything and removes what the killed run left."""
    path = write_config(tmp_path)
    config = load_config(path)
    home = dagster_home(config)
    home.mkdir(parents=True)
    shutil.copyfile(INSTANCE_TEMPLATE, home / "dagster.yaml")
    env = {**os.environ, KILL_AT_ENV: "bars:partition_file:3"}
    ran = subprocess.run(
        [sys.executable, "-c", _RUN_RANGE, str(path), str(home)],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == -signal.SIGKILL, ran.stdout[-2000:] + ran.stderr[-2000:]
    wh = Warehouse(experiment_root(config))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        recorded = {name: instance.get_materialized_partitions(dg.AssetKey(name)) for name in ("raw_ohlcv", "bars")}
        assert recorded == {"raw_ohlcv": set(MONTHS), "bars": set()}
        assert wh.stored_keys("raw_ohlcv") == MONTHS and wh.stored_keys("bars") == []
        assert wh.query("SELECT count(*) AS n FROM raw_ohlcv")["n"][0] == wh.read_table("raw_ohlcv").height
        assert "bars" not in wh.view_files()  # nothing half-visible
        assert len(list(wh.table_dir("bars").glob("*.w*.parquet"))) == 3  # left by the killed write

        result = run_ingest(path, instance, MONTHS[0], MONTHS[-1])
        assert result.success
        assert instance.get_materialized_partitions(dg.AssetKey("bars")) == set(MONTHS)
    assert wh.stored_keys("bars") == MONTHS
    assert sorted(p.name for p in wh.table_dir("bars").glob("*.w*.parquet")) == sorted(
        wh.partition_path("bars", key).name for key in MONTHS
    )
    hours = (31 + 29 + 31 + 30 + 31 + 30) * 24
    assert wh.query("SELECT count(*) AS n FROM bars")["n"][0] == 2 * hours


def test_other_data_under_the_same_name_is_refused_by_run_and_io_manager(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # restored after the test: `prepare_instance` sets both
    monkeypatch.delenv("CRYPTO_ASSETS_CONFIG", raising=False)
    hourly = write_config(tmp_path, end="2024-01-31")
    root = experiment_root(load_config(hourly))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_ingest(hourly, instance, MONTHS[0], MONTHS[0]).success
        assert (root / FINGERPRINT_FILE).exists()
        bars = Warehouse(root).read_table("bars")
        # The UI / `dagster asset materialize` path: the IO manager refuses before writing anything.
        quarter_hourly = write_config(tmp_path, end="2024-01-31", timeframe="15m")
        result = run_ingest(quarter_hourly, instance, MONTHS[0], MONTHS[0])
        assert not result.success
        message = "\n".join(failure_messages(result))
        assert "timeframe 1h → 15m" in message and "another experiment.name" in message
        assert Warehouse(root).read_table("bars").equals(bars)
        # Extending the span is normal: same data, longer.
        assert run_ingest(write_config(tmp_path, end="2024-02-29"), instance, MONTHS[1], MONTHS[1]).success
    # `crypto-lab run`: refused before any run, with both fingerprints and the way out.
    capsys.readouterr()
    assert main(["run", "--config", str(quarter_hourly), "--log-level", "ERROR"]) == 2
    err = capsys.readouterr().err
    assert "stored:" in err and "config:" in err and "timeframe 1h → 15m" in err and f"delete {root}/" in err
    assert not dagster_home(load_config(quarter_hourly)).exists()  # nothing was set up, nothing ran


def test_a_foreign_file_in_an_upstream_month_is_named_on_load(tmp_path: Path) -> None:
    """The IO manager checks every month it loads against that month's window: January's bars stored
    as February (by a writer that recorded no window) stop `features` naming the file and the rule."""
    path = write_config(tmp_path, end="2024-02-29")
    wh = Warehouse(experiment_root(load_config(path)))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_ingest(path, instance, MONTHS[0], MONTHS[1]).success
        wh.write_partition("bars", wh.read_partitions("bars", [MONTHS[0]]), MONTHS[1])
        foreign = wh.partition_path("bars", MONTHS[1])
        job = build_definitions(load_config(path)).resolve_job_def(INGEST_JOB)
        result = job.execute_in_process(
            instance=instance, partition_key=MONTHS[1], asset_selection=[dg.AssetKey("features")], raise_on_error=False
        )
    assert not result.success
    message = "\n".join(failure_messages(result))
    assert "table 'bars' partition 2024-02-01" in message and "outside the partition window" in message
    assert foreign.name in message
