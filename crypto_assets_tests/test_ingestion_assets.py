"""raw_ohlcv → bars through Dagster: partitions, single-run ranges, checks, storage, schedule, CLI."""

from __future__ import annotations

import datetime as dt
import logging
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
from crypto_assets.orchestration.instance import INSTANCE_TEMPLATE
from crypto_assets.orchestration.schedules import SCHEDULE_NAME
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
    # one asset check per validation rule on bars (the stress job's check is on stress_kpis)
    assert {k.name for k in graph.asset_check_keys if k.asset_key == dg.AssetKey("bars")} == set(BAR_CHECKS)
    assert tuple(BAR_CHECKS) == RULE_NAMES
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
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


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)  # type: ignore[misc]


def in_span(start: dt.datetime, end: dt.datetime) -> pl.Expr:
    """Rows whose bar opens in [start, end)."""
    return pl.col("ts").is_between(start, end, closed="left")


def as_of(moment: dt.datetime) -> dict[str, object]:
    """Run config that makes `moment` the run's "now" (what the schedule sets to its tick time)."""
    stamp = moment.isoformat()
    return {"ops": {"raw_ohlcv": {"config": {"as_of": stamp}}, "bars": {"config": {"as_of": stamp}}}}


def run_tick(defs: dg.Definitions, instance: dg.DagsterInstance, when: dt.datetime) -> dg.ExecuteInProcessResult:
    """Evaluate the ingestion schedule at `when` and execute its one run request as the daemon would."""
    tick = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
    )
    (request,) = defs.resolve_schedule_def(SCHEDULE_NAME).evaluate_tick(tick).run_requests
    return defs.resolve_job_def(INGEST_JOB).execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=request.tags,
        run_config=request.run_config,
        raise_on_error=False,
    )


def raw_meta(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    return {k: v.value for k, v in result.asset_materializations_for_node("raw_ohlcv")[0].metadata.items()}


def keys_of(frame: pl.DataFrame | None) -> set[tuple[str, dt.datetime]]:
    return set() if frame is None else set(frame.select("symbol", "ts").iter_rows())


def test_schedule_tick_covers_every_month_of_the_horizon_in_one_run_as_of_its_time(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, start="2024-01-01", end=None, catch_up="2d"))
    defs = build_definitions(config)
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    assert "explicit re-materialization" in (schedule.description or "")
    with dg.DagsterInstance.ephemeral() as instance:

        def request(when: dt.datetime) -> dg.RunRequest:
            context = dg.build_schedule_context(
                instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
            )
            (only,) = schedule.evaluate_tick(context).run_requests
            return only

        early_feb = request(dt.datetime(2024, 2, 1, 6, 2, tzinfo=dt.UTC))
        assert early_feb.partition_key is None
        assert tuple(early_feb.tags[t] for t in RANGE_TAGS) == ("2024-01-01", "2024-02-01")
        assert early_feb.run_config["ops"]["raw_ohlcv"]["config"] == {
            "incremental": True,
            "as_of": "2024-02-01T06:02:00+00:00",
        }
        mid_feb = request(dt.datetime(2024, 2, 15, 6, 2, tzinfo=dt.UTC))
        assert mid_feb.partition_key == "2024-02-01"


