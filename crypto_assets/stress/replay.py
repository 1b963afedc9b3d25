"""Strategies replayed on stress paths through the backtest engine, and their results (DESIGN.md §6.3).

Splice
------
A path's indicators, forecasters' input windows, baselines' SMAs and the engine's σ / ADV need history before the
first stressed bar. `splice` puts the path right after the experiment's own last bars: the path (bars,
multipliers, high-vol-bear flags) is shifted in time to start one bar after the history ends, and each symbol's
path prices are scaled so its first open equals that symbol's last historical close (volume divided by the same
factor: dollar volume, what impact and the participation cap see, and every return are unchanged). Strategies
decide only on the path's bars, [path start, path end); nothing executes in the history (no weights there), so
the portfolio enters the path in cash at `capital`.

Results per strategy × path (`path_result`)
------------------------------------------
    max_drawdown          max_t 1 − V_t / max_{s≤t} V_s over the path's closes, V_0 = capital (DESIGN.md §3.4)
    total_return          V_T / capital − 1
    time_under_water      share of the path's bars whose close value is below the running peak (V_0 included)
    longest_under_water   longest run of consecutive such bars (bars)
    exposure_high_vol_bear mean gross exposure Σ|w| at the closes the path flags `high_vol_bear` (NaN: none):
                          "does it go to cash or short?"
Aggregated per strategy × scenario (`aggregate`): mean, median, 5th and 95th percentile of MaxDD and return over
every path (and, for trained families, every replayed fold's model), P(MaxDD > limit), mean time under water and
mean exposure in high-vol bear. The `stress_kpis` check fails a strategy when P(MaxDD > limit) > tolerance.
"""

from __future__ import annotations

import datetime as dt
import importlib
import io
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from crypto_assets.sources.base import RAW_COLUMNS, RAW_SCHEMA, TS_DTYPE
from crypto_assets.stress.paths import StressPath
from crypto_assets.timeframes import timeframe_delta

if TYPE_CHECKING:
    from crypto_assets.backtest import BacktestResult, CostModel
    from crypto_assets.config.schema import StressSection

Generator = Callable[..., list[StressPath]]
"""`fn(bars, timeframe, params, *, seed, n_paths) -> list[StressPath]` (params: the scenario's config section)."""

SCENARIOS: dict[str, str] = {
    "crash_bootstrap": "crypto_assets.stress.bootstrap:crash_bootstrap",
    "panic": "crypto_assets.stress.abm:panic_market",
}
"""Scenario name (= its `stress.<name>` config section) → generator, as `module:function` (imported on use, so a
scenario's dependencies load only when it runs)."""


def scenario_generator(name: str) -> Generator:
    """The registered generator of scenario `name`."""
    if name not in SCENARIOS:
        raise KeyError(f"unknown stress scenario {name!r}; registered: {', '.join(SCENARIOS)}")
    module, function = SCENARIOS[name].split(":")
    fn: Generator = getattr(importlib.import_module(module), function)
    return fn


def generate_paths(
    bars: pl.DataFrame,
    timeframe: str,
    stress: StressSection,
    root_seed: int,
    *,
    generators: Mapping[str, Generator] | None = None,
) -> list[StressPath]:
    """Every enabled scenario × `stress.seeds` × `stress.paths_per_seed` paths from the experiment's `bars`.

    Each generator's seed is `derive_seed(root_seed, "stress", scenario, seed)` (DESIGN.md §3.6); the path keeps the
    config's `seed`. `generators` replaces registry entries (tests, plug-ins)."""
    from crypto_assets.models.device import derive_seed

    out: list[StressPath] = []
    for scenario in stress.enabled_scenarios:
        generate = (generators or {}).get(scenario) or scenario_generator(scenario)
        params = getattr(stress, scenario)
        for seed in stress.seeds:
            stream = derive_seed(root_seed, "stress", scenario, str(seed))
            for i, path in enumerate(generate(bars, timeframe, params, seed=stream, n_paths=stress.paths_per_seed)):
                # the generator sees a derived stream; the tables carry the config's seed and a path number
                out.append(
                    StressPath(
                        scenario=scenario,
                        seed=seed,
                        path_id=i,
                        bars=path.bars,
                        high_vol_bear=path.high_vol_bear,
                        multipliers=path.multipliers,
                        note=path.note,
                    )
                )
    return out


