"""The dashboard's sections: plotly figures (as `<div>`s, plotly.js NOT included) and HTML tables.

Each builder takes an `ExperimentData` and returns a `Section`, or None when the experiment has no data for it
(no forecasters → no calibration, no stress job → no stress section), so the page shows what exists.
plotly is imported inside the functions: the package stays importable without loading it.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from crypto_assets.dashboard.data import PAPER_LEDGER, ExperimentData
from crypto_assets.folds.split import add_labels, label_columns
from crypto_assets.timeframes import duration_bars

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

STITCHED = "stitched"  # = evaluation.STITCHED, the scope of the walk-forward rows of `kpis`
MAX_POINTS = 1500
"""Points per strategy on the equity chart: buckets of bars keep the last equity and the deepest drawdown."""
TRADE_ROWS = 200
"""The trade list shows the newest trades (a year of hourly trading can hold thousands)."""
SWEEP_ROWS = 100
SWEEP_OBJECTIVE = "objective_sharpe"  # the `sweep` table's objective column (crypto_assets.sweeps.driver)
HIGH_VOL_BEAR = ("bear", "high")
KPI_TABLE_COLUMNS = (
    "strategy",
    "verdict",
    "sharpe",
    "sharpe_daily",
    "sortino",
    "max_drawdown",
    "cagr",
    "calmar",
    "total_return",
    "psr",
    "dsr",
    "n_trials",
    "pbo",
    "exposure",
    "turnover",
    "cost_share",
)
COST_KINDS = ("cost_fees", "cost_slippage", "cost_impact", "cost_funding")
CAPACITY_COLUMNS = ("strategy", "capital", "turnover", "fills", "capped_share", "total_cost", "cost_share")
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass
class Section:
    """One titled part of the page: charts (plotly divs) and tables (HTML), in order."""

    key: str
    title: str
    blocks: list[str] = field(default_factory=list)
    charts: int = 0
    note: str = ""

    def chart(self, figure: Figure, height: int = 420) -> None:
        import plotly.io as pio

        figure.update_layout(template="plotly_white", height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50})
        div_id = f"chart-{self.key}-{self.charts}"
        self.blocks.append(
            pio.to_html(figure, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)
        )
        self.charts += 1

    def table(self, frame: pl.DataFrame, caption: str = "") -> None:
        self.blocks.append(html_table(frame, caption))


def html_table(frame: pl.DataFrame, caption: str = "", digits: int = 4) -> str:
    """A plain HTML table; floats to `digits` significant digits, NaN / null empty; `verdict` cells are coloured."""
    head = "".join(f"<th>{html.escape(column)}</th>" for column in frame.columns)
    rows = []
    for record in frame.iter_rows(named=True):
        cells = []
        for column, value in record.items():
            text = _cell(value, digits)
            css = f' class="verdict-{text}"' if column == "verdict" and text else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    table = f'<table class="data">{title}<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return f'<div class="table">{table}</div>'


def _cell(value: object, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:,.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
    if isinstance(value, dt.datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)


def fold_keys(data: ExperimentData) -> list[str]:
    """The folds of the stitched run (`kpis` scopes other than `stitched`), in order."""
    kpis = data.table("kpis")
    return [] if kpis is None else sorted(set(kpis.filter(pl.col("scope") != STITCHED)["scope"].to_list()))


def equity_section(equity: pl.DataFrame, folds: Sequence[str], title: str = "Equity and drawdown") -> Section:
    """Stitched equity (log scale) and drawdown per strategy; dotted lines where a fold's months begin."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    section = Section("equity", title)
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.04)
    for index, (strategy, curve) in enumerate(_downsampled(equity)):
        color = _color(index)
        figure.add_trace(
            go.Scatter(x=curve["ts"], y=curve["equity"], name=strategy, legendgroup=strategy, line={"color": color}),
            row=1,
            col=1,
        )
        figure.add_trace(
            go.Scatter(
                x=curve["ts"],
                y=curve["drawdown"],
                name=strategy,
                legendgroup=strategy,
                showlegend=False,
                line={"color": color, "width": 1},
            ),
            row=2,
            col=1,
        )
    first, last = equity["ts"].min(), equity["ts"].max()
    for key in folds:
        start = dt.datetime.fromisoformat(key).replace(tzinfo=dt.UTC)
        if first < start <= last:  # type: ignore[operator]
            figure.add_vline(x=start, line={"dash": "dot", "color": "#888", "width": 1})
    figure.update_yaxes(type="log", title_text="equity (start = 1)", row=1, col=1)
    figure.update_yaxes(title_text="drawdown", tickformat=".0%", row=2, col=1)
    boundaries = " (dotted: fold boundaries)" if folds else ""
    figure.update_layout(title=f"Stitched walk-forward equity and drawdown{boundaries}")
    section.chart(figure, height=560)
    return section


