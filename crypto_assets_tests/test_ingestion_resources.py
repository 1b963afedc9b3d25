"""The data source and the warehouse are Dagster resources (swappable), and the ingest resume rule lives in
the core (crypto_assets.ingestion.coverage), tested without Dagster."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import ClassVar

import dagster as dg
import polars as pl
import yaml

from crypto_assets.config import load_config
from crypto_assets.ingestion.coverage import CatchUpWindow, per_symbol_fetch, run_catch_up_window
from crypto_assets.orchestration.assets.ingestion import build_ingestion_assets
from crypto_assets.orchestration.definitions import build_definitions
from crypto_assets.orchestration.io_managers import WarehouseIOManager
from crypto_assets.orchestration.resources import DataSourceResource, WarehouseResource
from crypto_assets.sources.base import RAW_SCHEMA
from crypto_assets.storage.warehouse import Warehouse
from crypto_assets_tests.tiny import TINY_MODELS

HOUR = dt.timedelta(hours=1)


def _utc(month: int, day: int = 1) -> dt.datetime:
    return dt.datetime(2024, month, day, tzinfo=dt.UTC)


def test_resume_rule_cuts_the_horizon_to_the_run_and_fetches_a_never_stored_first_month_whole() -> None:
    horizon = CatchUpWindow(_utc(1, 29), _utc(2, 3))
    # run = January .. February; stored January: only the horizon, cut to the run.
    assert run_catch_up_window(_utc(1), _utc(3), horizon, first_month_stored=True) == horizon
    # January never stored: all of it, up to the horizon's end.
    assert run_catch_up_window(_utc(1), _utc(3), horizon, first_month_stored=False) == CatchUpWindow(
        _utc(1), _utc(2, 3)
    )
    # A run entirely before the horizon (stored): nothing to do, an empty window at the run's start.
    assert run_catch_up_window(_utc(1), _utc(1, 20), horizon, first_month_stored=True).is_empty


def test_per_symbol_fetch_asks_a_joint_source_for_the_whole_universe() -> None:
    asked: list[list[str]] = []

    def fetch_many(symbols: list[str], start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        asked.append(symbols)
        return pl.DataFrame({"symbol": symbols, "ts": [start] * len(symbols)})

    joint = per_symbol_fetch(fetch_many, ["BTC/USDT", "ETH/USDT"], joint=True)
    assert joint("ETH/USDT", _utc(1), _utc(2))["symbol"].to_list() == ["ETH/USDT"]
    alone = per_symbol_fetch(fetch_many, ["BTC/USDT", "ETH/USDT"], joint=False)
    assert alone("ETH/USDT", _utc(1), _utc(2))["symbol"].to_list() == ["ETH/USDT"]
    assert asked == [["BTC/USDT", "ETH/USDT"], ["ETH/USDT"]]


class FakeSource:
    """Flat bars at 42 for every symbol asked, recording each call."""

    def __init__(self, calls: list[tuple[tuple[str, ...], dt.datetime, dt.datetime]]) -> None:
        self.calls = calls

    def fetch(self, symbols: list[str], timeframe: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        self.calls.append((tuple(symbols), start, end))
        hours = int((end - start) / HOUR)
        rows = [(s, start + i * HOUR, 42.0, 43.0, 41.0, 42.0, 1.0) for s in symbols for i in range(hours)]
        return pl.DataFrame(rows, schema=RAW_SCHEMA, orient="row")


class FakeSourceResource(DataSourceResource):
    calls: ClassVar[list[tuple[tuple[str, ...], dt.datetime, dt.datetime]]] = []

    def source(self) -> FakeSource:  # type: ignore[override]
        return FakeSource(self.calls)


def _config(tmp_path: Path):  # type: ignore[no-untyped-def]
    raw = {
        "experiment": {"name": "fake", "gpu_id": None, "seed": 3, "storage_dir": str(tmp_path / "storage")},
        "data": {
            "tickers": ["BTC/USDT", "ETH/USDT"],
            "timeframe": "1h",
            "source": "synthetic",
            "start": "2024-01-01",
            "end": "2024-03-31",
        },
        "walk_forward": {"train_months": 1, "test_months": 1, "label_horizon": 12},
        "models": TINY_MODELS,
    }
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_raw_ohlcv_materializes_from_a_fake_source_passed_as_a_resource(tmp_path: Path) -> None:
    config = _config(tmp_path)
    root = tmp_path / "elsewhere"  # the warehouse resource decides where stored rows are read
    raw_ohlcv = build_ingestion_assets(config)[0]
    FakeSourceResource.calls.clear()
    result = dg.materialize(
        [raw_ohlcv],
        partition_key="2024-02-01",
        instance=dg.DagsterInstance.ephemeral(),
        resources={
            "data_source": FakeSourceResource.for_experiment(config),
            "warehouse": WarehouseResource(storage_root=str(root)),
            "warehouse_io": WarehouseIOManager(storage_root=str(root)),
        },
    )
    assert result.success
    assert FakeSourceResource.calls == [(("BTC/USDT", "ETH/USDT"), _utc(2), _utc(3))]
    stored = Warehouse(root).read_partitions("raw_ohlcv", ["2024-02-01"], missing="skip")
    assert stored is not None and stored.height == 2 * 24 * 29
    assert stored["close"].unique().to_list() == [42.0]


def test_definitions_register_the_configured_source_and_warehouse(tmp_path: Path) -> None:
    config = _config(tmp_path)
    resources = build_definitions(config).resources
    assert resources is not None
    source = resources["data_source"]
    assert isinstance(source, DataSourceResource)
    assert source.experiment() == config  # the experiment survives the resource's JSON config
    assert type(source.source()).__name__ == "SyntheticSource" and source.draws_jointly()
    warehouse = resources["warehouse"]
    assert isinstance(warehouse, WarehouseResource)
    assert Path(warehouse.storage_root) == Path(config.experiment.storage_dir) / config.experiment.name


def test_every_project_config_survives_the_source_resources_json() -> None:
    """The resource carries the experiment as JSON (resource fields are plain config): nothing may be lost."""
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        config = load_config(path)
        assert DataSourceResource.for_experiment(config).experiment() == config, path.name


def test_every_project_config_gives_definitions_a_code_server_loads() -> None:
    """What `dagster api grpc` checks when it loads the code location (unique op / job names across every job,
    resources present, partition mappings valid), for every shipped config: `crypto-lab run` dies otherwise."""
    import dagster as dg

    from crypto_assets.orchestration.definitions import build_definitions

    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")):
        dg.Definitions.validate_loadable(build_definitions(load_config(path)))
