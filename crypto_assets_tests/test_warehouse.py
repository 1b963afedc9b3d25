"""Parquet-per-partition warehouse: manifest-listed files, atomic multi-partition commits, views relative
to the experiment, DuckDB rebuilt aside (readers never block writers), crash safety, data fingerprints."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from crypto_assets.config import parse_config
from crypto_assets.storage.fingerprint import (
    FINGERPRINT_FILE,
    DataMismatchError,
    check_data_fingerprint,
    data_fingerprint,
)
from crypto_assets.storage.warehouse import KILL_AT_ENV, Warehouse, WarehouseError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _frame(month: int, n: int = 24, value: float = 1.0) -> pl.DataFrame:
    start = dt.datetime(2024, month, 1, tzinfo=dt.UTC)
    return pl.DataFrame(
        {
            "symbol": ["BTC/USDT"] * n,
            "ts": [start + dt.timedelta(hours=i) for i in range(n)],
            "close": [value + i for i in range(n)],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def _key(month: int) -> str:
    return f"2024-{month:02d}-01"


def _window(month: int) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime(2024, month, 1, tzinfo=dt.UTC)
    return start, (start + dt.timedelta(days=32)).replace(day=1)


def _own_files(directory: Path) -> list[str]:
    """Partition files the warehouse wrote (its naming), committed or not."""
    return sorted(p.name for p in directory.glob("*.w*.parquet"))


def test_write_read_and_view(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "exp")
    wh.write_partition("bars", _frame(1), "2024-01-01")
    wh.write_partition("bars", _frame(2), "2024-02-01")
    assert wh.stored_keys("bars") == ["2024-01-01", "2024-02-01"]
    assert wh.stored_rows("bars") == {"2024-01-01": 24, "2024-02-01": 24}
    with wh.connect() as con:
        count, tz = con.execute("SELECT count(*), typeof(min(ts)) FROM bars").fetchone()
    assert count == 48 and tz == "TIMESTAMP WITH TIME ZONE"
    assert wh.read_partitions("bars", ["2024-02-01"]).equals(_frame(2))


def test_rewrite_replaces_exactly_one_partition(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "exp")
    wh.write_partition("bars", _frame(1), "2024-01-01")
    wh.write_partition("bars", _frame(2), "2024-02-01")
    jan, feb = wh.partition_path("bars", "2024-01-01"), wh.partition_path("bars", "2024-02-01")
    wh.write_partition("bars", _frame(2, n=5, value=100.0), "2024-02-01")
    assert wh.partition_path("bars", "2024-01-01") == jan  # untouched
    assert wh.partition_path("bars", "2024-02-01") != feb
    assert wh.read_partitions("bars", ["2024-01-01"]).equals(_frame(1))
    assert wh.query("SELECT count(*) AS n FROM bars")["n"][0] == 24 + 5
    # The replaced file stays one more commit for readers that opened before, then it is collected.
    assert feb.exists()
    wh.write_partition("bars", _frame(3), "2024-03-01")
    assert not feb.exists() and len(_own_files(jan.parent)) == 3


def test_failed_write_keeps_the_old_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wh = Warehouse(tmp_path / "exp")
    wh.write_partition("bars", _frame(1), "2024-01-01")
    stored = wh.partition_path("bars", "2024-01-01")

    def broken_write(self: pl.DataFrame, path: Path, **_: object) -> None:
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", broken_write)
    with pytest.raises(OSError, match="disk full"):
        wh.write_partition("bars", _frame(1, value=-5.0), "2024-01-01")
    monkeypatch.undo()
    assert wh.read_partitions("bars", ["2024-01-01"]).equals(_frame(1))
    assert _own_files(stored.parent) == [stored.name]  # the half file was removed at once


def test_missing_partitions_are_named(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "exp")
    wh.write_partition("bars", _frame(1), "2024-01-01")
    with pytest.raises(WarehouseError, match=r"no stored partition 2024-03-01"):
        wh.read_partitions("bars", ["2024-01-01", "2024-03-01"])
    assert wh.read_partitions("bars", ["2024-01-01", "2024-03-01"], missing="skip").height == 24
    with pytest.raises(WarehouseError, match="bad table name"):
        wh.partition_path("bars; DROP", "x")


def test_stray_and_foreign_files_are_never_counted(tmp_path: Path) -> None:
    """Only the files the warehouse wrote are in its views and reads, and a user's files are left alone."""
    wh = Warehouse(tmp_path / "exp")
    wh.write_partitions("bars", {_key(1): _frame(1), _key(2): _frame(2)})
    folder = wh.table_dir("bars")
    shutil.copyfile(wh.partition_path("bars", _key(1)), folder / "2024-01-01 (copy).parquet")
    _frame(5, value=-1.0).write_parquet(folder / "2024-05-01.parquet")  # a foreign file with a key-like name
    wh.write_partition("bars", _frame(3), _key(3))  # views rebuilt after the strays appeared
    assert wh.query("SELECT count(*) AS n FROM bars")["n"][0] == 3 * 24
    assert wh.stored_keys("bars") == [_key(1), _key(2), _key(3)]
    assert wh.read_table("bars").height == 3 * 24
    assert (folder / "2024-01-01 (copy).parquet").exists() and (folder / "2024-05-01.parquet").exists()


