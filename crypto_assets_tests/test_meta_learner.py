"""Meta_Learner (issue 10 item 3): a learned ensemble of the members' out-of-sample target weights.

Core: fold k's fitted parameters never see fold k's test data (its members' predictions, its bars) and do see the
earlier folds'; labels end before fold k's window; overlapping windows give each bar once (the newest fold); it
soft-votes before `min_history_folds`; it learns which member carries the signal; same seed, same numbers; the
artifact replays its stored weights. Dagster: five tiny folds with two cheap members, rows in kpis / regime_kpis.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
import numpy as np
import polars as pl
import pytest
import yaml
from pydantic import Field

import crypto_assets_tests.test_families  # noqa: F401  (registers Toy_Threshold: a cheap member)
from crypto_assets.config import ConfigError, load_config, parse_config
from crypto_assets.config.schema import FamilyParams
from crypto_assets.ensemble import soft_vote
from crypto_assets.ensemble.meta import member_column, stack_frame
from crypto_assets.families import Context, Family, FoldData, order_rows, register
from crypto_assets.families.meta_learner import MetaArtifact, MetaLearnerParams, fit_meta_artifact, meta_window
from crypto_assets.folds import add_labels
from crypto_assets.orchestration.definitions import FOLDS_JOB, INGEST_JOB, REPORTS_JOB, build_definitions
from crypto_assets.paths import experiment_root
from crypto_assets.storage.warehouse import Warehouse
from crypto_assets_tests.builders import ohlcv_frame

H = 6  # label horizon (bars)
TEST_MONTHS, STEP = 2, 1  # overlapping test windows
FOLDS = ["2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01"]
SYMBOLS = ["BTC/USDT", "ETH/USDT"]
CONTEXT = Context(
    timeframe="1h",
    label_horizon=H,
    purge_bars=H,
    capital=100_000.0,
    costs={"max_leverage": 1.0, "allow_short": False},
    target_vol_annual=0.4,
    rebalance_every=H,
)


def make_bars(seed: int = 3) -> pl.DataFrame:
    ts = pl.datetime_range(
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.datetime(2024, 7, 1, tzinfo=dt.UTC), "1h", closed="left", eager=True
    ).dt.cast_time_unit("us")
    rng = np.random.default_rng(seed)
    frames = []
    for symbol in SYMBOLS:
        close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, ts.len())))
        frames.append(ohlcv_frame(symbol, ts, np.r_[close[0], close[:-1]], close, np.full(ts.len(), 1e6)))
    return pl.concat(frames)


def make_members(bars: pl.DataFrame, seed: int = 5) -> dict[str, pl.DataFrame]:
    """`oracle`: long exactly where the forward return over H bars is positive (cheats: the signal to find);
    `noise`: random weights. Each fold's predictions cover its whole test window."""
    labelled = add_labels(bars.select("symbol", "ts", "close"), H, timeframe="1h")
    rng = np.random.default_rng(seed)
    oracle, noise = [], []
    for fold in FOLDS:
        start = dt.datetime.fromisoformat(fold).replace(tzinfo=dt.UTC)
        end = dt.datetime(start.year, start.month + TEST_MONTHS, 1, tzinfo=dt.UTC)
        rows = labelled.filter(pl.col("ts").is_between(start, end, closed="left")).with_columns(fold=pl.lit(fold))
        up = pl.col(f"label_dir_{H}").fill_null(0).cast(pl.Float64)
        oracle.append(rows.select("symbol", "ts", (up * 0.5).alias("weight"), "fold"))
        noise.append(rows.select("symbol", "ts", pl.Series("weight", rng.uniform(0, 0.5, rows.height)), "fold"))
    return {"oracle": pl.concat(oracle), "noise": pl.concat(noise)}


PARAMS = MetaLearnerParams.model_validate(
    {"type": "Meta_Learner", "members": ["LSTM_Attn", "PPO_Agent"], "min_history_folds": 2, "epochs": 60}
)
SLUGS = {"oracle": "lstm_attn", "noise": "ppo_agent"}  # the members' names in PARAMS


def fit(
    members: dict[str, pl.DataFrame], bars: pl.DataFrame, key: str, params: MetaLearnerParams = PARAMS, seed: int = 1
):  # type: ignore[no-untyped-def]
    window = meta_window(key, test_months=TEST_MONTHS, step_months=STEP, history_folds=params.history_folds)
    named = {SLUGS[name]: frame for name, frame in members.items()}
    return fit_meta_artifact(params, named, bars, window, CONTEXT, test_months=TEST_MONTHS, seed=seed)


@pytest.fixture(scope="module")
def case() -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    bars = make_bars()
    return bars, make_members(bars)


