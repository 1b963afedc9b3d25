"""Model families through Dagster: one factory builds `model_<slug>` + `predictions_<slug>` per family (a toy
family registered in a test module included), the ensemble, reproducible KPIs, replay from the artifact folder
alone, and the live fold."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

import crypto_assets_tests.test_families  # noqa: F401  (registers the Toy_Threshold family, nothing else does)
from crypto_assets.config import load_config
from crypto_assets.families import Artifact
from crypto_assets.orchestration.definitions import FOLDS_JOB, INGEST_JOB, LIVE_JOB, REPORTS_JOB, build_definitions
from crypto_assets.paths import experiment_root
from crypto_assets.storage.warehouse import Warehouse

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FOLDS = ["2024-03-01", "2024-04-01"]
SLUGS = ["lstm_attn", "cnn_lstm", "ppo_agent", "toy_threshold"]
MODELS = [*SLUGS, "ensemble"]
RANGE = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-04-01"}


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
                {"type": "Toy_Threshold", "every": 6},  # registered by a test module alone
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
        assert defs.resolve_job_def(INGEST_JOB).execute_in_process(instance=instance, tags=RANGE).success
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


def test_every_family_is_trained_evaluated_stored_and_reported(first_run: tuple[Path, Warehouse]) -> None:
    path, warehouse = first_run
    root = experiment_root(load_config(path))
    for fold in FOLDS:
        for slug in SLUGS:
            assert (root / "artifacts" / f"model_{slug}" / fold / "family.json").exists(), (slug, fold)
    preds = warehouse.read_table("predictions_lstm_attn")
    assert preds["p_up"].is_between(0.0, 1.0).all() and (preds["vol"] > 0).all()
    assert preds["ts"].min() == dt.datetime(2024, 3, 1, tzinfo=dt.UTC)  # out of sample: test windows only
    assert preds["ts"].max() == dt.datetime(2024, 4, 30, 23, tzinfo=dt.UTC)
    # PPO looks back into the last train bars too, so it decides from each test window's first bar on
    ppo = warehouse.read_table("predictions_ppo_agent").group_by("fold").agg(pl.col("ts").min()).sort("fold")
    assert ppo["ts"].to_list() == [dt.datetime.fromisoformat(f).replace(tzinfo=dt.UTC) for f in FOLDS]
    # one name from config to KPI row: PPO_Agent → model_ppo_agent / predictions_ppo_agent → ppo_agent
    kpis = warehouse.read_table("kpis")
    assert set(kpis["strategy"].unique().to_list()) == {"buy_and_hold_btc", *MODELS}
    toy = kpis.filter(pl.col("strategy") == "toy_threshold")
    assert toy.height == len(FOLDS) + 1 and toy["turnover"].min() > 0  # backtested per fold and stitched  # type: ignore[operator]


def test_strategies_are_declared_and_the_ensemble_reads_its_members(first_run: tuple[Path, Warehouse]) -> None:
    defs = build_definitions(load_config(first_run[0]))
    graph = defs.resolve_asset_graph()
    backtest_inputs = {k.path[-1] for k in graph.get(dg.AssetKey("backtest")).parent_keys}
    assert backtest_inputs == {"bars", "baseline_buy_and_hold_btc", "ensemble", *(f"predictions_{s}" for s in SLUGS)}
    ensemble_inputs = {k.path[-1] for k in graph.get(dg.AssetKey("ensemble")).parent_keys}
    assert ensemble_inputs == {"predictions_lstm_attn", "predictions_cnn_lstm", "predictions_ppo_agent"}
    for slug in ("lstm_attn", "cnn_lstm", "ppo_agent"):
        assert graph.get(dg.AssetKey(f"model_{slug}")).pools == {"gpu"}, slug
    assert not graph.get(dg.AssetKey("model_toy_threshold")).pools  # a CPU family does not queue for the GPU


def test_ppo_trains_at_the_experiments_capital(first_run: tuple[Path, Warehouse]) -> None:
    """The agent's environment starts at experiment.capital, so its episodes end near it (not near 1)."""
    path, _ = first_run
    root = experiment_root(load_config(path))
    for fold in FOLDS:
        curves = pl.read_parquet(root / "artifacts" / "model_ppo_agent" / fold / "curves" / "reward.parquet")
        finals = curves["ep_final_value_mean"].drop_nans().drop_nulls()
        assert finals.len() > 0 and finals.is_between(0.5 * 250_000.0, 2.0 * 250_000.0).all(), fold