_COUNT_FROM_CWD = (
    "import duckdb; con = duckdb.connect('warehouse.duckdb', read_only=True); "
    "print(con.sql('SELECT count(*) FROM bars').fetchone()[0])"
)


def test_moved_experiment_reads_its_own_files(tmp_path: Path) -> None:
    original = Warehouse(tmp_path / "storage" / "exp")
    original.write_partitions("bars", {_key(1): _frame(1), _key(2): _frame(2)})
    copy_root = tmp_path / "elsewhere" / "exp-copy"
    shutil.copytree(original.root, copy_root)
    original.write_partition("bars", _frame(3), _key(3))  # the original moves on ...
    shutil.rmtree(original.root / "warehouse")  # ... and then loses its files: the copy must not care
    copy = Warehouse(copy_root)
    assert copy.query("SELECT count(*) AS n FROM bars")["n"][0] == 48
    with copy.connect() as con:
        (view_sql,) = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'bars'").fetchone()
    assert str(tmp_path) not in view_sql and "'warehouse/bars/2024-01-01.w" in view_sql
    # What the README tells a researcher: work from the experiment folder (`cd storage/<experiment>`).
    ran = subprocess.run([sys.executable, "-c", _COUNT_FROM_CWD], cwd=copy_root, capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout.strip() == "48", ran.stderr
    cli = shutil.which("duckdb")
    if cli:  # the DuckDB CLI, where installed, exactly as the README writes it
        command = f"{copy.reader_command} -csv -noheader -c 'SELECT count(*) FROM bars'"
        ran = subprocess.run(command, shell=True, capture_output=True, text=True)
        assert ran.stdout.strip() == "48", ran.stderr


def test_corrupt_and_foreign_files_are_named(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "exp")
    windows = {_key(m): _window(m) for m in (1, 2, 3)}
    wh.write_partitions("bars", {_key(m): _frame(m) for m in (1, 2, 3)}, windows=windows)
    # Writing rows outside their month is refused, naming the partition and the rule.
    with pytest.raises(WarehouseError, match=r"partition 2024-04-01: 24 rows have `ts` outside the partition window"):
        wh.write_partition("bars", _frame(1), _key(4), window=_window(4))
    # A corrupt file (same size, garbage bytes) is named.
    jan = wh.partition_path("bars", _key(1))
    jan.write_bytes(b"\0" * jan.stat().st_size)
    with pytest.raises(WarehouseError, match=rf"{jan.name}: table 'bars' partition 2024-01-01 is not a readable"):
        wh.read_partitions("bars", [_key(1)])
    # Another file in the place of a partition (March's file copied over February's) is named.
    feb = wh.partition_path("bars", _key(2))
    shutil.copyfile(wh.partition_path("bars", _key(3)), feb)
    # (its size differs from the manifest's; were it the same, its rows would fail February's window)
    with pytest.raises(WarehouseError, match=rf"{feb.name}: table 'bars' partition 2024-02-01 is not the file the"):
        wh.read_partitions("bars", [_key(2)])
    # Rows that do not belong to their partition (stored without a window, read with the month's, as the
    # IO manager does) are named with the rule broken.
    wh.write_partition("raw", _frame(5), _key(6))
    june = wh.partition_path("raw", _key(6))
    with pytest.raises(WarehouseError, match=rf"2024-06-01: 24 rows .*outside .*foreign file in .*{june.name}"):
        wh.read_partitions("raw", [_key(6)], windows={_key(6): _window(6)})
    # Fold tables: the `fold` column must equal the key.
    folds = {key: _frame(3).with_columns(fold=pl.lit(key)) for key in ("2024-03-01", "2024-04-01")}
    wh.write_partitions("backtest", folds, key_column="fold")
    shutil.copyfile(wh.partition_path("backtest", "2024-04-01"), wh.partition_path("backtest", "2024-03-01"))
    with pytest.raises(WarehouseError, match=r"column `fold` must equal the partition key, found \['2024-04-01'\]"):
        wh.read_partitions("backtest", ["2024-03-01"], key_column="fold")


_WRITE_SIX = """
import sys
from crypto_assets_tests.test_warehouse import _frame, _key
from crypto_assets.storage.warehouse import Warehouse
Warehouse(sys.argv[1]).write_partitions("bars", {_key(m): _frame(m, value=7.0) for m in range(1, 7)})
"""


@pytest.mark.parametrize("point", ["bars:partition_file:3", "bars:manifest", "bars:views"])
def test_killed_range_write_is_all_or_nothing_and_a_rerun_heals(tmp_path: Path, point: str) -> None:
    """A process killed mid-write (SIGKILL at a named point): before the manifest swap nothing new is
    visible; after it, all six partitions are; the views are never broken; the next write cleans up."""
    wh = Warehouse(tmp_path / "exp")
    wh.write_partitions("bars", {_key(1): _frame(1), _key(2): _frame(2)})
    env = {**os.environ, KILL_AT_ENV: point}
    ran = subprocess.run(
        [sys.executable, "-c", _WRITE_SIX, str(wh.root)], env=env, cwd=PROJECT_ROOT, capture_output=True, timeout=120
    )
    assert ran.returncode == -signal.SIGKILL, ran.stderr.decode()[-2000:]
    committed = point != "bars:partition_file:3"
    assert wh.stored_keys("bars") == [_key(m) for m in (range(1, 7) if committed else (1, 2))]
    assert wh.read_partitions("bars", [_key(1)]).equals(_frame(1, value=7.0) if committed else _frame(1))
    assert wh.query("SELECT count(*) AS n FROM bars")["n"][0] == 48  # the old views, whole and readable
    if point == "bars:partition_file:3":
        assert len(_own_files(wh.table_dir("bars"))) == 2 + 3  # three uncommitted files left behind
    if point == "bars:views":
        assert list(wh.root.glob(".warehouse.duckdb.*.tmp"))  # the half-built database left behind
    # The re-run (here: the same write again) heals everything.
    wh.write_partitions("bars", {_key(m): _frame(m, value=7.0) for m in range(1, 7)})
    assert wh.query("SELECT count(*) AS n, min(close) AS low FROM bars").row(0) == (6 * 24, 7.0)
    current = {wh.partition_path("bars", _key(m)).name for m in range(1, 7)}
    leftovers = set(_own_files(wh.table_dir("bars"))) - current
    # Kept: the files this commit replaced, and (after a kill past the manifest) the first two, which the
    # views left by the killed run still read when the re-run collected; the uncommitted three are gone.
    assert len(leftovers) == (6 + 2 if committed else 2)
    wh.write_partitions("bars", {_key(m): _frame(m, value=7.0) for m in range(1, 7)})
    assert len(set(_own_files(wh.table_dir("bars"))) - current) == 6  # just what the last commit replaced
    assert not list(wh.root.glob(".*.tmp")) and not list(wh.table_dir("bars").glob(".*.tmp"))


def _write_month(root: str, month: int) -> None:
    wh = Warehouse(root)
    for repeat in range(3):
        wh.write_partition("bars", _frame(month, value=float(repeat)), f"2024-{month:02d}-01")
        wh.write_partition(f"table_{month % 3}", _frame(month), f"2024-{month:02d}-01")


def test_parallel_writers_do_not_collide(tmp_path: Path) -> None:
    root = str(tmp_path / "exp")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_month, args=(root, m)) for m in range(1, 7)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0] * 6
    wh = Warehouse(root)
    assert wh.query("SELECT count(*) AS n FROM bars")["n"][0] == 6 * 24
    assert wh.query("SELECT count(*) AS n FROM table_0")["n"][0] == 2 * 24
    assert wh.stored_keys("bars") == [_key(m) for m in range(1, 7)]


