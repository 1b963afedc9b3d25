"""Cost of the paper ledger's causal, bar-by-bar decisions (crypto_assets.paper.trade_forward).

Each new bar is decided by replaying the live artifact on the bars up to that bar's close only (features recomputed
from the first input bar, then the family's predict over the month so far), so a catch-up of n bars costs about n
replays of a growing month, while a one-shot replay of the same bars (what `replay_gap` does, and what a
look-ahead-prone shortcut would do) costs one. This measures, per family, on the shared Binance 1h fixtures
(BTC, ETH, SOL; live month 2024-04, trained on Feb-Mar with tiny budgets: inference cost depends on the
architecture, not the training budget):

- catch-up: a ledger started 48 bars into the month (48 bars decided, booked, stored), wall seconds and ms per bar;
- tick: the next bar on that ledger (the schedule's steady state);
- one-shot: one replay of the artifact over the same 48 bars plus one engine run, for the ratio.

    .venv/bin/python benchmarks/paper_catch_up.py
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

import crypto_assets_tests.test_families  # noqa: F401  (registers Toy_Threshold, the cost floor)
from crypto_assets.backtest import run_backtest
from crypto_assets.config import parse_config
from crypto_assets.families import Artifact, Context, FoldData, build_fold, compute_inputs, fit_artifact
from crypto_assets.orchestration.assets.common import cost_lookback, cost_model
from crypto_assets.orchestration.assets.live import live_window
from crypto_assets.paper import PaperLedgerStore, PaperSetup, artifact_digest, trade_forward
from crypto_assets_tests.local_exchange import load_fixture

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
MONTH = "2024-04-01"
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
MONTH_START = dt.datetime(2024, 4, 1, tzinfo=dt.UTC)
CATCH_UP = 48
FAMILIES: dict[str, dict[str, Any]] = {
    "Toy_Threshold": {"type": "Toy_Threshold", "every": 4},
    "LSTM_Attn": {"type": "LSTM_Attn", "window": 48, "hidden": 32, "max_epochs": 1, "max_train_samples": 1000},
    "PPO_Agent": {
        "type": "PPO_Agent",
        "total_timesteps": 512,
        "n_envs": 1,
        "n_steps": 256,
        "batch_size": 128,
        "n_epochs": 1,
        "window": 24,
        "episode_bars": 256,
        "rebalance_every": 4,
    },
}


def main() -> None:
    config = parse_config(
        {
            "experiment": {"name": "paper_bench", "gpu_id": None},
            "data": {"tickers": SYMBOLS, "start": "2024-01-01", "end": "2024-04-30"},
            "walk_forward": {"train_months": 2, "test_months": 1, "label_horizon": 24},
            "models": {"families": list(FAMILIES.values()), "ensemble": [{"type": "Toy_Threshold", "weight": 1.0}]},
        }
    )
    end = MONTH_START + dt.timedelta(hours=CATCH_UP + 1)
    bars = pl.concat([load_fixture(s) for s in SYMBOLS]).filter((pl.col("ts") >= START) & (pl.col("ts") < end))
    window = live_window(MONTH, 2)
    # the live asset fits on the window's rows (train: Feb-Mar, purged); April's rows are its decision window
    frame, scaler = build_fold(compute_inputs(bars, "1h"), bars, window, 24, 24, "1h")
    data = FoldData(key=MONTH, frame=frame, bars=bars, context=Context.from_experiment(config))
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(f"{'family':<15} {'catch-up s':>10} {'ms/bar':>8} {'tick s':>8} {'one-shot s':>10} {'catch-up/one-shot':>18}")
    for params in config.models.trained:
        with tempfile.TemporaryDirectory() as tmp:
            artifact, _ = fit_artifact(params, data, scaler, window, seed=3)
            directory = artifact.save(Path(tmp) / "artifact")
            artifact = Artifact.load(directory)
            setup = PaperSetup(
                experiment="paper_bench",
                strategy=artifact.slug,
                month=MONTH,
                artifact_hash=artifact_digest(directory),
                costs=cost_model(config),
                capital=config.experiment.capital,
                cost_lookback=cost_lookback(config),
            )
            store = PaperLedgerStore(Path(tmp) / "warehouse")
            first_bars = bars.filter(pl.col("ts") < MONTH_START + dt.timedelta(hours=CATCH_UP))
            wall = time.perf_counter()
            result = trade_forward(setup, artifact, first_bars, store.read(), first_bars["ts"].max())  # type: ignore[arg-type]
            store.append(result.new_rows)
            catch_up = time.perf_counter() - wall
            wall = time.perf_counter()
            step = trade_forward(setup, artifact, bars, store.read(), bars["ts"].max())  # type: ignore[arg-type]
            tick = time.perf_counter() - wall
            assert step.new_rows["ts"].n_unique() == 1
            wall = time.perf_counter()
            last = first_bars["ts"].max()
            weights = artifact.weights(first_bars, start=MONTH_START, end=last + dt.timedelta(hours=1))  # type: ignore[operator]
            engine_bars = first_bars.filter(pl.col("ts") >= MONTH_START - setup.cost_lookback)
            run_backtest(engine_bars, weights, setup.costs, initial_value=setup.capital, timeframe="1h")
            one_shot = time.perf_counter() - wall
        print(
            f"{params.type:<15} {catch_up:>10.2f} {1000 * catch_up / CATCH_UP:>8.1f} {tick:>8.2f} {one_shot:>10.2f} "
            f"{catch_up / one_shot:>18.1f}"
        )


if __name__ == "__main__":
    main()