# ------------------------------------------------------------------------------------------ paths as one table

PATH_KEYS = ["scenario", "seed", "path_id"]


def paths_table(paths: Sequence[StressPath]) -> pl.DataFrame:
    """Every path as one long table: `scenario, seed, path_id, symbol, ts, open, high, low, close, volume,
    spread_mult, impact_mult, high_vol_bear, note` (multipliers 1.0 where the path has none)."""
    frames = []
    for p in paths:
        frame = p.bars.select(RAW_COLUMNS).cast(RAW_SCHEMA)  # type: ignore[arg-type]
        if p.multipliers is not None:
            mult = p.multipliers.with_columns(pl.col("ts").cast(TS_DTYPE))
            for column in ("spread_mult", "impact_mult"):
                if column not in mult.columns:
                    mult = mult.with_columns(pl.lit(1.0).alias(column))
            frame = frame.join(
                mult.select("symbol", "ts", "spread_mult", "impact_mult"), on=["symbol", "ts"], how="left"
            )
        else:
            frame = frame.with_columns(spread_mult=pl.lit(None, pl.Float64), impact_mult=pl.lit(None, pl.Float64))
        frame = frame.with_columns(pl.col("spread_mult", "impact_mult").cast(pl.Float64).fill_null(1.0))
        flags = p.high_vol_bear.select(pl.col("ts").cast(TS_DTYPE), pl.col("high_vol_bear").cast(pl.Boolean))
        frame = frame.join(flags, on="ts", how="left").with_columns(pl.col("high_vol_bear").fill_null(False))
        frames.append(
            frame.with_columns(
                scenario=pl.lit(p.scenario), seed=pl.lit(p.seed, pl.Int64), path_id=pl.lit(p.path_id, pl.Int64)
            )
            .with_columns(note=pl.lit(p.note))
            .select(*PATH_KEYS, *RAW_COLUMNS, "spread_mult", "impact_mult", "high_vol_bear", "note")
        )
    if not frames:
        return pl.DataFrame(
            schema={
                "scenario": pl.String,
                "seed": pl.Int64,
                "path_id": pl.Int64,
                **RAW_SCHEMA,
                "spread_mult": pl.Float64,
                "impact_mult": pl.Float64,
                "high_vol_bear": pl.Boolean,
                "note": pl.String,
            }
        )
    return pl.concat(frames).sort(*PATH_KEYS, "symbol", "ts")


def paths_from_table(table: pl.DataFrame) -> list[StressPath]:
    """The inverse of `paths_table` (multipliers always present: 1.0 is bit-identical to none in the engine)."""
    out = []
    for (scenario, seed, path_id), frame in table.sort(*PATH_KEYS, "symbol", "ts").group_by(
        PATH_KEYS, maintain_order=True
    ):
        out.append(
            StressPath(
                scenario=str(scenario),
                seed=int(seed),  # type: ignore[call-overload]
                path_id=int(path_id),  # type: ignore[call-overload]
                bars=frame.select(RAW_COLUMNS),
                high_vol_bear=frame.group_by("ts").agg(pl.col("high_vol_bear").any()).sort("ts"),
                multipliers=frame.select("symbol", "ts", "spread_mult", "impact_mult"),
                note=str(frame["note"][0]),
            )
        )
    return out


# ------------------------------------------------------------------------------------------------- splicing


@dataclass(frozen=True)
class Spliced:
    """A path placed after history: the bars strategies and the engine see, and the path's decision span."""

    bars: pl.DataFrame
    start: dt.datetime
    """First bar of the path (first decision)."""
    end: dt.datetime
    """One bar after the path's last bar (decisions in [start, end))."""
    multipliers: pl.DataFrame | None
    high_vol_bear: pl.DataFrame
    """`ts, high_vol_bear` on the shifted path."""
    timeframe: str

    @cached_property
    def features(self) -> pl.DataFrame:
        """The model inputs (features + causal regime codes) of every bar, computed once per path for all
        artifacts replayed on it (crypto_assets.families.compute_inputs)."""
        from crypto_assets.families import compute_inputs

        return compute_inputs(self.bars, self.timeframe)


