"""KPI definitions (DESIGN §3.4) against numbers computed by hand from the formulas in plain Python."""

from __future__ import annotations

import datetime as dt
import math
import statistics
from statistics import NormalDist

import numpy as np
import polars as pl
import pytest

from crypto_assets.metrics import (
    KPI_NAMES,
    compute_kpis,
    deflated_sharpe,
    expected_max_sharpe,
    max_drawdown,
    probabilistic_sharpe,
    sharpe_moments,
)
from crypto_assets.timeframes import periods_per_year

SHORT = [0.01, -0.02, 0.03, -0.01, 0.02, 0.005, -0.015]


def _hand_equity(returns: list[float]) -> list[float]:
    equity = [1.0]
    for r in returns:
        equity.append(equity[-1] * (1.0 + r))
    return equity


def _hand_max_drawdown(returns: list[float]) -> float:
    worst, peak = 0.0, -math.inf
    for v in _hand_equity(returns):
        peak = max(peak, v)
        worst = max(worst, 1.0 - v / peak)
    return worst


def test_keys_are_exactly_the_design_metrics() -> None:
    kpis = compute_kpis(np.array(SHORT), 8760)
    assert tuple(kpis) == KPI_NAMES
    assert set(KPI_NAMES) == {
        "sharpe", "sharpe_daily", "sortino", "max_drawdown", "cagr", "calmar", "romad",
        "total_return", "volatility", "win_rate", "profit_factor", "n_bars",
    }  # fmt: skip
    assert all(isinstance(v, float) for v in kpis.values())


def test_definitions_on_a_short_series_match_a_hand_computation() -> None:
    p = 8760
    kpis = compute_kpis(pl.Series(SHORT), p)
    n = len(SHORT)
    mean = sum(SHORT) / n
    sd = math.sqrt(sum((r - mean) ** 2 for r in SHORT) / (n - 1))
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in SHORT) / n)  # over ALL bars
    final = math.prod(1.0 + r for r in SHORT)
    mdd = _hand_max_drawdown(SHORT)
    cagr = final ** (p / n) - 1.0
    assert kpis["sharpe"] == pytest.approx(mean / sd * math.sqrt(p), rel=1e-12)
    assert kpis["sortino"] == pytest.approx(mean * p / (downside * math.sqrt(p)), rel=1e-12)
    assert kpis["volatility"] == pytest.approx(sd * math.sqrt(p), rel=1e-12)
    assert kpis["total_return"] == pytest.approx(final - 1.0, rel=1e-12)
    assert kpis["max_drawdown"] == pytest.approx(mdd, rel=1e-12)
    assert kpis["cagr"] == pytest.approx(cagr, rel=1e-9)
    assert kpis["calmar"] == pytest.approx(cagr / mdd, rel=1e-9)
    assert kpis["romad"] == pytest.approx((final - 1.0) / mdd, rel=1e-12)
    assert kpis["n_bars"] == 7.0
    assert math.isnan(kpis["sharpe_daily"])  # hourly bars and no timestamps: cannot resample
    assert math.isnan(kpis["win_rate"]) and math.isnan(kpis["profit_factor"])


def test_max_drawdown_literal_values_and_v0_counts_as_a_peak() -> None:
    # V = 1, 1.1, 0.55, 0.66: the worst fall is 1.1 → 0.55, i.e. 50%.
    assert max_drawdown(np.array([0.1, -0.5, 0.2])) == pytest.approx(0.5, rel=1e-12)
    # A loss on the very first bar is a drawdown from the starting capital V_0 = 1.
    assert max_drawdown(np.array([-0.1, 0.05])) == pytest.approx(0.1, rel=1e-12)
    kpis = compute_kpis(np.array([0.1, -0.5, 0.2]), 365)
    assert kpis["total_return"] == pytest.approx(1.1 * 0.5 * 1.2 - 1.0, rel=1e-12)
    assert kpis["romad"] == pytest.approx((0.66 - 1.0) / 0.5, rel=1e-12)
    assert kpis["cagr"] == pytest.approx(0.66 ** (365 / 3) - 1.0, rel=1e-9)


