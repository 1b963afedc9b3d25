"""Hybrid state: forecasters' outputs as agent features, out of sample inside the train window (purged inner
cross-fitting, crypto_assets.models.cross_fit)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pytest
import yaml

from crypto_assets.config import ConfigError, load_config, parse_config
from crypto_assets.config.schema import SyntheticSection
from crypto_assets.evaluation import order_rows
from crypto_assets.families import (
    Artifact,
    Context,
    FoldData,
    build_fold,
    compute_inputs,
    fit_artifact,
    get_family,
    replay,
)
from crypto_assets.families.neuralforecast_models import NFLSTMParams
from crypto_assets.folds import FoldWindow, RobustZScore, fold_window_for_key
from crypto_assets.models.cross_fit import STATE_MANIFEST, cross_fitted_forecasts, purged_blocks
from crypto_assets.models.forecasters import ForecasterParams
from crypto_assets.orchestration.definitions import FOLDS_JOB, INGEST_JOB, LIVE_JOB, build_definitions
from crypto_assets.paths import experiment_root
from crypto_assets.sources.synthetic import SyntheticSource
from crypto_assets.storage.warehouse import Warehouse
from crypto_assets_tests.test_families import CONFIG, END, SPEC, START, TINY
from crypto_assets_tests.test_model_assets import FOLDS, RANGE, write_config

HORIZON = SPEC.label_horizon
FORECASTER = ForecasterParams.model_validate(
    {"type": "LSTM_Attn", "window": 8, "hidden": 4, "max_epochs": 1, "max_train_samples": 400}
)


@pytest.fixture(scope="module")
def fold() -> tuple[FoldData, RobustZScore, FoldWindow, pl.DataFrame]:
    """Fold 2024-03 of a synthetic market (as test_families trains it): data, scaler, window, and all the bars."""
    bars = SyntheticSource(SyntheticSection(), seed=5, anchor=START).fetch(["BTC/USDT", "ETH/USDT"], "1h", START, END)
    window = fold_window_for_key("2024-03-01", SPEC)
    in_window = pl.col("ts") < window.test_end
    frame, scaler = build_fold(
        compute_inputs(bars, "1h").filter(in_window),
        bars.filter(in_window),
        window,
        SPEC.purge_bars,
        HORIZON,
        "1h",
    )
    data = FoldData(window.key, frame, bars.filter(in_window), Context.from_experiment(parse_config(CONFIG)))
    return data, scaler, window, bars


@pytest.fixture(scope="module")
def fold_frame(fold: tuple[FoldData, RobustZScore, FoldWindow, pl.DataFrame]) -> pl.DataFrame:
    return fold[0].frame


def test_blocks_cover_the_window_and_purge_the_label_horizon_around_each() -> None:
    ts = np.arange(100, dtype=np.int64) * 10
    blocks = purged_blocks(np.repeat(ts, 2), k=4, gap=3)  # two symbols: every timestamp twice
    assert np.array_equal(np.concatenate([b.held for b in blocks]), ts)
    for block in blocks:
        first, last = int(np.searchsorted(ts, block.held[0])), int(np.searchsorted(ts, block.held[-1]))
        kept = set(block.fit.tolist())
        assert not kept & set(ts[max(0, first - 3) : last + 4].tolist())  # the block and 3 bars either side
        assert kept | set(ts[max(0, first - 3) : last + 4].tolist()) == set(ts.tolist())  # nothing else left out


def test_in_train_features_never_saw_their_own_labels(
    fold: tuple[FoldData, RobustZScore, FoldWindow, pl.DataFrame], fold_frame: pl.DataFrame
) -> None:
    """Poison the labels of one held-out block: its cross-fitted forecasts do not move (its model never read
    them), while the other blocks' forecasts do (their models did)."""
    train_ts = fold_frame.filter(pl.col("split") == "train")["ts"].dt.epoch("us").to_numpy()
    held = pl.Series(purged_blocks(train_ts, 3, HORIZON)[1].held)
    in_block = pl.col("ts").dt.epoch("us").is_in(held)
    labels = [c for c in fold_frame.columns if c.startswith("label_")]
    rng = np.random.default_rng(0)
    poisoned = fold_frame.with_columns(
        [
            pl.when(in_block).then(pl.Series(rng.permutation(fold_frame[c].to_numpy()))).otherwise(pl.col(c)).alias(c)
            for c in labels
        ]
    )

    def forecasts(frame: pl.DataFrame) -> pl.DataFrame:
        return cross_fitted_forecasts(dataclasses.replace(fold[0], frame=frame), FORECASTER, seed=7, k=3)

    clean, dirty = forecasts(fold_frame), forecasts(poisoned)
    assert clean.select("symbol", "ts").equals(dirty.select("symbol", "ts"))
    block = pl.col("ts").dt.epoch("us").is_in(held)
    assert clean.filter(block).height > 0
    assert clean.filter(block).equals(dirty.filter(block))  # the poisoned block's own features: unchanged
    assert not clean.filter(~block).equals(dirty.filter(~block))  # the others' models fitted those labels
    # every train row with a full input window has exactly one out-of-sample forecast
    train = fold_frame.filter(pl.col("split") == "train")
    assert clean.height == train.height - train["symbol"].n_unique() * (FORECASTER.window - 1)
    assert clean.select("symbol", "ts").is_unique().all()