def test_schedule_tick_fetches_holes_inside_stored_months_across_the_boundary(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, start="2024-01-01", end=None, catch_up="14d"))
    defs = build_definitions(config)
    wh = Warehouse(experiment_root(config))
    cut = dt.datetime(2024, 2, 10, tzinfo=dt.UTC)
    with dg.DagsterInstance.ephemeral() as instance:
        job = defs.resolve_job_def(INGEST_JOB)
        tags = dict(zip(RANGE_TAGS, ("2024-01-01", "2024-02-01"), strict=True))
        full = job.execute_in_process(instance=instance, tags=tags, run_config=as_of(cut))
        assert full.success
        complete = wh.read_table("raw_ohlcv")
        assert complete is not None and complete["ts"].max() == cut - dt.timedelta(hours=1)
        # Holes: BTC inside February, ETH straddling the month boundary (both within the 14-day horizon).
        hole = ((pl.col("symbol") == "BTC/USDT") & in_span(utc(2024, 2, 5, 10), utc(2024, 2, 5, 14))) | (
            (pl.col("symbol") == "ETH/USDT") & in_span(utc(2024, 1, 31, 22), utc(2024, 2, 1, 2))
        )
        months = {"2024-01-01": (utc(2024, 1, 1), utc(2024, 2, 1)), "2024-02-01": (utc(2024, 2, 1), cut)}
        for key, (lo, hi) in months.items():
            wh.write_partition("raw_ohlcv", complete.filter(in_span(lo, hi) & ~hole), key)
        result = run_tick(defs, instance, cut + dt.timedelta(minutes=2))
    assert result.success, failure_text(result)
    meta = raw_meta(result)
    assert meta["mode"] == "incremental" and meta["fetched_bars"] == 8 and meta["missing_bars"] == 0
    assert wh.read_table("raw_ohlcv").equals(complete)
    stored_bars = wh.read_table("bars")
    assert stored_bars is not None and not stored_bars["is_filled"].any()
    assert stored_bars.select(complete.columns).equals(complete)


def test_first_tick_on_an_empty_warehouse_fetches_the_first_month_whole(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, start="2024-01-01", end=None, catch_up="7d"))
    defs = build_definitions(config)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_tick(defs, instance, utc(2024, 2, 3, 0, 2))  # the horizon starts on Jan 27
    assert result.success, failure_text(result)
    raw = Warehouse(experiment_root(config)).read_table("raw_ohlcv")
    assert raw is not None and raw["ts"].min() == utc(2024, 1, 1)
    assert raw.height == 2 * (31 + 2) * 24 and raw_meta(result)["missing_bars"] == 0


class FlakyExchange:
    """Wraps a LocalExchange: `down` answers every klines request 503 (an outage); symbols in `hidden`
    get an empty answer (a lagging replica that 'has no bars')."""

    def __init__(self, bars: pl.DataFrame) -> None:
        from crypto_assets_tests.local_exchange import KLINES_PATH, LocalExchange

        outer = self

        class _Exchange(LocalExchange):
            def handle(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], str]:
                if path == KLINES_PATH and outer.down:
                    self._record(path, query)
                    return 503, {}, "<html>503 Service Temporarily Unavailable</html>"
                if path == KLINES_PATH and query.get("symbol") in outer.hidden:
                    self._record(path, query)
                    return 200, {}, "[]"
                return super().handle(path, query)

        self.down = False
        self.hidden: set[str] = set()
        self.exchange = _Exchange(bars)


def exchange_config(tmp_path: Path, url: str, **data: object) -> ExperimentConfig:
    return load_config(
        write_config(
            tmp_path,
            source="binance_historical",
            api_url=url,
            start="2024-01-01",
            end=None,
            ccxt={"rate_limit_ms": 0, "backoff_s": 0.0, "max_retries": 1},
            **data,
        )
    )


