"""Model families (DESIGN.md §6.1): the registry, the config's families union, and artifacts that replay.

A toy family defined and registered in this module alone (no edit anywhere else) is accepted by the config and
trained like the built-in ones. Every family's artifact, loaded in a fresh process from its folder alone, replays
exactly the weights its fold decided, given the fold's bars; and it replays on bars it never saw.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl
import pytest
from pydantic import Field

from crypto_assets.config import ConfigError, parse_config
from crypto_assets.config.schema import FamilyParams, SyntheticSection
from crypto_assets.families import (
    Artifact,
    Context,
    Family,
    FoldData,
    build_fold,
    compute_inputs,
    fit_artifact,
    get_family,
    order_rows,
    register,
    registered_types,
)
from crypto_assets.folds import FoldWindow, fold_window_for_key
from crypto_assets.folds.windows import FoldSpec
from crypto_assets.sources.synthetic import SyntheticSource

PROJECT_ROOT = Path(__file__).resolve().parents[1]
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
SPEC = FoldSpec(train_months=2, test_months=1, step_months=1, purge_bars=12, label_horizon=12)


# ------------------------------------------------------------------------------------------------ toy family


class ToyParams(FamilyParams):
    """A threshold rule on one scaled feature: long (equal weight) where it exceeds its train-window median."""

    type: Literal["Toy_Threshold"] = "Toy_Threshold"
    feature: str = "ret_24"
    every: Annotated[int, Field(ge=1)] = 6
    """Bars between decisions."""


class ToyModel:
    def __init__(self, feature: str, threshold: float, every: int, train_first: str, train_last: str) -> None:
        self.feature, self.threshold, self.every = feature, threshold, every
        self.train_first, self.train_last = train_first, train_last  # the rows it was fitted on (the live fold's test)


class ToyFamily(Family):
    type = "Toy_Threshold"
    params_class = ToyParams
    uses_gpu = False

    def fit(self, data: FoldData, params: Any, seed: int, device: str) -> ToyModel:
        train = data.frame.filter(pl.col("split") == "train")
        first, last = train["ts"].min(), train["ts"].max()
        median = float(train[params.feature].median())  # type: ignore[arg-type]
        return ToyModel(params.feature, median, params.every, str(first), str(last))

    def predict(self, model: ToyModel, data: FoldData) -> pl.DataFrame:
        rows = data.frame.filter(pl.col("split") == "test").select("symbol", "ts", model.feature)
        grid = rows.select(pl.col("ts").unique().sort()).with_row_index("_k")
        keep = grid.filter(pl.col("_k") % model.every == 0).select("ts")
        n = rows["symbol"].n_unique()
        signal = (pl.col(model.feature) > model.threshold).fill_null(False)
        return (
            rows.join(keep, on="ts", how="semi")
            .select("symbol", "ts", pl.when(signal).then(1.0 / n).otherwise(0.0).alias("weight"))
            .sort("symbol", "ts")
        )

    def metrics(self, model: ToyModel, data: FoldData) -> dict[str, float]:
        return {"threshold": model.threshold}

    def save_model(self, model: ToyModel, directory: Path) -> None:
        (directory / "toy.json").write_text(json.dumps(vars(model)))

    def load_model(self, directory: Path, device: str) -> ToyModel:
        return ToyModel(**json.loads((directory / "toy.json").read_text()))


register(ToyFamily())

TINY: dict[str, dict[str, Any]] = {
    "LSTM_Attn": {"type": "LSTM_Attn", "window": 8, "hidden": 4, "max_epochs": 1, "max_train_samples": 400},
    "CNN_LSTM": {
        "type": "CNN_LSTM",
        "window": 8,
        "hidden": 4,
        "conv_channels": 4,
        "max_epochs": 1,
        "max_train_samples": 400,
    },
    "PPO_Agent": {
        "type": "PPO_Agent",
        "total_timesteps": 256,
        "n_envs": 1,
        "n_steps": 128,
        "batch_size": 64,
        "n_epochs": 1,
        "window": 4,
        "episode_bars": 64,
        "net_arch": [8],
        "rebalance_every": 4,
    },
    "Toy_Threshold": {"type": "Toy_Threshold", "every": 4},
}
CONFIG = {
    "experiment": {"name": "families", "capital": 250_000.0},
    "data": {"tickers": ["BTC/USDT", "ETH/USDT"], "start": "2024-01-01", "end": "2024-04-30"},
    "walk_forward": {"train_months": 2, "test_months": 1, "label_horizon": 12},
    "models": {"families": list(TINY.values()), "sizing": {"rebalance_every": 6}},
}


# ---------------------------------------------------------------------------------------------- the registry


def test_builtin_families_are_registered_under_their_config_types() -> None:
    assert registered_types()[:3] == ("LSTM_Attn", "CNN_LSTM", "PPO_Agent")
    assert [get_family(t).slug for t in ("LSTM_Attn", "CNN_LSTM", "PPO_Agent")] == [
        "lstm_attn",
        "cnn_lstm",
        "ppo_agent",
    ]
    # the published results were made with the old asset names as random-stream labels: they stay
    assert [get_family(t).random_label() for t in ("LSTM_Attn", "CNN_LSTM", "PPO_Agent", "Toy_Threshold")] == [
        "forecaster_lstm_attn",
        "forecaster_cnn_lstm",
        "agent_ppo",
        "model_toy_threshold",
    ]


def test_a_family_registered_in_a_test_module_is_a_valid_config_entry() -> None:
    config = parse_config(CONFIG)
    trained = config.models.trained
    assert [p.type for p in trained] == ["LSTM_Attn", "CNN_LSTM", "PPO_Agent", "Toy_Threshold"]
    assert isinstance(trained[3], ToyParams) and trained[3].every == 4
    bad = json.loads(json.dumps(CONFIG))
    bad["models"]["families"][3]["every"] = 0
    with pytest.raises(ConfigError, match=r"models.families\[3\].every: Input should be greater than or equal to 1"):
        parse_config(bad)
    bad["models"]["families"][3] = {"type": "Toy_Threshold", "evry": 2}
    with pytest.raises(
        ConfigError,
        match=r"models.families\[3\].evry: unknown key; allowed keys here: type, retrain, fine_tune_fraction, n_seeds, feature, every",
    ):
        parse_config(bad)
    # the toy may be an ensemble member too: trained with its defaults when `families` does not list it
    only_ensemble = parse_config({**CONFIG, "models": {"ensemble": [{"type": "Toy_Threshold", "weight": 1.0}]}})
    assert only_ensemble.models.trained == [ToyParams()]


def test_registering_another_class_under_a_taken_type_is_refused() -> None:
    class Impostor(ToyFamily):
        type = "LSTM_Attn"

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor())


# ---------------------------------------------------------------------------------------------- replay


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """Every family trained on fold 2024-03 of a synthetic market; artifacts, the fold's decisions and the bars
    written to disk (what a finished run leaves behind)."""
    root = tmp_path_factory.mktemp("families")
    config = parse_config(CONFIG)
    bars = SyntheticSource(SyntheticSection(), seed=5, anchor=START).fetch(["BTC/USDT", "ETH/USDT"], "1h", START, END)
    bars.write_parquet(root / "bars.parquet")
    window = fold_window_for_key("2024-03-01", SPEC)
    features = compute_inputs(bars, "1h")  # one pass from the first bar, as a single-run ingest
    in_window = pl.col("ts") < window.test_end
    frame, scaler = build_fold(
        features.filter(in_window), bars.filter(in_window), window, SPEC.purge_bars, SPEC.label_horizon, "1h"
    )
    data = FoldData(key=window.key, frame=frame, bars=bars.filter(in_window), context=Context.from_experiment(config))
    dirs = {}
    for params in config.models.trained:
        artifact, decisions = fit_artifact(params, data, scaler, window, seed=11, code_version="v1")
        dirs[params.type] = artifact.save(root / params.type.lower())
        order_rows(decisions).write_parquet(root / f"{params.type}.parquet")
    return root, dirs


REPLAY = """
import sys, polars as pl
from crypto_assets.families import replay
root = sys.argv[1]
bars = pl.read_parquet(root + "/bars.parquet")
for family_type, directory in zip(sys.argv[2::2], sys.argv[3::2]):
    replay(directory, bars).write_parquet(f"{root}/{family_type}.replayed.parquet")
