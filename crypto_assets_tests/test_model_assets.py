"""Learned models through Dagster: forecasters, PPO and the ensemble per fold; reproducible KPIs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from crypto_assets.config import load_config
from crypto_assets.orchestration.definitions import FOLDS_JOB, INGEST_JOB, REPORTS_JOB, build_definitions
from crypto_assets.paths import experiment_root
from crypto_assets.storage.warehouse import Warehouse

FOLDS = ["2024-03-01", "2024-04-01"]
MODELS = ["lstm_attn", "cnn_lstm", "ppo", "ensemble"]


def write_config(tmp_path: Path, name: str) -> Path:
    """One short experiment with tiny models: two one-month folds, a few seconds of training each."""
    raw = {
        "experiment": {
            "name": name,
            "gpu_id": 0,
            "seed": 21,
            "storage_dir": str(tmp_path / "storage"),
            "capital": 250_000.0,  # the PPO agent trains at this capital, not at 1 unit
        },
        "data": {
            "tickers": ["BTC/USDT", "ETH/USDT"],
            "timeframe": "1h",
            "source": "synthetic",
            "start": "2024-01-01",
            "end": "2024-04-30",
        },
        "walk_forward": {"train_months": 2, "test_months": 1, "label_horizon": 12},
        "baselines": ["buy_and_hold_btc"],
        "models": {
            "ensemble": [
                {"type": "LSTM_Attn", "weight": 0.4},
                {"type": "CNN_LSTM", "weight": 0.2},
                {"type": "PPO_Agent", "weight": 0.4},
            ],
            "families": [
                {"type": "LSTM_Attn", "window": 16, "hidden": 8, "max_epochs": 2, "max_train_samples": 1500},
                {
                    "type": "CNN_LSTM",
                    "window": 16,
                    "hidden": 8,
                    "conv_channels": 4,
                    "max_epochs": 2,
                    "max_train_samples": 1500,
                },
                {
                    "type": "PPO_Agent",
                    "total_timesteps": 1024,
                    "n_envs": 2,
                    "n_steps": 128,
                    "batch_size": 64,
                    "n_epochs": 2,
                    "window": 8,
                    "episode_bars": 128,
                    "net_arch": [16],
                },
            ],
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_experiment(path: Path, fold_order: list[str]) -> Warehouse:
    config = load_config(path)
    defs = build_definitions(config)
    with dg.DagsterInstance.ephemeral() as instance:
        tags = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-04-01"}
        assert defs.resolve_job_def(INGEST_JOB).execute_in_process(instance=instance, tags=tags).success
        for fold in fold_order:
            result = defs.resolve_job_def(FOLDS_JOB).execute_in_process(instance=instance, partition_key=fold)
            assert result.success
        assert defs.resolve_job_def(REPORTS_JOB).execute_in_process(instance=instance).success
    return Warehouse(experiment_root(config))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Warehouse]:
    tmp_path = tmp_path_factory.mktemp("models")
    path = write_config(tmp_path, "models")
    return path, run_experiment(path, FOLDS)


def test_every_model_is_trained_evaluated_and_stored(first_run: tuple[Path, Warehouse]) -> None:
    path, warehouse = first_run
    root = experiment_root(load_config(path))
    for fold in FOLDS:
        for artifact in ("forecaster_lstm_attn", "forecaster_cnn_lstm", "agent_ppo"):
            assert (root / "artifacts" / artifact / fold / "artifact_class.txt").exists(), (artifact, fold)
    preds = warehouse.read_table("predictions_lstm_attn")
    assert preds["p_up"].is_between(0.0, 1.0).all() and (preds["vol"] > 0).all()
    assert preds["ts"].min() == dt.datetime(2024, 3, 1, tzinfo=dt.UTC)  # out of sample: test windows only
    assert preds["ts"].max() == dt.datetime(2024, 4, 30, 23, tzinfo=dt.UTC)
    # PPO looks back into the last train bars too, so it decides from each test window's first bar on
    ppo = warehouse.read_table("predictions_ppo").group_by("fold").agg(pl.col("ts").min()).sort("fold")
    assert ppo["ts"].to_list() == [dt.datetime.fromisoformat(f).replace(tzinfo=dt.UTC) for f in FOLDS]
    strategies = set(warehouse.read_table("kpis")["strategy"].unique().to_list())
    assert strategies == {"buy_and_hold_btc", *MODELS}


def test_ppo_trains_at_the_experiments_capital(first_run: tuple[Path, Warehouse]) -> None:
    """The agent's environment starts at experiment.capital, so its episodes end near it (not near 1)."""
    path, _ = first_run
    root = experiment_root(load_config(path))
    for fold in FOLDS:
        curves = pl.read_parquet(root / "artifacts" / "agent_ppo" / fold / "curves.parquet")
        finals = curves["ep_final_value_mean"].drop_nans().drop_nulls()
        assert finals.len() > 0 and finals.is_between(0.5 * 250_000.0, 2.0 * 250_000.0).all(), fold