@pytest.mark.parametrize(("timeframe", "expected_p"), [("1h", 8760), ("15m", 35040), ("5m", 105120), ("1d", 365)])
def test_annualization_uses_24_7_bars_per_year(timeframe: str, expected_p: int) -> None:
    p = periods_per_year(timeframe)
    assert p == expected_p
    rng = np.random.default_rng(7)
    r = rng.normal(2e-4, 5e-3, 500)
    kpis = compute_kpis(r, p)
    per_bar = statistics.mean(r.tolist()) / statistics.stdev(r.tolist())
    assert kpis["sharpe"] == pytest.approx(per_bar * math.sqrt(expected_p), rel=1e-9)
    assert kpis["volatility"] == pytest.approx(statistics.stdev(r.tolist()) * math.sqrt(expected_p), rel=1e-9)
    final = math.prod(1.0 + x for x in r.tolist())
    assert kpis["cagr"] == pytest.approx(final ** (expected_p / 500) - 1.0, rel=1e-9)
    if timeframe == "1d":  # daily bars ARE daily returns
        assert kpis["sharpe_daily"] == kpis["sharpe"]


def test_sharpe_daily_compounds_bars_into_utc_days() -> None:
    rng = np.random.default_rng(3)
    start = dt.datetime(2024, 3, 1, 5, tzinfo=dt.UTC)  # starts mid-day: the first day is partial
    n = 24 * 9 + 7
    r = rng.normal(1e-4, 4e-3, n)
    ts = pl.Series("ts", [start + dt.timedelta(hours=i) for i in range(n)], dtype=pl.Datetime("us", "UTC"))
    by_day: dict[dt.date, float] = {}
    for when, x in zip(ts.to_list(), r.tolist(), strict=True):
        by_day[when.date()] = by_day.get(when.date(), 1.0) * (1.0 + x)
    daily = [g - 1.0 for _, g in sorted(by_day.items())]
    assert len(daily) == 10
    expected = statistics.mean(daily) / statistics.stdev(daily) * math.sqrt(365)
    kpis = compute_kpis(r, 8760, timestamps=ts)
    assert kpis["sharpe_daily"] == pytest.approx(expected, rel=1e-9)
    # A non-UTC zone is converted: the same instants give the same days.
    kpis_ny = compute_kpis(r, 8760, timestamps=ts.dt.convert_time_zone("America/New_York"))
    assert kpis_ny["sharpe_daily"] == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="rows"):
        compute_kpis(r, 8760, timestamps=ts.head(5))


def test_zero_drawdown_makes_calmar_and_romad_nan_not_infinite() -> None:
    kpis = compute_kpis(np.array([0.01, 0.0, 0.02, 0.005]), 8760)
    assert kpis["max_drawdown"] == 0.0
    assert math.isnan(kpis["calmar"]) and math.isnan(kpis["romad"])
    assert math.isnan(kpis["sortino"])  # no losing bar: downside deviation 0
    assert kpis["cagr"] > 0.0
    flat = compute_kpis(np.zeros(10), 8760)
    assert flat["max_drawdown"] == 0.0 and flat["total_return"] == 0.0
    assert math.isnan(flat["sharpe"]) and math.isnan(flat["calmar"]) and math.isnan(flat["romad"])


