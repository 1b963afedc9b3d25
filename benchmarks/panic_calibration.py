"""Calibration of the panic market (crypto_assets.stress.abm) at its default parameters, beside the real data.

Real data: the shared BTC/ETH/SOL 1h bars (/work/shared/data/ohlcv, read in place by `load_fixture`). The ABM is
calibrated on the same bars (start prices, volume level, per-symbol daily volatility, correlation of daily
returns) and generates `--paths` paths of the default 90-day horizon at 1h, plus one long path
(`--long-days`, stops included) for stationary figures. Per symbol, on daily log returns (close to close, UTC
days): excess kurtosis, ACF of |r| at lags 1, 5 and 10, the worst day, annualised volatility (√365), and the
mean pairwise correlation. For the 90-day paths the ACF is the mean of the per-path ACFs (short series bias it
downwards by about 1/n, n = 89), and the worst day is the median over paths of each path's worst day, compared
with the median worst day of the real data's non-overlapping 90-day blocks.

    python benchmarks/panic_calibration.py [--paths 200] [--long-days 3000] [--seed 0] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import polars as pl

from crypto_assets.config.schema import PanicSection
from crypto_assets.stress.abm import panic_market
from crypto_assets_tests.local_exchange import load_fixture

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
LAGS = (1, 5, 10)
BLOCK_DAYS = 90


def daily_returns(bars: pl.DataFrame) -> pl.DataFrame:
    """Wide frame: day, one column of daily log returns per symbol (null before listing)."""
    daily = (
        bars.sort("symbol", "ts")
        .group_by("symbol", pl.col("ts").dt.truncate("1d").alias("day"), maintain_order=True)
        .agg(pl.col("close").last())
        .with_columns(pl.col("close").log().diff().over("symbol").alias("r"))
    )
    return daily.pivot(on="symbol", index="day", values="r").sort("day")


def acf(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float((x[:-lag] * x[lag:]).sum() / (x * x).sum())


def kurtosis(x: np.ndarray) -> float:
    z = (x - x.mean()) / x.std()
    return float((z**4).mean() - 3.0)


def mean_corr(wide: pl.DataFrame) -> float:
    common = wide.select(SYMBOLS).drop_nulls().to_numpy()
    c = np.corrcoef(common, rowvar=False)
    return float(c[np.triu_indices(len(SYMBOLS), 1)].mean())


def stats_one(r: np.ndarray) -> dict[str, float]:
    return {
        "kurt": kurtosis(r),
        **{f"acf{lag}": acf(np.abs(r), lag) for lag in LAGS},
        "worst": float(r.min()),
        "ann_vol": float(r.std(ddof=1) * np.sqrt(365)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=200)
    parser.add_argument("--long-days", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    bars = pl.concat([load_fixture(s, "1h") for s in SYMBOLS])
    real = daily_returns(bars)
    params = PanicSection()
    panic_market(bars, "1h", PanicSection(horizon="1d"), seed=0, n_paths=1)  # compile outside the timing
    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    paths = panic_market(bars, "1h", params, seed=args.seed, n_paths=args.paths)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    load_after = os.getloadavg()[0]
    (long_path,) = panic_market(bars, "1h", PanicSection(horizon=f"{args.long_days}d"), seed=args.seed, n_paths=1)

    rows: list[dict[str, object]] = []
    for symbol in SYMBOLS:
        r = real[symbol].drop_nulls().to_numpy()
        blocks = [r[i : i + BLOCK_DAYS].min() for i in range(0, len(r) - BLOCK_DAYS + 1, BLOCK_DAYS)]
        rows.append({"source": "real", "symbol": symbol, **stats_one(r), "worst_90d_median": float(np.median(blocks))})
        per_path = [daily_returns(p.bars)[symbol].drop_nulls().to_numpy() for p in paths]
        pooled = np.concatenate(per_path)
        s = stats_one(pooled)
        for lag in LAGS:
            s[f"acf{lag}"] = float(np.mean([acf(np.abs(x), lag) for x in per_path]))
        rows.append(
            {
                "source": f"ABM {args.paths}×90d",
                "symbol": symbol,
                **s,
                "worst_90d_median": float(np.median([x.min() for x in per_path])),
            }
        )
        lr = daily_returns(long_path.bars)[symbol].drop_nulls().to_numpy()
        blocks = [lr[i : i + BLOCK_DAYS].min() for i in range(0, len(lr) - BLOCK_DAYS + 1, BLOCK_DAYS)]
        rows.append(
            {
                "source": f"ABM 1×{args.long_days}d",
                "symbol": symbol,
                **stats_one(lr),
                "worst_90d_median": float(np.median(blocks)),
            }
        )
    table = pl.DataFrame(rows)
    corr = {
        "real": mean_corr(real),
        f"ABM {args.paths}×90d": float(np.mean([mean_corr(daily_returns(p.bars)) for p in paths])),
        f"ABM 1×{args.long_days}d": mean_corr(daily_returns(long_path.bars)),
    }
    hvb = float(np.mean([p.high_vol_bear["high_vol_bear"].mean() for p in paths]))  # type: ignore[arg-type]
    mults = pl.concat([p.multipliers for p in paths if p.multipliers is not None])
    spread, impact = mults["spread_mult"].to_numpy(), mults["impact_mult"].to_numpy()
    bars_per_path = paths[0].bars.height
    with pl.Config(tbl_rows=-1, tbl_cols=-1, float_precision=3, tbl_formatting="MARKDOWN" if args.markdown else None):
        print(table)
    print("mean pairwise correlation of daily returns: " + ", ".join(f"{k} {v:.3f}" for k, v in corr.items()))
    print(
        f"share of high-vol bear bars {hvb:.3f}; spread_mult mean {spread.mean():.2f} "
        f"p99 {np.quantile(spread, 0.99):.2f}; impact_mult mean {impact.mean():.2f} p99 {np.quantile(impact, 0.99):.2f}"
    )
    print(
        f"{args.paths} paths × {bars_per_path} symbol-bars (90 d at 1h, 4 sub-steps a bar): {wall:.2f} s wall, "
        f"{cpu:.2f} s CPU → {args.paths / wall:.0f} paths/s; load average {load_before:.2f} → {load_after:.2f} "
        f"on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