def _downsampled(equity: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    curves = []
    for (strategy,), group in equity.sort("strategy", "ts").group_by("strategy", maintain_order=True):
        group = group.select("ts", "equity").with_columns(drawdown=pl.col("equity") / pl.col("equity").cum_max() - 1)
        step = max(1, math.ceil(group.height / MAX_POINTS))
        curve = (
            group.with_row_index("bar")
            .group_by(pl.col("bar") // step, maintain_order=True)
            .agg(pl.col("ts").last(), pl.col("equity").last(), pl.col("drawdown").min())
        )
        curves.append((str(strategy), curve))
    return curves


def _color(index: int) -> str:
    from plotly.colors import qualitative

    return str(qualitative.Dark24[index % len(qualitative.Dark24)])  # 24 distinct colours: compare pages are long


def kpi_frame(kpis: pl.DataFrame) -> pl.DataFrame:
    """Stitched rows with the verdict spelled out (`pass` / `fail`), best Sharpe first."""
    stitched = kpis.filter(pl.col("scope") == STITCHED)
    verdict = (
        pl.when(pl.col("passes_constraints"))
        .then(pl.lit("pass"))
        .when(~pl.col("passes_constraints"))
        .then(pl.lit("fail"))
    )
    stitched = stitched.with_columns(verdict=verdict if "passes_constraints" in stitched.columns else pl.lit(None))
    shown = stitched.select([c for c in KPI_TABLE_COLUMNS if c in stitched.columns])
    return shown.sort(pl.col("sharpe").fill_nan(None), descending=True, nulls_last=True)  # no Sharpe (no trade): last


def kpi_section(data: ExperimentData) -> Section | None:
    kpis = data.table("kpis")
    if kpis is None:
        return None
    section = Section("kpis", "KPIs and verdict (stitched walk-forward)")
    section.note = (
        "Verdict: max drawdown ≤ limit, Sharpe ≥ min_sharpe and DSR ≥ min_dsr over the N configurations of the "
        "trials registry (PSR when N = 1). Sharpe is annualised 24/7 (never 252)."
    )
    section.table(kpi_frame(kpis))
    return section


def fold_sharpe_section(kpis: pl.DataFrame) -> Section | None:
    """Per-fold Sharpe distribution per strategy: folds are time periods, so this is stability, not trials."""
    import plotly.graph_objects as go

    folds = kpis.filter(pl.col("scope") != STITCHED)
    if folds.is_empty():
        return None
    section = Section("fold_sharpe", "Per-fold Sharpe distribution")
    figure = go.Figure()
    for (strategy,), group in folds.sort("strategy", "scope").group_by("strategy", maintain_order=True):
        figure.add_trace(
            go.Box(
                y=group["sharpe"],
                name=str(strategy),
                boxpoints="all",
                text=group["scope"],
                hovertemplate="%{text}: %{y:.2f}",
            )
        )
    figure.update_layout(title="Sharpe of each fold's whole test window", yaxis_title="Sharpe", showlegend=False)
    section.chart(figure)
    return section


def seed_section(dispersion: pl.DataFrame) -> Section:
    """`seed_dispersion` (families with n_seeds > 1): each KPI's spread across the seeds of the stitched run. Seed 0
    is the strategy in the KPI table; a Sharpe far from the seeds' mean is a lucky (or unlucky) seed."""
    import plotly.graph_objects as go

    section = Section("seeds", "Dispersion across seeds")
    sharpe = dispersion.filter(pl.col("metric") == "sharpe").sort("family")
    if sharpe.height:
        figure = go.Figure(
            go.Scatter(
                x=sharpe["family"],
                y=sharpe["mean"],
                mode="markers",
                name="mean ± std",
                error_y={"type": "data", "array": sharpe["std"].fill_null(0.0).to_list()},
            )
        )
        for bound in ("min", "max"):
            figure.add_trace(go.Scatter(x=sharpe["family"], y=sharpe[bound], mode="markers", name=bound))
        figure.update_layout(title="Stitched Sharpe across seeds", yaxis_title="Sharpe")
        section.chart(figure)
    section.table(dispersion.sort("family", "metric"), "every seed stitched over every fold like the family itself")
    return section


def monthly_section(equity: pl.DataFrame) -> Section:
    """Monthly compounded net return per strategy (UTC months) as a heatmap."""
    import plotly.graph_objects as go

    monthly = (
        equity.with_columns(month=pl.col("ts").dt.strftime("%Y-%m"))
        .group_by("strategy", "month")
        .agg(((pl.col("return") + 1).product() - 1).alias("ret"))
        .pivot(on="month", index="strategy", values="ret")
        .sort("strategy")
    )
    months = sorted(c for c in monthly.columns if c != "strategy")
    z = [[None if v is None else 100 * v for v in row] for row in monthly.select(months).rows()]
    section = Section("monthly", "Monthly returns")
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=months,
            y=monthly["strategy"].to_list(),
            colorscale="RdYlGn",
            zmid=0,
            texttemplate="%{z:.1f}",
            colorbar={"title": {"text": "%"}},
        )
    )
    figure.update_layout(title="Monthly net return (%)", xaxis={"type": "category"})
    section.chart(figure, height=max(300, 60 + 32 * monthly.height))
    return section


