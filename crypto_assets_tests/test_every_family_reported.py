"""Every built-in model family, through Dagster on tiny budgets: trained per fold, backtested, and present in `kpis`
(every fold and the stitched run) and in `regime_kpis`, beside the baselines. LSTM_Attn, CNN_LSTM and PPO_Agent
are covered the same way, with more detail, in test_model_assets.py; this file adds every family registered since,
and fails when a new built-in family is left out of it."""

from __future__ import annotations

from typing import Any

import dagster as dg
import polars as pl
import pytest
import yaml

from crypto_assets.config import load_config
from crypto_assets.families import get_family, registered_types
from crypto_assets.orchestration.definitions import FOLDS_JOB, INGEST_JOB, REPORTS_JOB, build_definitions
from crypto_assets.paths import experiment_root
from crypto_assets.storage.warehouse import Warehouse

FOLDS = ["2024-03-01", "2024-04-01"]
RANGE = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-04-01"}
AGENT: dict[str, Any] = {"total_timesteps": 600, "learning_starts": 100, "batch_size": 32, "window": 8, "net_arch": [8]}
AGENT.update(episode_bars=128, buffer_size=1_000, rebalance_every=4)
NF: dict[str, Any] = {"input_size": 24, "max_steps": 6, "windows_batch_size": 16}
FAMILIES: list[dict[str, Any]] = [
    {"type": "LSTM_Attn", "window": 8, "hidden": 4, "max_epochs": 1, "max_train_samples": 500},
    {"type": "CNN_LSTM", "window": 8, "hidden": 4, "conv_channels": 4, "max_epochs": 1, "max_train_samples": 500},
    {"type": "PPO_Agent", "total_timesteps": 256, "n_envs": 1, "n_steps": 128, "batch_size": 64, "n_epochs": 1}
    | {"window": 8, "episode_bars": 128, "net_arch": [8]},
    {"type": "SAC_Agent", **AGENT},
    {"type": "TD3_Agent", **AGENT, "state_forecasters": ["NF_LSTM"], "state_blocks": 2},  # hybrid state
    {"type": "NHITS", **NF, "mlp_width": 8},
    {"type": "TFT", **NF, "hidden_size": 4},
    {"type": "NF_LSTM", **NF, "encoder_hidden_size": 4},
    {"type": "Meta_Learner", "members": ["NHITS", "SAC_Agent"], "min_history_folds": 1, "epochs": 20},
]


def builtin_types() -> list[str]:
    return [t for t in registered_types() if type(get_family(t)).__module__.startswith("crypto_assets.families.")]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    tmp_path = tmp_path_factory.mktemp("every_family")
    raw = {
        "experiment": {"name": "every_family", "gpu_id": None, "seed": 5, "storage_dir": str(tmp_path / "storage")},
        "data": {"tickers": ["BTC/USDT", "ETH/USDT"], "timeframe": "1h", "source": "synthetic"}
        | {"start": "2024-01-01", "end": "2024-04-30"},
        "walk_forward": {"train_months": 2, "test_months": 1, "label_horizon": 12},
        "baselines": ["buy_and_hold_btc"],
        "models": {
            "families": FAMILIES,
            "ensemble": [{"type": "LSTM_Attn", "weight": 0.5}, {"type": "TFT", "weight": 0.5}],
        },
    }
    path = tmp_path / "every_family.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    defs = build_definitions(config)
    with dg.DagsterInstance.ephemeral() as instance:
        assert defs.resolve_job_def(INGEST_JOB).execute_in_process(instance=instance, tags=RANGE).success
        for fold in FOLDS:  # in order: the meta-learner of a fold reads the members' earlier folds
            assert defs.resolve_job_def(FOLDS_JOB).execute_in_process(instance=instance, partition_key=fold).success
        assert defs.resolve_job_def(REPORTS_JOB).execute_in_process(instance=instance).success
    return Warehouse(experiment_root(config))


def test_the_config_lists_every_builtin_family() -> None:
    assert sorted(f["type"] for f in FAMILIES) == sorted(builtin_types())


def test_every_family_has_rows_in_kpis_and_regime_kpis(warehouse: Warehouse) -> None:
    slugs = [t.lower() for t in builtin_types()]
    kpis = warehouse.read_table("kpis")
    assert kpis is not None
    for slug in [*slugs, "ensemble", "buy_and_hold_btc"]:
        rows = kpis.filter(pl.col("strategy") == slug)
        assert rows.height == len(FOLDS) + 1, slug  # every fold and the stitched run
        assert rows["sharpe"].is_not_null().all() and rows["final_value"].is_not_null().all(), slug
    regimes = warehouse.read_table("regime_kpis")
    assert regimes is not None
    assert set(slugs) <= set(regimes["strategy"].unique().to_list())
    # each learned family's decisions are its own (no two families share one table of weights)
    weights = {s: warehouse.read_table(f"predictions_{s}") for s in slugs}
    assert all(w is not None and w.height > 0 for w in weights.values())
