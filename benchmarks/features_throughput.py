"""Throughput of `compute_features` on synthetic random-walk bars, in symbol-bars per second.

    .venv/bin/python benchmarks/features_throughput.py [--bars 50000] [--symbols 3] [--repeats 7]

Target (features design note): ≥ 1M symbol-bars/s on 2 cores, i.e. 3 × 50k 1h bars in < 0.15 s.
Prints the median and best of `repeats` timed runs after one warm-up run (polars compiles and caches
its plans on first use). Also times `causal_regimes` on the same bars.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import polars as pl

from crypto_assets.features import FEATURE_COLUMNS, compute_features
from crypto_assets.regimes import causal_regimes


def random_walk_bars(n_bars: int, n_symbols: int, seed: int = 0) -> pl.DataFrame:
    """Long 1h OHLCV bars: geometric random-walk closes, opens at the previous close, wicks around."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    ts = pl.datetime_range(start, start + dt.timedelta(hours=n_bars - 1), "1h", eager=True, time_zone="UTC")
    frames = []
    for k in range(n_symbols):
        close = 100.0 * (k + 1) * np.exp(np.cumsum(rng.normal(0.0, 0.01, n_bars)))
        open_ = np.concatenate(([close[0]], close[:-1]))
        high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 0.003, n_bars)))
        low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 0.003, n_bars)))
        volume = rng.lognormal(5.0, 1.0, n_bars)
        base = "BTC" if k == 0 else f"C{k:03d}"
        frames.append(
            pl.DataFrame(
                {
                    "symbol": f"{base}/USDT",
                    "ts": ts,
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": volume,
                }
            )
        )
    return pl.concat(frames)


def time_it(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=50_000, help="bars per symbol")
    parser.add_argument("--symbols", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    bars = random_walk_bars(args.bars, args.symbols)
    rows = bars.height
    print(f"polars {pl.__version__}, {os.cpu_count()} CPUs visible, POLARS_MAX_THREADS={pl.thread_pool_size()}")
    print(f"{args.symbols} symbols × {args.bars} bars = {rows} symbol-bars, {len(FEATURE_COLUMNS)} features")
    for name, fn in (
        ("compute_features", lambda: compute_features(bars, "1h")),
        ("causal_regimes", lambda: causal_regimes(bars, "1h")),
    ):
        runs = time_it(fn, args.repeats)
        med, best = statistics.median(runs), min(runs)
        rate = rows / med / 1e6
        print(f"{name:17s} median {med * 1e3:7.1f} ms ({rate:5.2f} M symbol-bars/s), best {best * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