def regime_section(data: ExperimentData) -> Section | None:
    """Return and exposure by ex-post regime; the table answers "does it go to cash in high-vol bear?"."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    regimes = data.table("regime_kpis")
    if regimes is None:
        return None
    regimes = regimes.with_columns(regime=pl.col("xp_trend_regime") + " / " + pl.col("xp_vol_regime") + " vol")
    order = sorted(regimes["regime"].unique().to_list())
    figure = make_subplots(rows=1, cols=2, subplot_titles=("total return by regime", "mean gross exposure by regime"))
    for index, ((strategy,), group) in enumerate(regimes.sort("strategy").group_by("strategy", maintain_order=True)):
        by_regime = dict(zip(group["regime"], group.select("total_return", "exposure").rows(), strict=True))
        for col, position in ((1, 0), (2, 1)):
            figure.add_trace(
                go.Bar(
                    x=order,
                    y=[by_regime[r][position] if r in by_regime else None for r in order],
                    name=str(strategy),
                    legendgroup=str(strategy),
                    showlegend=col == 1,
                    marker_color=_color(index),
                ),
                row=1,
                col=col,
            )
    figure.update_layout(barmode="group")
    figure.update_yaxes(tickformat=".0%", row=1, col=1)
    section = Section("regimes", "Regime breakdown")
    section.note = (
        "Ex-post regimes of the benchmark (bull / bear / chop × high / low vol): reporting only, never a model input."
    )
    section.chart(figure, height=460)
    trend, vol = HIGH_VOL_BEAR
    bear = regimes.filter((pl.col("xp_trend_regime") == trend) & (pl.col("xp_vol_regime") == vol)).select(
        "strategy", pl.col("exposure").alias("exposure_high_vol_bear"), pl.col("bars").alias("bars_high_vol_bear")
    )
    overall = (
        regimes.group_by("strategy")
        .agg(((pl.col("exposure") * pl.col("bars")).sum() / pl.col("bars").sum()).alias("exposure_overall"))
        .join(bear, on="strategy", how="left")
        .with_columns(goes_to_cash=pl.col("exposure_high_vol_bear") < 0.5 * pl.col("exposure_overall"))
        .sort("strategy")
    )
    section.table(overall, "High-vol bear: mean gross exposure there vs overall (goes_to_cash: less than half of it)")
    return section


def cost_section(kpis: pl.DataFrame) -> Section:
    """Costs by kind as a fraction of capital, and what the participation cap cut (capacity)."""
    import plotly.graph_objects as go

    stitched = kpis.filter(pl.col("scope") == STITCHED).sort("strategy")
    figure = go.Figure()
    for kind in (k for k in COST_KINDS if k in stitched.columns):
        figure.add_trace(go.Bar(x=stitched["strategy"], y=stitched[kind], name=kind.removeprefix("cost_")))
    figure.update_layout(barmode="stack", title="Costs of the stitched run (fraction of starting capital)")
    figure.update_yaxes(tickformat=".2%")
    section = Section("costs", "Cost breakdown and capacity")
    section.chart(figure)
    section.table(
        stitched.select([c for c in CAPACITY_COLUMNS if c in stitched.columns]),
        "Capacity: capped_share = share of fills the participation cap cut short at this capital",
    )
    return section


def trade_section(trades: pl.DataFrame) -> Section:
    section = Section("trades", "Trades (stitched run)")
    summary = (
        trades.group_by("strategy")
        .agg(
            pl.len().alias("trades"),
            pl.col("closed").sum().alias("closed"),
            (pl.col("pnl").filter(pl.col("closed")) > 0).mean().alias("win_rate"),
            pl.col("pnl").sum().alias("pnl"),
            pl.col("costs").sum().alias("costs"),
        )
        .sort("strategy")
    )
    section.table(summary, "Round trips per strategy (pnl after costs, quote currency; open trades marked to the end)")
    newest = trades.sort("entry_ts", descending=True).head(TRADE_ROWS)
    newest = newest.select(
        "strategy", "symbol", "side", "entry_ts", "exit_ts", "closed", "entry_notional", "costs", "pnl"
    ).with_columns(pnl_pct=pl.col("pnl") / pl.col("entry_notional"))
    section.table(newest, f"The newest {newest.height} of {trades.height} trades")
    return section


def training_section(data: ExperimentData) -> Section | None:
    """Each model's curves (loss per epoch, reward per rollout), one line per fold and metric; the main
    metrics shown, the others one legend click away."""
    import plotly.graph_objects as go

    if not data.curves:
        return None
    section = Section("training", "Training curves")
    groups: dict[tuple[str, str], list[Any]] = {}
    for curve in data.curves:
        groups.setdefault((curve.model, curve.name), []).append(curve)
    for (model, name), curves in sorted(groups.items()):
        figure = go.Figure()
        for curve in curves:
            x_column = curve.frame.columns[0]
            metrics = [c for c in curve.frame.columns[1:] if curve.frame[c].dtype.is_float()]
            shown = [c for c in metrics if c.endswith("_loss") or c == "ep_reward_mean"] or metrics[:1]
            for metric in metrics:
                figure.add_trace(
                    go.Scatter(
                        x=curve.frame[x_column],
                        y=curve.frame[metric],
                        name=f"{curve.fold} {metric}",
                        mode="lines+markers",
                        visible=True if metric in shown else "legendonly",
                    )
                )
            figure.update_xaxes(title_text=x_column)
        figure.update_layout(title=f"{model}: {name}")
        section.chart(figure)
    return section


def calibration_section(data: ExperimentData) -> Section | None:
    """Forecasters' out-of-sample calibration against the realised label (DESIGN §3.5: labels look ahead
    `label_horizon` bars): P(up) by decile vs the share that went up, and forecast per-bar σ by decile vs the
    realised √(mean r_h² / h)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    bars = data.table("bars")
    if not data.predictions or bars is None:
        return None
    horizon = data.label_horizon
    ret, _ = label_columns(horizon)
    labels = add_labels(bars.select("symbol", "ts", "close"), horizon, timeframe=data.timeframe).select(
        "symbol", "ts", ret
    )
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("P(up) vs share that went up", "forecast σ per bar vs realised")
    )
    top = 0.0  # the σ panel's largest value, for its diagonal
    for index, (model, predictions) in enumerate(sorted(data.predictions.items())):
        joined = predictions.join(labels, on=["symbol", "ts"]).drop_nulls([ret, "p_up", "vol"])
        if joined.is_empty():
            continue
        up = (
            joined.group_by((pl.col("p_up") * 10).floor().clip(0, 9).alias("bin"))
            .agg(pl.col("p_up").mean(), (pl.col(ret) > 0).mean().alias("went_up"), pl.len())
            .sort("bin")
        )
        vol = (
            joined.with_columns(bin=pl.col("vol").qcut(10, labels=[str(i) for i in range(10)], allow_duplicates=True))
            .group_by("bin")
            .agg(pl.col("vol").mean(), ((pl.col(ret) ** 2).mean() / horizon).sqrt().alias("realised"), pl.len())
            .sort("vol")
        )
        top = max(top, float(vol["vol"].max()), float(vol["realised"].max()))  # type: ignore[arg-type]
        color = _color(index)
        figure.add_trace(
            go.Scatter(x=up["p_up"], y=up["went_up"], name=model, legendgroup=model, line={"color": color}),
            row=1,
            col=1,
        )
        figure.add_trace(
            go.Scatter(
                x=vol["vol"], y=vol["realised"], name=model, legendgroup=model, showlegend=False, line={"color": color}
            ),
            row=1,
            col=2,
        )
    if not figure.data:
        return None
    figure.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], name="perfect", line={"dash": "dot", "color": "#888"}), row=1, col=1
    )
    figure.add_trace(
        go.Scatter(x=[0, top], y=[0, top], showlegend=False, line={"dash": "dot", "color": "#888"}), row=1, col=2
    )
    section = Section("calibration", "Forecast calibration")
    section.note = (
        f"Out of sample, against the realised label {horizon} bars ahead: P(up) in tenths vs the share that went "
        "up; the forecast per-bar σ in deciles vs the realised √(mean r² / horizon). On the diagonal = calibrated."
    )
    section.chart(figure, height=460)
    return section


