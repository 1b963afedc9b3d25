"""NeuralForecast families (NHITS, TFT, NF_LSTM): import time and per-fold train / predict time at demo settings.

Import: `import neuralforecast.models` in a fresh interpreter, next to `import torch` (the peer every torch family
pays), each the median of 3 runs. Training: one demo fold (configs/demo.yaml's synthetic market without its data
defects, 3 symbols, 1h bars, 6 train months, 2 test months, horizon 24, decisions every 24 bars), each NF family at
the settings below and the demo's LSTM_Attn as the peer measured in the same run; neuralforecast is imported before
the fits, which are timed (1 torch thread) apart from predict (the fold's decisions), with the forecasts' medians as
a sanity check.

    .venv/bin/python benchmarks/neuralforecast_training.py [--fold 2023-07-01] [--families NHITS TFT ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crypto_assets.config import load_config
from crypto_assets.families import Context, FoldData, build_fold, compute_inputs, get_family, validate_params
from crypto_assets.folds import fold_window_for_key
from crypto_assets.ingestion.scope import experiment_fold_spec
from crypto_assets.sources.factory import data_anchor
from crypto_assets.sources.synthetic import SyntheticSource

DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "NHITS": {"type": "NHITS", "input_size": 96, "mlp_width": 64, "max_steps": 300, "windows_batch_size": 128},
    "TFT": {"type": "TFT", "input_size": 48, "hidden_size": 16, "max_steps": 100, "windows_batch_size": 32},
    "NF_LSTM": {"type": "NF_LSTM", "input_size": 48, "encoder_hidden_size": 32, "max_steps": 200},
}


def import_seconds(statement: str, runs: int = 3) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    times = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(runs)
    ]
    return statistics.median(times)


def demo_fold(fold_key: str) -> FoldData:
    config = load_config(ROOT / "configs" / "demo.yaml")
    spec = experiment_fold_spec(config)
    window = fold_window_for_key(fold_key, spec)
    data = config.data
    # the demo's market without its seeded data defects (the `bars` validation fills those; features need a grid)
    synthetic = data.synthetic.model_copy(update={"defects": type(data.synthetic.defects)()})
    bars = SyntheticSource(synthetic, seed=config.experiment.seed, anchor=data_anchor(config)).fetch(
        list(data.tickers), data.timeframe, window.train_start, window.test_end
    )
    frame, _ = build_fold(
        compute_inputs(bars, data.timeframe), bars, window, spec.purge_bars, spec.label_horizon, data.timeframe
    )
    return FoldData(key=window.key, frame=frame, bars=bars, context=Context.from_experiment(config))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fold", default="2023-07-01")
    parser.add_argument("--families", nargs="+", default=[*DEMO_SETTINGS, "LSTM_Attn"])
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"uptime: {subprocess.run(['uptime'], check=False, capture_output=True, text=True).stdout.strip()}")
    print(f"import: torch {import_seconds('import torch'):.1f} s, ", end="", flush=True)
    print(f"neuralforecast.models {import_seconds('import neuralforecast.models'):.1f} s (fresh process, median of 3)")
    data = demo_fold(args.fold)
    started = time.perf_counter()
    import neuralforecast.models  # noqa: F401  (once per process, as in a step: not part of any fit below)

    print(f"import neuralforecast.models in this process (torch, polars loaded): {time.perf_counter() - started:.1f} s")
    n_train = data.frame.filter(pl.col("split") == "train").height
    print(f"fold {data.key}: {n_train} train rows, {data.frame.height - n_train} test rows, {data.frame.width} cols")
    demo = load_config(ROOT / "configs" / "demo.yaml")
    demo_entries = {p.type: p for p in demo.models.trained}
    for family_type in args.families:
        params = validate_params(DEMO_SETTINGS[family_type]) if family_type in DEMO_SETTINGS else None
        params = params or demo_entries[family_type]
        family = get_family(family_type)
        started = time.perf_counter()
        model = family.fit(data, params, 7, "cpu")
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        decisions = family.predict(model, data)
        predict_s = time.perf_counter() - started
        decided = decisions.filter(pl.col("weight").is_not_null())
        sanity = ""
        if "sigma_h" in decided.columns:
            medians = decided.select(pl.col("mu_h", "vol", "p_up").median()).row(0)
            sanity = "median mu_h {:+.4f} vol {:.4f} p_up {:.3f}".format(*medians)
        print(
            f"{family_type:10s} fit {fit_s:6.1f} s  predict {predict_s:5.2f} s  decisions {decided.height:4d}  "
            f"uptime {os.getloadavg()[0]:.2f}  {sanity}",
            flush=True,
        )


if __name__ == "__main__":
    main()