def test_training_metadata_reports_device_precision_throughput_and_curves(first_run: tuple[Path, Warehouse]) -> None:
    path, _ = first_run
    defs = build_definitions(load_config(path))
    keys = ["fold_dataset", "model_lstm_attn", "predictions_lstm_attn", "model_ppo_agent", "predictions_ppo_agent"]
    with dg.DagsterInstance.ephemeral() as instance:
        assert defs.resolve_job_def(INGEST_JOB).execute_in_process(instance=instance, tags=RANGE).success
        result = defs.resolve_job_def(FOLDS_JOB).execute_in_process(
            instance=instance, partition_key=FOLDS[0], asset_selection=[dg.AssetKey(k) for k in keys]
        )
    assert result.success

    def metadata(node: str) -> dict[str, dg.MetadataValue]:
        return next(m for m in result.asset_materializations_for_node(node) if m.asset_key.path[-1] == node).metadata

    import torch

    expected_device = "cuda:0" if torch.cuda.is_available() else "cpu"
    ppo = metadata("model_ppo_agent")
    assert ppo["device"].value == "cpu" and ppo["precision"].value == "fp32"  # MLP policies train on CPU (use_gpu off)
    assert ppo["timesteps_per_second"].value > 0 and ppo["train_seconds"].value > 0  # type: ignore[operator]
    curve = ppo["reward_curve"]
    assert isinstance(curve, dg.TableMetadataValue) and "ep_reward_mean" in [c.name for c in curve.schema.columns]
    meta = metadata("model_lstm_attn")
    # gpu_id 0: cuda:0 where a GPU exists, else the CPU fallback (the suite runs on both kinds of machine)
    assert meta["device"].value == expected_device and meta["precision"].value == "fp32"
    assert meta["samples_per_second"].value > 0  # type: ignore[operator]
    loss = meta["loss_curve"]
    assert isinstance(loss, dg.TableMetadataValue) and {"epoch", "train_loss", "val_loss"} <= {
        c.name for c in loss.schema.columns
    }
    scores = meta["metrics"]
    assert isinstance(scores, dg.TableMetadataValue)
    values = {r.data["metric"]: r.data["value"] for r in scores.records}
    assert 0.0 <= values["oos_auc"] <= 1.0 and 0.0 <= values["oos_brier"] <= 1.0


REPLAY = """
import sys, polars as pl
from crypto_assets.families import replay
bars, out = pl.read_parquet(sys.argv[1]), sys.argv[2]
for i, directory in enumerate(sys.argv[3:]):
    replay(directory, bars).write_parquet(f"{out}/{i}.parquet")
"""