def stress_section(data: ExperimentData) -> Section | None:
    import plotly.graph_objects as go

    stress = data.table("stress_kpis")
    if stress is None:
        return None
    figure = go.Figure()
    for (scenario,), group in stress.sort("scenario", "strategy").group_by("scenario", maintain_order=True):
        figure.add_trace(
            go.Bar(
                x=group["strategy"],
                y=group["max_drawdown_median"],
                name=str(scenario),
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": (group["max_drawdown_p95"] - group["max_drawdown_median"]).to_list(),
                    "arrayminus": (group["max_drawdown_median"] - group["max_drawdown_p05"]).to_list(),
                },
            )
        )
    figure.update_layout(barmode="group", title="Max drawdown on stress paths: median, 5th-95th percentile")
    figure.update_yaxes(tickformat=".0%")
    section = Section("stress", "Stress scenarios")
    section.chart(figure)
    shown = [
        "scenario",
        "strategy",
        "paths",
        "max_drawdown_median",
        "max_drawdown_p95",
        "total_return_median",
        "p_breach",
        "exposure_high_vol_bear",
        "passes",
    ]
    section.table(stress.select([c for c in shown if c in stress.columns]).sort("scenario", "strategy"))
    if "note" in stress.columns:  # one note per scenario, repeated on its rows: say it once
        notes = stress.group_by("scenario").agg(pl.col("note").first()).sort("scenario").drop_nulls()
        section.note = " ".join(f"{scenario}: {note}" for scenario, note in notes.rows())
    return section


