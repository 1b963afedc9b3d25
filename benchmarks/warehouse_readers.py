"""A 24-partition warehouse write with and without a DuckDB reader holding warehouse.duckdb.

Each write commits 24 monthly `bars` partitions (3 symbols × 1h bars, ~2,200 rows each) in one
manifest swap, then rebuilds warehouse.duckdb aside (every view) and swaps it in. The reader is a
separate process holding a connection open, read-only (`duckdb -readonly`) or by mistake read-write;
before issue 8 such a reader made every partition's view update wait 60 s and give up.

    .venv/bin/python benchmarks/warehouse_readers.py
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crypto_assets.storage.warehouse import Warehouse

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
MONTHS = [dt.datetime(2022 + i // 12, i % 12 + 1, 1, tzinfo=dt.UTC) for i in range(24)]
KEYS = [(m.strftime("%Y-%m-%d"), m) for m in MONTHS]
REPEATS = 5

_READER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[3] == "read_only")
con.execute(f"SET file_search_path = '{sys.argv[2]}'")
print(con.execute("SELECT count(*) FROM bars").fetchone()[0], flush=True)
sys.stdin.readline()
print(con.execute("SELECT count(*) FROM bars").fetchone()[0], flush=True)
"""


def month_frame(start: dt.datetime, seed: int) -> pl.DataFrame:
    end = (start + dt.timedelta(days=32)).replace(day=1)
    hours = int((end - start) / dt.timedelta(hours=1))
    rng = np.random.default_rng(seed)
    n = hours * len(SYMBOLS)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pl.DataFrame(
        {
            "symbol": np.repeat(SYMBOLS, hours),
            "ts": [start + dt.timedelta(hours=h) for h in range(hours)] * len(SYMBOLS),
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": rng.uniform(1, 100, n),
            "is_filled": np.zeros(n, dtype=bool),
            "is_wick_outlier": np.zeros(n, dtype=bool),
            "is_illiquid": np.zeros(n, dtype=bool),
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def write_24(wh: Warehouse, frames: dict[str, pl.DataFrame]) -> float:
    started = time.perf_counter()
    wh.write_partitions("bars", frames, windows={k: (m, (m + dt.timedelta(days=32)).replace(day=1)) for k, m in KEYS})
    return time.perf_counter() - started


def _start_reader(wh: Warehouse, mode: str, rows: int) -> subprocess.Popen[str]:
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(wh.db_path), str(wh.root), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None
    assert int(reader.stdout.readline()) == rows  # the reader holds the file now
    return reader


def main() -> None:
    frames = {key: month_frame(month, seed) for seed, (key, month) in enumerate(KEYS)}
    rows = sum(f.height for f in frames.values())
    with tempfile.TemporaryDirectory() as tmp:
        wh = Warehouse(Path(tmp) / "exp")
        wh.write_partitions("features", frames)  # a second table, so each rebuild has two 24-file views
        write_24(wh, frames)
        results: dict[str, list[float]] = {}
        for mode in ("no reader", "read_only", "read_write"):
            # One session held open through all the writes; its snapshot must still read afterwards.
            reader = None if mode == "no reader" else _start_reader(wh, mode, rows)
            results[mode] = [write_24(wh, frames) for _ in range(REPEATS)]
            if reader is not None:
                assert reader.stdin is not None and reader.stdout is not None
                reader.stdin.write("again\n")
                reader.stdin.flush()
                assert int(reader.stdout.readline()) == rows, f"{mode} reader lost its snapshot"
                reader.kill()
                reader.wait()
            assert wh.query("SELECT count(*) AS n FROM bars")["n"][0] == rows
        started = time.perf_counter()
        for _ in range(REPEATS):
            wh.refresh_views()
        rebuild = (time.perf_counter() - started) / REPEATS
    load = os.getloadavg()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"polars {pl.__version__}, duckdb {duckdb.__version__}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(f"24 partitions, {rows:,} rows of bars per write; median (min..max) of {REPEATS} writes;")
    print("a session held open through the writes still read its snapshot after them:")
    for mode, times in results.items():
        print(f"  {mode:>10}: {statistics.median(times):.3f} s ({min(times):.3f}..{max(times):.3f})")
    print(f"  warehouse.duckdb rebuild alone (2 views × 24 files): {rebuild * 1000:.1f} ms")


if __name__ == "__main__":
    main()