def test_fold_k_test_data_never_reaches_its_meta_learner(case: tuple[pl.DataFrame, dict[str, pl.DataFrame]]) -> None:
    bars, members = case
    key = FOLDS[-1]
    t_k = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    fitted = fit(members, bars, key)[0].model
    assert fitted.learned

    rng = np.random.default_rng(9)
    inside = pl.col("ts") >= t_k
    # every member prediction of a bar in fold k's window (fold k's own and the earlier folds' overlapping ones)
    poisoned = {
        name: frame.with_columns(
            weight=pl.when(inside).then(pl.Series(rng.uniform(0, 1, frame.height))).otherwise(pl.col("weight"))
        )
        for name, frame in members.items()
    }
    crashed = bars.with_columns(
        close=pl.when(inside).then(pl.col("close") * pl.Series(rng.uniform(0.5, 1.5, bars.height))).otherwise("close")
    )
    assert fit(poisoned, crashed, key)[0].model.to_dict() == fitted.to_dict()

    # an earlier fold's predictions before T_k, or the last bar before T_k (the label ending there), do matter
    earlier = pl.col("fold") == FOLDS[1]
    changed = {
        **members,
        "noise": members["noise"].with_columns(weight=pl.when(earlier).then(0.25).otherwise("weight")),
    }
    assert fit(changed, bars, key)[0].model.to_dict() != fitted.to_dict()
    last_before = pl.col("ts") == t_k - dt.timedelta(hours=1)
    moved = bars.with_columns(close=pl.when(last_before).then(pl.col("close") * 1.2).otherwise("close"))
    assert fit(members, moved, key)[0].model.to_dict() != fitted.to_dict()


def test_train_rows_end_before_the_test_window_and_hold_each_bar_once(
    case: tuple[pl.DataFrame, dict[str, pl.DataFrame]],
) -> None:
    bars, members = case
    key = FOLDS[-1]
    t_k = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    frame = stack_frame(members, bars, key, test_months=TEST_MONTHS, label_horizon=H, timeframe="1h", vol_bars=24)
    train, test = frame.filter(pl.col("split") == "train"), frame.filter(pl.col("split") == "test")
    assert (train["ts"] + dt.timedelta(hours=H) < t_k).all() and (train["fold"] < key).all()
    assert train[f"label_dir_{H}"].null_count() == 0
    # the last bars whose labels end before T_k are there: the rule is tight, not a blunt margin
    assert train["ts"].max() == t_k - dt.timedelta(hours=H + 1)
    assert frame.select("symbol", "ts").is_unique().all()
    # March bars are in the Feb and the Mar folds' windows: taken from the newer (Mar) fold
    march = train.filter(pl.col("ts").dt.month() == 3)
    assert march.height > 0 and (march["fold"] == "2024-03-01").all()
    assert (test["fold"] == key).all() and test["ts"].min() == t_k and test.height == 2 * 61 * 24


def test_soft_vote_before_min_history_folds(case: tuple[pl.DataFrame, dict[str, pl.DataFrame]]) -> None:
    bars, members = case
    key = FOLDS[1]  # history: the Feb fold only
    artifact, decisions, _ = fit(members, bars, key)
    assert artifact.model.kind == "soft_vote" and artifact.model.history_folds == ["2024-02-01"]
    fold_orders = {
        SLUGS[n]: f.filter(pl.col("fold") == key).select("symbol", "ts", "weight") for n, f in members.items()
    }
    expected = soft_vote(fold_orders, {"lstm_attn": 0.5, "ppo_agent": 0.5})
    assert order_rows(decisions).equals(order_rows(expected))

    voted = MetaLearnerParams.model_validate({**PARAMS.model_dump(), "votes": {"LSTM_Attn": 0.8, "PPO_Agent": 0.2}})
    assert fit(members, bars, key, voted)[0].model.votes == {"lstm_attn": 0.8, "ppo_agent": 0.2}


@pytest.mark.parametrize("learner", ["mlp", "logistic"])
def test_it_learns_which_member_carries_the_signal(
    case: tuple[pl.DataFrame, dict[str, pl.DataFrame]], learner: str
) -> None:
    bars, members = case
    params = MetaLearnerParams.model_validate({**PARAMS.model_dump(), "learner": learner})
    artifact, decisions, stacked = fit(members, bars, FOLDS[-1], params)
    model = artifact.model
    assert model.kind == learner and model.history_folds == FOLDS[:-1]
    weights = model.member_weights(stacked.filter(pl.col("split") == "train"))
    assert weights["lstm_attn"] > 5 * abs(weights["ppo_agent"])
    # out of sample (fold k's window), P(up) follows the oracle; sized like the forecasters (orders every H bars)
    test = stacked.filter(pl.col("split") == "test").join(decisions, on=["symbol", "ts"])
    up = test.filter(pl.col(member_column("lstm_attn")) > 0)["p_up"].mean()
    down = test.filter(pl.col(member_column("lstm_attn")) == 0)["p_up"].mean()
    assert up > 0.5 > down  # type: ignore[operator]
    orders = decisions.filter(pl.col("weight").is_not_null())
    assert orders["ts"].n_unique() == decisions["ts"].n_unique() // H and (orders["weight"] >= 0).all()