def sweep_section(data: ExperimentData) -> Section | None:
    """The sweep's trials (crypto_assets.sweeps): objective per trial by family, best first in the table."""
    import plotly.graph_objects as go

    sweep = data.table("sweep")
    if sweep is None:
        return None
    section = Section("sweep", "Hyper-parameter sweep")
    if {"trial", SWEEP_OBJECTIVE} <= set(sweep.columns):
        families = sweep.with_columns(
            pl.col("family") if "family" in sweep.columns else pl.lit("trials").alias("family")
        )
        figure = go.Figure()
        for (family,), group in families.sort("family", "trial").group_by("family", maintain_order=True):
            hover = group["params"] if "params" in group.columns else None
            figure.add_trace(
                go.Scatter(x=group["trial"], y=group[SWEEP_OBJECTIVE], mode="markers", name=str(family), text=hover)
            )
        figure.update_layout(
            title="Objective per trial (walk-forward Sharpe on the sweep's folds)", xaxis_title="trial"
        )
        section.chart(figure)
        sweep = sweep.sort(SWEEP_OBJECTIVE, descending=True, nulls_last=True)
    plain = sweep.select([c for c, t in sweep.schema.items() if not isinstance(t, (pl.List, pl.Struct))])
    section.table(plain.head(SWEEP_ROWS), f"{min(SWEEP_ROWS, sweep.height)} of {sweep.height} trials")
    return section


