"""Which executor runs the `folds` job's steps: in the run's process (default) or each step as a Ray job.

`CRYPTO_LAB_EXECUTOR=ray` (with `RAY_API_SERVER_ADDRESS`, the head's job server, e.g. `http://HEAD_IP:8265`) gives
the `folds` job dagster-ray's `ray_executor`: every step (dataset, each baseline, each trained family, the
ensemble, each backtest) is submitted to the cluster as a Ray job running `python -m dagster api execute_step`,
needing one CPU, so the steps of a fold spread over the nodes. Needs the optional `cluster` extra (dagster-ray,
`ray[default]` for the head's job server); dagster_ray is imported only when asked for.

The `crypto_assets` package reaches the nodes through the job's `runtime_env` (`py_modules`, uploaded once per
content hash), as a sweep's does; the Python environment (the interpreter path of the code server, torch, dagster,
...) must exist on every node. Every node must also reach the experiment's config file (`CRYPTO_ASSETS_CONFIG`,
passed on), the instance's storage and the warehouse: the README's "Sweeps and clusters" says what that takes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg

from crypto_assets.sweeps.cluster import EXCLUDES

EXECUTOR_ENV = "CRYPTO_LAB_EXECUTOR"
JOB_SERVER_ENV = "RAY_API_SERVER_ADDRESS"  # Ray's own name for the job server (`ray job submit` reads it too)
IN_PROCESS, RAY = "in_process", "ray"
# Read by the step processes: the experiment (definitions) and this choice, so they load the same job.
STEP_ENV_VARS = ["CRYPTO_ASSETS_CONFIG", EXECUTOR_ENV, JOB_SERVER_ENV]


def step_runtime_env() -> dict[str, Any]:
    """The Ray jobs' runtime_env: this package shipped as `py_modules` (the job client uploads a folder, not a
    module object as `ray.init` takes)."""
    import crypto_assets

    return {"py_modules": [str(Path(crypto_assets.__file__).parent)], "excludes": EXCLUDES}


def fold_executor() -> dg.ExecutorDefinition:
    """The `folds` job's executor from `CRYPTO_LAB_EXECUTOR` (`in_process`, the default, or `ray`)."""
    choice = os.environ.get(EXECUTOR_ENV, IN_PROCESS)
    if choice == IN_PROCESS:
        return dg.in_process_executor
    if choice != RAY:
        raise ValueError(f"{EXECUTOR_ENV}={choice!r}: expected {IN_PROCESS!r} (the default) or {RAY!r}")
    address = os.environ.get(JOB_SERVER_ENV)
    if not address:
        raise ValueError(
            f"{EXECUTOR_ENV}=ray needs {JOB_SERVER_ENV}, the Ray head's job server (e.g. http://HEAD_IP:8265; "
            "RAY_ADDRESS is the GCS address a sweep connects to, not the job server)"
        )
    try:
        from dagster_ray import ray_executor
    except ImportError as missing:
        raise ImportError(
            f"{EXECUTOR_ENV}=ray needs the optional `cluster` extra (dagster-ray, ray[default]): "
            f"pip install -e '.[cluster]' ({missing})"
        ) from missing
    return ray_executor.configured(
        {
            "ray": {
                "address": address,
                "runtime_env": step_runtime_env(),
                "num_cpus": 1,
                "env_vars": STEP_ENV_VARS,
            }
        },
        name="ray",
    )
