"""The evaluation core the report assets call, tested without Dagster: stitching fold weights into one
walk-forward run, the trials table's Sharpes, the KPI table's layout and cost share, the backtest summary."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from crypto_assets.evaluation import (
    STITCHED,
    MissingFoldsError,
    backtest_summary,
    kpi_rows,
    kpi_table,
    sharpe_variance,
    stitch_fold_weights,
    stitched_bounds,
    trial_rows,
)
from crypto_assets.metrics import sharpe_ratio

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def _utc(month: int) -> dt.datetime:
    return dt.datetime(2024, month, 1, tzinfo=dt.UTC)


def _weights(fold: str, start: dt.datetime, hours: int, weight: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": "BTC/USDT",
            "ts": [start + i * HOUR for i in range(hours)],
            "weight": weight,
            "fold": fold,
        }
    )


def test_stitching_keeps_each_folds_own_span_so_overlapping_test_windows_trade_each_month_once() -> None:
    # step 1 month, test 2 months: fold 02 covers Feb-Mar, fold 03 covers Mar-Apr; Feb from 02, Mar-Apr from 03.
    spans = {"2024-02-01": (_utc(2), _utc(3)), "2024-03-01": (_utc(3), _utc(5))}
    weights = pl.concat(
        [
            _weights("2024-02-01", _utc(2), 24 * 60, 0.2),  # Feb and Mar
            _weights("2024-03-01", _utc(3), 24 * 61, 0.7),  # Mar and Apr
        ]
    )
    out = stitch_fold_weights("s", weights, spans)
    assert out["ts"].is_unique().all()
    assert out.filter(pl.col("ts") < _utc(3))["weight"].unique().to_list() == [0.2]
    assert out.filter(pl.col("ts") >= _utc(3))["weight"].unique().to_list() == [0.7]
    assert out["ts"].min() == _utc(2) and out["ts"].max() == _utc(5) - HOUR
    assert stitched_bounds(spans) == (_utc(2), _utc(5))


def test_stitching_names_the_strategy_and_every_fold_it_lacks() -> None:
    spans = {"2024-02-01": (_utc(2), _utc(3)), "2024-03-01": (_utc(3), _utc(4)), "2024-04-01": (_utc(4), _utc(5))}
    weights = _weights("2024-03-01", _utc(3), 24, 0.5)
    with pytest.raises(MissingFoldsError, match="lstm_attn: folds 2024-02-01, 2024-04-01 are not materialized") as exc:
        stitch_fold_weights("lstm_attn", weights, spans)
    assert exc.value.folds == ["2024-02-01", "2024-04-01"]
    with pytest.raises(ValueError, match="no folds"):
        stitched_bounds({})


def _per_bar(
    strategy: str, returns: list[float], cost: list[float] | None = None, fold: str | None = None
) -> pl.DataFrame:
    n = len(returns)
    cost = cost if cost is not None else [0.0] * n
    equity = np.cumprod(1.0 + np.asarray(returns))
    frame = pl.DataFrame(
        {
            "strategy": strategy,
            "ts": [T0 + i * HOUR for i in range(n)],
            "value": 1e5 * equity,
            "equity": equity,
            "return": returns,
            "fees": cost,
            "slippage": 0.0,
            "impact": 0.0,
            "funding": 0.0,
            "cost": cost,
            "turnover": [0.1] * n,
            "gross_exposure": [1.0] * n,
            "fills": [1] * n,
            "capped_fills": [0] * n,
        }
    )
    return frame.with_columns(fold=pl.lit(fold)) if fold is not None else frame


def test_trials_use_the_kpi_sharpe_definition_constant_returns_are_nan_not_infinite() -> None:
    rng = np.random.default_rng(0)
    noisy = list(rng.normal(0.001, 0.01, 200))
    backtest = pl.concat(
        [
            _per_bar("b", noisy, fold="2024-02-01"),
            _per_bar("a", [0.001] * 50, fold="2024-02-01"),  # the old polars ratio gave mean / 0 = inf
        ]
    )
    table = trial_rows(backtest, 8760)
    assert table.columns == ["strategy", "fold", "sharpe_per_bar", "n_bars", "sharpe"]
    assert table["strategy"].to_list() == ["a", "b"]
    a, b = table.row(0, named=True), table.row(1, named=True)
    assert math.isnan(a["sharpe_per_bar"]) and math.isnan(a["sharpe"]) and a["n_bars"] == 50
    assert b["sharpe_per_bar"] == sharpe_ratio(np.asarray(noisy), 1)
    assert b["sharpe"] == pytest.approx(sharpe_ratio(np.asarray(noisy), 8760))
    assert math.isnan(sharpe_variance(table))  # one finite Sharpe: no spread


def test_kpi_table_puts_the_stitched_run_first_then_folds_in_key_order_with_provenance() -> None:
    rng = np.random.default_rng(1)
    r = list(rng.normal(0.0005, 0.01, 100))
    stitched = pl.concat([_per_bar("x", r), _per_bar("y", r[::-1])])
    backtest = pl.concat([_per_bar("x", r[:50], fold="2024-03-01"), _per_bar("x", r[50:], fold="2024-02-01")])
    table = kpi_table(
        stitched,
        pl.DataFrame(),
        backtest,
        pl.DataFrame({"fold": [], "strategy": []}, schema={"fold": pl.String, "strategy": pl.String}),
        8760,
        max_drawdown_limit=0.2,
        min_sharpe=1.0,
        provenance={"experiment": "e", "seed": 7},
    )
    assert table.select("scope", "strategy").rows() == [
        (STITCHED, "x"),
        (STITCHED, "y"),
        ("2024-02-01", "x"),
        ("2024-03-01", "x"),
    ]
    assert table["experiment"].unique().to_list() == ["e"] and table["seed"].unique().to_list() == [7]


def test_kpi_cost_share_is_never_nan_or_above_one() -> None:
    """The demo's KPI table showed NaN (a loss before costs) and 1.86 / 2.2 (costs above the pre-cost profit)."""
    n = 10
    rows = kpi_rows(
        pl.concat(
            [
                _per_bar("kept", [0.002] * n, cost=[0.0005] * n),  # net +2.0%, costs 0.5%: share ≈ 0.2
                _per_bar("eaten", [-0.0005] * n, cost=[0.001] * n),  # +0.5% before costs, 1% costs
                _per_bar("losing", [-0.002] * n, cost=[0.001] * n),  # lost money before costs too
                _per_bar("idle", [0.0] * n),
            ]
        ),
        None,
        8760,
        scope=STITCHED,
        max_drawdown_limit=0.2,
        min_sharpe=1.0,
    )
    shares = {row["strategy"]: row["cost_share"] for row in rows}
    net = 1.002**n - 1
    assert shares["kept"] == pytest.approx(0.005 / (net + 0.005))
    assert shares["eaten"] == 1.0 and shares["losing"] == 1.0 and shares["idle"] == 0.0
    assert {row["strategy"]: row["total_cost"] for row in rows}["eaten"] == pytest.approx(0.01)


def test_backtest_summary_per_strategy() -> None:
    frame = pl.concat([_per_bar("b", [0.01, -0.01], cost=[0.001, 0.002]), _per_bar("a", [0.02, 0.0])])
    summary = backtest_summary(frame)
    assert summary["strategy"].to_list() == ["a", "b"]
    b = summary.row(1, named=True)
    assert b["total_return"] == pytest.approx(1.01 * 0.99 - 1)
    assert b["costs"] == pytest.approx(0.003) and b["turnover"] == pytest.approx(0.2)
    assert b["exposure"] == 1.0 and b["fills"] == 2 and b["capped_fills"] == 0