def paper_section(data: ExperimentData) -> Section | None:
    """The paper ledger's track record (crypto_assets.paper.paper_report): live equity (months chained), rolling
    Sharpe, PSR vs zero and vs the stitched backtest's Sharpe; the paper − replay gap where the report has it."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ledger = data.table(PAPER_LEDGER)
    if ledger is None:
        return None
    from crypto_assets.paper import ROLLING_SHARPE  # the paper_ledger asset's window: one source of truth
    from crypto_assets.paper.report import GAP_SCHEMA, paper_report

    kpis = data.table("kpis")
    stitched = {} if kpis is None else dict(kpi_frame(kpis).select("strategy", "sharpe").iter_rows())
    rolling = duration_bars(ROLLING_SHARPE, data.timeframe, "paper rolling Sharpe")
    # The replay gap needs the live models and fresh bars (the paper_ledger asset computes it); here it stays empty.
    report = paper_report(ledger, pl.DataFrame(schema=GAP_SCHEMA), data.timeframe, rolling, stitched)
    figure = make_subplots(
        rows=2, cols=1, shared_xaxes=True, subplot_titles=("live equity (months chained, start = 1)", "rolling Sharpe")
    )
    for index, ((strategy,), track) in enumerate(report.track.group_by("strategy", maintain_order=True)):
        line = {"color": _color(index)}
        figure.add_trace(go.Scatter(x=track["ts"], y=track["track_equity"], name=str(strategy), line=line), 1, 1)
        figure.add_trace(go.Scatter(x=track["ts"], y=track["rolling_sharpe"], showlegend=False, line=line), 2, 1)
    section = Section("paper", "Paper trading (live fold)")
    section.note = (
        f"Rolling Sharpe over {ROLLING_SHARPE}, annualised. psr_vs_backtest: probability that the live Sharpe "
        "beats the stitched walk-forward backtest's; the paper − replay gap is in the paper_ledger asset's metadata."
    )
    section.chart(figure, height=520)
    section.table(report.summary.drop("max_abs_gap"), "Track record per strategy")
    return section


def _with(table: str, build: Callable[[pl.DataFrame], Section | None]) -> Callable[[ExperimentData], Section | None]:
    """A builder of one table's section, None when the experiment has no such table (yet)."""
    return lambda data: None if (frame := data.table(table)) is None else build(frame)


SECTIONS: tuple[Callable[[ExperimentData], Section | None], ...] = (
    lambda d: None if (e := d.table("walk_forward_equity")) is None else equity_section(e, fold_keys(d)),
    kpi_section,
    _with("kpis", fold_sharpe_section),
    _with("seed_dispersion", seed_section),
    _with("walk_forward_equity", monthly_section),
    regime_section,
    _with("kpis", cost_section),
    _with("walk_forward_trades", trade_section),
    training_section,
    calibration_section,
    stress_section,
    sweep_section,
    paper_section,
)
"""Every section in page order; the page shows those whose builder returns one."""
REPORT_TABLES = ("walk_forward_equity", "kpis")
"""The reports job's tables most sections read: the page says so when they are missing."""