def _shift(frame: pl.DataFrame, offset: dt.timedelta) -> pl.DataFrame:
    return frame.with_columns((pl.col("ts").cast(TS_DTYPE) + offset).alias("ts"))


def splice(path: StressPath, history: pl.DataFrame | None, timeframe: str, history_bars: int) -> Spliced:
    """`path` placed right after the last `history_bars` bars of `history` (module docstring). No history (None or
    0 bars): the path's own bars, as generated."""
    bars = path.bars.select(RAW_COLUMNS).cast(RAW_SCHEMA).sort("symbol", "ts")  # type: ignore[arg-type]
    bar = timeframe_delta(timeframe)
    multipliers, flags = path.multipliers, path.high_vol_bear.with_columns(pl.col("ts").cast(TS_DTYPE))
    if history is not None and history_bars > 0 and history.height:
        symbols = bars["symbol"].unique().to_list()
        hist = history.select(RAW_COLUMNS).cast(RAW_SCHEMA).filter(pl.col("symbol").is_in(symbols))  # type: ignore[arg-type]
        last = hist["ts"].max()
        assert isinstance(last, dt.datetime)
        hist = hist.filter(pl.col("ts") > last - bar * history_bars)
        first = bars["ts"].min()
        assert isinstance(first, dt.datetime)
        offset = last + bar - first
        # Scale each symbol's path to continue from its last historical close: returns and dollar volume unchanged,
        # no fictitious jump at the splice (which a strategy would trade on and a drawdown would count).
        anchor = (
            hist.sort("ts")
            .group_by("symbol")
            .agg(pl.col("close").last().alias("_last"))
            .join(
                bars.sort("ts").group_by("symbol").agg(pl.col("open").first().alias("_first")), on="symbol", how="right"
            )
            .select("symbol", (pl.col("_last") / pl.col("_first")).fill_null(1.0).alias("_k"))
        )
        bars = (
            _shift(bars, offset)
            .join(anchor, on="symbol", how="left")
            .with_columns(
                *(pl.col(c) * pl.col("_k") for c in ("open", "high", "low", "close")), pl.col("volume") / pl.col("_k")
            )
            .drop("_k")
        )
        multipliers = None if multipliers is None else _shift(multipliers, offset)
        flags = _shift(flags, offset)
        bars = pl.concat([hist, bars]).sort("symbol", "ts")
        start = last + bar
    else:
        start_value = bars["ts"].min()
        assert isinstance(start_value, dt.datetime)
        start = start_value
    end_value = bars["ts"].max()
    assert isinstance(end_value, dt.datetime)
    return Spliced(
        bars=bars,
        start=start,
        end=end_value + bar,
        multipliers=multipliers,
        high_vol_bear=flags.select("ts", pl.col("high_vol_bear").cast(pl.Boolean)),
        timeframe=timeframe,
    )


# ----------------------------------------------------------------------------------------------- strategies

Decide = Callable[[Spliced], pl.DataFrame]
"""Target weights (`symbol, ts, weight`) decided in [spliced.start, spliced.end) from `spliced.bars` (and, for
trained models, `spliced.features`)."""


@dataclass(frozen=True)
class Strategy:
    """One strategy to replay: a rule (`decide`), or a soft vote of other strategies of the same fold (`votes`:
    member name → vote weight; crypto_assets.ensemble.soft_vote)."""

    name: str
    fold: str = ""
    """The fold whose trained model this is; empty for rules that need no training (baselines)."""
    decide: Decide | None = None
    votes: Mapping[str, float] = field(default_factory=dict)


def baseline_strategy(name: str, params: Mapping[str, Any], timeframe: str) -> Strategy:
    """A rule-based baseline (crypto_assets.baselines.BASELINES) with the experiment's settings."""
    from crypto_assets.baselines import BASELINES

    fn = BASELINES[name]
    return Strategy(name=name, decide=lambda s: fn(s.bars, s.start, s.end, timeframe=timeframe, **params))


