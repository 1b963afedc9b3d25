"""Fold jobs on a Ray cluster through dagster-ray (issue 12 item 5): the `folds` job's steps as Ray jobs.

One synthetic experiment (3 symbols, 10 months of 1h bars, 3-month train / 1-month test folds, the tiny model
budgets of `crypto_assets_tests.tiny`) in a temporary storage folder, run with `crypto-lab run` exactly as a user
would:
1. `--only data`: the monthly data assets, locally (in-process executor);
2. `--only folds --folds ...`: the fold runs with the default in-process executor (the peer of every ratio);
3. a two-node loopback Ray cluster (`ray.cluster_utils.Cluster`, one CPU per node, the head with its dashboard,
   i.e. the job server) is started and timed, and the same fold runs again with `CRYPTO_LAB_EXECUTOR=ray` and
   `RAY_API_SERVER_ADDRESS` set: every step is a Ray job (`python -m dagster api execute_step`, 1 CPU) with the
   `crypto_assets` package shipped in its `runtime_env`.
Printed: wall times, the cluster's start-up, which node ran which step (from the job server's records), where a
step's `crypto_assets` was imported from, whether the stored fold outputs equal the in-process run's, and the peak
RSS of this process and everything it started (crypto-lab, its code server and run worker, every Ray process and
step). Runs from an empty working folder, so neither the code server nor a Ray job can import the checkout by
accident. Needs the `cluster` extra (dagster-ray, ray[default]).

    .venv/bin/python benchmarks/fold_jobs_on_ray.py [--folds 2024-04,2024-05]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from sweep_scaling import peak_rss, uptime  # benchmarks/ is the script's folder: its RSS sampler and `uptime`

from crypto_assets.config import load_config
from crypto_assets.orchestration.executors import EXECUTOR_ENV, JOB_SERVER_ENV, RAY, step_runtime_env
from crypto_assets.paths import experiment_root
from crypto_assets.storage.warehouse import Warehouse
from crypto_assets_tests.tiny import TINY_MODELS

CRYPTO_LAB = str(Path(sys.executable).parent / "crypto-lab")
# Stored per fold and free of timings: the in-process and the Ray runs must write the same rows.
COMPARED_TABLES = ["backtest", "weights", "trades"]


def experiment(storage: Path) -> dict[str, Any]:
    return {
        "experiment": {"name": "fold_jobs_on_ray", "seed": 5, "gpu_id": None, "storage_dir": str(storage)},
        "data": {
            "tickers": ["BTC/USDT", "ETH/USDT", "SOL/USDT"],
            "timeframe": "1h",
            "source": "synthetic",
            "start": "2024-01-01",
            "end": "2024-10-31",
        },
        "walk_forward": {"train_months": 3, "test_months": 1, "step_months": 1, "label_horizon": 12},
        "models": TINY_MODELS,
    }


def crypto_lab(config: Path, *options: str, env: dict[str, str] | None = None) -> float:
    """Run `crypto-lab run` and return its wall time (seconds); its output goes to this script's stderr."""
    began = time.perf_counter()
    subprocess.run(
        [CRYPTO_LAB, "run", "--config", str(config), *options],
        check=True,
        env={**os.environ, **(env or {})},
        stdout=sys.stderr,
    )
    return time.perf_counter() - began


def fold_outputs(config: Path, folds: list[str]) -> dict[str, pl.DataFrame]:
    warehouse = Warehouse(experiment_root(load_config(config)))
    found = {table: warehouse.read_partitions(table, folds, missing="skip") for table in COMPARED_TABLES}
    return {table: frame for table, frame in found.items() if frame is not None}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", default="2024-04,2024-05", help="fold keys (first test month), comma-separated")
    args = parser.parse_args()
    folds = [key if len(key) > 7 else f"{key}-01" for key in args.folds.split(",")]
    figures: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "uptime_before": uptime(),
        "folds": folds,
    }
    with tempfile.TemporaryDirectory(prefix="fold_jobs_on_ray_") as tmp:
        empty = Path(tmp) / "cwd"
        empty.mkdir()
        os.chdir(empty)  # the code server's working directory and the Ray jobs' cwd: no checkout on sys.path
        config = Path(tmp) / "experiment.yaml"
        config.write_text(yaml.safe_dump(experiment(Path(tmp) / "storage")))

        figures["ingest_seconds"] = crypto_lab(config, "--only", "data")
        with peak_rss() as memory:
            figures["inprocess_seconds"] = crypto_lab(config, "--only", "folds", "--folds", args.folds)
        figures["inprocess_peak_rss_mb"] = memory["peak_mb"]
        inprocess = fold_outputs(config, folds)

        from ray.cluster_utils import Cluster
        from ray.job_submission import JobSubmissionClient

        with peak_rss() as memory:
            began = time.perf_counter()
            port = free_port()
            head = {"num_cpus": 1, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port}
            cluster = Cluster(initialize_head=True, head_node_args=head)
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            job_server = f"http://127.0.0.1:{port}"
            client = JobSubmissionClient(job_server)  # retries until the dashboard answers
            figures["cluster_startup_seconds"] = time.perf_counter() - began
            try:
                on_ray = {EXECUTOR_ENV: RAY, JOB_SERVER_ENV: job_server}
                figures["ray_seconds"] = crypto_lab(config, "--only", "folds", "--folds", args.folds, env=on_ray)
                jobs = [job for job in client.list_jobs() if job.metadata.get("dagster/op")]
                nodes = {cluster.head_node.node_id: "head", **{n.node_id: "worker" for n in cluster.worker_nodes}}
                figures["steps_per_node"] = dict(Counter(nodes[job.driver_node_id] for job in jobs))
                figures["step_nodes"] = {
                    f"{job.metadata['dagster/op']} ({job.metadata['dagster/run-id'][:8]})": nodes[job.driver_node_id]
                    for job in sorted(jobs, key=lambda job: job.start_time or 0)
                }
                figures["step_job_seconds"] = sorted(
                    round(((job.end_time or 0) - (job.start_time or 0)) / 1000, 1) for job in jobs
                )
                probe = client.submit_job(
                    entrypoint=f"{sys.executable} -c 'import crypto_assets; print(crypto_assets.__file__)'",
                    runtime_env=step_runtime_env(),
                )
                while not client.get_job_status(probe).is_terminal():
                    time.sleep(0.5)
                figures["step_imports_crypto_assets_from"] = client.get_job_logs(probe).strip().splitlines()[-1]
            finally:
                cluster.shutdown()
        figures["ray_peak_rss_mb"] = memory["peak_mb"]
        on_cluster = fold_outputs(config, folds)
        figures["compared_tables"] = sorted(inprocess)
        figures["same_fold_outputs_as_inprocess"] = bool(inprocess) and all(
            on_cluster[table].equals(frame) for table, frame in inprocess.items()
        )
    figures["ray_vs_inprocess_wall"] = figures["ray_seconds"] / figures["inprocess_seconds"]
    figures["uptime_after"] = uptime()
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}, indent=2))


if __name__ == "__main__":
    main()
