"""`paper_ledger[month]` (DESIGN.md §6.5): the live fold's strategies traded forward on closed bars.

On the monthly data partitions, after `live_model_<slug>[month]` of every family the experiment trains (the
artifacts are read from their folders, so a month whose live models are missing fails with a hint, and a fixed
data span reports without needing them). Each run fetches the closed bars through the `data_source` resource
(from the live models' first input bar, features warm-up included, to "now": run config `as_of`, which the
`paper_trade` schedule sets to its tick, else the run's creation time), decides and books every bar of the month
the ledger lacks (`crypto_assets.paper.trade_forward`: a restart catches up exactly the missed bars, a re-run adds
nothing), appends the new rows to the ledger (`storage/<experiment>/warehouse/paper_ledger/`) and reports the
month's track record (`crypto_assets.paper.paper_report`) as metadata. The ledger is its own append-only store, not
a warehouse partition: re-materializing never rewrites or removes a row.

With a fixed `data.end` already past there is nothing to trade forward: the asset says "no bars after data.end"
(metadata and log) and writes nothing.
"""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations (the Config class).

import datetime as dt

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig
from crypto_assets.families import Artifact, get_family
from crypto_assets.ingestion.scope import data_end_exclusive
from crypto_assets.orchestration.assets.common import cost_lookback, cost_model
from crypto_assets.orchestration.assets.ingestion import run_now
from crypto_assets.orchestration.assets.live import LIVE_MODEL_PREFIX
from crypto_assets.orchestration.metadata import table_metadata
from crypto_assets.orchestration.partitions import data_partitions
from crypto_assets.orchestration.resources import DataSourceResource
from crypto_assets.paper import (
    ROLLING_SHARPE,
    PaperLedgerStore,
    PaperSetup,
    artifact_digest,
    paper_report,
    replay_gap,
    trade_forward,
)
from crypto_assets.paths import experiment_root
from crypto_assets.storage.warehouse import Warehouse
from crypto_assets.timeframes import duration_bars, timeframe_delta

PAPER_ASSET = "paper_ledger"


class PaperConfig(dg.Config):
    as_of: str | None = None
    """ISO-8601 UTC time used as "now" (the schedule sets its tick time): bars closed by then are traded."""


def no_bars_after_end(experiment: ExperimentConfig, now: dt.datetime) -> str | None:
    """The note of a fixed data span that is over at `now` (nothing to trade forward), else None."""
    end = experiment.data.end
    if end is None or dt.datetime.combine(data_end_exclusive(experiment.data), dt.time(), dt.UTC) > now:
        return None
    return (
        f"no bars after data.end ({end}): paper trading trades bars as they close, and this experiment's data "
        "span is fixed and over; set data.end: null on an exchange source to paper-trade"
    )