def artifact_strategy(name: str, fold: str, artifact_dir: str, device: str = "cpu") -> Strategy:
    """A trained family's artifact (crypto_assets.families.Artifact), loaded once and replayed on every path."""
    from crypto_assets.families import Artifact

    artifact = Artifact.load(artifact_dir, device=device)
    return Strategy(
        name=name,
        fold=fold,
        decide=lambda s: artifact.weights(s.bars, features=s.features, start=s.start, end=s.end),
    )


def strategy_weights(strategies: Sequence[Strategy], spliced: Spliced) -> dict[tuple[str, str], pl.DataFrame]:
    """(name, fold) → target weights on `spliced`; rules first, then the votes over their same-fold members."""
    from crypto_assets.ensemble import soft_vote

    out: dict[tuple[str, str], pl.DataFrame] = {}
    for s in strategies:
        if s.decide is not None:
            out[(s.name, s.fold)] = _in_window(s.decide(spliced), spliced)
    for s in strategies:
        if s.decide is None:
            members = {member: out[(member, s.fold)] for member in s.votes}
            out[(s.name, s.fold)] = _in_window(soft_vote(members, dict(s.votes)), spliced)
    return out


def _in_window(weights: pl.DataFrame, spliced: Spliced) -> pl.DataFrame:
    """Orders in the path's span only (a strategy never decides on the history)."""
    ts = pl.col("ts").cast(TS_DTYPE)
    return (
        weights.filter(pl.col("weight").is_not_null())
        .select("symbol", ts.alias("ts"), pl.col("weight").cast(pl.Float64))
        .filter((pl.col("ts") >= spliced.start) & (pl.col("ts") < spliced.end))
    )


# --------------------------------------------------------------------------------------------------- results

RESULT_SCHEMA: dict[str, Any] = {
    "scenario": pl.String,
    "seed": pl.Int64,
    "path_id": pl.Int64,
    "strategy": pl.String,
    "fold": pl.String,
    "bars": pl.Int64,
    "max_drawdown": pl.Float64,
    "total_return": pl.Float64,
    "time_under_water": pl.Float64,
    "longest_under_water": pl.Int64,
    "exposure_high_vol_bear": pl.Float64,
    "high_vol_bear_bars": pl.Int64,
    "total_cost": pl.Float64,
    "note": pl.String,
}


def replay_backtest(
    spliced: Spliced, weights: pl.DataFrame, costs: CostModel, capital: float, timeframe: str
) -> BacktestResult:
    """The engine run of `weights` on the spliced bars with the path's cost multipliers."""
    from crypto_assets.backtest import run_backtest

    return run_backtest(
        spliced.bars,
        weights,
        costs,
        timeframe=timeframe,
        initial_value=capital,
        multipliers=spliced.multipliers,
    )


def path_result(result: BacktestResult, spliced: Spliced, capital: float) -> dict[str, Any]:
    """The per-path figures of one engine run over the path's span (module docstring)."""
    ts = pl.col("ts")
    on_path = (ts >= spliced.start) & (ts < spliced.end)
    value = result.equity.filter(on_path)["value"].to_numpy()
    curve = np.concatenate([[capital], value])
    peak = np.maximum.accumulate(curve)
    with np.errstate(divide="ignore", invalid="ignore"):
        drawdown = np.where(peak > 0, 1.0 - curve / peak, 1.0)
    under = curve[1:] < peak[1:]
    gross = (
        result.positions.filter(on_path)
        .group_by("ts")
        .agg(pl.col("weight").abs().sum().alias("gross"))
        .join(spliced.high_vol_bear.filter(pl.col("high_vol_bear")), on="ts", how="inner")
    )
    cost = float(result.costs.filter(on_path)["total"].sum())
    return {
        "bars": int(value.size),
        "max_drawdown": float(drawdown.max()) if drawdown.size else 0.0,
        "total_return": float(curve[-1] / capital - 1.0),
        "time_under_water": float(under.mean()) if under.size else 0.0,
        "longest_under_water": _longest_run(under),
        "exposure_high_vol_bear": float(gross["gross"].mean()) if gross.height else math.nan,  # type: ignore[arg-type]
        "high_vol_bear_bars": int(spliced.high_vol_bear["high_vol_bear"].sum()),
        "total_cost": cost / capital,
    }


