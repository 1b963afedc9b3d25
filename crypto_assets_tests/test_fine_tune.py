"""`retrain: fine_tune`: fold k starts from fold k − 1's weights, the folds run in order through Dagster, and a
family that cannot warm-start is refused by the config."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import torch
import yaml
from pydantic import ValidationError

from crypto_assets.config import load_config, parse_config
from crypto_assets.config.schema import ExperimentConfig, SyntheticSection
from crypto_assets.families import Artifact, Context, FoldData, build_fold, compute_inputs, fit_artifact, get_family
from crypto_assets.folds import FoldWindow, RobustZScore, fold_window_for_key
from crypto_assets.models import default_feature_columns, train_forecaster
from crypto_assets.orchestration.definitions import FOLDS_JOB, INGEST_JOB, build_definitions
from crypto_assets.paths import experiment_root
from crypto_assets.sources.synthetic import SyntheticSource
from crypto_assets.storage.warehouse import Warehouse
from crypto_assets_tests.test_families import CONFIG, END, SPEC, START, TINY
from crypto_assets_tests.test_model_assets import FOLDS, RANGE, run_experiment, write_config

LSTM = {"type": "LSTM_Attn", "window": 8, "hidden": 4, "max_epochs": 2, "patience": 5, "max_train_samples": 400}
FINE_TUNED = {**LSTM, "retrain": "fine_tune", "fine_tune_fraction": 0.5}


def fine_tune_config(tmp_path: Path, name: str) -> Path:
    """The model-assets experiment (two one-month folds) with one tiny fine-tuned LSTM_Attn, two seeds per fold."""
    path = write_config(tmp_path, name)
    raw = yaml.safe_load(path.read_text())
    raw["models"] = {"families": [{**FINE_TUNED, "n_seeds": 2}], "ensemble": [{"type": "LSTM_Attn", "weight": 1.0}]}
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, Warehouse]:
    path = fine_tune_config(tmp_path_factory.mktemp("fine_tune"), "fine_tune")
    return load_config(path), run_experiment(path, FOLDS)


def state(artifact_model: object) -> dict[str, torch.Tensor]:
    return artifact_model.model.state_dict()  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed_folder", ["model_lstm_attn/{fold}", "seed_models_lstm_attn/{fold}/seed_1"])
def test_second_fold_starts_from_the_first_folds_weights(
    fine_tuned: tuple[ExperimentConfig, Warehouse], seed_folder: str
) -> None:
    """Seed 0 (the strategy) and seed 1 each continue their own chain: fold k from the same seed's fold k − 1."""
    config, warehouse = fine_tuned
    root = experiment_root(config) / "artifacts"
    first, second = (Artifact.load(root / seed_folder.format(fold=key)) for key in FOLDS)
    assert first.model.epochs_run == 2  # the first fold trains in full
    assert second.model.epochs_run == 1  # ceil(0.5 × 2): a fine-tuned fold trains half the budget
    frame = warehouse.read_partitions("fold_dataset", [FOLDS[1]])
    assert frame is not None
    params, horizon, columns = second.params, config.walk_forward.label_horizon, default_feature_columns(frame)

    def retrain(init: object) -> dict[str, torch.Tensor]:
        model = train_forecaster(frame, columns, horizon, params, seed=second.seed, init=init)  # type: ignore[arg-type]
        return state(model)

    manual = retrain(first.model)  # a warm start by hand from the stored first fold, with the fold's own seed
    assert all(torch.equal(manual[k], v) for k, v in state(second.model).items())
    scratch = retrain(None)  # the same seed and data from a fresh initialisation
    assert not all(torch.equal(scratch[k], v) for k, v in state(second.model).items())