"""


def test_every_family_replays_its_fold_exactly_in_a_fresh_process(trained: tuple[Path, dict[str, Path]]) -> None:
    root, dirs = trained
    args = [str(root)] + [x for t, d in dirs.items() for x in (t, str(d))]
    ran = subprocess.run(
        [sys.executable, "-c", REPLAY, *args],
        check=False,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    for family_type in dirs:
        stored = pl.read_parquet(root / f"{family_type}.parquet")
        replayed = pl.read_parquet(root / f"{family_type}.replayed.parquet")
        assert stored.height > 0 and replayed.equals(stored), family_type


def test_artifact_holds_everything_inference_needs(trained: tuple[Path, dict[str, Path]]) -> None:
    _, dirs = trained
    manifest = json.loads((dirs["LSTM_Attn"] / "family.json").read_text())
    assert manifest["family_type"] == "LSTM_Attn" and manifest["seed"] == 11 and manifest["code_version"] == "v1"
    assert manifest["params"]["hidden"] == 4 and manifest["scaler"]["kind"] == "robust_zscore"
    assert "rsi_14" in manifest["feature_columns"] and manifest["context"]["capital"] == 250_000.0
    assert manifest["window"]["test_start"].startswith("2024-03-01")
    assert (dirs["LSTM_Attn"] / "curves" / "loss.parquet").exists()
    assert (dirs["PPO_Agent"] / "curves" / "reward.parquet").exists()
    toy = json.loads((dirs["Toy_Threshold"] / "family.json").read_text())
    assert toy["family_module"] == __name__  # a plug-in family is found again from its folder alone


def test_replay_on_bars_it_never_saw(trained: tuple[Path, dict[str, Path]]) -> None:
    """Another market (another seed) and a later month: decisions over exactly the asked window, long-only."""
    _, dirs = trained
    other = SyntheticSource(SyntheticSection(), seed=99, anchor=START).fetch(
        ["BTC/USDT", "ETH/USDT"], "1h", START, dt.datetime(2024, 6, 15, tzinfo=dt.UTC)
    )
    start, end = dt.datetime(2024, 5, 1, tzinfo=dt.UTC), dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    for family_type, directory in dirs.items():
        artifact = Artifact.load(directory)
        weights = artifact.weights(other, start=start, end=end)
        assert weights.height > 0, family_type
        assert weights["ts"].min() >= start and weights["ts"].max() < end, family_type  # type: ignore[operator]
        assert (weights["weight"] >= 0).all(), family_type
        # causal: bars after the window change nothing
        assert weights.equals(artifact.weights(other.filter(pl.col("ts") < end), start=start, end=end))


def test_replay_window_defaults_to_the_folds_test_window(trained: tuple[Path, dict[str, Path]]) -> None:
    _, dirs = trained
    artifact = Artifact.load(dirs["CNN_LSTM"])
    assert isinstance(artifact.window, FoldWindow) and artifact.window.key == "2024-03-01"
    bars = pl.read_parquet(dirs["CNN_LSTM"].parent / "bars.parquet")
    with pytest.raises(ValueError, match="no bars in the decision window"):
        artifact.weights(bars, start=END, end=END + dt.timedelta(days=1))