def _longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True."""
    if not flags.any():
        return 0
    padded = np.concatenate([[0], flags.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max())


@dataclass(frozen=True)
class ReplayRun:
    """Per strategy × path results (`RESULT_SCHEMA`) and the replay throughput."""

    results: pl.DataFrame
    replays: int
    seconds: float
    """Wall time of everything: splicing, features, strategy decisions and engine runs."""
    engine_seconds: float
    """Wall time of the engine runs and the per-path figures alone."""

    @property
    def replays_per_s(self) -> float:
        return self.replays / self.seconds if self.seconds > 0 else math.nan

    @property
    def engine_replays_per_s(self) -> float:
        return self.replays / self.engine_seconds if self.engine_seconds > 0 else math.nan


def replay_paths(
    strategies: Sequence[Strategy],
    paths: Iterable[StressPath],
    costs: CostModel,
    *,
    capital: float,
    timeframe: str,
    history: pl.DataFrame | None = None,
    history_bars: int = 0,
) -> ReplayRun:
    """Every strategy on every path (spliced after the last `history_bars` bars of `history`) through the engine at
    `capital` and `costs`: one row per strategy × path."""
    rows: list[dict[str, Any]] = []
    started, engine = time.perf_counter(), 0.0
    for path in paths:
        spliced = splice(path, history, timeframe, history_bars)
        for (name, fold), weights in strategy_weights(strategies, spliced).items():
            t0 = time.perf_counter()
            result = replay_backtest(spliced, weights, costs, capital, timeframe)
            figures = path_result(result, spliced, capital)
            engine += time.perf_counter() - t0
            rows.append(
                {
                    "scenario": path.scenario,
                    "seed": path.seed,
                    "path_id": path.path_id,
                    "strategy": name,
                    "fold": fold,
                    **figures,
                    "note": path.note,
                }
            )
    frame = pl.DataFrame(rows, schema=RESULT_SCHEMA, orient="row") if rows else pl.DataFrame(schema=RESULT_SCHEMA)
    return ReplayRun(frame, len(rows), time.perf_counter() - started, engine)


KPI_DESCRIPTIONS = {
    "scenario": "Stress scenario (crash_bootstrap: block-bootstrapped crashes; panic: agent-based panic market).",
    "strategy": "Baseline, trained family (pooled over the replayed folds' models) or ensemble.",
    "paths": "Replays pooled: paths × replayed folds.",
    "max_drawdown_mean": "Mean over the replays of the path's max drawdown (from capital).",
    "max_drawdown_median": "Median max drawdown.",
    "max_drawdown_p05": "5th percentile of max drawdown.",
    "max_drawdown_p95": "95th percentile of max drawdown (a bad path).",
    "total_return_mean": "Mean of V_T / capital − 1 over the replays.",
    "total_return_median": "Median total return.",
    "total_return_p05": "5th percentile of total return (a bad path).",
    "total_return_p95": "95th percentile of total return.",
    "time_under_water": "Mean share of the path's bars below the running peak.",
    "longest_under_water": "Mean longest spell under water (bars).",
    "p_breach": "P(MaxDD > constraints.max_drawdown): share of replays breaching the limit.",
    "exposure_high_vol_bear": "Mean gross exposure Σ|w| while the path is in high-vol bear (0 = cash).",
    "passes": "p_breach ≤ stress.tolerance.",
    "note": "How the scenario's paths were made (e.g. the experiment's own worst drawdowns standing in for the "
    "configured crash windows).",
}
KPI_COLUMNS = list(KPI_DESCRIPTIONS)


def aggregate(results: pl.DataFrame, *, max_drawdown_limit: float, tolerance: float) -> pl.DataFrame:
    """Per strategy × scenario: the distribution of MaxDD and return, P(MaxDD > limit), time under water and the
    exposure in high-vol bear (`KPI_COLUMNS`), sorted by scenario, then worst p_breach first."""
    dd, ret = pl.col("max_drawdown"), pl.col("total_return")
    return (
        results.group_by("scenario", "strategy")
        .agg(
            pl.len().cast(pl.Int64).alias("paths"),
            dd.mean().alias("max_drawdown_mean"),
            dd.median().alias("max_drawdown_median"),
            dd.quantile(0.05, "linear").alias("max_drawdown_p05"),
            dd.quantile(0.95, "linear").alias("max_drawdown_p95"),
            ret.mean().alias("total_return_mean"),
            ret.median().alias("total_return_median"),
            ret.quantile(0.05, "linear").alias("total_return_p05"),
            ret.quantile(0.95, "linear").alias("total_return_p95"),
            pl.col("time_under_water").mean(),
            pl.col("longest_under_water").cast(pl.Float64).mean(),
            (dd > max_drawdown_limit).cast(pl.Float64).mean().alias("p_breach"),
            # NaN (no high-vol-bear bar on that path) is left out of the mean, not counted as zero exposure
            pl.col("exposure_high_vol_bear").fill_nan(None).mean(),
        )
        .with_columns(passes=pl.col("p_breach") <= tolerance)
        .join(_scenario_notes(results), on="scenario", how="left")
        .with_columns(pl.col("note").fill_null(""))
        .select(KPI_COLUMNS)
        .sort(["scenario", "p_breach", "strategy"], descending=[False, True, False])
    )


def _scenario_notes(results: pl.DataFrame) -> pl.DataFrame:
    """`scenario, note`: the paths' notes share most of their parts ("; "-separated): each distinct part once."""
    return (
        results.select("scenario", pl.col("note").str.split("; "))
        .explode("note")
        .filter(pl.col("note") != "")
        .unique(maintain_order=True)
        .group_by("scenario", maintain_order=True)
        .agg(pl.col("note").str.join("; "))
    )


