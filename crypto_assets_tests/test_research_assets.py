"""The research graph through Dagster: features → folds → baselines → backtests → KPI tables."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from crypto_assets.cli import main
from crypto_assets.config import load_config
from crypto_assets.evaluation.trials import deflation_inputs
from crypto_assets.features import compute_features
from crypto_assets.metrics import deflated_sharpe
from crypto_assets.paths import experiment_root
from crypto_assets.storage.warehouse import Warehouse
from crypto_assets_tests.tiny import MODEL_STRATEGIES, TINY_MODELS

BASELINES = ["buy_and_hold_btc", "equal_weight", "trend_following", "vol_targeted_trend"]
STRATEGIES = [*BASELINES, *MODEL_STRATEGIES]
FOLDS = ["2024-03-01", "2024-04-01", "2024-05-01"]  # train 2 months, test 2 months, data Jan..Jun
CAPITAL = 250_000.0  # not the default: every backtest must start here


def write_config(tmp_path: Path, name: str) -> Path:
    raw = {
        "experiment": {
            "name": name,
            "gpu_id": None,
            "seed": 11,
            "storage_dir": str(tmp_path / "storage"),
            "capital": CAPITAL,
        },
        "data": {
            "tickers": ["BTC/USDT", "ETH/USDT"],
            "timeframe": "1h",
            "source": "synthetic",
            "start": "2024-01-01",
            "end": "2024-06-30",
        },
        "walk_forward": {"train_months": 2, "test_months": 2, "step_months": 1, "label_horizon": 12},
        "constraints": {"max_drawdown": 0.3, "min_sharpe": 0.5},
        "models": TINY_MODELS,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    """One end-to-end `crypto-lab run` of a tiny experiment, shared by the tests below."""
    tmp_path = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DAGSTER_HOME", raising=False)
        patch.delenv("CRYPTO_ASSETS_CONFIG", raising=False)
        assert main(["run", "--config", str(write_config(tmp_path, "study")), "--log-level", "ERROR"]) == 0
    return Warehouse(experiment_root(load_config(tmp_path / "study.yaml")))


def test_every_table_is_in_the_warehouse(study: Warehouse) -> None:
    for table in (
        "bars",
        "features",
        "fold_dataset",
        "predictions",
        "backtest",
        "weights",
        "trades",
        "walk_forward_equity",
        "kpis",
        "regime_kpis",
        "trials",
    ):
        assert study.query(f"SELECT count(*) AS n FROM {table}")["n"][0] > 0, table
    assert study.stored_keys("backtest") == FOLDS


def test_features_with_lookback_equal_a_full_history_run(study: Warehouse) -> None:
    bars = study.read_table("bars")
    stored = study.read_table("features").sort("symbol", "ts")
    full = compute_features(bars, "1h").sort("symbol", "ts")
    columns = [c for c in full.columns if c not in ("symbol", "ts")]
    # From February on every month was computed from a lookback, not the whole history.
    late = pl.col("ts") >= dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
    a, b = stored.filter(late).select(columns).to_numpy(), full.filter(late).select(columns).to_numpy()
    assert a.shape == b.shape
    assert ((a - b) == 0).mean() > 0.9 and abs(a - b).max() < 1e-8


def test_fold_dataset_is_purged_and_scaled_on_train(study: Warehouse) -> None:
    fold = study.read_partitions("fold_dataset", ["2024-04-01"])
    train, test = fold.filter(pl.col("split") == "train"), fold.filter(pl.col("split") == "test")
    assert train["ts"].max() == dt.datetime(2024, 3, 31, 23, tzinfo=dt.UTC) - dt.timedelta(hours=12)  # purge = horizon
    assert test["ts"].min() == dt.datetime(2024, 4, 1, tzinfo=dt.UTC)
    assert test["ts"].max() == dt.datetime(2024, 5, 31, 23, tzinfo=dt.UTC)
    # Robust z-scores: medians of the train window are 0, values clipped to ±3.
    rsi = train["rsi_14"].drop_nulls()
    assert abs(rsi.median()) < 1e-9 and rsi.abs().max() <= 3.0  # type: ignore[operator]
    assert {"label_fwd_ret_12", "label_dir_12"} <= set(fold.columns)


def test_walk_forward_trades_every_month_exactly_once(study: Warehouse) -> None:
    equity = study.read_table("walk_forward_equity")
    for strategy in STRATEGIES:
        ts = equity.filter(pl.col("strategy") == strategy)["ts"].sort()
        assert ts.is_unique().all()
        assert ts.min() == dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
        assert ts.max() == dt.datetime(2024, 6, 30, 23, tzinfo=dt.UTC)  # newest fold trades its whole window
        assert ts.len() == (31 + 30 + 31 + 30) * 24


def test_kpis_per_fold_and_stitched_with_provenance(study: Warehouse) -> None:
    kpis = study.read_table("kpis")
    assert sorted(kpis["scope"].unique().to_list()) == [*FOLDS, "stitched"]
    assert kpis.height == (len(FOLDS) + 1) * len(STRATEGIES)
    for column in ("experiment", "config_hash", "seed", "git_commit", "data_fingerprint", "package_versions"):
        assert kpis[column].null_count() == 0, column
    assert kpis["experiment"].unique().to_list() == ["study"]
    row = kpis.filter((pl.col("scope") == "stitched") & (pl.col("strategy") == "buy_and_hold_btc")).row(0, named=True)
    equity = study.read_table("walk_forward_equity").filter(pl.col("strategy") == "buy_and_hold_btc").sort("ts")
    assert row["total_return"] == pytest.approx(equity["equity"][-1] - 1.0, rel=1e-9)
    significance = row["psr"] if row["n_trials"] == 1 else row["dsr"]  # DESIGN §3.4: PSR for one trial
    within = row["max_drawdown"] <= 0.3 and row["sharpe"] >= 0.5
    assert row["passes_constraints"] == (within and significance >= 0.95)
    # The verdict is the stitched run's: fold rows report, never pass.
    assert kpis.filter(pl.col("scope") != "stitched")["passes_constraints"].null_count() == len(FOLDS) * len(STRATEGIES)
    assert row["exposure"] > 0.9  # fully invested, drifting only through costs
    assert all(0.0 <= v <= 1.0 for v in kpis["psr"].to_list() if not math.isnan(v))


def test_every_backtest_starts_at_the_experiments_capital(study: Warehouse, capsys: pytest.CaptureFixture[str]) -> None:
    """experiment.capital (quote currency) is the start of every per-fold and stitched run, and the KPI table
    and the `crypto-lab run` summary report it with the share of fills the participation cap cut short."""
    from crypto_assets.cli import _print_summary

    kpis = study.read_table("kpis")
    assert kpis["capital"].to_list() == pytest.approx([CAPITAL] * kpis.height, rel=1e-12)
    np.testing.assert_allclose(kpis["final_value"], CAPITAL * (1.0 + kpis["total_return"]), rtol=1e-9)
    assert all(0.0 <= v <= 1.0 for v in kpis["capped_share"].to_list() if not math.isnan(v))
    for table in ("walk_forward_equity", "backtest"):
        per_bar = study.read_table(table)
        first = per_bar.sort("ts").group_by(["strategy", "fold"] if table == "backtest" else ["strategy"]).first()
        np.testing.assert_allclose(first["value"] / (1.0 + first["return"]), CAPITAL, rtol=1e-12)
    _print_summary(load_config(study.root.parents[1] / "study.yaml"))
    out = capsys.readouterr().out
    assert "at a capital of 250,000" in out and "capital" in out and "capped_share" in out


def _config(timeframe: str = "1h", **sections: object) -> dict[str, object]:
    return {
        "experiment": {"name": "durations"},
        "data": {"tickers": ["BTC/USDT"], "timeframe": timeframe, "start": "2024-01-01", "end": "2024-02-29"},
        **sections,
    }


DURATION_KEYS = [
    ("costs", "vol_window"),
    ("costs", "adv_window"),
    ("baseline_settings", "rebalance_every"),
    ("baseline_settings", "trend_fast"),
    ("baseline_settings", "trend_slow"),
    ("baseline_settings", "vol_window"),
]


@pytest.mark.parametrize(("section", "key"), DURATION_KEYS)
def test_a_bare_number_is_refused_for_every_duration_naming_the_key(section: str, key: str) -> None:
    from crypto_assets.config import ConfigError, parse_config

    for bare in (24, 24.0, "24"):
        with pytest.raises(ConfigError) as info:
            parse_config(_config(**{section: {key: bare}}))
        assert f"{section}.{key}: must be a duration string with a unit" in str(info.value)
        assert f"got {bare!r}" in str(info.value)
    # a duration that is not a whole number of bars is refused too, naming the key; at 15m it is fine
    settings = {"trend_fast": "1h", key: "90m"} if key == "trend_slow" else {key: "90m"}  # (fast < slow)
    with pytest.raises(ConfigError, match=rf"{section}\.{key} = '90m' is not a whole number of 1h bars"):
        parse_config(_config(**{section: settings}))
    parse_config(_config("15m", **{section: settings}))


def test_a_15m_experiment_uses_4x_the_bars_of_a_1h_one_for_the_same_durations() -> None:
    from crypto_assets.baselines import equal_weight
    from crypto_assets.baselines.rules import span_bars
    from crypto_assets.config import parse_config
    from crypto_assets.orchestration.assets.baselines import baseline_settings
    from crypto_assets.orchestration.assets.common import cost_model
    from crypto_assets.timeframes import timeframe_us

    hourly, quarter = parse_config(_config("1h")), parse_config(_config("15m"))
    assert (cost_model(hourly).vol_window, cost_model(hourly).adv_window) == (24, 168)
    assert (cost_model(quarter).vol_window, cost_model(quarter).adv_window) == (96, 672)
    for name in ("trend_following", "vol_targeted_trend"):
        one, four = baseline_settings(hourly, name), baseline_settings(quarter, name)
        assert (
            one
            == four
            == {"rebalance_every": "1d", "fast": "10d", "slow": "50d", "vol_window": "30d"}
            | ({"target_vol": 0.4} if name == "vol_targeted_trend" else {})
        )
        for kw in ("rebalance_every", "fast", "slow", "vol_window"):
            assert span_bars(four[kw], timeframe_us("15m"), kw) == 4 * span_bars(one[kw], timeframe_us("1h"), kw)
    # the same "1d" schedule: equal weight trades once a day on 1h and on 15m bars alike
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    orders = {}
    for timeframe, step in (("1h", dt.timedelta(hours=1)), ("15m", dt.timedelta(minutes=15))):
        ts = pl.datetime_range(start, start + dt.timedelta(days=3), step, closed="left", time_zone="UTC", eager=True)
        bars = pl.DataFrame({"symbol": "BTC/USDT", "ts": ts, "close": 100.0})
        params = baseline_settings(quarter if timeframe == "15m" else hourly, "equal_weight")
        orders[timeframe] = equal_weight(bars, start, start + dt.timedelta(days=3), timeframe=timeframe, **params)
    daily = [start + dt.timedelta(days=d) for d in range(3)]
    assert orders["1h"]["ts"].to_list() == orders["15m"]["ts"].to_list() == daily


def test_regime_kpis_and_trials(study: Warehouse) -> None:
    regimes = study.read_table("regime_kpis")
    assert set(regimes["strategy"].unique().to_list()) == set(STRATEGIES)
    assert set(regimes["xp_trend_regime"].unique().to_list()) <= {"bull", "bear", "chop"}
    shares = regimes.group_by("strategy").agg(pl.col("share_of_bars").sum())
    assert all(abs(v - 1.0) < 1e-9 for v in shares["share_of_bars"].to_list())
    trials = study.read_table("trials")
    # A trial is a configuration, not a fold: one row per stitched strategy, with its return series.
    assert trials.height == len(STRATEGIES) and sorted(trials["strategy"].to_list()) == sorted(STRATEGIES)
    assert trials["trial_id"].is_unique().all() and not trials["pruned"].any()
    equity = study.read_table("walk_forward_equity")
    assert (trials["n_bars"] == equity.filter(pl.col("strategy") == STRATEGIES[0]).height).all()
    kpis = study.read_table("kpis").filter(pl.col("scope") == "stitched")
    assert (kpis["n_trials"] == len(STRATEGIES)).all()
    n, variance = deflation_inputs(trials)
    row = kpis.filter(pl.col("strategy") == STRATEGIES[0]).row(0, named=True)
    r = equity.filter(pl.col("strategy") == STRATEGIES[0]).sort("ts")["return"].to_numpy()
    assert row["dsr"] == pytest.approx(deflated_sharpe(r, n, variance), rel=1e-9)


def test_the_trials_registry_survives_a_second_evaluation_without_duplicates(study: Warehouse) -> None:
    """Re-running the evaluator on the same configurations adds no trial and rewrites no registry file."""
    import dagster as dg

    from crypto_assets.orchestration.definitions import build_definitions

    config = load_config(study.root.parents[1] / "study.yaml")
    registry = study.tables_dir / "trial_registry"
    before = {p.name: p.stat().st_mtime_ns for p in registry.glob("*.parquet")}
    assert len(before) == len(STRATEGIES)
    defs = build_definitions(config)
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            list(defs.assets or []),  # type: ignore[arg-type]
            selection=[dg.AssetKey("trials")],
            resources=defs.resources,
            instance=instance,
        )
    assert result.success
    assert {p.name: p.stat().st_mtime_ns for p in registry.glob("*.parquet")} == before
    trials = study.read_table("trials")
    assert trials.height == len(STRATEGIES) and trials["trial_id"].is_unique().all()


def test_same_config_and_seed_give_identical_kpis(
    study: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("CRYPTO_ASSETS_CONFIG", raising=False)
    path = write_config(tmp_path, "study")  # same name and seed, other storage folder
    assert main(["run", "--config", str(path), "--log-level", "ERROR"]) == 0
    again = Warehouse(experiment_root(load_config(path))).read_table("kpis").sort("scope", "strategy")
    first = study.read_table("kpis").sort("scope", "strategy")
    assert again.drop("git_commit").equals(first.drop("git_commit"))


def test_one_output_of_a_multi_asset_materializes_alone(study: Warehouse) -> None:
    """`dagster asset materialize --select backtest --partition KEY` works for every asset, including
    one output of a multi-asset; the step recomputes and stores only what was selected."""
    import dagster as dg

    from crypto_assets.orchestration.definitions import FOLDS_JOB, build_definitions

    config = load_config(study.root.parents[1] / "study.yaml")
    before = study.read_partitions("backtest", [FOLDS[0]])
    weights_file = study.partition_path("weights", FOLDS[0])
    weights_mtime = weights_file.stat().st_mtime_ns
    with dg.DagsterInstance.ephemeral() as instance:
        result = (
            build_definitions(config)
            .resolve_job_def(FOLDS_JOB)
            .execute_in_process(instance=instance, partition_key=FOLDS[0], asset_selection=[dg.AssetKey("backtest")])
        )
    assert result.success
    assert study.read_partitions("backtest", [FOLDS[0]]).equals(before)  # deterministic recomputation
    assert weights_file.stat().st_mtime_ns == weights_mtime  # not selected: untouched


def test_reports_show_typed_tables_in_the_ui_and_cost_share_stays_in_0_1(study: Warehouse) -> None:
    """The KPI, per-fold, regime and backtest-summary tables are native Dagster tables (typed, rounded
    columns), not markdown; every cost share is a number in [0, 1]."""
    import dagster as dg

    kpis = study.read_table("kpis")
    assert kpis is not None
    shares = kpis["cost_share"].to_list()
    assert all(0.0 <= v <= 1.0 for v in shares), shares
    with dg.DagsterInstance.from_config(str(study.root / "dagster_home")) as instance:

        def metadata(key: str) -> dict[str, object]:
            event = instance.get_latest_materialization_event(dg.AssetKey(key))
            assert event is not None and event.asset_materialization is not None, key
            return dict(event.asset_materialization.metadata)

        report = metadata("kpis")
        stitched, per_fold = report["stitched"], report["per_fold"]
        assert isinstance(stitched, dg.TableMetadataValue) and isinstance(per_fold, dg.TableMetadataValue)
        types = {c.name: c.type for c in stitched.schema.columns}
        assert types["strategy"] == "string" and types["sharpe"] == "float" and types["passes_constraints"] == "bool"
        assert len(stitched.records) == len(STRATEGIES)
        assert len(per_fold.records) == len(FOLDS) * len(STRATEGIES)
        assert "costs / (net profit + costs)" in (
            next(c for c in stitched.schema.columns if c.name == "cost_share").description or ""
        )
        for record in stitched.records:
            sharpe = record.data["sharpe"]
            assert isinstance(sharpe, float) and sharpe == float(f"{sharpe:.3g}")  # rounded to 3 significant digits
        assert isinstance(metadata("regime_kpis")["regimes"], dg.TableMetadataValue)
        assert isinstance(metadata("trials")["sharpes"], dg.TableMetadataValue)
        summary = metadata("backtest")["summary"]
        assert isinstance(summary, dg.TableMetadataValue) and len(summary.records) == len(STRATEGIES)
