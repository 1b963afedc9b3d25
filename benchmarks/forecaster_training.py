"""Training throughput of the torch forecasters (samples/s) on a fixed synthetic workload.

Workload: 4 symbols × 5,047 hourly bars × 30 features → 20,000 windows of 48 bars, labels for every window,
no validation slice, 2 epochs, default `ForecasterParams` otherwise (hidden 32, batch 256). Runs both
architectures on CPU (with 1 torch thread — the reproducible setting — and with every core), and, when CUDA
is available, on `cuda:0` with bf16 autocast off and on. samples/s counts fit windows through forward,
backward and the optimizer step (the `TrainedForecaster.samples_per_second` figure); inference is timed
separately over the same windows.

    .venv/bin/python benchmarks/forecaster_training.py [--windows 20000] [--epochs 2] [--features 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crypto_assets.models import ARCHS, ForecasterParams, TrainedForecaster, select_device, train_forecaster

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT")
HORIZON = 24


def workload(n_windows: int, window: int, n_features: int, seed: int = 0) -> pl.DataFrame:
    """A train-only fold frame yielding exactly `n_windows` labelled windows (split evenly over 4 symbols)."""
    rng = np.random.default_rng(seed)
    per_symbol = n_windows // len(SYMBOLS)
    rows = per_symbol + window - 1
    start = dt.datetime(2022, 1, 1, tzinfo=dt.UTC)
    frames = []
    for symbol in SYMBOLS:
        end = start + dt.timedelta(hours=rows - 1)
        ts = pl.datetime_range(start, end, "1h", eager=True, time_zone="UTC", time_unit="us")
        feats = np.tanh(np.cumsum(rng.normal(0, 0.2, (rows, n_features)), axis=0)).astype(np.float32)
        ret = rng.normal(0, 0.01 * np.sqrt(HORIZON), rows)
        frame = pl.DataFrame({"symbol": symbol, "ts": ts}).with_columns(
            [pl.Series(f"f{j:02d}", feats[:, j]) for j in range(n_features)]
            + [pl.Series(f"label_fwd_ret_{HORIZON}", ret), pl.Series(f"label_dir_{HORIZON}", (ret > 0).astype(np.int8))]
        )
        frames.append(frame)
    return pl.concat(frames).with_columns(split=pl.lit("train"))


def run(
    frame: pl.DataFrame, columns: list[str], arch: str, epochs: int, device: torch.device, bf16: bool, threads: int
) -> tuple[TrainedForecaster, float, float]:
    params = ForecasterParams.for_arch(arch, max_epochs=epochs, val_fraction=0.0, max_train_samples=None, bf16=bf16)
    started = time.perf_counter()
    model = train_forecaster(frame, columns, HORIZON, params, device=device, seed=0, threads=threads)
    wall = time.perf_counter() - started
    started = time.perf_counter()
    model.predict(frame)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    infer = model.n_fit / (time.perf_counter() - started)
    return model, wall, infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--window", type=int, default=48)
    args = parser.parse_args()

    frame = workload(args.windows, args.window, args.features)
    columns = [c for c in frame.columns if c.startswith("f")]
    cores = os.cpu_count() or 1
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__} · python {platform.python_version()} · {cpu} · {cores} cores")
    print(
        f"workload: {args.windows} windows × {args.window} bars × {args.features} features, "
        f"{args.epochs} epochs, batch 256, hidden 32\n"
    )

    configs: list[tuple[torch.device, bool, int, str]] = []
    for threads in sorted({1, cores}):
        configs.append(
            (torch.device("cpu"), False, threads, f"cpu, {threads} thread{'s' if threads > 1 else ''}, fp32")
        )
    if torch.cuda.is_available():
        gpu = select_device(0)
        name = torch.cuda.get_device_name(gpu)
        configs += [(gpu, False, 1, f"{gpu} ({name}), fp32"), (gpu, True, 1, f"{gpu} ({name}), bf16 autocast")]
    else:
        print("(no CUDA device: GPU rows skipped)\n")

    print(f"{'arch':<10} {'device':<44} {'train samples/s':>16} {'wall s':>8} {'infer samples/s':>16}")
    for device, bf16, threads, label in configs:
        for arch in ARCHS:
            model, wall, infer = run(frame, columns, arch, args.epochs, device, bf16, threads)
            assert model.n_fit == args.windows // len(SYMBOLS) * len(SYMBOLS)
            print(f"{arch:<10} {label:<44} {model.samples_per_second:>16,.0f} {wall:>8.1f} {infer:>16,.0f}")


if __name__ == "__main__":
    main()
