"""Sweeps (crypto_assets.sweeps, issue 12 items 4-5): config and search space, the median rule, the seeded ask /
tell sequence, and, on a two-node Ray cluster on this machine shared by the whole session, a real sweep spreading
its trials over both nodes (data through the object store, code through runtime_env), the registry without
duplicates on a rerun through the Dagster asset, and the holdout kept out of the objective.

Every Ray test is in the xdist group `ray` (run with `--dist loadgroup`), so one worker starts the cluster once."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from crypto_assets.config import ExperimentConfig
from crypto_assets.config.loader import ConfigError, parse_config
from crypto_assets.config.schema import FamilyParams
from crypto_assets.evaluation.trials import TrialRegistry
from crypto_assets.families import compute_inputs
from crypto_assets.folds import FoldWindow
from crypto_assets.sources.factory import make_source
from crypto_assets.sweeps import RaySession, TrialResult, plan_folds, ray_session, run_sweep
from crypto_assets.sweeps.evaluate import FoldResult, prune_thresholds
from crypto_assets.sweeps.space import decode, distributions

TINY_LSTM = {"type": "LSTM_Attn", "window": 8, "hidden": 4, "max_epochs": 1, "max_train_samples": 300}
SWEEP: dict[str, Any] = {
    "family": "LSTM_Attn",
    "space": {
        "hidden": {"low": 2, "high": 8},
        "lr": {"low": 1e-4, "high": 1e-2, "log": True},
        "window": {"choices": [4, 8]},
    },
    "n_trials": 4,
    "concurrency": 2,
    "holdout_months": 1,
}


def raw_config(storage: str = "storage", **sweep: Any) -> dict[str, Any]:
    """3 synthetic symbols, Jan-Jun 2024, 2-month train / 1-month test folds: folds 2024-03..2024-06, of which
    June is the holdout."""
    return {
        "experiment": {"name": "sweep_test", "seed": 7, "gpu_id": None, "storage_dir": storage},
        "data": {
            "tickers": ["BTC/USDT", "ETH/USDT", "SOL/USDT"],
            "timeframe": "1h",
            "source": "synthetic",
            "start": "2024-01-01",
            "end": "2024-06-30",
        },
        "walk_forward": {"train_months": 2, "test_months": 1, "step_months": 1, "label_horizon": 12},
        "models": {"families": [TINY_LSTM], "ensemble": [{"type": "LSTM_Attn", "weight": 1.0}]},
        "sweep": {**SWEEP, **sweep},
    }


def config_error(**sweep: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw_config(**sweep))
    return str(caught.value)


# ------------------------------------------------------------------------------------------- config and space


def test_sweep_config_errors_name_the_key() -> None:
    assert "space.hiddn" in config_error(space={"hiddn": {"low": 2, "high": 8}})
    assert "space.hidden.low" in config_error(space={"hidden": {"low": 2.5, "high": 8}})
    assert "space.lr.choices[1]" in config_error(space={"lr": {"choices": [0.01, 2.0]}})
    assert "space.revin" in config_error(space={"revin": {"low": 0, "high": 1}})  # a bool is not a range
    assert "log: true needs low > 0" in config_error(space={"lr": {"low": 0.0, "high": 0.1, "log": True}})
    assert "low (8) must be below high (2)" in config_error(space={"hidden": {"low": 8, "high": 2}})
    assert "resources_per_trial" in config_error(resources_per_trial={"cpu": 1, "gpus": 0.25})
    assert "unknown model family" in config_error(family="LSTM_Atn")
    fractional = parse_config(raw_config(resources_per_trial={"cpu": 0.5, "gpu": 0.25})).sweep
    assert fractional is not None and fractional.resources_per_trial.gpu == 0.25


def test_space_becomes_optuna_distributions_and_list_choices_round_trip() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep = parse_config(raw_config()).sweep
    assert sweep is not None
    space = distributions(sweep.family, sweep.space)
    assert isinstance(space["hidden"], IntDistribution) and (space["hidden"].low, space["hidden"].high) == (2, 8)
    assert isinstance(space["lr"], FloatDistribution) and space["lr"].log
    assert isinstance(space["window"], CategoricalDistribution) and space["window"].choices == (4, 8)
    ppo = parse_config(raw_config(family="PPO_Agent", space={"net_arch": {"choices": [[8], [16, 16]]}})).sweep
    assert ppo is not None
    drawn = distributions(ppo.family, ppo.space)["net_arch"]
    assert isinstance(drawn, CategoricalDistribution)
    assert [decode(ppo.space, {"net_arch": c})["net_arch"] for c in drawn.choices] == [[8], [16, 16]]


def test_holdout_months_split_the_folds() -> None:
    config = parse_config(raw_config())
    assert config.sweep is not None
    plan = plan_folds(config, config.sweep)
    assert [w.key for w in plan.windows] == ["2024-03-01", "2024-04-01", "2024-05-01"]
    assert [w.key for w in plan.holdout] == ["2024-06-01"]
    assert all(w.test_end <= plan.holdout_start for w in plan.windows)  # type: ignore[operator]
    with pytest.raises(ValueError, match="holdout"):
        plan_folds(config, config.sweep.model_copy(update={"holdout_months": 4}))


def test_crypto_lab_run_only_sweep_launches_the_sweep_job() -> None:
    import argparse

    from crypto_assets.cli import UsageError, _plan
    from crypto_assets.orchestration.definitions import SWEEP_JOB, build_definitions

    args = argparse.Namespace(only=["sweep"], folds=None, skip_training=False)
    config = parse_config(raw_config())
    assert [request.job for request in _plan(args, config, build_definitions(config), None)] == [SWEEP_JOB]
    no_sweep = parse_config({k: v for k, v in raw_config().items() if k != "sweep"})
    with pytest.raises(UsageError, match="no `sweeps` job"):
        _plan(args, no_sweep, build_definitions(no_sweep), None)


def test_median_rule_uses_earlier_trials_only_after_warm_up() -> None:
    earlier = [[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]]
    # running means 1 / 3 at every fold: median 2; never after the last fold
    assert prune_thresholds(earlier, 3, warmup_folds=1, min_trials=2) == [2.0, 2.0, None]
    assert prune_thresholds(earlier, 3, warmup_folds=2, min_trials=2) == [None, 2.0, None]
    assert prune_thresholds(earlier, 3, warmup_folds=1, min_trials=3) == [None, None, None]
    # a pruned earlier trial that reached one fold only counts at that fold
    assert prune_thresholds([[1.0], [3.0], [5.0, 5.0]], 3, warmup_folds=1, min_trials=2) == [3.0, None, None]


# --------------------------------------------------------------------------------------- seeded sequence


def fake_evaluate(
    params: Sequence[FamilyParams], windows: list[FoldWindow], thresholds: Sequence[float | None] | None
) -> list[TrialResult]:
    """A deterministic stand-in for the walk-forward evaluation: Sharpe peaks at hidden = 5, lr = 1e-3."""
    out = []
    for p in params:
        score = -abs(p.hidden - 5) - abs(np.log10(p.lr) + 3)  # type: ignore[attr-defined]
        ts = pl.Series([w.test_start for w in windows])
        returns = np.linspace(-1e-3, 1e-3, len(windows)) + score * 1e-4
        out.append(TrialResult([FoldResult(w.key, score) for w in windows], False, ts, returns, score))
    return out


def sampled_sequence(config: ExperimentConfig) -> list[dict[str, Any]]:
    market = pl.DataFrame()  # the stand-in evaluator reads no data
    outcome = run_sweep(config, market, market, evaluate=fake_evaluate)
    return [t.sampled for t in outcome.trials]


def test_same_seed_gives_the_same_configurations() -> None:
    config = parse_config(raw_config(n_trials=14, concurrency=3))  # past TPE's 10 random start-up trials
    first = sampled_sequence(config)
    assert len(first) == 14
    assert sampled_sequence(config) == first
    assert sampled_sequence(parse_config(raw_config(n_trials=14, concurrency=3, seed=8))) != first


# -------------------------------------------------------------------------------------- on a Ray cluster


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[tuple[str, RaySession]]:
    """Two Ray nodes on this machine (one CPU each), started once per test session, and this process connected to
    them through `ray_session()` with RAY_ADDRESS set, as the sweep resource connects; the connection is kept for
    the session, so its workers (torch imported, the engine compiled) serve every sweep of the session. Ray
    advertises the machine's own address rather than 127.0.0.1 (it rewrites loopback addresses)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    previous = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        with ray_session() as session:
            yield cluster.address, session
    finally:
        if previous is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = previous
        cluster.shutdown()


