"""`raw_ohlcv[month]` and `bars[month]`: ingestion and validation on monthly UTC partitions."""
# No `from __future__ import annotations` here: Dagster reads the asset functions' annotations (the
# Config class) at definition time and cannot resolve them from strings.

import datetime as dt

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, section_hash
from crypto_assets.ingestion.coverage import (
    catch_up,
    catch_up_window,
    describe_spans,
    month_windows,
    per_symbol_fetch,
    row_count_drops,
    run_catch_up_window,
)
from crypto_assets.orchestration.io_managers import SPLIT_BY_TS
from crypto_assets.orchestration.metadata import table_metadata
from crypto_assets.orchestration.partitions import data_partitions, fetch_span, previous_month_key
from crypto_assets.orchestration.resources import DataSourceResource, WarehouseResource
from crypto_assets.sources.base import RAW_COLUMNS, OhlcvSource, empty_raw
from crypto_assets.storage.warehouse import Warehouse
from crypto_assets.timeframes import parse_duration

# One asset check per validation rule, reported by `bars` itself: in a single-run backfill a blocking
# check would fire once, after the whole range had been written, so hard errors fail the step before
# anything is stored and the checks carry the outcome and failure samples to the UI.
BAR_CHECKS: dict[str, str] = {
    "schema": "Columns, dtypes, no nulls, UTC timestamps (pandera, polars backend).",
    "ohlc_consistency": "Prices > 0, volume ≥ 0, low ≤ min(open, close), max(open, close) ≤ high.",
    "unique_sorted_timestamps": "No duplicate, out-of-order or off-grid timestamps per symbol.",
    "continuity": (
        "Every missing bar on each symbol's grid, from its first bar to the end of the requested span "
        "(partition end, data.end or the last closed bar); handled per gap policy."
    ),
    "wick_outliers": "Wicks far beyond trailing volatility that the other symbols did not share.",
    "liquidity": "Symbol-days below the minimum dollar volume or above the Amihud illiquidity limit.",
}


class IngestConfig(dg.Config):
    incremental: bool = False
    """Fetch only what is missing within `data.catch_up` before `as_of` and keep every stored row (the
    schedule); the default, an explicit request, re-fetches the whole span of the selected months."""
    as_of: str | None = None
    """ISO-8601 UTC time used as "now" (the schedule sets its tick time); default: the run's creation time."""
    allow_fewer_rows: bool = False
    """Let a full re-fetch replace stored partitions with fewer rows (otherwise the run fails first)."""


class BarsConfig(dg.Config):
    as_of: str | None = None
    """ISO-8601 UTC time used as "now": continuity is checked up to the last bar closed by then."""


def run_now(context: dg.AssetExecutionContext, as_of: str | None, key: str) -> dt.datetime:
    """`as_of` if given, else the run's creation time: every step of one run agrees on "now", so the
    span `bars` validates is the span `raw_ohlcv` fetched (a bar closing between the steps is no gap)."""
    if as_of is not None:
        try:
            moment = dt.datetime.fromisoformat(as_of)
        except ValueError:
            raise dg.Failure(f"run config {key}.as_of = {as_of!r} is not an ISO-8601 time") from None
        if moment.tzinfo is None:
            raise dg.Failure(f"run config {key}.as_of = {as_of!r} has no time zone; write e.g. {as_of}+00:00")
        return moment.astimezone(dt.UTC)
    record = context.instance.get_run_record_by_id(context.run_id)
    created = record.create_timestamp if record is not None else dt.datetime.now(dt.UTC)
    return created if created.tzinfo is not None else created.replace(tzinfo=dt.UTC)