def test_same_seed_same_numbers_and_the_seed_matters(case: tuple[pl.DataFrame, dict[str, pl.DataFrame]]) -> None:
    bars, members = case
    first, again, other = (fit(members, bars, FOLDS[-1], seed=s)[0].model for s in (11, 11, 12))
    assert first.to_dict() == again.to_dict()
    assert first.layers != other.layers


def test_replay_equals_the_stored_weights(case: tuple[pl.DataFrame, dict[str, pl.DataFrame]], tmp_path: Path) -> None:
    bars, members = case
    artifact, decisions, _ = fit(members, bars, FOLDS[-1])
    artifact.save(tmp_path / "meta")
    stored = json.loads((tmp_path / "meta" / "meta.json").read_text())
    assert stored["layers"] == artifact.model.layers and stored["kind"] == "mlp"
    loaded = MetaArtifact.load(tmp_path / "meta")
    assert loaded.model.to_dict() == artifact.model.to_dict() and loaded.window == artifact.window
    named = {SLUGS[name]: frame for name, frame in members.items()}
    replayed = loaded.weights(named, bars)
    assert replayed.height > 0 and replayed.equals(order_rows(decisions))


def test_config_members_must_be_trained_and_the_meta_learner_is_stacked() -> None:
    meta = {"type": "Meta_Learner", "members": ["LSTM_Attn", "PPO_Agent"]}

    def config(**changes: Any) -> dict[str, Any]:
        return {
            "experiment": {"name": "meta"},
            "data": {"tickers": SYMBOLS, "start": "2024-01-01", "end": "2024-04-30"},
            "models": {
                "families": [{**meta, **changes}],
                "ensemble": [{"type": "LSTM_Attn", "weight": 0.4}, {"type": "PPO_Agent", "weight": 0.6}],
            },
        }

    models = parse_config(config()).models
    assert [p.type for p in models.trained] == ["LSTM_Attn", "PPO_Agent"]  # the stacked family is not fold-trained
    assert [p.type for p in models.stacked] == ["Meta_Learner"]
    with pytest.raises(ConfigError, match=r"families\[0\]\.members: \['CNN_LSTM'\] are not trained"):
        parse_config(config(members=["LSTM_Attn", "CNN_LSTM"]))
    with pytest.raises(ConfigError, match="n_seeds: the meta-learner trains one seed"):
        parse_config(config(n_seeds=2))
    with pytest.raises(ConfigError, match=r"min_history_folds \(5\) must be <= history_folds \(3\)"):
        parse_config(config(min_history_folds=5, history_folds=3))
    with pytest.raises(ConfigError, match="votes: weights must sum to 1"):
        parse_config(config(votes={"LSTM_Attn": 0.5, "PPO_Agent": 0.6}))


def test_its_trial_definition_includes_the_members_parameters() -> None:
    """A trial is a configuration: members trained differently make a different meta-learner."""
    from crypto_assets.evaluation.trials import experiment_definitions

    def definition(hidden: int) -> dict[str, object]:
        raw = {
            "experiment": {"name": "meta"},
            "data": {"tickers": SYMBOLS, "start": "2024-01-01", "end": "2024-04-30"},
            "models": {
                "families": [
                    {"type": "LSTM_Attn", "hidden": hidden},
                    {"type": "Meta_Learner", "members": ["LSTM_Attn", "PPO_Agent"]},
                ],
                "ensemble": [{"type": "LSTM_Attn", "weight": 0.4}, {"type": "PPO_Agent", "weight": 0.6}],
            },
        }
        return experiment_definitions(parse_config(raw), ["meta_learner"])["meta_learner"]

    assert definition(16) == definition(16)
    assert definition(16) != definition(32)


# ------------------------------------------------------------------------------------------------ Dagster


class FlatParams(FamilyParams):
    """A second cheap member: long one symbol at a fixed weight, re-ordered every `every` bars."""

    type: Literal["Toy_Flat"] = "Toy_Flat"
    every: Annotated[int, Field(ge=1)] = 6