@pytest.fixture(scope="module")
def market() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Bars and features of the test config, in memory only: no file a worker could read."""
    config = parse_config(raw_config())
    start, end = dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.datetime(2024, 7, 1, tzinfo=dt.UTC)
    bars = make_source(config).fetch(config.data.tickers, "1h", start, end)
    return bars, compute_inputs(bars, "1h")


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sweeps")


@pytest.fixture(scope="module")
def core_sweep(
    ray_cluster: tuple[str, RaySession], market: tuple[pl.DataFrame, pl.DataFrame], storage: Path
) -> dict[str, Any]:
    """The sweep run through crypto_assets.sweeps on the cluster, recorded in the experiment's registry, and where
    each node imported crypto_assets from."""
    import ray

    from crypto_assets.paths import experiment_root

    config = parse_config(raw_config(str(storage)))
    registry = TrialRegistry(experiment_root(config) / "warehouse", config.experiment.name)
    bars, features = market
    outcome = run_sweep(config, bars, features, registry=registry)
    node_ids = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    find = ray.remote(importlib.util.find_spec).options(num_cpus=1, scheduling_strategy="SPREAD")
    origins = [spec.origin for spec in ray.get([find.remote("crypto_assets") for _ in range(2)])]
    address, session = ray_cluster
    return {
        "outcome": outcome,
        "address": address,
        "session": session,
        "nodes": node_ids,
        "origins": origins,
        "registry": registry,
    }


@pytest.mark.xdist_group("ray")
def test_sweep_spreads_trials_over_both_nodes_with_shipped_code(core_sweep: dict[str, Any]) -> None:
    outcome, session = core_sweep["outcome"], core_sweep["session"]
    assert not session.started_locally and session.address == core_sweep["address"]  # RAY_ADDRESS, no local Ray
    ran_on = set(outcome.table["node_id"].to_list())
    assert len(core_sweep["nodes"]) == 2 and ran_on == core_sweep["nodes"]
    project = Path(__file__).resolve().parents[1]
    for origin in core_sweep["origins"]:  # the uploaded package, never the checkout
        assert "runtime_resources" in origin and not origin.startswith(str(project))
    assert outcome.table.height == 4 and outcome.table["trial"].to_list() == [0, 1, 2, 3]
    complete = outcome.table.filter(pl.col("state") == "complete")
    assert complete.height >= 1 and complete["folds_evaluated"].to_list() == [3] * complete.height
    pruned = outcome.table.filter(pl.col("state") == "pruned")
    assert all(0 < n < 3 for n in pruned["folds_evaluated"].to_list())


@pytest.mark.xdist_group("ray")
def test_sweep_records_every_trial_and_keeps_the_holdout_out(core_sweep: dict[str, Any]) -> None:
    outcome, registry = core_sweep["outcome"], core_sweep["registry"]
    table = registry.read()
    ids = outcome.table["trial_id"].unique().to_list()
    assert sorted(table["trial_id"].to_list()) == sorted(ids) and sorted(outcome.added) == sorted(ids)
    flagged = dict(zip(table["trial_id"], table["pruned"], strict=True))
    for row in outcome.table.iter_rows(named=True):
        assert flagged[row["trial_id"]] == (row["state"] == "pruned")
    holdout_start = outcome.plan.holdout_start
    assert holdout_start == dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    assert all(t.result.ts.max() < holdout_start for t in outcome.trials)  # the objective never sees June
    assert table["end"].max() < holdout_start
    assert outcome.holdout is not None and outcome.holdout.ts.min() >= holdout_start
    assert [f.key for f in outcome.holdout.folds] == ["2024-06-01"]
    best = outcome.best
    assert best is not None and best.state == "complete"
    assert best.result.objective == outcome.table.filter(pl.col("state") == "complete")["objective_sharpe"].max()
    stability = outcome.stability
    assert stability["role"].to_list()[0] == "best" and stability["trial"][0] == best.number
    assert stability["fold_sharpes"][0].to_list() == pytest.approx(best.result.fold_sharpes, nan_ok=True)
    assert (stability["distance"].diff().drop_nulls() >= 0).all()  # neighbours nearest first


@pytest.mark.xdist_group("ray")
def test_sweep_asset_reruns_the_same_configurations_without_duplicates(
    core_sweep: dict[str, Any], market: tuple[pl.DataFrame, pl.DataFrame], storage: Path
) -> None:
    import dagster as dg

    from crypto_assets.orchestration.definitions import SWEEP_JOB, build_definitions
    from crypto_assets.orchestration.io_managers import WarehouseIOManager
    from crypto_assets.orchestration.resources import RayResource
    from crypto_assets.paths import experiment_root
    from crypto_assets.storage.warehouse import Warehouse

    config = parse_config(raw_config(str(storage)))
    definitions = build_definitions(config)
    # the dashboard re-renders after the sweep, in the same job (its sweep section)
    sweep_job = definitions.resolve_job_def(SWEEP_JOB)
    assert sweep_job.asset_layer.executable_asset_keys == {dg.AssetKey("sweep"), dg.AssetKey("report")}
    assert dg.AssetKey("sweep") in definitions.resolve_asset_graph().get(dg.AssetKey("report")).parent_keys
    sweep_asset = next(a for a in definitions.assets if dg.AssetKey("sweep") in a.keys)  # type: ignore[union-attr]
    bars, features = market

    @dg.asset(name="bars", io_manager_key="memory")
    def stub_bars() -> pl.DataFrame:
        return bars

    @dg.asset(name="features", io_manager_key="memory")
    def stub_features() -> pl.DataFrame:
        return features

    result = dg.materialize(
        [stub_bars, stub_features, sweep_asset],  # type: ignore[list-item]
        resources={
            "memory": dg.InMemoryIOManager(),
            "warehouse_io": WarehouseIOManager.for_experiment(config),
            "ray_cluster": RayResource(),  # the session's connection to the cluster (RAY_ADDRESS)
        },
    )
    assert result.success
    metadata = result.asset_materializations_for_node("sweep")[0].metadata
    assert metadata["registry_added"].value == 0 and not metadata["ray_started_locally"].value
    stored = Warehouse(experiment_root(config)).read_table("sweep")
    assert stored is not None
    first = core_sweep["outcome"].table
    assert stored["params"].to_list() == first["params"].to_list()  # same seed → same configurations
    assert stored["objective_sharpe"].to_list() == pytest.approx(first["objective_sharpe"].to_list(), nan_ok=True)
    registry = core_sweep["registry"].read()
    assert registry.height == registry["trial_id"].n_unique() == first["trial_id"].n_unique()
    assert json.loads(json.dumps(metadata["best_params"].value)) == core_sweep["outcome"].best.sampled


@pytest.mark.xdist_group("ray")
def test_a_trial_no_node_can_hold_is_refused(ray_cluster: tuple[str, RaySession]) -> None:
    config = parse_config(raw_config(resources_per_trial={"cpu": 1, "gpu": 0.25}))  # the loopback nodes have no GPU
    market = pl.DataFrame()
    with pytest.raises(ValueError, match=r"sweep.resources_per_trial \(1 CPU, 0.25 GPU per trial\) fits no node"):
        run_sweep(config, market, market)