HYBRID = {**TINY["PPO_Agent"], "state_forecasters": ["LSTM_Attn"], "state_blocks": 3}


def test_a_hybrid_agent_observes_the_forecaster_and_replays_from_its_folder(
    fold: tuple[FoldData, RobustZScore, FoldWindow, pl.DataFrame], tmp_path: Path
) -> None:
    data, scaler, window, bars = fold
    forecaster, _ = fit_artifact(FORECASTER, data, scaler, window, seed=11)
    params = get_family("PPO_Agent").params_class.model_validate(HYBRID)
    hybrid = FoldData(data.key, data.frame, data.bars, data.context, state_models={"LSTM_Attn": forecaster})
    agent, decisions = fit_artifact(params, hybrid, scaler, window, seed=3)
    observed = agent.model.inputs["features"]
    assert {"fc_lstm_attn_p_up", "fc_lstm_attn_log_vol"} <= set(observed)
    # the artifact carries the forecaster: replayed from its folder alone, it decides exactly as the fold did
    folder = agent.save(tmp_path / "hybrid")
    assert replay(folder, bars).equals(order_rows(decisions).sort("symbol", "ts"))
    # the same agent without state_forecasters observes exactly the features above but the forecaster's two
    plain, _ = fit_artifact(
        get_family("PPO_Agent").params_class.model_validate(TINY["PPO_Agent"]), data, scaler, window, seed=3
    )
    assert set(plain.model.inputs["features"]) == set(observed) - {"fc_lstm_attn_p_up", "fc_lstm_attn_log_vol"}


NF_LSTM = NFLSTMParams.model_validate(
    {"input_size": 24, "max_steps": 20, "windows_batch_size": 16, "encoder_hidden_size": 8, "decoder_hidden_size": 8}
)
NF_HYBRID = {**HYBRID, "state_forecasters": ["NF_LSTM"]}


def test_nf_lstm_in_train_features_never_saw_the_returns_their_block_is_scored_on(
    fold: tuple[FoldData, RobustZScore, FoldWindow, pl.DataFrame],
) -> None:
    """A NeuralForecast forecaster learns the next h bar returns from the bars (never the label columns): poison
    the closes that only one held-out block's labels read (the h − 1 bars after it, inside the embargo): the block's
    cross-fitted forecasts do not move, the other blocks' do (block 0's model fitted those returns, block 2 reads
    them as inputs)."""
    data = fold[0]
    train_ts = data.frame.filter(pl.col("split") == "train")["ts"].dt.epoch("us").to_numpy()
    grid = np.unique(train_ts)
    held = purged_blocks(train_ts, 3, HORIZON)[1].held
    after = grid[int(np.searchsorted(grid, held[-1])) + 1 :][: HORIZON - 1]
    noise = pl.Series(np.exp(np.random.default_rng(0).normal(0.0, 0.05, data.bars.height)))
    in_after = pl.col("ts").dt.epoch("us").is_in(pl.Series(after))
    poisoned = data.bars.with_columns(pl.when(in_after).then(pl.col("close") * noise).otherwise(pl.col("close")))
    assert not poisoned.equals(data.bars)

    clean = cross_fitted_forecasts(data, NF_LSTM, seed=7, k=3)
    dirty = cross_fitted_forecasts(dataclasses.replace(data, bars=poisoned), NF_LSTM, seed=7, k=3)
    assert clean.select("symbol", "ts").equals(dirty.select("symbol", "ts"))
    block = pl.col("ts").dt.epoch("us").is_in(pl.Series(held))
    assert clean.filter(block).height > 0
    assert clean.filter(block).equals(dirty.filter(block))  # the poisoned block's own features: unchanged
    assert not clean.filter(~block).equals(dirty.filter(~block))
    # a forecast on every train bar (NeuralForecast masks the missing history of the first ones)
    assert clean.select("symbol", "ts").equals(
        data.frame.filter(pl.col("split") == "train").select("symbol", "ts").sort("symbol", "ts")
    )