def breaches(kpis: pl.DataFrame) -> pl.DataFrame:
    """The strategy × scenario rows whose P(MaxDD > limit) exceeds the tolerance (`passes` false)."""
    return kpis.filter(~pl.col("passes")).select("scenario", "strategy", "p_breach", "max_drawdown_p95")


def stress_chart_png(results: pl.DataFrame, max_drawdown_limit: float, title: str) -> bytes:
    """MaxDD distribution (5th-95th percentile bar, median dot) per strategy, one panel per scenario, with the
    limit as a line; PNG bytes for the UI."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    scenarios = sorted(results["scenario"].unique().to_list()) or [""]
    # One strategy order (overall median MaxDD, worst on top) for every panel: the panels share their y axis.
    order = (
        results.group_by("strategy").agg(pl.col("max_drawdown").median().alias("m")).sort("m", "strategy")["strategy"]
    ).to_list()
    y = {name: i for i, name in enumerate(order)}
    fig, axes = plt.subplots(
        1, len(scenarios), figsize=(4.5 * len(scenarios), 1.5 + 0.35 * len(order)), squeeze=False, sharey=True
    )
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        stats = (
            results.filter(pl.col("scenario") == scenario)
            .group_by("strategy")
            .agg(
                pl.col("max_drawdown").quantile(0.05, "linear").alias("lo"),
                pl.col("max_drawdown").median().alias("mid"),
                pl.col("max_drawdown").quantile(0.95, "linear").alias("hi"),
            )
        )
        rows = np.array([y[name] for name in stats["strategy"].to_list()])
        lo, mid, hi = (stats[c].to_numpy() for c in ("lo", "mid", "hi"))
        ax.barh(rows, hi - lo, left=lo, height=0.5, color="tab:blue", alpha=0.35)
        ax.plot(mid, rows, "o", color="tab:blue")
        ax.axvline(max_drawdown_limit, color="tab:red", linestyle="--", linewidth=1, label="limit")
        ax.set_xlabel("max drawdown (5th-95th pct, median)")
        ax.set_title(scenario, fontsize=10)
    axes[0][0].set_yticks(range(len(order)), order, fontsize=8)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()
