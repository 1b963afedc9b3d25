"""The `folds` job's executor knob (CRYPTO_LAB_EXECUTOR): in process by default, dagster-ray's executor with the
package in its runtime_env when asked for, clear errors naming what is missing. No cluster: the steps on Ray are
proven by benchmarks/fold_jobs_on_ray.py (benchmarks/RESULTS.md "Fold jobs on Ray")."""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
import pytest

from crypto_assets.config.loader import parse_config
from crypto_assets.orchestration.definitions import FOLDS_JOB, build_definitions
from crypto_assets.orchestration.executors import EXECUTOR_ENV, JOB_SERVER_ENV, fold_executor, step_runtime_env
from crypto_assets_tests.tiny import TINY_MODELS

JOB_SERVER = "http://127.0.0.1:8265"


@pytest.fixture(autouse=True)
def _no_executor_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    monkeypatch.delenv(JOB_SERVER_ENV, raising=False)


def executors_by_job(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    experiment = parse_config(
        {
            "experiment": {"name": "executors", "gpu_id": None},
            "data": {"tickers": ["BTC/USDT"], "timeframe": "1h", "source": "synthetic", "start": "2024-01-01"},
            "walk_forward": {"train_months": 1, "test_months": 1, "label_horizon": 12},
            "models": TINY_MODELS,
        }
    )
    defs = build_definitions(experiment)
    return {job.name: defs.resolve_job_def(job.name).executor_def.name for job in defs.jobs or ()}


def test_every_job_runs_in_process_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    executors = executors_by_job(monkeypatch)
    assert FOLDS_JOB in executors
    assert set(executors.values()) == {dg.in_process_executor.name}


def test_ray_puts_only_the_fold_steps_on_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dagster_ray", reason="the optional `cluster` extra is not installed")
    executors = executors_by_job(monkeypatch, **{EXECUTOR_ENV: "ray", JOB_SERVER_ENV: JOB_SERVER})
    assert executors.pop(FOLDS_JOB) == "ray"
    assert set(executors.values()) == {dg.in_process_executor.name}
    resolved = fold_executor().config_schema.resolve_config({})  # the executor's config, defaults filled in
    assert resolved.success and resolved.value is not None
    ray = resolved.value["config"]["ray"]
    assert ray["address"] == JOB_SERVER
    # The package travels as a folder to upload, never as the checkout on the workers' path.
    (package,) = ray["runtime_env"]["py_modules"]
    assert Path(package, "orchestration", "executors.py").is_file()
    assert ray["runtime_env"] == step_runtime_env()
    assert "CRYPTO_ASSETS_CONFIG" in ray["env_vars"]


def test_asking_for_ray_without_what_it_needs_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXECUTOR_ENV, "dask")
    with pytest.raises(ValueError, match=f"{EXECUTOR_ENV}='dask'"):
        fold_executor()
    monkeypatch.setenv(EXECUTOR_ENV, "ray")
    with pytest.raises(ValueError, match=JOB_SERVER_ENV):
        fold_executor()
    monkeypatch.setenv(JOB_SERVER_ENV, JOB_SERVER)
    monkeypatch.setitem(sys.modules, "dagster_ray", None)  # as without the extra: its import fails
    with pytest.raises(ImportError, match=r"`cluster` extra"):
        fold_executor()