_READER = """
import sys, duckdb
db, root, read_only = sys.argv[1], sys.argv[2], sys.argv[3] == "read_only"
con = duckdb.connect(db, read_only=read_only)  # held open, like a `duckdb` CLI session
con.execute(f"SET file_search_path = '{root}'")
print(con.execute("SELECT count(*) FROM bars").fetchone()[0], flush=True)
sys.stdin.readline()
print(con.execute("SELECT count(*) FROM bars").fetchone()[0], flush=True)
"""

_WRITE_24 = """
import sys, time
from crypto_assets_tests.test_warehouse import _frame
from crypto_assets.storage.warehouse import Warehouse
wh, keys = Warehouse(sys.argv[1]), [f"{2022 + (i + 2) // 12}-{(i + 2) % 12 + 1:02d}-01" for i in range(24)]
started = time.perf_counter()
wh.write_partitions("features", {key: _frame(1, value=2.0) for key in keys})  # a new table: a new view
wh.write_partitions("bars", {key: _frame(1, value=3.0) for key in keys})  # 2022-03 .. 2024-02: replaces both stored
print(f"{time.perf_counter() - started:.2f}")
"""


@pytest.mark.parametrize("mode", ["read_only", "read_write"])
def test_open_reader_never_blocks_writes_nor_loses_views(tmp_path: Path, mode: str) -> None:
    """A DuckDB session in another process holds warehouse.duckdb (read-only, or by mistake read-write)
    while 2 × 24 partitions are written: the writes finish without waiting for it, every view exists
    afterwards, and the reader's old connection still answers from its snapshot."""
    wh = Warehouse(tmp_path / "exp")
    wh.write_partitions("bars", {_key(1): _frame(1), _key(2): _frame(2)})
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(wh.db_path), str(wh.root), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdin is not None
        assert reader.stdout.readline().strip() == "48"  # the reader holds the file now
        # Bounded, not timed: the old writer waited 60 s for the database on every partition.
        writer = subprocess.run(
            [sys.executable, "-c", _WRITE_24, str(wh.root)],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert writer.returncode == 0, writer.stderr[-2000:]
        assert "could not" not in writer.stderr
        reader.stdin.write("again\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "48", reader.stderr.read()  # its snapshot, still readable
    finally:
        reader.kill()
        reader.wait()
    assert wh.query("SELECT count(*) AS n FROM bars")["n"][0] == 24 * 24
    assert wh.query("SELECT count(*) AS n FROM features")["n"][0] == 24 * 24


def test_objects_a_session_adds_to_the_database_are_dropped_by_the_next_write(tmp_path: Path) -> None:
    """The rebuild starts from a copy of the live file only when it holds nothing but the warehouse's
    own views; a table or a view that a read-write session left there is dropped, as the README says."""
    wh = Warehouse(tmp_path / "exp")
    wh.write_partition("bars", _frame(1), _key(1))
    with duckdb.connect(str(wh.db_path)) as con:
        con.execute("CREATE TABLE mine AS SELECT 42 AS x")
        con.execute("CREATE OR REPLACE VIEW bars AS SELECT 1 AS hijacked")
    wh.write_partition("features", _frame(1), _key(1))
    everything = (
        "SELECT table_name FROM duckdb_tables() UNION ALL "
        "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1"
    )
    with wh.connect() as con:
        objects = con.execute(everything).fetchall()
    assert objects == [("bars",), ("features",)]
    assert wh.query("SELECT count(*) AS n FROM bars")["n"][0] == 24


def test_a_session_keeps_its_snapshot_across_many_writes(tmp_path: Path) -> None:
    """The files a held snapshot reads outlive any number of writes; once the session closes, the
    next writes collect them."""
    wh = Warehouse(tmp_path / "exp")
    wh.write_partitions("bars", {_key(1): _frame(1), _key(2): _frame(2)})
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(wh.db_path), str(wh.root), "read_only"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None and reader.stdin is not None
    try:
        assert reader.stdout.readline().strip() == "48"
        for value in (10.0, 20.0, 30.0):  # three rewrites of both partitions
            wh.write_partitions("bars", {_key(1): _frame(1, value=value), _key(2): _frame(2, value=value)})
        reader.stdin.write("again\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "48", reader.stderr.read()
    finally:
        reader.kill()
        reader.wait()
    # Per partition: the file the session's snapshot reads, the current one and the last one replaced
    # (the middle rewrite's went: only a database nobody opened referred to it).
    assert len(_own_files(wh.table_dir("bars"))) == 2 * 3
    wh.write_partition("bars", _frame(1, value=40.0), _key(1))  # releases the snapshot
    wh.write_partition("bars", _frame(1, value=50.0), _key(1))  # collects what nobody reads any more
    assert len(_own_files(wh.table_dir("bars"))) == 2 + 1  # the current files and the last replaced one
    assert wh.query("SELECT min(close) AS low FROM bars")["low"][0] == 30.0


def test_predictions_view_gathers_every_model(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "exp")
    wh.write_partition("predictions_lstm_attn", _frame(1).with_columns(model=pl.lit("lstm_attn")), "2024-01-01")
    wh.write_partition("predictions_ppo", _frame(1, n=5).with_columns(model=pl.lit("ppo")), "2024-01-01")
    counts = wh.query("SELECT model, count(*) AS n FROM predictions GROUP BY model ORDER BY model")
    assert counts.rows() == [("lstm_attn", 24), ("ppo", 5)]


# ---- one experiment name, one dataset ---------------------------------------------------------------
def _config(**data: object):  # type: ignore[no-untyped-def]
    raw = {
        "experiment": {"name": "same", "gpu_id": None},
        "data": {"tickers": ["BTC/USDT", "ETH/USDT"], "timeframe": "1h", "start": "2024-01-01", **data},
    }
    return parse_config(raw, "test.yaml")


def test_other_data_under_the_same_name_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "same"
    check_data_fingerprint(root, data_fingerprint(_config()), record=False)
    assert not (root / FINGERPRINT_FILE).exists()  # checking alone records nothing
    check_data_fingerprint(root, data_fingerprint(_config()), record=True)
    stored = data_fingerprint(_config())
    # The span may grow; the same data definition passes.
    check_data_fingerprint(root, data_fingerprint(_config(end="2024-12-31")), record=True)
    other = data_fingerprint(_config(timeframe="15m"))
    with pytest.raises(DataMismatchError) as refused:
        check_data_fingerprint(root, other, record=True)
    message = str(refused.value)
    assert stored.digest in message and other.digest in message and stored.digest != other.digest
    assert "timeframe 1h → 15m" in message
    assert "another experiment.name" in message and f"delete {root}/" in message
    for change, shown in [
        ({"tickers": ["BTC/USDT"]}, "tickers [BTC/USDT, ETH/USDT] → [BTC/USDT]"),
        ({"start": "2023-01-01"}, "start 2024-01-01 → 2023-01-01"),
        ({"source": "csv", "csv_dir": "data/x"}, "source synthetic → csv"),
    ]:
        with pytest.raises(DataMismatchError, match=shown.replace("[", r"\[").replace("]", r"\]")):
            check_data_fingerprint(root, data_fingerprint(_config(**change)), record=True)
    assert data_fingerprint(_config(tickers=["ETH/USDT", "BTC/USDT"], source="binance")) == data_fingerprint(
        _config(tickers=["BTC/USDT", "ETH/USDT"], source="binance")
    )  # a real exchange's bars do not depend on the tickers' order


def test_first_writers_racing_record_one_fingerprint(tmp_path: Path) -> None:
    root = tmp_path / "same"
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        outcomes = pool.map(_record_timeframe, [(str(root), "1h"), (str(root), "15m")])
    assert sorted(outcomes) == ["ok", "refused"]


def _record_timeframe(args: tuple[str, str]) -> str:
    root, timeframe = args
    try:
        check_data_fingerprint(root, data_fingerprint(_config(timeframe=timeframe)), record=True)
        return "ok"
    except DataMismatchError:
        return "refused"


def test_duckdb_connect_outside_the_warehouse_needs_the_experiment_folder(tmp_path: Path) -> None:
    """Documents the DuckDB rule the README relies on: relative view paths resolve against
    `file_search_path`, else the working directory, never the database file's folder."""
    wh = Warehouse(tmp_path / "exp")
    wh.write_partition("bars", _frame(1), _key(1))
    with duckdb.connect(str(wh.db_path), read_only=True) as con:
        with pytest.raises(duckdb.IOException, match="No files found"):
            con.execute("SELECT count(*) FROM bars").fetchone()
        con.execute(f"SET file_search_path = '{wh.root}'")
        assert con.execute("SELECT count(*) FROM bars").fetchone() == (24,)
