"""CSV → validated `bars` for 5 years × 3 symbols of 1h bars as ONE Dagster run, writes included.

Prints the run's wall time, the same work done by the core alone (read + validate, in memory), and
the difference: Dagster's bookkeeping plus Parquet writes and DuckDB views. Needs ../shared/data/ohlcv.
Run: .venv/bin/python benchmarks/dagster_backfill.py
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml

from crypto_assets.config import load_config
from crypto_assets.orchestration.definitions import INGEST_JOB, build_definitions
from crypto_assets.orchestration.partitions import data_partitions
from crypto_assets.paths import experiment_root
from crypto_assets.sources.factory import make_source
from crypto_assets.storage.warehouse import Warehouse
from crypto_assets.validation import validate_bars

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "experiment": {"name": "bench", "gpu_id": None, "storage_dir": str(Path(tmp) / "storage")},
                    "data": {
                        "tickers": ["BTC/USDT", "ETH/USDT", "SOL/USDT"],
                        "timeframe": "1h",
                        "source": "csv",
                        "csv_dir": str(SHARED),
                        "start": "2020-11-01",
                        "end": "2025-10-31",
                    },
                }
            )
        )
        config = load_config(path)
        keys = data_partitions(config.data).get_partition_keys()

        started = time.perf_counter()
        start = dt.datetime(2020, 11, 1, tzinfo=dt.UTC)
        end = dt.datetime(2025, 11, 1, tzinfo=dt.UTC)
        raw = make_source(config).fetch(list(config.data.tickers), "1h", start, end)
        report = validate_bars(raw, "1h", config.validation)
        core_s = time.perf_counter() - started
        assert report.bars is not None

        home = Path(tmp) / "dagster_home"
        home.mkdir()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            job = build_definitions(config).resolve_job_def(INGEST_JOB)
            started = time.perf_counter()
            result = job.execute_in_process(
                instance=instance,
                tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
                run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
                asset_selection=[dg.AssetKey("raw_ohlcv"), dg.AssetKey("bars")],  # CSV → validated bars only
            )
            run_s = time.perf_counter() - started
        assert result.success
        rows = Warehouse(experiment_root(config)).query("SELECT count(*) AS n FROM bars")["n"][0]

    print(f"bars: {rows:,} rows, {len(keys)} monthly partitions, 1 run")
    print(f"core (read CSV + validate, in memory): {core_s:.3f} s = {report.bars.height / core_s:,.0f} bars/s")
    print(f"Dagster run (raw_ohlcv + bars, Parquet writes, DuckDB views): {run_s:.2f} s")
    print(f"overhead beyond the core: {run_s - core_s:.2f} s")


if __name__ == "__main__":
    main()
