"""Paths/s of the crash bootstrap (crypto_assets.stress.bootstrap): 3 symbols, 7d calm + 14d crash of 1h bars.

Real data: the shared Binance 1h fixtures (2020-2025, both default windows inside). Synthetic: 2023-01..2024-06
(the demo's span; the worst drawdown windows stand in). Reports wall and process CPU time, median of 3 runs,
for a whole call (window resolution, block lengths, calm window and the paths) and per path.

    .venv/bin/python benchmarks/crash_bootstrap_throughput.py
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import time

import polars as pl

from crypto_assets.config.schema import CrashBootstrapSection, SyntheticSection
from crypto_assets.sources.synthetic import SyntheticSource
from crypto_assets.stress.bootstrap import crash_bootstrap
from crypto_assets_tests.local_exchange import load_fixture

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


def measure(bars: pl.DataFrame, n_paths: int) -> tuple[float, float]:
    walls, cpus = [], []
    for seed in range(3):
        wall, cpu = time.perf_counter(), time.process_time()
        crash_bootstrap(bars, "1h", CrashBootstrapSection(), seed=seed, n_paths=n_paths)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    real = pl.concat([load_fixture(s) for s in SYMBOLS])
    anchor = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
    synthetic = SyntheticSource(SyntheticSection(), 7, anchor).fetch(
        SYMBOLS, "1h", anchor, dt.datetime(2024, 7, 1, tzinfo=dt.UTC)
    )
    print(f"load average {os.getloadavg()}")
    for name, bars in (("real 2020-2025", real), ("synthetic 2023-01..2024-06", synthetic)):
        crash_bootstrap(bars, "1h", CrashBootstrapSection(), seed=99, n_paths=2)  # imports, first calls
        setup_wall, _ = measure(bars, 0)
        for n in (100, 1000):
            wall, cpu = measure(bars, n)
            print(
                f"{name}: {n} paths: wall {wall:.3f} s ({n / wall:,.0f} paths/s), CPU {cpu:.3f} s; "
                f"setup (0 paths) wall {setup_wall:.3f} s; per path {(wall - setup_wall) / n * 1e3:.2f} ms "
                f"({n / (wall - setup_wall):,.0f} paths/s)"
            )
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
