"""The paper ledger (DESIGN.md §6.5) against the local exchange, whose clock publishes bars only once they close:
forward trading bar by bar, parity with `run_backtest`, no duplicate on re-run, catch-up after an outage,
immutability, causal decisions, the report, and the Dagster asset + schedule."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import dagster as dg
import numpy as np
import polars as pl
import pytest
import yaml

import crypto_assets_tests.test_families  # noqa: F401  (registers the Toy_Threshold family)
from crypto_assets.backtest import run_backtest
from crypto_assets.config import load_config, parse_config
from crypto_assets.config.schema import CcxtSection, FamilyParams
from crypto_assets.evaluation import order_rows
from crypto_assets.families import Artifact, Context, FoldData, build_fold, compute_inputs, fit_artifact
from crypto_assets.metrics.sharpe_inference import probabilistic_sharpe
from crypto_assets.orchestration.assets.common import cost_lookback, cost_model
from crypto_assets.orchestration.assets.live import live_window
from crypto_assets.paper import (
    LedgerConflict,
    PaperLedgerStore,
    PaperSetup,
    artifact_digest,
    decide,
    min_track_record_length,
    paper_report,
    replay_gap,
    trade_forward,
)
from crypto_assets.sources.base import SourceError
from crypto_assets.sources.ccxt_source import CcxtSource
from crypto_assets_tests.local_exchange import LocalExchange, load_fixture, status
from crypto_assets_tests.test_families import ToyParams

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
MONTH = "2024-04-01"
MONTH_START = dt.datetime(2024, 4, 1, tzinfo=dt.UTC)
FIRST_INPUT = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # Feb-Mar train window, January for the features' warm-up
HOUR = dt.timedelta(hours=1)
CONFIG = {
    "experiment": {"name": "paper", "capital": 250_000.0, "gpu_id": None},
    "data": {"tickers": SYMBOLS, "start": "2024-01-01", "end": "2024-04-30"},
    "walk_forward": {"train_months": 2, "test_months": 1, "label_horizon": 12},
    "models": {
        "families": [{"type": "Toy_Threshold", "every": 3}],
        "ensemble": [{"type": "Toy_Threshold", "weight": 1.0}],
    },
}


@pytest.fixture(scope="module")
def recorded() -> pl.DataFrame:
    """Real Binance 1h bars of BTC and ETH, January 1 to April 3, 2024 (the shared fixtures, read in place)."""
    end = MONTH_START + dt.timedelta(days=2)
    frames = [load_fixture(s) for s in SYMBOLS]
    return pl.concat(frames).filter((pl.col("ts") >= FIRST_INPUT) & (pl.col("ts") < end)).sort("symbol", "ts")


def train_live(recorded: pl.DataFrame, params: FamilyParams, directory: Path) -> tuple[Artifact, str]:
    """A live model of April 2024 trained on Feb-Mar (the live fold's rule), saved; (artifact, its hash)."""
    config = parse_config(CONFIG)
    window = live_window(MONTH, 2)
    history = recorded.filter(pl.col("ts") < window.test_end)
    frame, scaler = build_fold(compute_inputs(history, "1h"), history, window, 12, 12, "1h")
    data = FoldData(key=MONTH, frame=frame, bars=history, context=Context.from_experiment(config))
    artifact, _ = fit_artifact(params, data, scaler, window, seed=7)
    artifact.save(directory)
    return Artifact.load(directory), artifact_digest(directory)


@pytest.fixture(scope="module")
def live(recorded: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[Artifact, str]:
    """The Toy_Threshold live model (decides every 3rd bar from the month's start)."""
    return train_live(recorded, ToyParams(every=3), tmp_path_factory.mktemp("live") / "live_model_toy_threshold")


@dataclass
class Clock:
    now: dt.datetime

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Trader:
    """One ledger traded from a ccxt client of the local exchange, both reading the same clock."""

    store: PaperLedgerStore
    setup: PaperSetup
    artifact: Artifact
    source: CcxtSource
    clock: Clock
    exchange: LocalExchange

    def tick(self, now: dt.datetime) -> pl.DataFrame:
        """Advance the clock to `now` and run one ledger step (fetch closed bars, decide, book, append)."""
        self.clock.now = now
        bars = self.source.fetch(SYMBOLS, "1h", FIRST_INPUT, now)
        stored = self.store.read(MONTH, self.setup.strategy)
        result = trade_forward(self.setup, self.artifact, bars, stored, bars["ts"].max())  # type: ignore[arg-type]
        self.store.append(result.new_rows)
        return result.new_rows

    def bars(self) -> pl.DataFrame:
        return self.source.fetch(SYMBOLS, "1h", FIRST_INPUT, self.clock.now)


def setup_for(artifact_hash: str) -> PaperSetup:
    config = parse_config(CONFIG)
    return PaperSetup(
        experiment="paper",
        strategy="toy_threshold",
        month=MONTH,
        artifact_hash=artifact_hash,
        costs=cost_model(config),
        capital=config.experiment.capital,
        cost_lookback=cost_lookback(config),
    )


@pytest.fixture
def trader_factory(
    recorded: pl.DataFrame, live: tuple[Artifact, str], tmp_path: Path
) -> Iterator[Callable[..., Trader]]:
    """Traders on a fresh local exchange each (its clock starts at the month's first open)."""
    exchanges: list[LocalExchange] = []

    def make(
        name: str = "a",
        bars: pl.DataFrame | None = None,
        now: dt.datetime = MONTH_START,
        model: tuple[Artifact, str] | None = None,
    ) -> Trader:
        clock = Clock(now)
        exchange = LocalExchange(recorded if bars is None else bars, clock=clock).start()
        exchanges.append(exchange)
        settings = CcxtSection(rate_limit_ms=0, backoff_s=0.0, max_retries=1)
        source = CcxtSource("binance", settings, api_url=exchange.url, clock=clock)
        artifact, digest = model or live
        return Trader(PaperLedgerStore(tmp_path / name), setup_for(digest), artifact, source, clock, exchange)

    yield make
    for exchange in exchanges:
        exchange.stop()


def hours(n: int) -> dt.datetime:
    """The clock `n` hours into the month: bars 0 .. n−1 of April have closed."""
    return MONTH_START + n * HOUR


def test_the_exchange_publishes_only_closed_bars(recorded: pl.DataFrame) -> None:
    clock = Clock(hours(3) + dt.timedelta(minutes=59))  # bar 3 is still open
    with LocalExchange(recorded, clock=clock) as exchange:

        def served() -> list[dt.datetime]:
            query = f"symbol=BTCUSDT&interval=1h&startTime={int(hours(0).timestamp() * 1000)}&limit=10"
            with urllib.request.urlopen(f"{exchange.url}/api/v3/klines?{query}") as answer:
                return [dt.datetime.fromtimestamp(row[0] / 1000, dt.UTC) for row in json.load(answer)]

        assert served() == [hours(i) for i in range(3)]
        clock.now = hours(4)  # bar 3 closes
        assert served() == [hours(i) for i in range(4)]


def test_bar_by_bar_ledger_equals_run_backtest_on_the_same_bars_and_weights(
    trader_factory: Callable[..., Trader],
) -> None:
    trader = trader_factory()
    assert trader.tick(hours(0)).is_empty()  # no April bar has closed yet
    for n in range(1, 13):
        new = trader.tick(hours(n))
        # exactly the bar that closed, one row per symbol, written with itself as the watermark
        assert new.select("symbol", "ts").rows() == [(s, hours(n - 1)) for s in SYMBOLS]
        assert (new["watermark"] == hours(n - 1)).all()
    ledger = trader.store.read(MONTH, "toy_threshold")
    assert ledger.height == 12 * len(SYMBOLS)
    weights = ledger.filter(pl.col("target_weight").is_not_null()).select(
        "symbol", "ts", pl.col("target_weight").alias("weight")
    )
    assert weights["ts"].unique().len() == 4  # Toy decides every 3rd bar: 0, 3, 6, 9
    assert weights["weight"].sum() > 0  # and holds something, so fills and costs are exercised
    setup = trader.setup
    bars = trader.bars().filter(pl.col("ts") >= MONTH_START - setup.cost_lookback)
    result = run_backtest(bars, weights, setup.costs, initial_value=setup.capital, timeframe="1h")
    engine = result.equity.filter(pl.col("ts") >= MONTH_START).select("ts", "value", "cash")
    paper = ledger.group_by("ts").agg(pl.col("equity").first(), pl.col("cash").first()).sort("ts")
    assert paper["ts"].equals(engine["ts"])
    assert np.array_equal(paper["equity"].to_numpy(), engine["value"].to_numpy())
    assert np.array_equal(paper["cash"].to_numpy(), engine["cash"].to_numpy())
    fills = result.trades.select("symbol", "ts", "units", "cost").sort("symbol", "ts")
    booked = ledger.filter(pl.col("fill_units") != 0).select("symbol", "ts", "fill_units", "fill_cost")
    assert booked.rows() == fills.rows() and booked.height > 0
    # each fill executes the decision of the bar before, at this bar's open
    first_fill = booked.row(0, named=True)
    assert weights.filter(pl.col("symbol") == first_fill["symbol"])["ts"].min() == first_fill["ts"] - HOUR
    assert ledger.filter(pl.col("fill_units") != 0).select((pl.col("fill_price") == pl.col("open")).all()).item()
    # the decisions equal a one-shot replay of the artifact on the same bars (causal replay)
    replayed = trader.artifact.weights(trader.bars(), start=MONTH_START, end=hours(12))
    assert replayed.sort("symbol", "ts").rows() == weights.sort("symbol", "ts").rows()


def test_rerun_adds_no_row_and_writes_no_file(trader_factory: Callable[..., Trader]) -> None:
    trader = trader_factory()
    for n in (1, 2, 3):
        trader.tick(hours(n))
    files = sorted(trader.store.directory.rglob("*.parquet"))
    before = trader.store.read()
    assert trader.tick(hours(3)).is_empty()
    assert trader.tick(hours(3) + dt.timedelta(minutes=30)).is_empty()  # bar 3 still open: nothing new
    assert sorted(trader.store.directory.rglob("*.parquet")) == files
    after = trader.store.read()
    assert after.equals(before) and after.height == 3 * len(SYMBOLS)
    assert not after.select(pl.struct("symbol", "ts").is_duplicated().any()).item()


def test_restart_after_an_outage_catches_up_exactly_the_missed_bars(trader_factory: Callable[..., Trader]) -> None:
    steady, outage = trader_factory("steady"), trader_factory("outage")
    for n in range(1, 11):
        steady.tick(hours(n))
    for n in (1, 2, 3):
        outage.tick(hours(n))
    stored = outage.store.read()
    outage.exchange.inject(status(503), status(503))  # the exchange is down at tick 5: that run fails ...
    with pytest.raises(SourceError, match="503"):
        outage.tick(hours(5))
    assert outage.store.read().equals(stored)  # ... having written nothing
    caught_up = outage.tick(hours(10))  # ticks 4 .. 9 never traded
    assert caught_up.select("ts").unique().sort("ts")["ts"].to_list() == [hours(n) for n in range(3, 10)]
    assert (caught_up["watermark"] == hours(9)).all()  # written by the catch-up, decided bar by bar
    a, b = steady.store.read(), outage.store.read()
    assert a.drop("watermark").equals(b.drop("watermark"))  # the same decisions, fills and equity
    assert len(list(outage.store.unit_dir(MONTH, "toy_threshold").glob("*.parquet"))) == 4


def test_changed_history_is_an_error_naming_the_bar_and_nothing_is_rewritten(
    trader_factory: Callable[..., Trader], recorded: pl.DataFrame
) -> None:
    trader = trader_factory("h")
    for n in (1, 2, 3, 4, 5):
        trader.tick(hours(n))
    stored = trader.store.read()
    files = {p: p.read_bytes() for p in trader.store.directory.rglob("*.parquet")}
    revised = recorded.with_columns(  # the exchange revises a closed candle (still a valid one)
        close=pl.when((pl.col("symbol") == "ETH/USDT") & (pl.col("ts") == hours(2)))
        .then((pl.col("high") + pl.col("low")) / 2)
        .otherwise(pl.col("close"))
    )
    again = trader_factory("h", bars=revised)
    with pytest.raises(
        LedgerConflict, match=r"toy_threshold 2024-04-01: re-running would change ETH/USDT bar 2024-04-01 02:00: close"
    ):
        again.tick(hours(7))
    assert {p: p.read_bytes() for p in trader.store.directory.rglob("*.parquet")} == files
    assert again.store.read().equals(stored)


def test_a_bar_appearing_inside_the_booked_span_is_an_error(
    trader_factory: Callable[..., Trader], recorded: pl.DataFrame
) -> None:
    lagging = (pl.col("symbol") == "BTC/USDT") & (pl.col("ts") >= hours(2))
    first = trader_factory("g", bars=recorded.filter(~lagging))  # BTC's bar 2 not published with ETH's
    for n in (1, 2, 3):
        first.tick(hours(n))
    assert first.store.read().filter(pl.col("ts") == hours(2))["symbol"].to_list() == ["ETH/USDT"]
    with pytest.raises(LedgerConflict, match=r"bar BTC/USDT 2024-04-01 02:00 appeared after the ledger had booked"):
        trader_factory("g").tick(hours(4))


def test_another_live_model_cannot_continue_the_month(trader_factory: Callable[..., Trader]) -> None:
    trader = trader_factory("m")
    trader.tick(hours(2))
    other = trader_factory("m")
    other.setup = PaperSetup(**{**vars(other.setup), "artifact_hash": "0123456789abcdef"})
    with pytest.raises(LedgerConflict, match="decided by artifact .* but the live model is now 0123456789abcdef"):
        other.tick(hours(3))


def test_decisions_never_read_later_bars(recorded: pl.DataFrame, live: tuple[Artifact, str]) -> None:
    """Truncation test: the decision at t is the same whatever the bars after t say."""
    artifact, _ = live
    t = hours(9)
    later = pl.col("ts") > t
    scrambled = recorded.with_columns(
        *[pl.when(later).then(pl.col(c) * 3.0).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")]
    )
    honest, shifted = decide(artifact, recorded, MONTH_START, t), decide(artifact, scrambled, MONTH_START, t)
    assert honest.height == len(SYMBOLS) and honest.equals(shifted)
    # and a later decision does see them (the scramble is not a no-op)
    t2 = hours(12)
    assert not decide(artifact, recorded, MONTH_START, t2).equals(decide(artifact, scrambled, MONTH_START, t2))


def test_an_agent_decides_every_bar_from_its_first_as_its_one_shot_replay_does(
    trader_factory: Callable[..., Trader], recorded: pl.DataFrame, tmp_path: Path
) -> None:
    """An agent's replay ends without stepping into its last bar, so the ledger asks it for that final decision:
    bar by bar, on closed bars only (from a single decision bar on, no placeholder bars), the PPO agent decides at
    every bar from the month's first exactly as its replay over the whole span decides them, and the final decision
    of that one-shot replay is the ledger's decision at its last bar."""
    from crypto_assets.families import validate_params

    params = validate_params(
        {
            "type": "PPO_Agent",
            "total_timesteps": 256,
            "n_envs": 1,
            "n_steps": 128,
            "batch_size": 64,
            "n_epochs": 1,
            "window": 6,
            "episode_bars": 64,
            "net_arch": [8],
            "rebalance_every": 1,
        }
    )
    agent = train_live(recorded, params, tmp_path / "live_model_ppo_agent")
    trader = trader_factory("ppo", model=agent)
    trader.setup = PaperSetup(**{**vars(trader.setup), "strategy": "ppo_agent"})
    for n in range(1, 10):
        trader.tick(hours(n))
    ledger = trader.store.read(MONTH, "ppo_agent")
    decided = ledger.filter(pl.col("target_weight").is_not_null()).select("symbol", "ts", "target_weight")
    assert decided["ts"].unique().sort().to_list() == [hours(n) for n in range(9)]
    one_shot = agent[0].weights(trader.bars(), start=MONTH_START, end=hours(9))  # its last bar has no decision
    assert one_shot["ts"].max() == hours(7)
    assert decided.filter(pl.col("ts") < hours(8)).rows() == one_shot.sort("symbol", "ts").rows()
    # with the final decision the one-shot replay decides hours(8) too, as the ledger did, and the rest unchanged
    inputs = agent[0].inputs(trader.bars(), start=MONTH_START, end=hours(9))
    final = order_rows(agent[0].family.predict(agent[0].model, dataclasses.replace(inputs, final_decision=True)))
    assert final.filter(pl.col("ts") < hours(8)).sort("symbol", "ts").equals(one_shot.sort("symbol", "ts"))
    assert decided.rows() == final.sort("symbol", "ts").rows()
    gap = replay_gap(trader.setup, agent[0], trader.bars(), ledger, hours(8))
    assert float(gap["gap"].abs().max()) == 0.0  # type: ignore[arg-type]


def test_the_store_never_replaces_a_file_and_refuses_a_bar_stored_twice(
    trader_factory: Callable[..., Trader],
) -> None:
    trader = trader_factory("s")
    rows = trader.tick(hours(2))
    with pytest.raises(LedgerConflict, match="already exists"):
        trader.store.append(rows)
    (trader.store.unit_dir(MONTH, "toy_threshold") / "copy.parquet").write_bytes(
        next(trader.store.unit_dir(MONTH, "toy_threshold").glob("*.parquet")).read_bytes()
    )
    with pytest.raises(LedgerConflict, match="BTC/USDT bar 2024-04-01 00:00 .* is stored twice"):
        trader.store.read()


def test_report_track_record_psr_min_track_record_and_zero_replay_gap(trader_factory: Callable[..., Trader]) -> None:
    trader = trader_factory("r")
    for n in range(1, 25):
        trader.tick(hours(n))
    ledger = trader.store.read(MONTH)
    gap = replay_gap(trader.setup, trader.artifact, trader.bars(), ledger, hours(23))
    assert gap.height == 24 and float(gap["gap"].abs().max()) == 0.0  # type: ignore[arg-type]
    report = paper_report(ledger, gap, "1h", rolling_bars=6, backtest_sharpes={"toy_threshold": 1.5})
    track, summary = report.track, report.summary.row(0, named=True)
    r = track["return"].to_numpy()
    assert np.allclose(track["track_equity"].to_numpy(), np.cumprod(1.0 + r))
    expected = [None] * 5  # 6-bar windows; a flat window (no position: std 0) has no Sharpe either
    for end in range(6, 25):
        window = r[end - 6 : end]
        expected.append(window.mean() / window.std(ddof=1) * math.sqrt(8760) if window.std() > 0 else None)
    assert any(e is not None for e in expected)
    for got, want in zip(track["rolling_sharpe"].to_list(), expected, strict=True):
        assert (got is None and want is None) or math.isclose(got, want, rel_tol=1e-9)
    assert summary["bars"] == 24 and summary["backtest_source"] == "kpis" and summary["max_abs_gap"] == 0.0
    assert summary["psr_vs_zero"] == probabilistic_sharpe(r, 0.0)
    assert summary["psr_vs_backtest"] == probabilistic_sharpe(r, 1.5 / math.sqrt(8760))
    without_kpis = paper_report(ledger, gap, "1h", rolling_bars=6).summary.row(0, named=True)
    assert without_kpis["backtest_source"] == "replay"
    assert math.isclose(without_kpis["backtest_sharpe"], summary["sharpe"])  # the replay IS the paper run here
    no_gaps = paper_report(ledger, gap.clear(), "1h", rolling_bars=6).summary.row(0, named=True)  # the dashboard's
    assert no_gaps["backtest_source"] == "none" and math.isnan(no_gaps["max_abs_gap"])
    assert no_gaps["psr_vs_zero"] == summary["psr_vs_zero"]


def test_min_track_record_length_is_where_psr_reaches_the_confidence() -> None:
    rng = np.random.default_rng(3)
    for drift in (0.1, 0.15, 0.25):
        r = rng.standard_t(5, size=400) * 0.01 + drift * 0.01
        psr = probabilistic_sharpe(r, 0.0)
        needed = min_track_record_length(r, 0.0, 0.95)
        # PSR's z grows with sqrt(n - 1): (MinTRL - 1) / (n - 1) = (z_0.95 / z_n)^2
        z_n, z_95 = NormalDist().inv_cdf(psr), NormalDist().inv_cdf(0.95)
        assert math.isclose((needed - 1) / (r.size - 1), (z_95 / z_n) ** 2, rel_tol=1e-9)
        assert (needed <= r.size) == (psr >= 0.95)
    assert min_track_record_length(-np.abs(rng.normal(size=50)), 0.0) == math.inf


# ------------------------------------------------------------------------------------------------ Dagster


def write_experiment(tmp_path: Path, api_url: str, end: str | None) -> Path:
    raw = {
        **CONFIG,
        "experiment": {**CONFIG["experiment"], "storage_dir": str(tmp_path / "storage")},
        "data": {
            **CONFIG["data"],
            "source": "binance",
            "api_url": api_url,
            "end": end,
            "ccxt": {"rate_limit_ms": 0, "backoff_s": 0.0, "max_retries": 1},
        },
    }
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_ingest_live_then_the_paper_schedule_trade_the_live_model_forward(
    recorded: pl.DataFrame, tmp_path: Path
) -> None:
    """The whole chain through Dagster on the local exchange: ingest Jan-Apr and train April's live model as of
    03:00, then the paper_trade schedule's ticks (a re-run, an outage) append exactly the closed bars."""
    from crypto_assets.dashboard import dashboard_path
    from crypto_assets.orchestration.assets.paper import PAPER_ASSET
    from crypto_assets.orchestration.definitions import INGEST_JOB, LIVE_JOB, PAPER_JOB, build_definitions
    from crypto_assets.orchestration.schedules import PAPER_SCHEDULE_NAME
    from crypto_assets.paths import experiment_root
    from crypto_assets.storage.warehouse import Warehouse

    clock = Clock(hours(3))
    with LocalExchange(recorded, clock=clock) as exchange:
        config_path = write_experiment(tmp_path, exchange.url, end=None)
        config = load_config(config_path)
        defs = build_definitions(config)
        graph = defs.resolve_asset_graph()
        assert {k.path[-1] for k in graph.get(dg.AssetKey(PAPER_ASSET)).parent_keys} == {"live_model_toy_threshold"}
        job = defs.resolve_job_def(PAPER_JOB)
        assert job.asset_layer.executable_asset_keys == {dg.AssetKey(PAPER_ASSET), dg.AssetKey("report")}
        schedule = defs.resolve_schedule_def(PAPER_SCHEDULE_NAME)
        repository = defs.get_repository_def()
        tick = dg.build_schedule_context(
            scheduled_execution_time=hours(3) + dt.timedelta(minutes=2), repository_def=repository
        )
        skipped = schedule.evaluate_tick(tick)
        assert not skipped.run_requests and "no live model for 2024-04-01" in str(skipped.skip_message)
        store = PaperLedgerStore(Warehouse(experiment_root(config)).tables_dir)
        as_of = {"config": {"as_of": hours(3).isoformat()}}
        months = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": MONTH}

        def run(request: dg.RunRequest, instance: dg.DagsterInstance) -> dict[str, object]:
            result = job.execute_in_process(
                instance=instance, partition_key=request.partition_key, run_config=request.run_config
            )
            assert result.success
            (materialization,) = result.asset_materializations_for_node(PAPER_ASSET)
            return {k: v.value for k, v in materialization.metadata.items()}

        with dg.DagsterInstance.ephemeral() as instance:
            ingest = defs.resolve_job_def(INGEST_JOB)
            run_config = {"ops": {"raw_ohlcv": as_of, "bars": as_of}}
            assert ingest.execute_in_process(instance=instance, tags=months, run_config=run_config).success
            assert defs.resolve_job_def(LIVE_JOB).execute_in_process(instance=instance, partition_key=MONTH).success
            live_model = experiment_root(config) / "artifacts" / "live_model_toy_threshold" / MONTH
            digest = artifact_digest(live_model)
            (request,) = schedule.evaluate_tick(tick).run_requests or []
            assert request.partition_key == MONTH
            first = run(request, instance)
            assert first["rows_added"] == 3 * len(SYMBOLS) and first["watermark"] == hours(2).isoformat()
            # the same run re-renders the dashboard after paper_ledger: the page has its paper section (and says the
            # reports are not computed: this experiment ran none)
            page = dashboard_path(experiment_root(config)).read_text()
            assert '<section id="paper">' in page and "Not computed yet: walk_forward_equity" in page
            assert run(request, instance)["rows_added"] == 0  # the same tick again: nothing new
            clock.now = hours(9)  # ticks 4 .. 8 missed: the next one catches up
            later = dg.build_schedule_context(
                scheduled_execution_time=hours(9) + dt.timedelta(minutes=2), repository_def=repository
            )
            (request,) = schedule.evaluate_tick(later).run_requests or []
            caught_up = run(request, instance)
        assert caught_up["rows_added"] == 6 * len(SYMBOLS)
        ledger = store.read(MONTH, "toy_threshold")
        assert ledger["ts"].unique().sort().to_list() == [hours(n) for n in range(9)]
        assert (ledger["artifact"] == digest).all() and (ledger["experiment"] == "paper").all()
        summary = caught_up["summary"]
        (record,) = summary.records  # type: ignore[attr-defined]
        assert record.data["strategy"] == "toy_threshold" and record.data["bars"] == 9
        assert record.data["max_abs_gap"] == 0.0 and record.data["backtest_source"] == "replay"


def test_a_fixed_data_end_in_the_past_reports_no_bars_after_it_and_writes_nothing(tmp_path: Path) -> None:
    from crypto_assets.dashboard import dashboard_path
    from crypto_assets.orchestration.assets.paper import PAPER_ASSET
    from crypto_assets.orchestration.definitions import PAPER_JOB, build_definitions
    from crypto_assets.paths import experiment_root

    config_path = write_experiment(tmp_path, "http://127.0.0.1:9", end="2024-04-30")  # never reached
    config = load_config(config_path)
    defs = build_definitions(config)
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(PAPER_JOB).execute_in_process(instance=instance, partition_key=MONTH)
    assert result.success
    (materialization,) = result.asset_materializations_for_node(PAPER_ASSET)
    note = str(materialization.metadata["note"].value)
    assert note.startswith("no bars after data.end (2024-04-30)")
    assert not (experiment_root(config) / "warehouse" / "paper_ledger").exists()
    # nothing to show on a dashboard yet: the report step writes no page and does not fail the paper run
    assert not result.asset_materializations_for_node("report")
    assert not dashboard_path(experiment_root(config)).exists()


def test_crypto_lab_run_only_paper_plans_the_newest_month_after_live(tmp_path: Path) -> None:
    from crypto_assets import cli
    from crypto_assets.orchestration import definitions

    assert cli.PAPER_JOB == definitions.PAPER_JOB  # cli keeps its own copy: `validate-config` imports no dagster
    config_path = write_experiment(tmp_path, "http://127.0.0.1:9", end="2024-04-30")
    config = load_config(config_path)
    defs = definitions.build_definitions(config)
    args = cli.build_parser().parse_args(["run", "--config", str(config_path), "--only", "paper,live"])
    plan = cli._plan(args, config, defs, None)
    assert [(r.job, dict(r.tags)) for r in plan] == [
        (cli.LIVE_JOB, {"dagster/partition": MONTH}),
        (cli.PAPER_JOB, {"dagster/partition": MONTH}),
    ]