class FlatFamily(Family):
    type = "Toy_Flat"
    params_class = FlatParams
    uses_gpu = False

    def fit(self, data: FoldData, params: Any, seed: int, device: str) -> int:
        return int(params.every)

    def predict(self, model: int, data: FoldData) -> pl.DataFrame:
        rows = data.frame.filter(pl.col("split") == "test").select("symbol", "ts")
        grid = rows.select(pl.col("ts").unique().sort()).with_row_index("_k").filter(pl.col("_k") % model == 0)
        weight = pl.when(pl.col("symbol") == "BTC/USDT").then(0.5).otherwise(0.0).alias("weight")
        return rows.join(grid.select("ts"), on="ts", how="semi").select("symbol", "ts", weight).sort("symbol", "ts")

    def save_model(self, model: int, directory: Path) -> None:
        (directory / "every.json").write_text(json.dumps(model))

    def load_model(self, directory: Path, device: str) -> int:
        return int(json.loads((directory / "every.json").read_text()))


register(FlatFamily())
DAGSTER_FOLDS = ["2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01", "2024-06-01"]


def test_dagster_materializes_the_meta_learner_over_five_folds_into_the_reports(tmp_path: Path) -> None:
    raw = {
        "experiment": {"name": "meta", "seed": 4, "storage_dir": str(tmp_path / "storage")},
        "data": {
            "tickers": SYMBOLS,
            "timeframe": "1h",
            "source": "synthetic",
            "start": "2024-01-01",
            "end": "2024-06-30",
        },
        "walk_forward": {"train_months": 1, "test_months": 1, "label_horizon": 12},
        "baselines": ["buy_and_hold_btc"],
        "models": {
            "families": [
                {"type": "Toy_Threshold", "every": 6},
                {"type": "Toy_Flat", "every": 12},
                {
                    "type": "Meta_Learner",
                    "members": ["Toy_Threshold", "Toy_Flat"],
                    "min_history_folds": 2,
                    "history_folds": 3,
                    "learner": "logistic",
                },
            ],
            "ensemble": [{"type": "Toy_Threshold", "weight": 0.5}, {"type": "Toy_Flat", "weight": 0.5}],
        },
    }
    path = tmp_path / "meta.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    defs = build_definitions(config)
    span = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-06-01"}
    kinds = {}
    with dg.DagsterInstance.ephemeral() as instance:
        assert defs.resolve_job_def(INGEST_JOB).execute_in_process(instance=instance, tags=span).success
        for fold in DAGSTER_FOLDS:
            result = defs.resolve_job_def(FOLDS_JOB).execute_in_process(instance=instance, partition_key=fold)
            assert result.success
            meta = next(
                m.metadata
                for m in result.asset_materializations_for_node("model_meta_learner")
                if m.asset_key.path[-1] == "model_meta_learner"
            )
            kinds[fold] = meta["kind"].value
            table = meta["inputs"]
            assert isinstance(table, dg.TableMetadataValue)
            assert [r.data["column"] for r in table.records] == ["w_toy_threshold", "w_toy_flat"]
        assert defs.resolve_job_def(REPORTS_JOB).execute_in_process(instance=instance).success
    # Feb: no history, Mar: one fold → soft vote; from Apr on two or more earlier folds → learned
    assert kinds == dict(
        zip(DAGSTER_FOLDS, ["soft_vote", "soft_vote", "logistic", "logistic", "logistic"], strict=True)
    )
    graph = defs.resolve_asset_graph()
    parents = {k.path[-1] for k in graph.get(dg.AssetKey("predictions_meta_learner")).parent_keys}
    assert parents == {"predictions_toy_threshold", "predictions_toy_flat", "bars"}
    warehouse = Warehouse(experiment_root(config))

    def stored_table(name: str) -> pl.DataFrame:
        frame = warehouse.read_table(name)
        assert frame is not None, name
        return frame

    preds = stored_table("predictions_meta_learner")
    assert sorted(preds["fold"].unique().to_list()) == DAGSTER_FOLDS
    kpis = stored_table("kpis").filter(pl.col("strategy") == "meta_learner")
    assert kpis.height == len(DAGSTER_FOLDS) + 1  # every fold and the stitched run
    assert stored_table("regime_kpis").filter(pl.col("strategy") == "meta_learner").height > 0
    replayed = MetaArtifact.load(experiment_root(config) / "artifacts" / "model_meta_learner" / DAGSTER_FOLDS[-1])
    members = {s: stored_table(f"predictions_{s}") for s in ("toy_threshold", "toy_flat")}
    stored = order_rows(preds.filter(pl.col("fold") == DAGSTER_FOLDS[-1]))
    assert replayed.weights(members, stored_table("bars")).equals(stored)
