"""The trials registry (append-only, one file per configuration), the deflated Sharpe's N and variance taken
from it, PBO by CSCV, and the verdict judged on the stitched run only (DESIGN §3.4)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from crypto_assets.config.loader import parse_config
from crypto_assets.evaluation import STITCHED, kpi_rows, kpi_table
from crypto_assets.evaluation.trials import (
    Trial,
    TrialRegistry,
    aligned_returns,
    deflation_inputs,
    experiment_definitions,
    registry_pbo,
    trial_definition,
    trial_id,
)
from crypto_assets.metrics import deflated_sharpe, probabilistic_sharpe, probability_of_backtest_overfitting
from crypto_assets_tests.test_evaluation_core import HOUR, T0, _per_bar


def _definition(name: str, **settings: object) -> dict[str, object]:
    return trial_definition(
        kind="baseline",
        name=name,
        settings=settings,
        features=["ret_1", "vol_24"],
        seed=7,
        walk_forward={"train_months": 6, "test_months": 1},
        costs={"fee_bps": 5},
        data_fingerprint="abc123",
    )


def _trial(name: str, returns: list[float] | np.ndarray, *, pruned: bool = False, **settings: object) -> Trial:
    r = np.asarray(returns, dtype=np.float64)
    ts = pl.Series("ts", [T0 + i * HOUR for i in range(r.size)])
    return Trial(name, _definition(name, **settings), ts, r, pruned=pruned)


def test_trial_id_is_what_defines_the_strategy() -> None:
    base = _definition("trend", lookback=24)
    assert trial_id(base) == trial_id(_definition("trend", lookback=24))  # stable across calls
    assert trial_id(base) != trial_id(_definition("trend", lookback=48))  # a hyper-parameter is a new trial
    assert trial_id(base) != trial_id({**base, "seed": 8})
    assert trial_id(base) != trial_id({**base, "data": "other"})
    # The feature set is a set: the same columns listed in another order are the same configuration.
    swapped = trial_definition(
        kind="baseline",
        name="trend",
        settings={"lookback": 24},
        features=["vol_24", "ret_1"],
        seed=7,
        walk_forward={"train_months": 6, "test_months": 1},
        costs={"fee_bps": 5},
        data_fingerprint="abc123",
    )
    assert trial_id(base) == trial_id(swapped)


def test_dsr_takes_n_and_the_variance_from_the_registry_hand_worked(tmp_path: Path) -> None:
    """Three trials with per-bar Sharpes 0.5, 0 and −0.5 (hand-built series): N = 3, variance = 0.25."""
    a = [0.01, 0.03, 0.01, 0.03]  # mean 0.02, std (ddof=1) 0.011547: Sharpe √3
    b = [0.01, -0.01, 0.01, -0.01]  # mean 0: Sharpe 0
    c = [-x for x in a]  # Sharpe −√3
    registry = TrialRegistry(tmp_path, "e")
    assert len(registry.record([_trial("a", a), _trial("b", b), _trial("c", c)])) == 3
    n, variance = deflation_inputs(registry.read())
    assert n == 3
    assert variance == pytest.approx(3.0)  # Sharpes √3, 0, −√3: Σ(x − 0)² / (3 − 1) = 6 / 2
    # The stitched KPI row of the selected strategy is deflated by those, not by the scope's one strategy.
    rng = np.random.default_rng(3)
    r = list(rng.normal(0.002, 0.01, 300))
    rows = kpi_rows(
        _per_bar("x", r),
        None,
        8760,
        scope=STITCHED,
        max_drawdown_limit=1.0,
        min_sharpe=-10.0,
        n_trials=n,
        trials_sharpe_variance=variance,
    )
    assert rows[0]["n_trials"] == 3
    assert rows[0]["dsr"] == pytest.approx(deflated_sharpe(np.asarray(r), 3, 3.0))
    assert rows[0]["dsr"] < 0.95 and rows[0]["passes_constraints"] is False  # luck of 3 wide trials explains it


def test_pruned_trials_count_in_n_but_not_in_the_variance_or_pbo(tmp_path: Path) -> None:
    registry = TrialRegistry(tmp_path, "e")
    rng = np.random.default_rng(0)
    registry.record([_trial(f"t{i}", rng.normal(0, 0.01, 64), k=i) for i in range(3)])
    before = deflation_inputs(registry.read())
    registry.record([_trial("stopped", [0.5, -0.5] * 32, pruned=True)])
    after = deflation_inputs(registry.read())
    assert after[0] == before[0] + 1 and after[1] == before[1]
    matrix, ids = aligned_returns(registry.read())
    assert matrix.shape == (64, 3) and len(ids) == 3


def test_the_registry_is_append_only_and_first_wins_across_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    first = [_trial("trend", rng.normal(0, 0.01, 50), lookback=24), _trial("hold", rng.normal(0, 0.01, 50))]
    registry = TrialRegistry(tmp_path, "e")
    assert len(registry.record(first)) == 2
    stored = registry.read()
    # A second run of the same configurations (different numbers, e.g. a new bar) adds nothing and keeps
    # the first results; a new hyper-parameter adds one trial.
    again = [_trial("trend", rng.normal(0, 0.01, 51), lookback=24), _trial("hold", rng.normal(0, 0.01, 51))]
    assert TrialRegistry(tmp_path, "e").record([*again, _trial("trend", rng.normal(0, 0.01, 50), lookback=48)]) == [
        trial_id(_definition("trend", lookback=48))
    ]
    table = registry.read()
    assert table.height == 3 and table["trial_id"].n_unique() == 3
    kept = table.filter(pl.col("trial_id").is_in(stored["trial_id"].to_list())).drop("recorded_at")
    assert kept.equals(stored.drop("recorded_at"))
    assert sorted(p.name for p in registry.directory.iterdir()) == sorted(f"{i}.parquet" for i in table["trial_id"])


def test_pbo_many_noise_strategies_overfit_about_half_the_time() -> None:
    """Pure noise: the in-sample winner is a random draw out of sample, so its OOS rank is uniform and PBO
    averages 1/2 (Bailey et al. 2017, §4); the logits centre on 0."""
    pbos, medians = [], []
    for seed in range(8):
        result = probability_of_backtest_overfitting(np.random.default_rng(seed).normal(0, 0.01, (1600, 100)))
        pbos.append(result.pbo)
        medians.append(float(np.median(result.logits)))
        assert result.n_splits == 12870 and result.logits.shape == (12870,)  # C(16, 8)
    assert 0.4 <= np.mean(pbos) <= 0.65
    assert abs(float(np.mean(medians))) < 0.5


def test_pbo_is_low_with_one_real_edge_among_noise(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(0, 0.01, (1600, 50))
    matrix[:, 7] += 0.003  # per-bar Sharpe 0.3: wins in sample and out
    result = probability_of_backtest_overfitting(matrix)
    assert result.pbo < 0.05 and float(np.median(result.logits)) > 2.0
    # The same through the registry's aligned matrix.
    registry = TrialRegistry(tmp_path, "e")
    registry.record([_trial(f"t{j}", matrix[:, j], j=j) for j in range(matrix.shape[1])])
    assert registry_pbo(registry.read()) == pytest.approx(result.pbo, abs=0.05)


def test_pbo_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="N ≥ 2"):
        probability_of_backtest_overfitting(np.zeros((100, 1)))
    with pytest.raises(ValueError, match="even"):
        probability_of_backtest_overfitting(np.zeros((100, 3)), n_blocks=5)


def test_the_verdict_is_judged_on_the_stitched_run_only() -> None:
    rng = np.random.default_rng(2)
    strong = list(rng.normal(0.003, 0.01, 400))  # PSR ≈ 1, within the limits
    stitched = _per_bar("x", strong)
    backtest = pl.concat(
        [_per_bar("x", strong[:200], fold="2024-02-01"), _per_bar("x", strong[200:], fold="2024-03-01")]
    )
    no_trades = pl.DataFrame({"fold": [], "strategy": []}, schema={"fold": pl.String, "strategy": pl.String})
    limits = {"max_drawdown_limit": 0.5, "min_sharpe": 1.0}
    # One trial in the registry: PSR stands in for DSR.
    table = kpi_table(stitched, pl.DataFrame(), backtest, no_trades, 8760, **limits, n_trials=1)
    folds = table.filter(pl.col("scope") != STITCHED)
    assert folds.height == 2 and folds["passes_constraints"].null_count() == 2  # folds report, never pass
    row = table.filter(pl.col("scope") == STITCHED).row(0, named=True)
    assert row["n_trials"] == 1 and math.isnan(row["dsr"])
    assert row["psr"] == pytest.approx(probabilistic_sharpe(np.asarray(strong))) and row["psr"] >= 0.95
    assert row["passes_constraints"] is True
    # Many wide trials: the same run no longer beats what luck would give the best of them.
    table = kpi_table(
        stitched, pl.DataFrame(), backtest, no_trades, 8760, **limits, n_trials=1000, trials_sharpe_variance=0.1
    )
    row = table.filter(pl.col("scope") == STITCHED).row(0, named=True)
    assert row["dsr"] < 0.95 and row["passes_constraints"] is False
    assert table.filter(pl.col("scope") != STITCHED)["passes_constraints"].null_count() == 2


def test_experiment_definitions_hash_what_defines_each_strategy_only() -> None:
    raw = yaml.safe_load(Path("configs/demo.yaml").read_text())
    config = parse_config(raw)
    names = [*config.baselines, *(p.slug for p in config.models.trained), "ensemble"]
    ids = {name: trial_id(d) for name, d in experiment_definitions(config, names).items()}
    assert len(set(ids.values())) == len(names)
    # Another family's hyper-parameter leaves the baselines and LSTM alone, but changes the ensemble holding it.
    changed = copy.deepcopy(raw)
    cnn = next(f for f in changed["models"]["families"] if f["type"] == "CNN_LSTM")
    cnn["max_epochs"] = int(cnn.get("max_epochs", 10)) + 1
    other = {name: trial_id(d) for name, d in experiment_definitions(parse_config(changed), names).items()}
    assert other["trend_following"] == ids["trend_following"] and other["lstm_attn"] == ids["lstm_attn"]
    assert other["cnn_lstm"] != ids["cnn_lstm"] and other["ensemble"] != ids["ensemble"]
    # A cost change is a different trial for every strategy; an unknown name is an error naming it.
    changed = copy.deepcopy(raw)
    changed["costs"]["taker_fee"] = 0.002
    assert not set(ids.values()) & {trial_id(d) for d in experiment_definitions(parse_config(changed), names).values()}
    with pytest.raises(KeyError, match="mystery"):
        experiment_definitions(config, ["mystery"])