def test_fine_tuned_fold_depends_on_its_previous_fold(tmp_path: Path) -> None:
    config = load_config(fine_tune_config(tmp_path, "fine_tune_order"))
    defs = build_definitions(config)
    graph = defs.resolve_asset_graph()
    model = dg.AssetKey("model_lstm_attn")
    assert model in graph.get(model).parent_keys  # a self-dependency on the previous fold
    with dg.DagsterInstance.ephemeral() as instance:
        assert defs.resolve_job_def(INGEST_JOB).execute_in_process(instance=instance, tags=RANGE).success
        # the second fold before the first: nothing to start from, refused with the reason
        result = defs.resolve_job_def(FOLDS_JOB).execute_in_process(
            instance=instance, partition_key=FOLDS[1], raise_on_error=False
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "materialize the folds in order" in str(failure.event_specific_data)


def test_full_retrain_keeps_the_configuration_as_it_was() -> None:
    """`retrain: full` leaves the dump (code versions) as before it existed; `n_seeds` stays in the dump (the config
    survives JSON) but out of the strategy's definition (configuration ids of the trials registry)."""
    from crypto_assets.families import validate_params

    seeded = validate_params({**LSTM, "n_seeds": 3})
    assert not {"retrain", "fine_tune_fraction"} & set(seeded.model_dump(mode="json"))
    assert seeded.model_dump(mode="json")["n_seeds"] == 3
    assert "n_seeds" not in validate_params(LSTM).model_dump(mode="json")
    assert seeded.strategy_dump() == validate_params(LSTM).strategy_dump()
    assert validate_params(FINE_TUNED).model_dump(mode="json")["retrain"] == "fine_tune"


def test_a_family_that_cannot_warm_start_refuses_fine_tune(tmp_path: Path) -> None:
    import crypto_assets_tests.test_families  # noqa: F401  (registers Toy_Threshold, which has no warm start)

    path = write_config(tmp_path, "toy_fine_tune")
    raw = yaml.safe_load(path.read_text())
    raw["models"]["families"] = [{"type": "Toy_Threshold", "retrain": "fine_tune"}]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises((ValidationError, ValueError), match=r"retrain: fine_tune: Toy_Threshold cannot warm-start"):
        load_config(path)


def test_an_agent_continues_from_the_previous_folds_policy() -> None:
    """PPO fine-tuned on fold 2024-04 from the agent of fold 2024-03: the policy equals a warm start by hand, differs
    from a fresh fit with the same seed, trains half the timesteps, and leaves the previous agent untouched."""
    config = parse_config(CONFIG)
    bars = SyntheticSource(SyntheticSection(), seed=5, anchor=START).fetch(["BTC/USDT", "ETH/USDT"], "1h", START, END)
    features = compute_inputs(bars, "1h")
    params = get_family("PPO_Agent").params_class.model_validate({**TINY["PPO_Agent"], "retrain": "fine_tune"})

    def fold(key: str) -> tuple[FoldData, RobustZScore, FoldWindow]:
        window = fold_window_for_key(key, SPEC)
        in_window = pl.col("ts") < window.test_end
        frame, scaler = build_fold(
            features.filter(in_window), bars.filter(in_window), window, SPEC.purge_bars, SPEC.label_horizon, "1h"
        )
        return FoldData(key, frame, bars.filter(in_window), Context.from_experiment(config)), scaler, window

    def policy(agent: object) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in agent.model.policy.state_dict().items()}  # type: ignore[attr-defined]

    data3, scaler3, window3 = fold(FOLDS[0])
    first, _ = fit_artifact(params, data3, scaler3, window3, seed=3)
    before = policy(first.model)
    data4, scaler4, window4 = fold(FOLDS[1])
    tuned, _ = fit_artifact(params, data4, scaler4, window4, seed=4, init=first)
    assert tuned.model.params.total_timesteps == TINY["PPO_Agent"]["total_timesteps"] // 2
    assert all(torch.equal(before[k], v) for k, v in policy(first.model).items())  # the previous agent is intact
    manual = policy(get_family("PPO_Agent").fit_warm(data4, params, 4, "cpu", first.model))
    assert all(torch.equal(manual[k], v) for k, v in policy(tuned.model).items())
    scratch = policy(get_family("PPO_Agent").fit(data4, params, 4, "cpu"))
    assert not all(torch.equal(scratch[k], v) for k, v in policy(tuned.model).items())