def test_trade_statistics_use_closed_trades_after_costs() -> None:
    trades = pl.DataFrame(
        {
            "pnl": [10.0, -5.0, 3.0, -2.0, 0.0, 50.0],
            "exit_ts": [1, 2, 3, 4, 5, None],  # the last trade is still open: excluded
        }
    )
    kpis = compute_kpis(np.array(SHORT), 8760, trades=trades)
    assert kpis["win_rate"] == pytest.approx(2 / 5)
    assert kpis["profit_factor"] == pytest.approx(13 / 7)
    flagged = pl.DataFrame({"pnl": [4.0, -1.0, 9.0], "closed": [True, True, False]})
    kpis = compute_kpis(np.array(SHORT), 8760, trades=flagged)
    assert kpis["win_rate"] == pytest.approx(0.5) and kpis["profit_factor"] == pytest.approx(4.0)
    only_open = pl.DataFrame({"pnl": [1.0], "closed": [False]})
    kpis = compute_kpis(np.array(SHORT), 8760, trades=only_open)
    assert math.isnan(kpis["win_rate"]) and math.isnan(kpis["profit_factor"])
    no_losers = pl.DataFrame({"pnl": [1.0, 2.0]})
    kpis = compute_kpis(np.array(SHORT), 8760, trades=no_losers)
    assert kpis["win_rate"] == 1.0 and math.isnan(kpis["profit_factor"])


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="finite"):
        compute_kpis(np.array([0.01, float("nan")]), 8760)
    with pytest.raises(ValueError, match="finite"):
        compute_kpis(pl.Series([0.01, None]), 8760)
    with pytest.raises(ValueError, match="periods_per_year"):
        compute_kpis(np.array([0.01]), 0)
    empty = compute_kpis(np.array([]), 8760)
    assert empty["n_bars"] == 0.0 and math.isnan(empty["sharpe"]) and math.isnan(empty["cagr"])


# --- probabilistic / deflated Sharpe ------------------------------------------------------------------