def test_outage_across_a_month_boundary_during_ticks_is_caught_up_row_by_row(tmp_path: Path) -> None:
    from crypto_assets_tests.local_exchange import load_fixture

    symbols = ("BTC/USDT", "ETH/USDT")
    truth = pl.concat([load_fixture(s) for s in symbols]).filter(in_span(utc(2024, 1, 1), utc(2024, 3, 1)))
    flaky = FlakyExchange(truth)
    with flaky.exchange as exchange:
        config = exchange_config(tmp_path, exchange.url)
        defs = build_definitions(config)
        wh = Warehouse(experiment_root(config))
        with dg.DagsterInstance.ephemeral() as instance:
            first = dt.datetime(2024, 1, 31, 19, tzinfo=dt.UTC)
            seeded = defs.resolve_job_def(INGEST_JOB).execute_in_process(
                instance=instance, partition_key="2024-01-01", run_config=as_of(first)
            )
            assert seeded.success, failure_text(seeded)
            outage = {dt.datetime(2024, 1, 31, 22, 2, tzinfo=dt.UTC) + i * dt.timedelta(hours=1) for i in range(4)}
            tick = dt.datetime(2024, 1, 31, 20, 2, tzinfo=dt.UTC)
            while tick <= dt.datetime(2024, 2, 1, 6, 2, tzinfo=dt.UTC):
                before = keys_of(wh.read_table("raw_ohlcv"))
                flaky.down = tick in outage
                result = run_tick(defs, instance, tick)
                assert result.success, f"tick {tick}: {failure_text(result)}"
                assert before <= keys_of(wh.read_table("raw_ohlcv")), f"tick {tick}: stored rows vanished"
                meta = raw_meta(result)
                if tick in outage:
                    # 21:00 was the first bar lost; every outage tick reports the whole missing stretch
                    missing = int((tick - dt.datetime(2024, 1, 31, 21, 2, tzinfo=dt.UTC)) / dt.timedelta(hours=1))
                    assert meta["missing_bars"] == 2 * missing and "503" in str(meta["fetch_failures"])
                    lines = [r.user_message for r in instance.all_logs(result.run_id) if r.level >= logging.WARNING]
                    assert any(f"could not get {2 * missing} bar(s): BTC/USDT 2024-01-31 21:00" in m for m in lines)
                else:
                    assert meta["missing_bars"] == 0 and meta["fetch_failures"] == []
                tick += dt.timedelta(hours=1)
            assert result.success and result.asset_materializations_for_node("features")  # features run again
    end = dt.datetime(2024, 2, 1, 6, tzinfo=dt.UTC)
    expected = truth.filter(pl.col("ts") < end).sort("symbol", "ts")
    raw = wh.read_table("raw_ohlcv")
    assert raw is not None and raw.sort("symbol", "ts").equals(expected)
    for key, month in (("2024-01-01", 1), ("2024-02-01", 2)):
        stored = wh.read_partitions("raw_ohlcv", [key])
        assert stored.sort("symbol", "ts").equals(expected.filter(pl.col("ts").dt.month() == month))
    bars = wh.read_table("bars")
    assert bars is not None and not bars["is_filled"].any()
    assert bars.select(expected.columns).sort("symbol", "ts").equals(expected)
    features = wh.read_table("features")
    assert features is not None and features["ts"].max() == end - dt.timedelta(hours=1)


def test_a_tick_never_drops_a_symbols_stored_rows(tmp_path: Path) -> None:
    from crypto_assets_tests.local_exchange import load_fixture

    truth = pl.concat([load_fixture(s) for s in ("BTC/USDT", "ETH/USDT")])
    truth = truth.filter(in_span(utc(2024, 1, 1), utc(2024, 2, 1)))
    cut = dt.datetime(2024, 1, 20, tzinfo=dt.UTC)
    flaky = FlakyExchange(truth)
    with flaky.exchange as exchange:
        config = exchange_config(tmp_path, exchange.url)
        defs = build_definitions(config)
        wh = Warehouse(experiment_root(config))
        with dg.DagsterInstance.ephemeral() as instance:
            seeded = defs.resolve_job_def(INGEST_JOB).execute_in_process(
                instance=instance, partition_key="2024-01-01", run_config=as_of(cut)
            )
            assert seeded.success, failure_text(seeded)
            stored = wh.read_partitions("raw_ohlcv", ["2024-01-01"])
            # BTC lacks its last three bars; ETH is complete, and the exchange now answers nothing for it.
            late = (pl.col("symbol") == "BTC/USDT") & (pl.col("ts") >= cut - dt.timedelta(hours=3))
            wh.write_partition("raw_ohlcv", stored.filter(~late), "2024-01-01")
            flaky.hidden = {"ETHUSDT"}
            result = run_tick(defs, instance, cut + dt.timedelta(minutes=2))
    assert result.success, failure_text(result)
    assert raw_meta(result)["fetched_bars"] == 3
    assert wh.read_partitions("raw_ohlcv", ["2024-01-01"]).equals(stored)


