"""Fine-tuning vs full retraining on one fold: training time and the fold's out-of-sample scores.

Two consecutive one-month folds (train 3 months, test 2024-04 and 2024-05) of the shared real Binance 1h bars
(BTC, ETH, SOL; read in place by `crypto_assets_tests.local_exchange.load_fixture`). Fold k−1 is trained in full
with seed 1; fold k is trained (a) in full from a fresh initialisation and (b) warm-started from fold k−1's model
with `retrain: fine_tune` (`fine_tune_fraction` of the budget), for each of `--seeds`, on one torch thread.
Prints wall seconds of each fit and, for the forecaster, the test-window AUC / Brier; for PPO, the test window's
total return of its decisions at the default costs. Quote times as ratios (fine-tune / full) from the same run.

    python benchmarks/fine_tune_budget.py [--fraction 0.5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time

import polars as pl

from crypto_assets.backtest import run_backtest
from crypto_assets.config import parse_config
from crypto_assets.families import Context, FoldData, build_fold, compute_inputs, fit_artifact, get_family
from crypto_assets.folds import fold_window_for_key
from crypto_assets.folds.windows import FoldSpec
from crypto_assets_tests.local_exchange import load_fixture

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
START, END = dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
SPEC = FoldSpec(train_months=3, test_months=1, step_months=1, purge_bars=24, label_horizon=24)
FOLDS = ("2024-04-01", "2024-05-01")
FAMILIES = {
    "LSTM_Attn": {"window": 24, "hidden": 16, "max_epochs": 6, "patience": 6, "max_train_samples": 5000},
    "PPO_Agent": {"total_timesteps": 4096, "n_envs": 2, "n_steps": 256, "batch_size": 128, "n_epochs": 4},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4])
    args = parser.parse_args()
    config = parse_config(
        {
            "experiment": {"name": "fine_tune_budget"},
            "data": {"tickers": SYMBOLS, "start": "2024-01-01", "end": "2024-05-31"},
            "walk_forward": {"train_months": 3, "test_months": 1, "label_horizon": 24},
        }
    )
    context = Context.from_experiment(config)
    bars = pl.concat([load_fixture(s) for s in SYMBOLS]).filter(pl.col("ts").is_between(START, END, closed="left"))
    features = compute_inputs(bars, "1h")

    def fold(key: str) -> tuple[FoldData, object, object]:
        window = fold_window_for_key(key, SPEC)
        in_window = pl.col("ts") < window.test_end
        frame, scaler = build_fold(
            features.filter(in_window), bars.filter(in_window), window, SPEC.purge_bars, SPEC.label_horizon, "1h"
        )
        return FoldData(key, frame, bars.filter(in_window), context), scaler, window

    print(f"load: {os.getloadavg()}  fraction {args.fraction}")
    for family_type, values in FAMILIES.items():
        params = get_family(family_type).params_class.model_validate(
            {"type": family_type, **values, "retrain": "fine_tune", "fine_tune_fraction": args.fraction}
        )
        data, scaler, window = fold(FOLDS[0])
        previous, _ = fit_artifact(params, data, scaler, window, seed=1)  # type: ignore[arg-type]
        data, scaler, window = fold(FOLDS[1])
        for seed in args.seeds:
            for label, init in (("full", None), ("fine_tune", previous)):
                started = time.perf_counter()
                artifact, decisions = fit_artifact(params, data, scaler, window, seed=seed, init=init)  # type: ignore[arg-type]
                seconds = time.perf_counter() - started
                if family_type == "PPO_Agent":
                    orders = decisions.filter(pl.col("weight").is_not_null())
                    result = run_backtest(bars, orders, context.cost_model(), initial_value=context.capital)
                    value = result.equity.filter(pl.col("ts") >= window.test_start)["value"]
                    score = f"test return {value[-1] / value[0] - 1:+.4f}"
                else:
                    score = f"test auc {artifact.metrics['oos_auc']:.4f} brier {artifact.metrics['oos_brier']:.4f}"
                print(f"{family_type:10s} seed {seed} {label:10s} fit {seconds:7.2f} s  {score}")


if __name__ == "__main__":
    main()
