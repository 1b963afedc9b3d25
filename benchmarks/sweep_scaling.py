"""Sweeps on Ray: trials per minute, local Ray start-up time and memory (issue 12 item 6).

Three runs of the same sweep (LSTM_Attn, TPE, `--trials` trials, concurrency 2) on a synthetic 3-symbol market:
- in-process: the trials evaluated one after the other in this process (the peer every ratio is quoted against;
  torch and the engine are warmed up first, so it is the steady-state cost of a trial);
- local Ray: `ray_session()` without an address (a Ray started for the run, 2 CPUs), the way `crypto-lab` runs a
  sweep when RAY_ADDRESS is unset; its start-up time, the first sweep's wall time (with the worker cold start:
  torch import and the engine's JIT in each fresh worker) and a second sweep on the same, now warm, workers;
- loopback cluster: two Ray nodes on this machine (one CPU each, ray.cluster_utils), connected by address: the
  scale-out path (cold and warm, as above); which nodes ran trials.
Memory: peak RSS of this process and every process it started (Ray's GCS, raylets, workers), sampled every 0.25 s.

    .venv/bin/python benchmarks/sweep_scaling.py [--trials 6]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crypto_assets.config.loader import parse_config
from crypto_assets.families import Context, compute_inputs
from crypto_assets.sources.factory import make_source
from crypto_assets.sweeps import evaluate_trial, plan_folds, ray_session, run_sweep

MONTHS = 8


def config(trials: int) -> Any:
    return parse_config(
        {
            "experiment": {"name": "sweep_bench", "seed": 3, "gpu_id": None},
            "data": {
                "tickers": ["BTC/USDT", "ETH/USDT", "SOL/USDT"],
                "timeframe": "1h",
                "source": "synthetic",
                "start": "2024-01-01",
                "end": f"2024-{MONTHS:02d}-{[31, 29, 31, 30, 31, 30, 31, 31][MONTHS - 1]}",
            },
            "walk_forward": {"train_months": 3, "test_months": 1, "step_months": 1, "label_horizon": 12},
            "models": {
                "families": [{"type": "LSTM_Attn", "window": 16, "max_epochs": 2, "max_train_samples": 2000}],
                "ensemble": [{"type": "LSTM_Attn", "weight": 1.0}],
            },
            "sweep": {
                "family": "LSTM_Attn",
                "space": {"hidden": {"low": 4, "high": 16}, "lr": {"low": 1e-4, "high": 1e-2, "log": True}},
                "n_trials": trials,
                "concurrency": 2,
                "holdout_months": 1,
                "early_stopping": {"enabled": False},  # every trial costs the same: a clean throughput figure
            },
        }
    )


def tree_rss_mb(root: int) -> float:
    """RSS of `root` and all its descendants (MiB), from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line)
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields["PPid"].strip()), []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / 1024


@contextmanager
def peak_rss() -> Iterator[dict[str, float]]:
    out = {"peak_mb": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out["peak_mb"] = max(out["peak_mb"], tree_rss_mb(os.getpid()))
            stop.wait(0.25)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()


def uptime() -> str:
    return subprocess.run(["uptime"], check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    experiment = config(args.trials)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    bars = make_source(experiment).fetch(experiment.data.tickers, "1h", start, start.replace(month=MONTHS + 1))
    features = compute_inputs(bars, "1h")
    assert experiment.sweep is not None
    plan = plan_folds(experiment, experiment.sweep)
    context = Context.from_experiment(experiment)
    figures: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "uptime_before": uptime(),
        "trials": args.trials,
        "folds_per_trial": len(plan.windows),
        "bars": bars.height,
    }

    def local(params: Any, windows: Any, thresholds: Any) -> list[Any]:
        return [
            evaluate_trial(p, windows, bars, features, context, seed_root=3, step_months=1, thresholds=thresholds)
            for p in params
        ]

    local([experiment.models.families[0]], plan.windows[:1], None)  # warm-up: torch import, engine JIT
    with peak_rss() as memory:
        began = time.perf_counter()
        inproc = run_sweep(experiment, bars, features, evaluate=local)
        figures["inprocess_seconds"] = time.perf_counter() - began
    figures["inprocess_peak_rss_mb"] = memory["peak_mb"]
    figures["inprocess_trials_per_min"] = args.trials / figures["inprocess_seconds"] * 60

    with peak_rss() as memory, ray_session(None, num_cpus=2) as session:
        figures["local_ray_startup_seconds"] = session.startup_seconds
        began = time.perf_counter()
        local_ray = run_sweep(experiment, bars, features)
        figures["local_ray_seconds"] = time.perf_counter() - began
        began = time.perf_counter()
        run_sweep(experiment, bars, features)  # again, on the session's warm workers
        figures["local_ray_warm_seconds"] = time.perf_counter() - began
    figures["local_ray_peak_rss_mb"] = memory["peak_mb"]
    figures["local_ray_trials_per_min"] = args.trials / figures["local_ray_seconds"] * 60
    figures["same_configurations_as_inprocess"] = [t.sampled for t in local_ray.trials] == [
        t.sampled for t in inproc.trials
    ]

    from ray.cluster_utils import Cluster

    with peak_rss() as memory:
        began = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        figures["cluster_startup_seconds"] = time.perf_counter() - began
        try:
            with ray_session(cluster.address) as session:
                figures["cluster_connect_seconds"] = session.startup_seconds
                began = time.perf_counter()
                loopback = run_sweep(experiment, bars, features)
                figures["cluster_seconds"] = time.perf_counter() - began
                began = time.perf_counter()
                run_sweep(experiment, bars, features)
                figures["cluster_warm_seconds"] = time.perf_counter() - began
        finally:
            cluster.shutdown()
    figures["cluster_peak_rss_mb"] = memory["peak_mb"]
    figures["cluster_trials_per_min"] = args.trials / figures["cluster_seconds"] * 60
    figures["cluster_nodes_that_ran_trials"] = loopback.table["node_id"].n_unique()
    figures["uptime_after"] = uptime()
    for name in ("local_ray", "cluster"):
        figures[f"{name}_warm_trials_per_min"] = args.trials / figures[f"{name}_warm_seconds"] * 60
        for run in (name, f"{name}_warm"):
            figures[f"{run}_vs_inprocess"] = figures[f"{run}_trials_per_min"] / figures["inprocess_trials_per_min"]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}, indent=2))


if __name__ == "__main__":
    main()