def test_a_hybrid_agent_observes_nf_lstm_on_every_bar_and_replays_from_its_folder(
    fold: tuple[FoldData, RobustZScore, FoldWindow, pl.DataFrame], tmp_path: Path
) -> None:
    data, scaler, window, bars = fold
    forecaster, forecasts = fit_artifact(NF_LSTM, data, scaler, window, seed=11)
    params = get_family("PPO_Agent").params_class.model_validate(NF_HYBRID)
    hybrid = dataclasses.replace(data, state_models={"NF_LSTM": forecaster})
    agent, decisions = fit_artifact(params, hybrid, scaler, window, seed=3)
    assert {"fc_nf_lstm_p_up", "fc_nf_lstm_log_vol"} <= set(agent.model.inputs["features"])
    # the family forecasts on its rebalancing grid; the agent's forecaster answers on every bar, the same there
    state = agent.model.state_forecasters["fc_nf_lstm"]
    every = state.forecasts(data)
    test = data.frame.filter(pl.col("split") == "test").select("symbol", "ts").sort("symbol", "ts")
    assert every.join(test, on=["symbol", "ts"], how="semi").select("symbol", "ts").equals(test)
    assert 0 < forecasts.height < test.height  # rebalance_every 6
    on_grid = every.join(forecasts.select("symbol", "ts"), on=["symbol", "ts"], how="semi")
    assert on_grid.select("symbol", "ts").equals(forecasts.select("symbol", "ts"))
    for column in ("p_up", "vol"):
        np.testing.assert_allclose(on_grid[column].to_numpy(), forecasts[column].to_numpy(), rtol=1e-5)
    # stored through the family's own save_model with its type: replayed from the folder alone, it decides as the fold
    folder = agent.save(tmp_path / "hybrid_nf")
    manifest = json.loads((folder / "model" / "state_forecasters" / "fc_nf_lstm" / STATE_MANIFEST).read_text())
    assert manifest["family_type"] == "NF_LSTM"
    assert replay(folder, bars).equals(order_rows(decisions).sort("symbol", "ts"))


def test_only_forecaster_families_can_be_observed() -> None:
    families = [TINY["LSTM_Attn"], {**TINY["PPO_Agent"], "state_forecasters": ["PPO_Agent"]}]
    with pytest.raises(ConfigError, match=r"models.families\[1\].state_forecasters.*LSTM_Attn.*NF_LSTM"):
        parse_config({**CONFIG, "models": {"families": families}})


def hybrid_config(tmp_path: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """test_model_assets' experiment training the tiny forecaster and a PPO agent observing it."""
    path = write_config(tmp_path, name)
    raw = yaml.safe_load(path.read_text())
    raw["models"] = {
        "families": [FORECASTER.model_dump(mode="json"), HYBRID],
        "ensemble": [{"type": "PPO_Agent", "weight": 1.0}],
    }
    path.write_text(yaml.safe_dump(raw))
    return path, raw


def test_the_hybrid_agents_fold_asset_reads_the_folds_forecaster(tmp_path: Path) -> None:
    """Through Dagster: model_ppo_agent[fold] reads model_lstm_attn[fold], stores it inside its artifact, and the
    stored decisions replay from the agent's folder alone."""
    path, raw = hybrid_config(tmp_path, "hybrid")
    config = load_config(path)
    defs = build_definitions(config)
    assert dg.AssetKey("model_lstm_attn") in defs.resolve_asset_graph().get(dg.AssetKey("model_ppo_agent")).parent_keys
    with dg.DagsterInstance.ephemeral() as instance:
        assert defs.resolve_job_def(INGEST_JOB).execute_in_process(instance=instance, tags=RANGE).success
        fold = FOLDS[0]
        assert defs.resolve_job_def(FOLDS_JOB).execute_in_process(instance=instance, partition_key=fold).success
    warehouse = Warehouse(experiment_root(config))
    folder = experiment_root(config) / "artifacts" / "model_ppo_agent" / fold
    assert (folder / "model" / "state_forecasters" / "fc_lstm_attn").is_dir()
    stored = warehouse.read_partitions("predictions_ppo_agent", [fold])
    bars = warehouse.read_table("bars")
    assert stored is not None and bars is not None
    assert replay(folder, bars).equals(order_rows(stored).sort("symbol", "ts"))

    raw["models"]["families"] = [HYBRID]  # the forecaster it observes is not trained
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"models.families\[0\].state_forecasters: \['LSTM_Attn'\] are not trained"):
        load_config(path)


def test_the_hybrid_agents_live_month_reads_the_months_live_forecaster(tmp_path: Path) -> None:
    """The live fold: live_ppo_agent[month] reads live_model_lstm_attn[month] (not a fold's model), materializes,
    and its artifact replays its stored decisions from the folder alone."""
    path, _ = hybrid_config(tmp_path, "hybrid_live")
    config = load_config(path)
    defs = build_definitions(config)
    parents = defs.resolve_asset_graph().get(dg.AssetKey("live_ppo_agent")).parent_keys
    assert dg.AssetKey("live_model_lstm_attn") in parents and dg.AssetKey("model_lstm_attn") not in parents
    month = "2024-04-01"
    with dg.DagsterInstance.ephemeral() as instance:
        assert defs.resolve_job_def(INGEST_JOB).execute_in_process(instance=instance, tags=RANGE).success
        assert defs.resolve_job_def(LIVE_JOB).execute_in_process(instance=instance, partition_key=month).success
    root = experiment_root(config)
    folder = root / "artifacts" / "live_model_ppo_agent" / month
    assert (folder / "model" / "state_forecasters" / "fc_lstm_attn").is_dir()
    assert "fc_lstm_attn_p_up" in Artifact.load(folder).model.inputs["features"]
    warehouse = Warehouse(root)
    stored, bars = warehouse.read_table("live_ppo_agent"), warehouse.read_table("bars")
    assert stored is not None and bars is not None and stored.height
    assert replay(folder, bars).equals(order_rows(stored).sort("symbol", "ts"))