def build_paper_asset(experiment: ExperimentConfig) -> dg.AssetsDefinition | None:
    """`paper_ledger` over every family the experiment trains (None when it trains none)."""
    slugs = [get_family(params.type).slug for params in experiment.models.trained]
    if not slugs:
        return None
    data = experiment.data
    root = experiment_root(experiment)
    tf = timeframe_delta(data.timeframe)
    rolling_bars = duration_bars(ROLLING_SHARPE, data.timeframe, "paper rolling Sharpe")
    identity = dg.IdentityPartitionMapping()

    @dg.asset(
        name=PAPER_ASSET,
        partitions_def=data_partitions(data),
        deps=[dg.AssetDep(f"{LIVE_MODEL_PREFIX}{slug}", partition_mapping=identity) for slug in slugs],
        group_name="paper",
        description=(
            "Append-only paper ledger of the month: the live fold's strategies traded forward on closed bars "
            "(decision at the close, fill at the next open through the engine's cost model at the experiment's "
            "capital). Rows live in storage/<experiment>/warehouse/paper_ledger/ (crypto_assets.paper)."
        ),
    )
    def paper_ledger(
        context: dg.AssetExecutionContext, config: PaperConfig, data_source: DataSourceResource
    ) -> dg.MaterializeResult:
        now = run_now(context, config.as_of, PAPER_ASSET)
        note = no_bars_after_end(experiment, now)
        if note is not None:
            context.log.warning(note)
            return dg.MaterializeResult(metadata={"note": note, "rows_added": 0})
        month = context.partition_key
        artifacts = {}
        for slug in slugs:
            directory = root / "artifacts" / f"{LIVE_MODEL_PREFIX}{slug}" / month  # ModelArtifactIOManager's layout
            if not directory.is_dir():
                raise dg.Failure(f"no live model {LIVE_MODEL_PREFIX}{slug}[{month}] at {directory}; run the live job")
            artifacts[slug] = (Artifact.load(directory), artifact_digest(directory))
        first_artifact = next(iter(artifacts.values()))[0]
        month_start, month_end = first_artifact.window.test_start, first_artifact.window.test_end
        closed_end = dt.datetime.fromtimestamp(now.timestamp() // tf.total_seconds() * tf.total_seconds(), dt.UTC)
        if data.end is not None:  # a data.end still ahead: trade up to it, never past it
            closed_end = min(closed_end, dt.datetime.combine(data_end_exclusive(data), dt.time(), dt.UTC))
        if closed_end <= month_start:
            message = f"no closed bar of {month} yet at {now:%Y-%m-%d %H:%M} UTC"
            context.log.info(message)
            return dg.MaterializeResult(metadata={"note": message, "rows_added": 0})
        inputs_from = min(a.window.train_start for a, _ in artifacts.values()) - dt.timedelta(
            days=experiment.features.lookback_days
        )
        bars = data_source.source().fetch(data.tickers, data.timeframe, inputs_from, min(month_end, closed_end))
        if bars.is_empty() or bars["ts"].max() < month_start:  # type: ignore[operator]
            message = f"the source has no closed bar of {month} yet at {now:%Y-%m-%d %H:%M} UTC"
            context.log.info(message)
            return dg.MaterializeResult(metadata={"note": message, "rows_added": 0})
        watermark: dt.datetime = bars["ts"].max()  # type: ignore[assignment]
        store = PaperLedgerStore(Warehouse(root).tables_dir)
        costs, lookback = cost_model(experiment), cost_lookback(experiment)
        added: dict[str, int] = {}
        gaps = []
        for slug, (artifact, digest) in artifacts.items():
            setup = PaperSetup(
                experiment=experiment.experiment.name,
                strategy=slug,
                month=month,
                artifact_hash=digest,
                costs=costs,
                capital=experiment.experiment.capital,
                cost_lookback=lookback,
            )
            result = trade_forward(setup, artifact, bars, store.read(month, slug), watermark)
            store.append(result.new_rows)
            added[slug] = result.new_rows.height
            ledger = store.read(month, slug)
            gaps.append(replay_gap(setup, artifact, bars, ledger, ledger["ts"].max()))  # type: ignore[arg-type]
        report = paper_report(
            store.read(month), pl.concat(gaps), data.timeframe, rolling_bars, _backtest_sharpes(Warehouse(root))
        )
        context.log.info(f"paper_ledger[{month}]: watermark {watermark:%Y-%m-%d %H:%M}, rows added {added}")
        return dg.MaterializeResult(
            metadata={
                "watermark": watermark.isoformat(),
                "rows_added": sum(added.values()),
                "rows_added_by_strategy": added,
                "ledger": dg.MetadataValue.path(str(store.directory / month)),
                "summary": table_metadata(report.summary),
                "track_record": table_metadata(report.track.sort("ts", descending=True), limit=100),
            }
        )

    return paper_ledger


def _backtest_sharpes(warehouse: Warehouse) -> dict[str, float]:
    """Strategy → annualised Sharpe of its stitched walk-forward run, from the `kpis` table when it is stored."""
    from crypto_assets.evaluation.tables import STITCHED

    kpis = warehouse.read_table("kpis") if "kpis" in warehouse.tables() else None
    if kpis is None or "scope" not in kpis.columns:
        return {}
    stitched = kpis.filter(pl.col("scope") == STITCHED)
    return {str(s): float(v) for s, v in stitched.select("strategy", "sharpe").iter_rows() if v is not None}