def test_training_metadata_reports_device_precision_throughput_and_scores(first_run: tuple[Path, Warehouse]) -> None:
    path, _ = first_run
    config = load_config(path)
    defs = build_definitions(config)
    with dg.DagsterInstance.ephemeral() as instance:
        tags = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-04-01"}
        assert defs.resolve_job_def(INGEST_JOB).execute_in_process(instance=instance, tags=tags).success
        result = defs.resolve_job_def(FOLDS_JOB).execute_in_process(
            instance=instance,
            partition_key=FOLDS[0],
            asset_selection=[
                dg.AssetKey("fold_dataset"),
                dg.AssetKey("forecaster_lstm_attn"),
                dg.AssetKey("predictions_lstm_attn"),
                dg.AssetKey("agent_ppo"),
                dg.AssetKey("predictions_ppo"),
            ],
        )
    assert result.success
    ppo = next(
        m for m in result.asset_materializations_for_node("agent_ppo") if m.asset_key.path[-1] == "agent_ppo"
    ).metadata
    assert ppo["device"].value == "cpu" and ppo["precision"].value == "fp32"
    assert ppo["timesteps_per_second"].value > 0 and ppo["train_seconds"].value > 0
    assert "ep_reward_mean" in ppo["training_curves"].value
    meta = next(
        m
        for m in result.asset_materializations_for_node("forecaster_lstm_attn")
        if m.asset_key.path[-1] == "forecaster_lstm_attn"
    ).metadata
    assert meta["device"].value == "cpu" and meta["precision"].value == "fp32"  # gpu_id 0 falls back to CPU here
    assert meta["samples_per_second"].value > 0
    assert 0.0 <= meta["oos_auc"].value <= 1.0 and 0.0 <= meta["oos_brier"].value <= 1.0
    assert "train_loss" in meta["loss_curves"].value


def test_gpu_pool_limits_training_assets(first_run: tuple[Path, Warehouse]) -> None:
    defs = build_definitions(load_config(first_run[0]))
    graph = defs.resolve_asset_graph()
    for key in ("forecaster_lstm_attn", "forecaster_cnn_lstm", "agent_ppo"):
        assert graph.get(dg.AssetKey(key)).pools == {"gpu"}, key


def test_same_config_and_seed_give_identical_kpis_in_any_fold_order(
    first_run: tuple[Path, Warehouse], tmp_path: Path
) -> None:
    _, warehouse = first_run
    again = run_experiment(write_config(tmp_path, "models"), list(reversed(FOLDS)))
    a = warehouse.read_table("kpis").sort("scope", "strategy").drop("git_commit")
    b = again.read_table("kpis").sort("scope", "strategy").drop("git_commit")
    assert a.equals(b)
    assert (
        warehouse.read_table("predictions_ppo")
        .sort("fold", "symbol", "ts")
        .equals(again.read_table("predictions_ppo").sort("fold", "symbol", "ts"))
    )
