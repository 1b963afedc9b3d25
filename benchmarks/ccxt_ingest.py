"""Ingest throughput of CcxtSource through the real ccxt binance client against the local exchange.

Serves the recorded 1h Binance bars of BTC, ETH and SOL (shared fixtures) on 127.0.0.1, fetches
2020-01 .. 2024-12 (5 years) with `rate_limit_ms: 0` and 1,000-bar pages, checks the result equals
the recorded bars, and prints bars/s, requests and wall time. No internet.

    .venv/bin/python benchmarks/ccxt_ingest.py [--page-limit 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make the project's packages importable

import polars as pl
from polars.testing import assert_frame_equal

from crypto_assets.config.schema import CcxtSection
from crypto_assets.sources.ccxt_source import CcxtSource
from crypto_assets_tests.local_exchange import load_fixture, running_exchange

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
START = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page-limit", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="timed fetches (each with a fresh client)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    recorded = pl.concat([load_fixture(s) for s in SYMBOLS])
    expected = recorded.filter((pl.col("ts") >= START) & (pl.col("ts") < END)).sort("symbol", "ts")
    settings = CcxtSection(rate_limit_ms=0, page_limit=args.page_limit)
    with running_exchange(recorded) as exchange:
        setup_s = time.perf_counter() - t0
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}"
        )
        print(f"local exchange at {exchange.url}: {recorded.height:,} recorded bars, setup {setup_s:.2f} s")
        print(
            f"span {START:%Y-%m-%d} .. {END:%Y-%m-%d} (exclusive), symbols {', '.join(SYMBOLS)}, page_limit {args.page_limit}"
        )
        for run in range(1, args.repeat + 1):
            exchange.clear_requests()
            start = time.perf_counter()
            with CcxtSource("binance", settings, api_url=exchange.url) as source:
                bars = source.fetch(SYMBOLS, "1h", START, END)
            wall = time.perf_counter() - start
            assert_frame_equal(bars, expected)  # the benchmark only counts if the data is exact
            klines = len(exchange.klines_requests())
            print(
                f"run {run}: {bars.height:,} bars in {wall:.2f} s = {bars.height / wall:,.0f} bars/s; "
                f"{source.request_count} requests ({klines} klines + {source.request_count - klines} exchangeInfo), "
                f"{wall / source.request_count * 1000:.1f} ms/request"
            )
        per_symbol = bars.group_by("symbol").len().sort("symbol")
        print("bars per symbol: " + ", ".join(f"{s} {n:,}" for s, n in per_symbol.iter_rows()))
        # Each real gap (maintenance, the span before a listing) costs one re-request that answers [].
        gaps = {s: sum(g.symbol == s for g in source.confirmed_gaps) for s in SYMBOLS}
        print("confirmed gaps (asked twice): " + ", ".join(f"{s} {n}" for s, n in gaps.items()))


if __name__ == "__main__":
    main()
