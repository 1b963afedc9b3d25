"""`raw_ohlcv[month]` and `bars[month]`: ingestion and validation on monthly UTC partitions."""
# No `from __future__ import annotations` here: Dagster reads the asset functions' annotations (the
# Config class) at definition time and cannot resolve them from strings.

import datetime as dt

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig, section_hash
from crypto_assets.orchestration.io_managers import SPLIT_BY_TS
from crypto_assets.orchestration.markdown import md
from crypto_assets.orchestration.partitions import data_partitions, fetch_span, previous_month_key
from crypto_assets.paths import experiment_root
from crypto_assets.sources.base import RAW_COLUMNS, empty_raw
from crypto_assets.sources.factory import make_source
from crypto_assets.storage.warehouse import Warehouse
from crypto_assets.timeframes import timeframe_delta

# One asset check per validation rule, reported by `bars` itself: in a single-run backfill a blocking
# check would fire once, after the whole range had been written, so hard errors fail the step before
# anything is stored and the checks carry the outcome and failure samples to the UI.
BAR_CHECKS: dict[str, str] = {
    "schema": "Columns, dtypes, no nulls, UTC timestamps (pandera, polars backend).",
    "ohlc_consistency": "Prices > 0, volume ≥ 0, low ≤ min(open, close), max(open, close) ≤ high.",
    "unique_sorted_timestamps": "No duplicate, out-of-order or off-grid timestamps per symbol.",
    "continuity": "Every missing bar on each symbol's grid, first to last bar; handled per gap policy.",
    "wick_outliers": "Wicks far beyond trailing volatility that the other symbols did not share.",
    "liquidity": "Symbol-days below the minimum dollar volume or above the Amihud illiquidity limit.",
}


class IngestConfig(dg.Config):
    incremental: bool = False
    """Fetch only bars newer than those stored and merge (the schedule); an explicit request re-fetches."""


def build_ingestion_assets(experiment: ExperimentConfig) -> list[dg.AssetsDefinition]:
    partitions = data_partitions(experiment.data)
    warehouse = Warehouse(experiment_root(experiment))
    bar = timeframe_delta(experiment.data.timeframe)
    symbols = list(experiment.data.tickers)

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        code_version=section_hash(experiment, "data"),
        io_manager_key="warehouse_io",
        group_name="data",
        kinds={"polars", "parquet"},
        metadata=SPLIT_BY_TS,
        description=f"Raw OHLCV bars from the `{experiment.data.source}` source, one file per UTC month.",
    )
    def raw_ohlcv(context: dg.AssetExecutionContext, config: IngestConfig) -> dg.Output[pl.DataFrame]:
        window = context.partition_time_window
        start, end = fetch_span(experiment.data, window.start, window.end, dt.datetime.now(dt.UTC))
        source = make_source(experiment)
        stored = None
        if config.incremental:
            stored = warehouse.read_partitions("raw_ohlcv", context.partition_keys, missing="skip")
        if stored is not None and not stored.is_empty():
            last = stored.group_by("symbol").agg(pl.col("ts").max())
            last_by_symbol = dict(last.iter_rows())
            # Resume from the earliest symbol's next bar; a symbol with nothing stored starts over.
            resume = min(last_by_symbol[s] + bar if s in last_by_symbol else start for s in symbols)
            fetched = source.fetch(symbols, experiment.data.timeframe, resume, end) if resume < end else None
            kept = stored.filter(pl.col("ts") < resume)
            frame = kept if fetched is None else pl.concat([kept, fetched.select(RAW_COLUMNS)])
            mode = f"incremental from {resume.isoformat()}"
            new_bars = 0 if fetched is None else fetched.height
        else:
            frame = source.fetch(symbols, experiment.data.timeframe, start, end) if start < end else empty_raw()
            mode, new_bars = "full", frame.height
        frame = frame.sort("symbol", "ts")
        context.log.info(f"raw_ohlcv {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M}: {new_bars} bars fetched ({mode})")
        return dg.Output(
            frame,
            metadata={
                "mode": mode,
                "fetched_bars": new_bars,
                "rows": frame.height,
                "symbols": dg.MetadataValue.json(sorted(frame["symbol"].unique().to_list())),
                "span": f"{start.isoformat()} .. {end.isoformat()}",
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
    def bars(context: dg.AssetExecutionContext, raw_ohlcv: pl.DataFrame):  # type: ignore[no-untyped-def]
        from crypto_assets.validation import BarValidationError, validate_bars

        # The month before the range (if stored) warms up trailing statistics and exposes a gap
        # straddling the partition boundary; it is read, never rewritten.
        previous = previous_month_key(context.partition_keys[0])
        history = warehouse.read_partitions("bars", [previous], missing="skip")
        report = validate_bars(
            raw_ohlcv,
            experiment.data.timeframe,
            experiment.validation,
            history=history,
            span_start=context.partition_time_window.start,
        )
        checks = [
            dg.AssetCheckResult(
                check_name=result.name,
                passed=result.passed,
                severity=dg.AssetCheckSeverity.ERROR if result.severity == "error" else dg.AssetCheckSeverity.WARN,
                description=result.message,
                metadata={
                    "failures": result.failures,
                    "samples": md(result.samples, digits=8, limit=20),
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
                    metadata={r.name: md(r.samples, digits=8, limit=20) for r in report.errors},
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
                "per_symbol": md(per_symbol, limit=500),
                "filled_bars": int(out["is_filled"].sum()),
            },
        )
        yield from checks

    return [raw_ohlcv, bars]