def build_ingestion_assets(experiment: ExperimentConfig) -> list[dg.AssetsDefinition]:
    partitions = data_partitions(experiment.data)
    timeframe = experiment.data.timeframe
    symbols = list(experiment.data.tickers)
    horizon = parse_duration(experiment.data.catch_up, "data.catch_up")

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        code_version=section_hash(experiment, "data"),
        io_manager_key="warehouse_io",
        group_name="data",
        kinds={"polars", "parquet"},
        metadata=SPLIT_BY_TS,
        description=(
            f"Raw OHLCV bars from the `{experiment.data.source}` source, one file per UTC month. An explicit "
            "materialization re-fetches the selected months (and refuses to store fewer rows than are stored "
            "unless run config `allow_fewer_rows: true`); the schedule fetches only what is missing."
        ),
    )
    def raw_ohlcv(
        context: dg.AssetExecutionContext,
        config: IngestConfig,
        data_source: DataSourceResource,
        warehouse: WarehouseResource,
    ) -> dg.Output[pl.DataFrame]:
        window = context.partition_time_window
        keys = context.partition_keys
        now = run_now(context, config.as_of, "raw_ohlcv")
        start, end = fetch_span(experiment.data, window.start, window.end, now)
        source = data_source.source()
        stored_tables = warehouse.warehouse()
        label = f"raw_ohlcv {keys[0]}" + (f"..{keys[-1]}" if len(keys) > 1 else "")
        if config.incremental:
            joint = data_source.draws_jointly()
            return _catch_up(context, source, joint, stored_tables, label, keys, start, end, now)
        frame = source.fetch(symbols, timeframe, start, end) if start < end else empty_raw()
        frame = frame.select(RAW_COLUMNS).sort("symbol", "ts")
        stored = stored_tables.read_partitions("raw_ohlcv", keys, missing="skip")
        drops = row_count_drops(stored, frame, month_windows(keys))
        if drops and not config.allow_fewer_rows:
            # Fail before the output exists: the IO manager writes nothing, the stored rows stay.
            raise dg.Failure(
                description=(
                    f"{label}: the new fetch of {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} has fewer rows than "
                    f"are stored, so nothing was written: " + "; ".join(map(str, drops)) + ". If the source really "
                    "holds less now, re-run with run config ops.raw_ohlcv.config.allow_fewer_rows: true"
                ),
                allow_retries=False,
            )
        if drops:
            context.log.warning(f"{label}: replacing with fewer rows (allow_fewer_rows): " + "; ".join(map(str, drops)))
        context.log.info(f"{label} {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M}: {frame.height} bars fetched (full)")
        return dg.Output(
            frame,
            metadata={
                "mode": "full",
                "fetched_bars": frame.height,
                "rows": frame.height,
                "symbols": dg.MetadataValue.json(sorted(frame["symbol"].unique().to_list())),
                "span": f"{start.isoformat()} .. {end.isoformat()}",
                "replaced_with_fewer_rows": dg.MetadataValue.json([str(d) for d in drops]),
            },
        )

    def _catch_up(
        context: dg.AssetExecutionContext,
        source: OhlcvSource,
        joint: bool,
        warehouse: Warehouse,
        label: str,
        keys: list[str],
        start: dt.datetime,
        end: dt.datetime,
        now: dt.datetime,
    ) -> dg.Output[pl.DataFrame]:
        """The schedule's tick: keep every stored row of the run's months, fetch what is missing inside
        the catch-up window, report what could not be had."""
        horizon_window = catch_up_window(experiment.data.start, experiment.data.end, timeframe, horizon, now)
        first_stored = keys[0] in warehouse.stored_keys("raw_ohlcv")
        window = run_catch_up_window(start, end, horizon_window, first_month_stored=first_stored)
        # The month before shows whether a symbol already listed.
        stored = warehouse.read_partitions("raw_ohlcv", [previous_month_key(keys[0]), *keys], missing="skip")
        fetch = per_symbol_fetch(
            lambda asked, span_start, span_end: source.fetch(asked, timeframe, span_start, span_end),
            symbols,
            joint=joint,
        )
        result = catch_up(stored, fetch, symbols, timeframe, window)
        first, last = month_windows(keys)[keys[0]][0], month_windows(keys)[keys[-1]][1]
        frame = result.frame.filter((pl.col("ts") >= first) & (pl.col("ts") < last))
        what = (
            f"{label} catch-up {window.start:%Y-%m-%d %H:%M}..{window.end:%Y-%m-%d %H:%M} (as of {now:%Y-%m-%d %H:%M})"
        )
        context.log.info(
            f"{what}: {result.requested['bars'].sum()} missing bar(s) in {result.requested.height} span(s), "
            f"{result.fetched_bars} fetched"
        )
        if result.failures or result.still_missing.height:
            context.log.warning(
                f"{what}: could not get {int(result.still_missing['bars'].sum())} bar(s): "
                f"{describe_spans(result.still_missing)}"
                + ("; failures: " + "; ".join(map(str, result.failures)) if result.failures else "")
                + ". Stored bars are kept; the next tick asks again."
            )
        return dg.Output(
            frame,
            metadata={
                "mode": "incremental",
                "as_of": now.isoformat(),
                "catch_up_window": f"{window.start.isoformat()} .. {window.end.isoformat()}",
                "fetched_bars": result.fetched_bars,
                "rows": frame.height,
                "requested_spans": table_metadata(result.requested, limit=50),
                "missing_bars": int(result.still_missing["bars"].sum()),
                "still_missing": table_metadata(result.still_missing, limit=50),
                "fetch_failures": dg.MetadataValue.json([str(f) for f in result.failures]),
            },
        )

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        code_version=section_hash(experiment, "data", "validation"),
        io_manager_key="warehouse_io",
        group_name="data",
        kinds={"polars", "parquet", "duckdb"},
        metadata=SPLIT_BY_TS,
        check_specs=[dg.AssetCheckSpec(name, asset="bars", description=text) for name, text in BAR_CHECKS.items()],
        description="Validated bars on a regular grid per symbol, with quality flags (DESIGN.md §3.2).",
    )
    def bars(  # type: ignore[no-untyped-def]
        context: dg.AssetExecutionContext, config: BarsConfig, warehouse: WarehouseResource, raw_ohlcv: pl.DataFrame
    ):
        from crypto_assets.validation import BarValidationError, validate_bars

        window = context.partition_time_window
        # Continuity runs to the end of the requested span, not to the last bar received: a symbol whose
        # bars stop early (a short answer, an outage) shows its missing tail as a gap.
        now = run_now(context, config.as_of, "bars")
        span_start, span_end = fetch_span(experiment.data, window.start, window.end, now)

        # The month before the range (if stored) warms up trailing statistics and exposes a gap
        # straddling the partition boundary; it is read, never rewritten.
        previous = previous_month_key(context.partition_keys[0])
        history = warehouse.warehouse().read_partitions("bars", [previous], missing="skip")
        report = validate_bars(
            raw_ohlcv,
            experiment.data.timeframe,
            experiment.validation,
            history=history,
            span_start=span_start,
            span_end=span_end,
        )
        checks = [
            dg.AssetCheckResult(
                check_name=result.name,
                passed=result.passed,
                severity=dg.AssetCheckSeverity.ERROR if result.severity == "error" else dg.AssetCheckSeverity.WARN,
                description=result.message,
                metadata={
                    "failures": result.failures,
                    "samples": table_metadata(result.samples, digits=8, limit=20),
                },
            )
            for result in report.results
        ]
        # A broken schema stops the other rules (they need the columns): say so rather than stay silent.
        checks += [
            dg.AssetCheckResult(
                check_name=name,
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                description="not evaluated: the schema check failed",
            )
            for name in BAR_CHECKS
            if name not in {result.name for result in report.results}
        ]
        if report.errors:
            # Nothing is written: report the checks, then fail the step with every broken rule.
            yield from checks
            try:
                report.raise_for_errors(f"bars {context.partition_keys[0]}..{context.partition_keys[-1]}")
            except BarValidationError as exc:
                raise dg.Failure(
                    description=str(exc),
                    metadata={r.name: table_metadata(r.samples, digits=8, limit=20) for r in report.errors},
                    allow_retries=False,
                ) from exc
        assert report.bars is not None
        out = report.bars
        per_symbol = (
            out.group_by("symbol")
            .agg(
                pl.len().alias("bars"),
                pl.col("ts").min().alias("first"),
                pl.col("ts").max().alias("last"),
                pl.col("is_filled").sum().alias("filled"),
                pl.col("is_wick_outlier").sum().alias("wick_outliers"),
                pl.col("is_illiquid").sum().alias("illiquid_bars"),
            )
            .sort("symbol")
        )
        yield dg.Output(
            out,
            metadata={
                "rows": out.height,
                "per_symbol": table_metadata(per_symbol, limit=500),
                "filled_bars": int(out["is_filled"].sum()),
            },
        )
        yield from checks

    return [raw_ohlcv, bars]
