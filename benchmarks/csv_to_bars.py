"""Core throughput: CSV archive → validated `bars`, in memory (no Dagster, no warehouse).

Reads the three 1h fixtures (BTC, ETH, SOL /USDT) for 2020-11-01 .. 2025-10-31 (5 years, ~131k bars)
from ../shared/data/ohlcv, validates them with the default `ValidationSection` (gap_policy ffill), and
prints bars/s for read, validate and the two together, best of N repeats.

    .venv/bin/python benchmarks/csv_to_bars.py [--csv-dir DIR] [--repeats 5]

The read step uses `crypto_assets.sources.csv_archive.CsvArchiveSource` when that module exists (a
new instance per read, since an instance caches parsed files), else a plain `polars.read_csv` of the
fixture layout; the script says which, and prints the plain polars read as a baseline either way.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from crypto_assets.config.schema import ValidationSection
from crypto_assets.sources.base import RAW_COLUMNS, conform
from crypto_assets.validation import validate_bars

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
TIMEFRAME = "1h"
START = dt.datetime(2020, 11, 1, tzinfo=dt.UTC)
END = dt.datetime(2025, 11, 1, tzinfo=dt.UTC)  # exclusive: through 2025-10-31 23:00
DEFAULT_CSV_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv"


def polars_reader(csv_dir: Path) -> Callable[[], pl.DataFrame]:
    def read() -> pl.DataFrame:
        frames = []
        for symbol in SYMBOLS:
            path = csv_dir / f"{symbol.replace('/', '')}_{TIMEFRAME}.csv"
            frame = pl.read_csv(path, columns=["timestamp", *RAW_COLUMNS[2:]], schema_overrides={"timestamp": pl.Int64})
            frames.append(
                frame.select(
                    pl.lit(symbol).alias("symbol"),
                    pl.from_epoch("timestamp", time_unit="ms").dt.replace_time_zone("UTC").alias("ts"),
                    *(pl.col(c).cast(pl.Float64) for c in RAW_COLUMNS[2:]),
                ).filter(pl.col("ts").is_between(START, END, closed="left"))
            )
        return conform(pl.concat(frames))

    return read


def make_reader(csv_dir: Path) -> tuple[str, Callable[[], pl.DataFrame]]:
    try:
        from crypto_assets.sources.csv_archive import CsvArchiveSource  # type: ignore[import-not-found]
    except ImportError:
        return "polars.read_csv", polars_reader(csv_dir)
    # A fresh source per read: the source caches parsed files per instance, and we time the parse.
    return "CsvArchiveSource (fresh instance per read)", lambda: CsvArchiveSource(csv_dir).fetch(
        SYMBOLS, TIMEFRAME, START, END
    )


def best_of(repeats: int, fn: Callable[[], object]) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv-dir", type=Path, default=DEFAULT_CSV_DIR)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rules = ValidationSection()
    reader_name, read = make_reader(args.csv_dir)
    read()  # warm the page cache and imports: we measure parsing, not the disk

    t_read, raw = best_of(args.repeats, read)
    assert isinstance(raw, pl.DataFrame)
    t_polars, baseline = best_of(args.repeats, polars_reader(args.csv_dir))
    assert isinstance(baseline, pl.DataFrame) and baseline.equals(raw), "reader and polars baseline disagree"
    t_validate, report = best_of(args.repeats, lambda: validate_bars(raw, TIMEFRAME, rules))
    t_total, _ = best_of(args.repeats, lambda: validate_bars(read(), TIMEFRAME, rules))

    report.raise_for_errors("benchmark")  # type: ignore[union-attr]
    bars = report.bars  # type: ignore[union-attr]
    assert bars is not None
    n = raw.height
    print(
        f"reader: {reader_name}; {n:,} raw bars ({raw['symbol'].n_unique()} symbols, {START:%Y-%m-%d}..{END - dt.timedelta(days=1):%Y-%m-%d}) → {bars.height:,} bars"
    )
    print(f"polars {pl.__version__}, threads {pl.thread_pool_size()}, best of {args.repeats}")
    timings = (
        ("read", t_read),
        ("validate", t_validate),
        ("total", t_total),
        ("(baseline: polars.read_csv)", t_polars),
    )
    for name, seconds in timings:
        print(f"  {name:<28} {seconds * 1000:8.1f} ms  {n / seconds / 1e6:6.2f} M bars/s")
    for result in report.results:  # type: ignore[union-attr]
        print(f"  {result.name:<25} {'ok' if result.passed else result.severity:<5} {result.message}")


if __name__ == "__main__":
    main()