def test_a_full_refetch_with_fewer_rows_is_refused_unless_allowed(tmp_path: Path) -> None:
    from crypto_assets_tests.local_exchange import load_fixture

    archive = tmp_path / "archive"
    archive.mkdir()
    january = load_fixture("BTC/USDT").filter(in_span(utc(2024, 1, 1), utc(2024, 2, 1)))

    def write_archive(frame: pl.DataFrame) -> None:
        columns = (pl.col("ts").dt.epoch("ms").alias("timestamp"), "open", "high", "low", "close", "volume")
        frame.select(*columns).write_csv(archive / "BTCUSDT_1h.csv")

    write_archive(january)
    config = load_config(
        write_config(
            tmp_path, tickers=["BTC/USDT"], source="csv", csv_dir=str(archive), start="2024-01-01", end="2024-01-31"
        )
    )
    wh = Warehouse(experiment_root(config))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_ingest(config, "2024-01-01", "2024-01-01", instance).success
        good_raw, good_bars = wh.read_table("raw_ohlcv"), wh.read_table("bars")
        write_archive(january.head(700))  # the archive now ends early: a short answer
        refused = run_ingest(config, "2024-01-01", "2024-01-01", instance)
        assert not refused.success
        message = failure_text(refused)
        assert "partition 2024-01-01: 744 rows stored, the new data has 700" in message
        assert "allow_fewer_rows" in message
        assert wh.read_table("raw_ohlcv").equals(good_raw) and wh.read_table("bars").equals(good_bars)
        allow = {"ops": {"raw_ohlcv": {"config": {"allow_fewer_rows": True}}}}
        allowed = run_ingest(config, "2024-01-01", "2024-01-01", instance, run_config=allow)
    assert allowed.success, failure_text(allowed)
    assert wh.read_table("raw_ohlcv").height == 700
    # the missing tail up to the end of the requested span is a gap (forward-filled by the default policy)
    checks = {c.check_name: c for c in allowed.get_asset_check_evaluations()}
    assert not checks["continuity"].passed and "44 missing bar(s)" in (checks["continuity"].description or "")
    assert wh.read_table("bars")["ts"].max() == dt.datetime(2024, 1, 31, 23, tzinfo=dt.UTC)


def test_data_only_experiment_loads_ingests_and_runs_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, name="short")
    raw = yaml.safe_load(path.read_text())
    raw["walk_forward"] = {"train_months": 6, "test_months": 2, "label_horizon": 12}
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    note = (
        "data 2024-01-01..2024-03-31 is shorter than one fold (6 train + 2 test months): fold and report assets "
        "are absent; this is a data-only experiment"
    )
    defs = build_definitions(config)
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {"raw_ohlcv", "bars", "features"}
    assert note in (defs.resolve_job_def(INGEST_JOB).description or "")
    assert defs.metadata["data_only"].value == note  # type: ignore[union-attr]
    with pytest.raises(dg.DagsterInvariantViolationError):
        defs.resolve_job_def("folds")

    assert main(["validate-config", str(path)]) == 0
    assert f"note: {note}" in capsys.readouterr().out
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("CRYPTO_ASSETS_CONFIG", raising=False)
    assert main(["run", "--config", str(path), "--log-level", "WARNING"]) == 0
    out = capsys.readouterr().out
    assert f"note: {note}" in out and "[1/1] raw_ohlcv → bars → features" in out and "BTC/USDT" in out
    assert "KPIs" not in out
    assert Warehouse(experiment_root(config)).stored_keys("features") == ["2024-01-01", "2024-02-01", "2024-03-01"]


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
    (dagster_home(config) / "dagster.yaml").write_text(INSTANCE_TEMPLATE.read_text())
    dagster = str(Path(sys.executable).parent / "dagster")
    base = [dagster, "asset", "materialize", "-m", "crypto_assets.definitions", "--select", "raw_ohlcv,bars"]
    ran = subprocess.run(
        [*base, "--partition-range", "2024-01-01...2024-02-01"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    ran = subprocess.run(
        [*base, "--partition", "2024-03-01"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
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