def _hand_psr(returns: list[float], benchmark: float) -> float:
    n = len(returns)
    mean = sum(returns) / n
    sr = mean / math.sqrt(sum((r - mean) ** 2 for r in returns) / (n - 1))
    m2 = sum((r - mean) ** 2 for r in returns) / n
    skew = sum((r - mean) ** 3 for r in returns) / n / m2**1.5
    kurt = sum((r - mean) ** 4 for r in returns) / n / m2**2  # non-excess
    z = (sr - benchmark) * math.sqrt(n - 1) / math.sqrt(1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2)
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _skewed_returns(n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(11)
    # Mostly small gains with rare large losses: negative skew, fat tails, like many carry strategies.
    return rng.normal(1.5e-3, 4e-3, n) - rng.binomial(1, 0.03, n) * rng.exponential(0.03, n)


def test_psr_matches_a_hand_computation() -> None:
    r = _skewed_returns()
    for benchmark in (0.0, 0.02, -0.05):
        assert probabilistic_sharpe(r, benchmark) == pytest.approx(_hand_psr(r.tolist(), benchmark), rel=1e-10)
    _, skew, kurt, n = sharpe_moments(r)
    assert skew < 0 and kurt > 3 and n == 400


def test_psr_moments_agree_with_scipy_conventions() -> None:
    from scipy import stats

    r = _skewed_returns()
    _, skew, kurt, _ = sharpe_moments(r)
    assert skew == pytest.approx(stats.skew(r), rel=1e-10)  # bias=True: population moments
    assert kurt == pytest.approx(stats.kurtosis(r, fisher=False), rel=1e-10)  # non-excess


def test_psr_is_one_half_at_the_benchmark_and_monotone() -> None:
    r = _skewed_returns()
    sr = sharpe_moments(r)[0]
    assert probabilistic_sharpe(r, benchmark_sharpe=sr) == pytest.approx(0.5, abs=1e-15)
    assert probabilistic_sharpe(r, sr - 0.01) > 0.5 > probabilistic_sharpe(r, sr + 0.01)
    # A longer track record with the same per-bar Sharpe is more convincing.
    assert probabilistic_sharpe(np.tile(r, 4), 0.0) > probabilistic_sharpe(r, 0.0)
    assert math.isnan(probabilistic_sharpe(np.array([0.01])))
    assert math.isnan(probabilistic_sharpe(np.full(20, 0.01)))


def test_expected_max_sharpe_approximates_the_expected_maximum_of_normals() -> None:
    # Known expected maxima of N iid standard normals (order-statistics tables); the asymptotic formula
    # overshoots slightly and improves with N.
    for n_trials, exact, rel in ((10, 1.538753, 0.03), (100, 2.507594, 0.01), (1000, 3.241436, 0.005)):
        assert expected_max_sharpe(n_trials, 1.0) == pytest.approx(exact, rel=rel)
    assert expected_max_sharpe(100, 4.0) == pytest.approx(2.0 * expected_max_sharpe(100, 1.0), rel=1e-12)
    assert math.isnan(expected_max_sharpe(1, 1.0))
    with pytest.raises(ValueError):
        expected_max_sharpe(10, -1.0)


def test_deflated_sharpe_value_and_properties() -> None:
    r = _skewed_returns()
    n_trials, variance = 50, 0.002
    g = 0.5772156649015329
    nd = NormalDist()
    sr0 = math.sqrt(variance) * ((1 - g) * nd.inv_cdf(1 - 1 / n_trials) + g * nd.inv_cdf(1 - 1 / (n_trials * math.e)))
    assert deflated_sharpe(r, n_trials, variance) == pytest.approx(_hand_psr(r.tolist(), sr0), rel=1e-10)
    psr = probabilistic_sharpe(r)
    assert deflated_sharpe(r, 100, variance) < psr
    assert deflated_sharpe(r, 1000, variance) < deflated_sharpe(r, 10, variance)
    assert deflated_sharpe(r, 100, 0.0) == pytest.approx(psr, rel=1e-15)  # no spread: nothing to deflate
    assert math.isnan(deflated_sharpe(r, 1, variance))


# --- cross-check against empyrical-reloaded, with explicit annualization ----------------------------


@pytest.mark.parametrize("timeframe", ["1h", "15m", "5m", "1d"])
def test_cross_check_against_empyrical(timeframe: str) -> None:
    import empyrical

    p = periods_per_year(timeframe)
    rng = np.random.default_rng(periods_per_year(timeframe))
    r = rng.standard_t(4, 3000) * 0.004 + 3e-4
    kpis = compute_kpis(r, p)
    assert kpis["sharpe"] == pytest.approx(empyrical.sharpe_ratio(r, annualization=p), rel=1e-9)
    assert kpis["sortino"] == pytest.approx(empyrical.sortino_ratio(r, annualization=p), rel=1e-9)
    assert kpis["volatility"] == pytest.approx(empyrical.annual_volatility(r, annualization=p), rel=1e-9)
    assert kpis["max_drawdown"] == pytest.approx(-empyrical.max_drawdown(r), rel=1e-9)
    assert kpis["cagr"] == pytest.approx(empyrical.cagr(r, annualization=p), rel=1e-7)


def test_cost_share_is_the_share_of_pre_cost_profit_and_always_in_0_1() -> None:
    from crypto_assets.metrics import cost_share

    # Profitable after costs: costs / (net + costs), e.g. 2% of costs out of an 8% pre-cost profit.
    assert cost_share(0.02, 0.06) == pytest.approx(0.25)
    assert cost_share(0.02, 0.0) == 1.0  # costs took exactly the whole pre-cost profit
    # Costs larger than a positive pre-cost profit (the old ratio said 0.02 / 0.01 = 2.0): all of it consumed.
    assert cost_share(0.02, -0.01) == 1.0
    # Lost money before costs (the old ratio was NaN): there was no profit to keep, costs consumed it all.
    assert cost_share(0.02, -0.05) == 1.0
    # Nothing paid: nothing consumed, whatever the profit.
    assert cost_share(0.0, 0.1) == 0.0
    assert cost_share(0.0, -0.1) == 0.0
    with pytest.raises(ValueError, match="total_cost"):
        cost_share(-0.01, 0.1)
    with pytest.raises(ValueError, match="net_profit"):
        cost_share(0.01, math.nan)
