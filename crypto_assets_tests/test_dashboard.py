"""The dashboard core (no browser, no Dagster): sections present or absent by the data stored, one inlined copy
of plotly.js and no network reference outside it, the compare page, clear errors for a missing experiment."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from crypto_assets.dashboard import (
    ExperimentData,
    MissingTableError,
    compare,
    dashboard,
    dashboard_path,
    load_experiment,
    write_page,
)
from crypto_assets.dashboard.sections import TRADE_ROWS, kpi_frame
from crypto_assets.paper import LEDGER_SCHEMA, PaperLedgerStore
from crypto_assets.storage.warehouse import Warehouse

STRATEGIES = ["buy_and_hold_btc", "lstm_attn"]
FOLDS = ["2024-02-01", "2024-03-01"]
START = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
BARS = 24 * 60  # two months of hourly bars
TS = pl.datetime_range(START, START + dt.timedelta(hours=BARS - 1), "1h", eager=True, time_zone="UTC")
PLOTLY_SCRIPT = re.compile(r'<script type="text/javascript">.*?</script>', re.DOTALL)


def _equity(rng: np.random.Generator) -> pl.DataFrame:
    frames = []
    for strategy in STRATEGIES:
        returns = rng.normal(0.0002, 0.01, BARS)
        returns[0] = 0.0
        frames.append(
            pl.DataFrame({"strategy": strategy, "ts": TS, "return": returns, "equity": np.cumprod(1 + returns)})
        )
    return pl.concat(frames)


def _kpis() -> pl.DataFrame:
    rows = [
        {
            "scope": scope,
            "strategy": s,
            "sharpe": 0.5 + i - j,
            "passes_constraints": (i == 0) if scope == "stitched" else None,
        }
        for j, scope in enumerate(["stitched", *FOLDS])
        for i, s in enumerate(STRATEGIES)
    ]
    costs = {"cost_fees": 0.01, "cost_slippage": 0.002, "cost_impact": 0.001, "cost_funding": 0.0}
    return pl.DataFrame(rows).with_columns(
        capital=100_000.0, max_drawdown=0.2, psr=0.9, dsr=0.5, n_trials=2, pbo=0.3, turnover=3.0, fills=10,
        capped_share=0.0, total_cost=0.013, cost_share=0.1, exposure=0.8, **costs
    )  # fmt: skip


def _trades(n: int) -> pl.DataFrame:
    entry = [START + dt.timedelta(hours=i) for i in range(n)]
    return pl.DataFrame(
        {
            "symbol": "BTC/USDT",
            "side": "long",
            "entry_ts": entry,
            "exit_ts": [t + dt.timedelta(hours=2) for t in entry],
            "closed": True,
            "entry_notional": 1000.0,
            "costs": 1.0,
            "pnl": [(-1.0) ** i * 10 for i in range(n)],
            "strategy": "lstm_attn",
        }
    ).with_columns(pl.col("entry_ts", "exit_ts").dt.replace_time_zone("UTC"))


def _regimes() -> pl.DataFrame:
    rows = []
    for s, exposure in zip(STRATEGIES, (1.0, 0.6), strict=True):
        for trend in ("bear", "bull"):
            for vol in ("high", "low"):
                bear = trend == "bear" and vol == "high"
                rows.append({"strategy": s, "xp_trend_regime": trend, "xp_vol_regime": vol, "bars": 100,
                             "total_return": -0.1 if bear else 0.05, "exposure": 0.1 if bear and s == "lstm_attn" else exposure})  # fmt: skip
    return pl.DataFrame(rows)


def _bars(rng: np.random.Generator) -> pl.DataFrame:
    close = 100 * np.cumprod(1 + rng.normal(0, 0.01, BARS))
    return pl.DataFrame({"symbol": "BTC/USDT", "ts": TS, "close": close})


def _predictions(rng: np.random.Generator) -> pl.DataFrame:
    return pl.DataFrame(
        {"symbol": "BTC/USDT", "ts": TS, "p_up": rng.uniform(0.3, 0.7, BARS), "vol": rng.uniform(0.005, 0.015, BARS)}
    ).with_columns(fold=pl.col("ts").dt.strftime("%Y-%m-01"), model=pl.lit("lstm_attn"))


def _experiment(root: Path, *, full: bool, trades: int = 5) -> Path:
    """A warehouse with the report tables; `full` adds forecasts, bars, a loss curve and stress KPIs."""
    rng = np.random.default_rng(7)
    warehouse = Warehouse(root)
    warehouse.write_partition("walk_forward_equity", _equity(rng))
    warehouse.write_partition("kpis", _kpis())
    warehouse.write_partition("walk_forward_trades", _trades(trades))
    if full:
        warehouse.write_partition("regime_kpis", _regimes())
        warehouse.write_partition("bars", _bars(rng))
        warehouse.write_partition("predictions_lstm_attn", _predictions(rng))
        stress = pl.DataFrame({"scenario": ["panic"] * 2, "strategy": STRATEGIES, "paths": 2,
                               "max_drawdown_median": [0.3, 0.1], "max_drawdown_p05": [0.2, 0.05],
                               "max_drawdown_p95": [0.5, 0.2], "p_breach": [1.0, 0.0], "note": "a panic"})  # fmt: skip
        warehouse.write_partition("stress_kpis", stress)
        curves = root / "artifacts" / "model_lstm_attn" / FOLDS[0] / "curves"
        curves.mkdir(parents=True)
        pl.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 1.0, 1.05]}).write_parquet(
            curves / "loss.parquet"
        )
    return root


def _load(root: Path, name: str = "exp") -> ExperimentData:
    return load_experiment(root, name=name, timeframe="1h", label_horizon=4)


def test_sections_follow_the_data(tmp_path: Path) -> None:
    minimal = dashboard(_load(_experiment(tmp_path / "minimal", full=False)))
    assert list(minimal.sections) == ["equity", "kpis", "fold_sharpe", "monthly", "costs", "trades"]
    full = dashboard(_load(_experiment(tmp_path / "full", full=True)))
    assert list(full.sections) == [
        "equity", "kpis", "fold_sharpe", "monthly", "regimes", "costs", "trades", "training", "calibration", "stress"
    ]  # fmt: skip
    # tables only: kpis, trades; one chart each elsewhere (one model with one curve file)
    assert {key for key, charts in full.sections.items() if charts == 0} == {"kpis", "trades"}
    assert full.charts == 8
    for key in full.sections:
        assert f'<section id="{key}">' in full.html and f'href="#{key}"' in full.html
    # every chart is a div of its own, drawn by one Plotly.newPlot call
    assert len(re.findall(r'class="plotly-graph-div"', full.html)) == full.charts
    assert full.html.count("Plotly.newPlot(") == full.charts


def test_plotly_is_inlined_once_and_nothing_else_points_to_the_network(tmp_path: Path) -> None:
    page = dashboard(_load(_experiment(tmp_path, full=True)))
    scripts = PLOTLY_SCRIPT.findall(page.html)
    assert len(scripts) == 1 and "plotly.js v" in scripts[0]  # the library, inlined (its licence banner)
    assert not re.search(r"<script[^>]*\bsrc=", page.html, re.IGNORECASE)
    assert not re.search(r"<link[^>]*\bhref=", page.html, re.IGNORECASE)
    outside = PLOTLY_SCRIPT.sub("", page.html)
    assert not re.search(r"https?://|//cdn|cdn\.plot\.ly", outside)


def test_kpi_verdict_regimes_trades_and_stress_notes(tmp_path: Path) -> None:
    page = dashboard(_load(_experiment(tmp_path, full=True, trades=TRADE_ROWS + 30)))
    frame = kpi_frame(_kpis())
    assert frame["strategy"].to_list() == ["lstm_attn", "buy_and_hold_btc"]  # best Sharpe first
    no_trade = _kpis().with_columns(
        sharpe=pl.when(pl.col("strategy") == "lstm_attn").then(float("nan")).otherwise("sharpe")
    )
    assert kpi_frame(no_trade)["strategy"].to_list() == ["buy_and_hold_btc", "lstm_attn"]  # NaN Sharpe last
    assert frame["verdict"].to_list() == ["fail", "pass"]
    assert page.html.count('class="verdict-pass"') == 1 and page.html.count('class="verdict-fail"') == 1
    # lstm_attn cuts its exposure to 0.1 in bear / high vol (overall 0.475): it goes to cash there
    regimes = re.search(r"High-vol bear.*?</table>", page.html, re.DOTALL)
    assert regimes is not None
    rows = re.findall(r"<tr><td>(\w+)</td>.*?<td>(True|False)</td></tr>", regimes.group(0))
    assert rows == [("buy_and_hold_btc", "False"), ("lstm_attn", "True")]
    assert f"The newest {TRADE_ROWS} of {TRADE_ROWS + 30} trades" in page.html
    assert "panic: a panic" in page.html


def test_compare_puts_experiments_side_by_side(tmp_path: Path) -> None:
    first = _load(_experiment(tmp_path / "a", full=False), "a")
    second = _load(_experiment(tmp_path / "b", full=True), "b")
    page = compare([first, second])
    assert list(page.sections) == ["equity", "kpis", "fold_sharpe"]
    for name in ("a/lstm_attn", "b/buy_and_hold_btc"):
        assert name in page.html
    with pytest.raises(ValueError, match="listed twice"):
        compare([first, first])


def test_missing_experiment_or_table_is_named(tmp_path: Path) -> None:
    with pytest.raises(MissingTableError, match="'ghost': no warehouse"):
        _load(tmp_path / "ghost", "ghost")
    root = tmp_path / "partial"
    Warehouse(root).write_partition("kpis", _kpis())
    page = dashboard(_load(root, "partial"))  # what exists is shown, what is missing is said
    assert list(page.sections) == ["kpis", "fold_sharpe", "costs"]
    assert "Not computed yet: walk_forward_equity (run the reports job)" in page.html
    with pytest.raises(MissingTableError, match="'partial': no `walk_forward_equity` table"):
        compare([_load(root, "partial"), _load(_experiment(tmp_path / "b", full=False), "b")])
    empty = tmp_path / "empty"
    Warehouse(empty).write_partition("bars", _bars(np.random.default_rng(1)))
    with pytest.raises(MissingTableError, match="'empty': no `walk_forward_equity` table"):
        dashboard(_load(empty, "empty"))


def test_sweep_and_paper_sections_when_their_tables_exist(tmp_path: Path) -> None:
    root = _experiment(tmp_path, full=False)
    sweep = pl.DataFrame({"trial": [0, 1, 2], "family": "LSTM_Attn", "state": "complete",
                          "objective_sharpe": [0.2, 1.5, -0.3], "fold_sharpes": [[0.1], [1.0], [-0.2]],
                          "params": ['{"hidden": 8}', '{"hidden": 16}', '{"hidden": 32}']})  # fmt: skip
    Warehouse(root).write_partition("sweep", sweep)
    n = 24 * 10
    equity = 100_000 * np.cumprod(1 + np.random.default_rng(3).normal(0.001, 0.005, n))
    ledger = pl.DataFrame(
        {"experiment": "exp", "strategy": "lstm_attn", "month": "2024-04-01", "symbol": "BTC/USDT",
         "ts": TS[:n], "watermark": TS[:n], "equity": equity, "return": np.r_[0.0, equity[1:] / equity[:-1] - 1]},
    ).with_columns(pl.lit(None).alias(c) for c in LEDGER_SCHEMA if c not in ("experiment", "strategy", "month", "symbol", "ts", "watermark", "equity", "return"))  # fmt: skip
    PaperLedgerStore(root / "warehouse").append(ledger.select(list(LEDGER_SCHEMA)).cast(LEDGER_SCHEMA))
    seeds = pl.DataFrame({"family": "lstm_attn", "metric": ["sharpe", "total_return", "max_drawdown"], "n_seeds": 3,
                          "mean": [0.4, 0.1, 0.2], "std": [0.3, 0.05, 0.02], "min": [0.1, 0.05, 0.18],
                          "max": [0.7, 0.15, 0.22]})  # fmt: skip
    assert "seeds" not in dashboard(_load(root)).sections
    Warehouse(root).write_partition("seed_dispersion", seeds)
    page = dashboard(_load(root))
    assert list(page.sections)[-2:] == ["sweep", "paper"] and page.sections["sweep"] == page.sections["paper"] == 1
    assert page.sections["seeds"] == 1 and "<td>lstm_attn</td><td>max_drawdown</td><td>3</td>" in page.html
    sweep_rows = re.findall(r"<tr><td>(\d)</td><td>LSTM_Attn</td>", page.html)
    assert sweep_rows == ["1", "0", "2"]  # best objective first; the list column left out of the table
    paper = re.search(r'<section id="paper">.*?</section>', page.html, re.DOTALL)
    assert (
        paper is not None and "psr_vs_backtest" in paper.group(0) and "<td>lstm_attn</td><td>240</td>" in paper.group(0)
    )


def test_write_page_replaces_the_file_atomically(tmp_path: Path) -> None:
    root = _experiment(tmp_path, full=False)
    path = write_page(dashboard(_load(root)), dashboard_path(root))
    assert path == root / "reports" / "dashboard.html"
    first = path.read_text()
    assert first.startswith("<!DOCTYPE html>") and first.endswith("</html>")
    write_page(dashboard(_load(root)), path)
    assert [p.name for p in path.parent.iterdir()] == ["dashboard.html"]  # no temporary file left behind