def test_replay_from_the_artifact_folder_alone_equals_the_stored_weights(
    first_run: tuple[Path, Warehouse], tmp_path: Path
) -> None:
    """Every family, every fold: the artifact folders copied out of the experiment (no warehouse there), replayed
    in a fresh process on the experiment's bars, give exactly the target weights the fold stored."""
    path, warehouse = first_run
    root = experiment_root(load_config(path))
    bars = warehouse.read_table("bars")
    bars.write_parquet(tmp_path / "bars.parquet")
    shutil.copytree(root / "artifacts", tmp_path / "artifacts")
    runs = [(slug, fold) for slug in SLUGS for fold in FOLDS]
    dirs = [str(tmp_path / "artifacts" / f"model_{slug}" / fold) for slug, fold in runs]
    ran = subprocess.run(
        [sys.executable, "-c", REPLAY, str(tmp_path / "bars.parquet"), str(tmp_path), *dirs],
        check=False,
        cwd=tmp_path,  # nothing of the experiment's storage is reachable from here
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    for i, (slug, fold) in enumerate(runs):
        stored = (
            warehouse.read_table(f"predictions_{slug}")
            .filter((pl.col("fold") == fold) & pl.col("weight").is_not_null())
            .select("symbol", "ts", "weight")
            .sort("symbol", "ts")
        )
        replayed = pl.read_parquet(tmp_path / f"{i}.parquet")
        assert stored.height > 0 and replayed.equals(stored), (slug, fold)


def test_same_config_and_seed_give_identical_kpis_in_any_fold_order(
    first_run: tuple[Path, Warehouse], tmp_path: Path
) -> None:
    _, warehouse = first_run
    again = run_experiment(write_config(tmp_path, "models"), list(reversed(FOLDS)))
    a = warehouse.read_table("kpis").sort("scope", "strategy").drop("git_commit")
    b = again.read_table("kpis").sort("scope", "strategy").drop("git_commit")
    assert a.equals(b)
    assert (
        warehouse.read_table("predictions_ppo_agent")
        .sort("fold", "symbol", "ts")
        .equals(again.read_table("predictions_ppo_agent").sort("fold", "symbol", "ts"))
    )


def test_live_fold_trains_on_the_purged_months_before_its_key_and_enters_no_kpi(tmp_path: Path) -> None:
    """live_<slug>[2024-04-01] trains on Feb-Mar minus the purge, decides in April only, in its own job; no
    report reads it."""
    config = load_config(write_config(tmp_path, "live"))
    defs = build_definitions(config)
    graph = defs.resolve_asset_graph()
    reports = [dg.AssetKey(k) for k in ("kpis", "regime_kpis", "trials", "walk_forward_equity", "backtest")]
    upstream = {k.path[-1] for key in reports for k in graph.get_ancestor_asset_keys(key)}
    assert "predictions_toy_threshold" in upstream and not any(name.startswith("live_") for name in upstream), upstream
    live_job = defs.resolve_job_def(LIVE_JOB)
    assert {k.path[-1] for k in live_job.asset_layer.executable_asset_keys} == {
        *(f"live_{s}" for s in SLUGS),
        *(f"live_model_{s}" for s in SLUGS),
    }
    month = "2024-04-01"
    names = ("live_toy_threshold", "live_model_toy_threshold", "live_lstm_attn", "live_model_lstm_attn")
    selection = [dg.AssetKey(k) for k in names]
    with dg.DagsterInstance.ephemeral() as instance:
        assert defs.resolve_job_def(INGEST_JOB).execute_in_process(instance=instance, tags=RANGE).success
        result = live_job.execute_in_process(instance=instance, partition_key=month, asset_selection=selection)
        assert result.success
    root = experiment_root(config)
    toy = Artifact.load(root / "artifacts" / "live_model_toy_threshold" / month)
    assert (toy.window.train_start, toy.window.test_start) == (
        dt.datetime(2024, 2, 1, tzinfo=dt.UTC),
        dt.datetime(2024, 4, 1, tzinfo=dt.UTC),
    )
    # fitted on exactly Feb 1 .. Mar 31 minus the last 12 bars (label_horizon 12: their labels look into April)
    assert toy.model.train_first == "2024-02-01 00:00:00+00:00"
    assert toy.model.train_last == "2024-03-31 11:00:00+00:00"
    lstm = Artifact.load(root / "artifacts" / "live_model_lstm_attn" / month)
    assert lstm.model.split_info["fit_start"] >= "2024-02-01" and lstm.model.split_info["val_end"] < "2024-03-31T12"
    warehouse = Warehouse(root)
    for slug in ("toy_threshold", "lstm_attn"):
        decisions = warehouse.read_table(f"live_{slug}")
        assert decisions["ts"].min() == dt.datetime(2024, 4, 1, tzinfo=dt.UTC), slug
        assert decisions["ts"].max() < dt.datetime(2024, 5, 1, tzinfo=dt.UTC), slug  # type: ignore[operator]
        assert (decisions["fold"] == month).all()
